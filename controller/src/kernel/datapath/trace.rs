//! One frame through an endpoint's program with BPF_PROG_TEST_RUN, for
//! `trace`: a private copy of this build's object whose policy maps are
//! the live pinned ones and whose counter (and monitor) maps are its own,
//! fresh ones, so the run sees exactly the live policy and changes no
//! counter anyone reads. A test run transmits nothing.

use aya::programs::{TestRun, TestRunOptions};
use macvswitch_common::{EndpointCounters, names};

use super::{
    PinLayout,
    compat::{check_pinned, expected_maps_cached},
    object::{check_embedded, classifier, loader, object_counters},
};
use crate::{
    EBPF_OBJECT,
    error::{Error, Result},
};

/// The maps a trace shares with the live data path: what decides, never
/// what counts. Every other map of the object is the copy's own.
const LIVE_MAPS: [&str; 7] = [
    names::MAP_POLICIES,
    names::MAP_PORTS,
    names::MAP_PORTS_HIGH,
    names::MAP_SOURCES,
    names::MAP_UPLINKS,
    names::MAP_UPLINKS_HIGH,
    names::MAP_CARRIAGE,
];

/// `struct __sk_buff` as `ctx_in`/`ctx_out`: its size on 6.x; an older
/// kernel accepts the longer buffer as long as the part it does not know
/// is zero.
const SKB_SIZE: usize = 192;
const SKB_MARK: usize = 8;
const SKB_IFINDEX: usize = 40;
const SKB_CB0: usize = 48;

/// What the program did with the frame.
#[derive(Clone, Debug)]
pub struct TestRunResult {
    /// The TC action it returned.
    pub return_code: u32,
    /// The frame after the program (a tag pushed into skb metadata does
    /// not show here; a popped inline tag is gone).
    pub data_out: Vec<u8>,
    /// `skb->mark` afterwards (a tag carried for the lower device's
    /// program is there).
    pub mark: u32,
    /// `skb->cb[0]`: a tag the program pushed into metadata, as
    /// `TPID << 16 | TCI` (0: none).
    pub pushed: u32,
    /// The copy's counters in the endpoint's slot: what it counted.
    pub counters: EndpointCounters,
}

/// Runs `frame` through this build's program `program` as the endpoint at
/// `ifindex` (counter slot `slot`) against the live policy maps under
/// `pins`.
pub fn test_run(
    pins: &PinLayout,
    program: &str,
    ifindex: u32,
    slot: u16,
    frame: &[u8],
) -> Result<TestRunResult> {
    check_embedded()?;
    if !pins.is_loaded() {
        return Err(Error::Refused(format!(
            "this build's programs are not loaded under {} (endpoints run another build's): run `macvswitch reload` first, so that trace runs what the endpoints run",
            pins.root().display()
        )));
    }
    let expected = expected_maps_cached()?;
    let mut loader = loader();
    for name in LIVE_MAPS {
        let path = pins.map(name);
        let spec = expected
            .iter()
            .find(|spec| spec.name == name)
            .ok_or_else(|| Error::Refused(format!("the eBPF object lacks map {name}")))?;
        if !path.exists() {
            return Err(Error::Refused(format!(
                "no live map {} to trace against",
                path.display()
            )));
        }
        if let Some(mismatch) = check_pinned(&path, spec) {
            return Err(Error::Refused(format!(
                "live map {name}: {mismatch}; run `macvswitch reload` first"
            )));
        }
        loader.map_pin_path(name, path);
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .map_err(|e| Error::bpf("loading a private copy of the eBPF object", e))?;
    let program_ref = classifier(&mut ebpf, program)?;
    program_ref
        .load()
        .map_err(|e| Error::bpf(format!("loading program {program}"), e))?;
    let mut ctx_in = [0u8; SKB_SIZE];
    // The kernel runs the program on the device with this ifindex (in our
    // network namespace), so the program finds the endpoint's policy.
    ctx_in[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_SIZE];
    // Room for tags the program might write inline.
    let mut data_out = vec![0u8; frame.len() + 64];
    let result = program_ref
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::default()
        })
        .map_err(|e| Error::bpf(format!("BPF_PROG_TEST_RUN of {program}"), e))?;
    data_out.truncate(result.data_size_out as usize);
    let word = |at: usize| u32::from_ne_bytes(ctx_out[at..at + 4].try_into().expect("4 bytes"));
    let counters = object_counters(&ebpf, slot)?;
    Ok(TestRunResult {
        return_code: result.return_value,
        data_out,
        mark: word(SKB_MARK),
        pushed: word(SKB_CB0),
        counters,
    })
}
