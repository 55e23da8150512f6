//! Proof of isolation: random and hostile frames across random port
//! policies, through the real TC programs (BPF_PROG_TEST_RUN) and through
//! the pure decision functions in `common/`, each compared with a reference
//! model written from the README's port model (`isolation_property/model.rs`),
//! plus an isolation invariant checked on every output independently of the
//! model.
//!
//! `cargo test` runs a short, seeded run (50,000 frames); `cargo xtask fuzz`
//! runs a million in a release build. Environment:
//! - `MSW_FUZZ_SEED`: the seed (decimal or 0x-hex); printed on every run;
//! - `MSW_FUZZ_FRAMES`: how many frames (each goes through both programs);
//! - `MSW_FUZZ_PER_POLICY`: frames per random policy (default 250).
//!
//! Under BPF_PROG_TEST_RUN a frame's tags are all inline: the case of an
//! outer tag in skb metadata goes through the pure functions only (every
//! frame is also tried that way). Frames shorter than an Ethernet header,
//! which BPF_PROG_TEST_RUN refuses, likewise.
//!
//! Towards the guest, a frame from another local endpoint carries its outer
//! tag in `skb->mark`: every frame is also tried that way, through the pure
//! functions and the real program (the mark set in the test run's context),
//! and must come out as the same frame with that tag in metadata would.

#[path = "isolation_property/generate.rs"]
mod generate;
#[path = "isolation_property/model.rs"]
mod model;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    fmt::Write as _,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{TestRun, TestRunOptions},
};
use macvswitch::kernel::datapath;
use macvswitch_common::{
    Action, Decision, DropReason, EndpointCounters, EndpointPolicy, FrameView, MarkCarriage,
    POLICY_CVLANS_LIMITED, POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, PORT_ACCESS, PORT_TRUNK,
    PORT_TUNNEL, PORT_UNTAGGED, VidSet, VlanKey, decide::VIEW_BYTES, names,
};

use generate::GenPolicy;
use macvswitch_tests::rng::Rng;
use model::{Dir, Outcome, TPID_AD, TPID_Q, Tag, Verdict, is_tpid};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
/// BPF_PROG_TEST_RUN runs TC programs on the loopback device.
const TEST_IFINDEX: u32 = 1;
/// `sizeof(struct __sk_buff)` and `offsetof(struct __sk_buff, cb)` in the
/// kernel UAPI (include/uapi/linux/bpf.h): 12 u32 fields precede `cb[5]`.
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_CB: usize = 48;
/// `offsetof(struct __sk_buff, mark)`: after `len` and `pkt_type`.
const SK_BUFF_MARK: usize = 8;
/// How many kinds of disagreements and violations are printed.
const SHOW_KINDS: usize = 40;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text}: not a number")))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for (i, b) in bytes.iter().enumerate() {
        if i == 12 || (i > 12 && i < 24 && (i - 12) % 4 == 0) {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn tag_text(tag: Option<Tag>) -> String {
    tag.map_or("-".into(), |t| {
        format!("{:04x}/{:04x} (vid {})", t.tpid, t.tci, t.vid())
    })
}

fn vid_ranges(policy: &EndpointPolicy) -> String {
    if policy.vids == VidSet::EMPTY {
        "-".into()
    } else {
        policy.vids.to_string()
    }
}

fn policy_text(policy: Option<&EndpointPolicy>) -> String {
    let Some(p) = policy else {
        return "no policy entry".into();
    };
    let kind = match p.kind {
        PORT_UNTAGGED => "untagged".to_string(),
        PORT_ACCESS => format!("access vlan {}", p.vlan),
        PORT_TRUNK => format!(
            "trunk {} native {}{}",
            vid_ranges(p),
            p.vlan,
            if p.has(POLICY_NATIVE_TAGGED) {
                " (tagged)"
            } else {
                ""
            }
        ),
        PORT_TUNNEL => format!(
            "tunnel svid {} cvlans {}",
            p.vlan,
            if p.has(POLICY_CVLANS_LIMITED) {
                vid_ranges(p)
            } else {
                "any".into()
            }
        ),
        other => format!("kind {other}?"),
    };
    let mac = p.mac.map(|b| format!("{b:02x}")).join(":");
    format!(
        "{kind}; priority {}; spoofing {}; mac {mac}",
        if p.has(POLICY_PRIORITY_SET) {
            p.priority.to_string()
        } else {
            "-".into()
        },
        if p.allows_mac_spoofing() {
            "allowed"
        } else {
            "no"
        },
    )
}

// ---------------------------------------------------------------------------
// The pure decision functions, fed as ebpf/src/frame.rs feeds them.

fn view(bytes: &[u8], meta: Option<Tag>) -> FrameView {
    let mut header = [0u8; VIEW_BYTES];
    let n = bytes.len().min(VIEW_BYTES);
    header[..n].copy_from_slice(&bytes[..n]);
    let meta = meta.map(|t| macvswitch_common::Tag {
        tpid: t.tpid,
        tci: t.tci,
    });
    FrameView::from_header(bytes.len() as u32, &header, meta)
}

/// `decide`'s decision carried out on the frame, in the model's terms.
fn pure(dir: Dir, policy: &EndpointPolicy, bytes: &[u8], meta: Option<Tag>) -> Outcome {
    let decide = match dir {
        Dir::FromGuest => macvswitch_common::from_guest,
        Dir::ToGuest => macvswitch_common::to_guest,
    };
    let Decision { action, vlan } = decide(policy, &view(bytes, meta));
    let mut out = bytes.to_vec();
    let mut meta_out = meta;
    let tag = |t: macvswitch_common::Tag| Tag {
        tpid: t.tpid,
        tci: t.tci,
    };
    let (verdict, pushed, popped) = match action {
        Action::Pass => (Verdict::Pass, None, false),
        Action::Push(t) => (Verdict::Pass, Some(tag(t)), false),
        Action::Pop => (Verdict::Pass, None, true),
        Action::PopPush(t) => (Verdict::Pass, Some(tag(t)), true),
        Action::Drop(reason) => (Verdict::Drop(Some(reason)), None, false),
    };
    if popped {
        if meta_out.is_none() && out.len() < 16 {
            // Nothing to pop: the kernel would fail; the model never pops
            // here, so the comparison reports it.
            return Outcome {
                verdict: Verdict::Drop(Some(DropReason::HelperFailed)),
                bytes: out,
                meta: meta_out,
                pushed: None,
                popped: false,
                vlan,
            };
        }
        model::pop_outer(&mut out, &mut meta_out);
    }
    if let Some(t) = pushed {
        model::push_outer(&mut out, &mut meta_out, t);
    }
    Outcome {
        verdict,
        bytes: out,
        meta: meta_out,
        pushed,
        popped,
        vlan,
    }
}

/// The programs' fast path must decide exactly as the full decision, where
/// it decides at all. Returns a description of a disagreement.
fn fast_disagrees(
    dir: Dir,
    policy: &EndpointPolicy,
    bytes: &[u8],
    meta: Option<Tag>,
    carried: Option<Tag>,
) -> Option<String> {
    if bytes.len() < 14 {
        return None;
    }
    let common = |t: Tag| macvswitch_common::Tag {
        tpid: t.tpid,
        tci: t.tci,
    };
    let glance = macvswitch_common::decide::Glance {
        len: bytes.len() as u32,
        ethertype: u16::from_be_bytes([bytes[12], bytes[13]]),
        src_is_own: bytes[6..12] == policy.mac,
        meta: meta.map(common),
        carried: carried.map(common),
    };
    let fast = macvswitch_common::decide::fast(policy, dir == Dir::ToGuest, &glance)?;
    let frame = view(bytes, meta).with_carried(carried.map(common));
    let full = match dir {
        Dir::FromGuest => macvswitch_common::from_guest(policy, &frame),
        Dir::ToGuest => macvswitch_common::to_guest(policy, &frame),
    };
    (fast != full).then(|| format!("fast path {fast:?}, full decision {full:?}"))
}

// ---------------------------------------------------------------------------
// The isolation invariant, independent of the model.

/// The frame with its metadata tag written inline, as a guest or the wire
/// finally sees it.
fn full(bytes: &[u8], meta: Option<Tag>) -> Vec<u8> {
    let mut frame = bytes.to_vec();
    if let Some(tag) = meta
        && frame.len() >= 12
    {
        frame.splice(12..12, tag.bytes());
    }
    frame
}

/// The first two tags of a complete frame. A cut-short outer tag is an
/// error; a cut-short second tag shows as `Err` in the second place (the
/// customer's business in a tunnel, a stacked tag anywhere else).
#[allow(clippy::type_complexity)]
fn tags(frame: &[u8]) -> Result<(Option<Tag>, Result<Option<Tag>, ()>), &'static str> {
    let be = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    if frame.len() < 14 {
        return Err("shorter than an Ethernet header");
    }
    let tag_at = |at: usize| -> Result<Option<Tag>, ()> {
        if !is_tpid(be(at)) {
            return Ok(None);
        }
        if frame.len() < at + 6 {
            return Err(());
        }
        Ok(Some(Tag {
            tpid: be(at),
            tci: be(at + 2),
        }))
    };
    let outer = tag_at(12).map_err(|()| "a tag cut short")?;
    let second = match outer {
        Some(_) => tag_at(16),
        None => Ok(None),
    };
    Ok((outer, second))
}

/// Whether a trunk carries `vid` (its list or its native VLAN).
fn trunk_has(p: &EndpointPolicy, vid: u16) -> bool {
    p.vids.contains(vid) || (p.vlan != 0 && vid == p.vlan)
}

/// `Some(why)` when a frame that passed the port leaves it in a VLAN (or
/// with a source MAC) the policy does not allow. `input` and `output` are
/// complete frames (metadata tags written inline).
fn isolation_violation(
    dir: Dir,
    p: &EndpointPolicy,
    input: &[u8],
    output: &[u8],
) -> Option<String> {
    let (out_outer, out_second) = match tags(output) {
        Ok(t) => t,
        Err(why) => return Some(format!("output frame: {why}")),
    };
    let limited = p.has(POLICY_CVLANS_LIMITED);
    let vid_of = |t: Result<Option<Tag>, ()>| t.ok().flatten().map(Tag::vid);
    let none = |t: Result<Option<Tag>, ()>| matches!(t, Ok(None));
    let text = |t: Result<Option<Tag>, ()>| t.map_or("(cut short)".into(), tag_text);
    match dir {
        Dir::FromGuest => {
            if !p.allows_mac_spoofing() && output[6..12] != p.mac {
                return Some("a foreign source MAC left the guest".into());
            }
            let ok = match p.kind {
                PORT_UNTAGGED => out_outer.is_none(),
                PORT_ACCESS => {
                    out_outer.is_some_and(|t| t.tpid == TPID_Q && t.vid() == p.vlan)
                        && none(out_second)
                }
                PORT_TRUNK => {
                    out_outer.is_some_and(|t| t.tpid == TPID_Q && trunk_has(p, t.vid()))
                        && none(out_second)
                }
                PORT_TUNNEL => {
                    out_outer.is_some_and(|t| t.tpid == TPID_AD && t.vid() == p.vlan)
                        && (!limited || vid_of(out_second).is_some_and(|v| p.vids.contains(v)))
                }
                _ => false,
            };
            (!ok).then(|| {
                format!(
                    "left the guest as outer {} / second {}",
                    tag_text(out_outer),
                    text(out_second)
                )
            })
        }
        Dir::ToGuest => {
            let (in_outer, in_second) = match tags(input) {
                Ok(t) => t,
                Err(why) => return Some(format!("input frame passed: {why}")),
            };
            let from_ok = match p.kind {
                PORT_UNTAGGED => {
                    in_outer.is_none()
                        || in_outer.is_some_and(|t| t.tpid == TPID_Q && t.vid() == 0)
                            && none(in_second)
                }
                PORT_ACCESS => in_outer.is_some_and(|t| t.tpid == TPID_Q && t.vid() == p.vlan),
                PORT_TRUNK => in_outer.is_some_and(|t| t.tpid == TPID_Q && trunk_has(p, t.vid())),
                PORT_TUNNEL => {
                    in_outer.is_some_and(|t| t.tpid == TPID_AD && t.vid() == p.vlan)
                        && (!limited || vid_of(in_second).is_some_and(|v| p.vids.contains(v)))
                }
                _ => false,
            };
            let to_ok = match p.kind {
                PORT_UNTAGGED | PORT_ACCESS => out_outer.is_none(),
                PORT_TRUNK => {
                    out_outer.is_none_or(|t| t.tpid == TPID_Q && trunk_has(p, t.vid()))
                        && none(out_second)
                }
                PORT_TUNNEL => !limited || out_outer.is_some_and(|t| p.vids.contains(t.vid())),
                _ => false,
            };
            (!(from_ok && to_ok)).then(|| {
                format!(
                    "reached the guest from outer {} / second {} as outer {} / second {}",
                    tag_text(in_outer),
                    text(in_second),
                    tag_text(out_outer),
                    text(out_second)
                )
            })
        }
    }
}

// ---------------------------------------------------------------------------
// The real programs.

struct Kernel {
    ebpf: Ebpf,
    /// Indexed by the policy's slot; generated policies all use slot 0.
    counters: PerCpuArray<MapData, EndpointCounters>,
    vlan_counters: PerCpuHashMap<MapData, VlanKey, EndpointCounters>,
    cpus: usize,
}

/// What one BPF_PROG_TEST_RUN showed.
struct Observed {
    retval: u32,
    bytes: Vec<u8>,
    /// `cb[0]`: the pushed tag as TPID << 16 | TCI, 0 if none.
    cb0: u32,
    /// `skb->mark` afterwards.
    mark: u32,
}

/// How the test object carries tags in the mark: the default mask with a
/// fixed pattern.
fn test_carriage() -> MarkCarriage {
    MarkCarriage::new(macvswitch_common::carriage::DEFAULT_MARK_MASK, 0x5a5a_0000)
        .expect("the default mask carries tags")
}

/// The pure decision for a frame whose outer tag `carried` is in the mark,
/// carried out as `to_guest` does: the verdict, the VLAN counted and the
/// frame the guest gets (the tag put into metadata on a pass, dropped with
/// the mark on a pop).
fn pure_carried(
    policy: &EndpointPolicy,
    bytes: &[u8],
    carried: Tag,
) -> (Verdict, Option<u16>, Vec<u8>) {
    let frame = view(bytes, None).with_carried(Some(macvswitch_common::Tag {
        tpid: carried.tpid,
        tci: carried.tci,
    }));
    let Decision { action, vlan } = macvswitch_common::to_guest(policy, &frame);
    match action {
        Action::Pass => (Verdict::Pass, vlan, full(bytes, Some(carried))),
        Action::Pop => (Verdict::Pass, vlan, full(bytes, None)),
        Action::Drop(reason) => (Verdict::Drop(Some(reason)), vlan, bytes.to_vec()),
        // Never towards a guest; a pass with the bytes unchanged makes the
        // comparison report it.
        Action::Push(_) | Action::PopPush(_) => (Verdict::Pass, vlan, bytes.to_vec()),
    }
}

impl Kernel {
    fn load() -> Self {
        let mut ebpf = datapath::load_object(&[names::PROG_FROM_GUEST, names::PROG_TO_GUEST])
            .expect("the object loads and the verifier accepts its programs");
        let counters = ebpf
            .take_map(names::MAP_COUNTERS)
            .expect("counters map")
            .try_into()
            .expect("per-cpu hash map");
        let vlan_counters = ebpf
            .take_map(names::MAP_VLAN_COUNTERS)
            .expect("vlan counters map")
            .try_into()
            .expect("per-cpu hash map");
        let cpus = aya::util::nr_cpus().expect("nr_cpus");
        datapath::set_object_uplink(&mut ebpf, 0, 0, Some(&test_carriage()))
            .expect("setting the carriage");
        Self {
            ebpf,
            counters,
            vlan_counters,
            cpus,
        }
    }

    /// A new policy (or none) with zeroed counters and no VLAN counters.
    fn set_policy(&mut self, policy: Option<&EndpointPolicy>) {
        datapath::set_object_policy(&mut self.ebpf, TEST_IFINDEX, policy).expect("set policy");
        let zeros = PerCpuValues::try_from(vec![EndpointCounters::ZERO; self.cpus]).expect("zeros");
        self.counters.set(0, zeros, 0).expect("reset counters");
        let keys: Vec<VlanKey> = self
            .vlan_counters
            .keys()
            .collect::<Result<_, _>>()
            .expect("vlan counter keys");
        for key in keys {
            self.vlan_counters
                .remove(&key)
                .expect("remove vlan counter");
        }
    }

    fn run(&mut self, dir: Dir, frame: &[u8]) -> Observed {
        self.run_marked(dir, frame, 0)
    }

    /// One run with `skb->mark = mark`.
    fn run_marked(&mut self, dir: Dir, frame: &[u8], mark: u32) -> Observed {
        let name = match dir {
            Dir::FromGuest => names::PROG_FROM_GUEST,
            Dir::ToGuest => names::PROG_TO_GUEST,
        };
        let program = datapath::classifier(&mut self.ebpf, name).expect("classifier");
        let mut out = vec![0u8; frame.len() + 64];
        let mut ctx_in = [0u8; SK_BUFF_SIZE];
        ctx_in[SK_BUFF_MARK..SK_BUFF_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = [0u8; SK_BUFF_SIZE];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| {
                panic!(
                    "BPF_PROG_TEST_RUN of {dir:?} on [{}] ({} bytes): {e}",
                    hex(frame),
                    frame.len()
                )
            });
        out.truncate(result.data_size_out as usize);
        let cb0 = u32::from_ne_bytes(
            ctx_out[SK_BUFF_CB..SK_BUFF_CB + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let mark = u32::from_ne_bytes(
            ctx_out[SK_BUFF_MARK..SK_BUFF_MARK + 4]
                .try_into()
                .expect("4 bytes"),
        );
        Observed {
            retval: result.return_value,
            bytes: out,
            cb0,
            mark,
        }
    }

    fn sum(values: PerCpuValues<EndpointCounters>) -> EndpointCounters {
        let mut total = EndpointCounters::ZERO;
        for per_cpu in values.iter() {
            total.accumulate(per_cpu);
        }
        total
    }

    fn endpoint_counters(&self) -> EndpointCounters {
        Self::sum(self.counters.get(&0, 0).expect("counters"))
    }

    fn vlan_counter_map(&self) -> StdHashMap<u16, EndpointCounters> {
        self.vlan_counters
            .iter()
            .map(|entry| {
                let (key, values) = entry.expect("vlan counters");
                assert_eq!(
                    key.ifindex, TEST_IFINDEX,
                    "a VLAN counter of another ifindex"
                );
                (key.vid, Self::sum(values))
            })
            .collect()
    }
}

/// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, and
/// (since the skb's protocol is taken from the type field) IPv4 and IPv6
/// frames shorter than their network header: those go through the pure
/// functions only.
fn test_run_accepts(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return false;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() >= 14 + 20,
        0x86dd => frame.len() >= 14 + 40,
        _ => true,
    }
}

/// The model's outcome as BPF_PROG_TEST_RUN shows it: a pushed tag lives
/// in skb metadata (so only in `cb[0]`), and `bpf_skb_vlan_pop` of an
/// inline tag moves the tag under it, if it is 802.1Q or 802.1ad, into skb
/// metadata too (`skb_vlan_pop`: "move next vlan tag to hw accel tag").
fn as_test_run(expected: &Outcome) -> (u32, Vec<u8>, u32) {
    if expected.verdict != Verdict::Pass {
        return (TC_ACT_SHOT, Vec::new(), 0);
    }
    let mut bytes = expected.bytes.clone();
    if expected.popped && expected.pushed.is_none() && bytes.len() >= 18 {
        let next = u16::from_be_bytes([bytes[12], bytes[13]]);
        if matches!(next, TPID_Q | TPID_AD) {
            bytes.drain(12..16);
        }
    }
    let cb0 = expected
        .pushed
        .map_or(0, |t| (u32::from(t.tpid) << 16) | u32::from(t.tci));
    (TC_ACT_OK, bytes, cb0)
}

/// The complete frame a test-run output stands for: the tag moved into
/// metadata by a pop (seen as 8 bytes gone, the 4 under the popped tag
/// matching) and the pushed tag (from `cb[0]`) written back inline.
fn observed_full(input: &[u8], observed: &Observed) -> Vec<u8> {
    let mut frame = observed.bytes.clone();
    let out = &observed.bytes;
    if out.len() + 8 == input.len()
        && out.len() >= 12
        && out[..12] == input[..12]
        && out[12..] == input[20..]
    {
        frame.splice(12..12, input[16..20].iter().copied());
    }
    if observed.cb0 != 0 {
        frame.splice(12..12, observed.cb0.to_be_bytes());
    }
    frame
}

// ---------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    frames: u64,
    test_runs: u64,
    /// Frames (per direction) BPF_PROG_TEST_RUN does not take.
    test_run_refused: u64,
    pure_runs: u64,
    disagreements: u64,
    /// Those of the programs' verdicts and output bytes.
    program_disagreements: u64,
    violations: u64,
    /// Per kind of finding: how many, and the first one in full.
    kinds: BTreeMap<String, (u64, String)>,
    /// What the model said, per direction and port kind: the coverage.
    coverage: BTreeMap<(String, String), u64>,
}

impl Tally {
    fn note(&mut self, kind: String, detail: impl FnOnce() -> String) {
        let entry = self.kinds.entry(kind).or_insert_with(|| (0, String::new()));
        if entry.0 == 0 {
            entry.1 = detail();
        }
        entry.0 += 1;
    }

    fn disagree(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.disagreements += 1;
        self.note(format!("DISAGREEMENT {kind}"), detail);
    }

    fn violate(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.violations += 1;
        self.note(format!("VIOLATION {kind}"), detail);
    }

    fn cover(&mut self, dir: Dir, policy: Option<&EndpointPolicy>, verdict: Verdict) {
        let key = (
            format!("{dir:?} {}", port_kind(policy)),
            verdict_text(verdict),
        );
        *self.coverage.entry(key).or_default() += 1;
    }

    fn print_coverage(&self) {
        let mut line = String::new();
        let mut current = None;
        for ((port, verdict), count) in &self.coverage {
            if current != Some(port) {
                if !line.is_empty() {
                    println!("{line}");
                }
                line = format!("  {port:<19}");
                current = Some(port);
            }
            let _ = write!(line, " {verdict} {count},");
        }
        println!("{line}");
    }

    fn print(&self) {
        for (shown, (kind, (count, first))) in self.kinds.iter().enumerate() {
            if shown == SHOW_KINDS {
                println!("... and {} more kinds", self.kinds.len() - SHOW_KINDS);
                break;
            }
            println!("{kind}: {count} times; the first:\n{first}\n");
        }
    }
}

fn port_kind(policy: Option<&EndpointPolicy>) -> &'static str {
    match policy.map(|p| p.kind) {
        None => "no-policy",
        Some(PORT_UNTAGGED) => "untagged",
        Some(PORT_ACCESS) => "access",
        Some(PORT_TRUNK) => "trunk",
        Some(PORT_TUNNEL) => "tunnel",
        Some(_) => "unknown",
    }
}

fn verdict_text(verdict: Verdict) -> String {
    match verdict {
        Verdict::Pass => "pass".into(),
        Verdict::Drop(Some(reason)) => reason.name().into(),
        Verdict::Drop(None) => "drop".into(),
    }
}

/// A short name for a kind of finding, to group them.
fn kind_text(
    what: &str,
    dir: Dir,
    policy: Option<&EndpointPolicy>,
    meta: Option<Tag>,
    model: &Outcome,
    got: &str,
) -> String {
    format!(
        "{what} {dir:?} {}{}: model {} got {got}",
        port_kind(policy),
        if meta.is_some() {
            " (metadata tag)"
        } else {
            ""
        },
        verdict_text(model.verdict)
    )
}

fn outcome_text(o: &Outcome) -> String {
    format!(
        "{:?}, bytes [{}], meta {}, pushed {}, popped {}, vlan {:?}",
        o.verdict,
        hex(&o.bytes),
        tag_text(o.meta),
        tag_text(o.pushed),
        o.popped,
        o.vlan
    )
}

fn case_text(
    what: &str,
    dir: Dir,
    policy: Option<&EndpointPolicy>,
    bytes: &[u8],
    meta: Option<Tag>,
) -> String {
    format!(
        "{what} {dir:?}\n  policy: {}\n  frame ({} bytes): [{}]\n  skb metadata tag: {}",
        policy_text(policy),
        bytes.len(),
        hex(bytes),
        tag_text(meta)
    )
}

/// Expected counters, kept alongside the kernel's.
#[derive(Default)]
struct Expected {
    endpoint: Option<EndpointCounters>,
    vlans: StdHashMap<u16, EndpointCounters>,
}

impl Expected {
    /// Counts a frame of `len` bytes as the model's `outcome` does: the
    /// endpoint always, its VLAN when the model counts one (a drop counts
    /// no bytes). Returns the endpoint's counters before.
    fn count(&mut self, dir: Dir, outcome: &Outcome, len: usize) -> EndpointCounters {
        let len = if outcome.verdict == Verdict::Pass {
            len
        } else {
            0
        };
        let endpoint = self.endpoint.get_or_insert(EndpointCounters::ZERO);
        let before = *endpoint;
        count(endpoint, dir, outcome.verdict, len);
        if let Some(vid) = outcome.vlan {
            let vlan = self.vlans.entry(vid).or_insert(EndpointCounters::ZERO);
            count(vlan, dir, outcome.verdict, len);
        }
        before
    }
}

fn count(counters: &mut EndpointCounters, dir: Dir, verdict: Verdict, bytes: usize) {
    match verdict {
        Verdict::Pass => {
            let (packets, total) = match dir {
                Dir::ToGuest => (&mut counters.to_guest_packets, &mut counters.to_guest_bytes),
                Dir::FromGuest => (
                    &mut counters.from_guest_packets,
                    &mut counters.from_guest_bytes,
                ),
            };
            *packets += 1;
            *total += bytes as u64;
        }
        Verdict::Drop(Some(reason)) => counters.drops[reason as usize] += 1,
        Verdict::Drop(None) => {}
    }
}

/// One frame, both directions: the model, the pure functions (with and
/// without a metadata tag) and, when `kernel` is there, the programs.
fn check_frame(
    tally: &mut Tally,
    rng: &mut Rng,
    port: &GenPolicy,
    policy: Option<&EndpointPolicy>,
    frame: &[u8],
    kernel: Option<(&mut Kernel, &mut Expected)>,
) {
    tally.frames += 1;
    let meta_variant = generate::with_meta(rng, port, frame);
    let mut kernel = kernel;
    for dir in [Dir::FromGuest, Dir::ToGuest] {
        // The pure functions, inline tags only, then with a metadata tag.
        if let Some(p) = policy {
            for (bytes, meta) in [
                (frame, None),
                (meta_variant.0.as_slice(), Some(meta_variant.1)),
            ] {
                tally.pure_runs += 1;
                if let Some(why) = fast_disagrees(dir, p, bytes, meta, None) {
                    let kind = format!("fast path {dir:?} {}", port_kind(policy));
                    tally.disagree(kind, || {
                        format!(
                            "{}\n  {why}",
                            case_text("fast path", dir, policy, bytes, meta)
                        )
                    });
                }
                let expected = model::model(dir, policy, bytes, meta);
                tally.cover(dir, policy, expected.verdict);
                let got = pure(dir, p, bytes, meta);
                if got != expected {
                    let what = if got.verdict == expected.verdict {
                        "decide (output)"
                    } else {
                        "decide"
                    };
                    let kind = kind_text(
                        what,
                        dir,
                        policy,
                        meta,
                        &expected,
                        &verdict_text(got.verdict),
                    );
                    tally.disagree(kind, || {
                        format!(
                            "{}\n  model: {}\n  decide: {}",
                            case_text("decide vs model", dir, policy, bytes, meta),
                            outcome_text(&expected),
                            outcome_text(&got)
                        )
                    });
                }
                if got.verdict == Verdict::Pass
                    && let Some(why) =
                        isolation_violation(dir, p, &full(bytes, meta), &full(&got.bytes, got.meta))
                {
                    let kind = format!("decide {dir:?} {}", port_kind(policy));
                    tally.violate(kind, || {
                        format!(
                            "{}\n  decide: {}\n  {why}",
                            case_text("decide", dir, policy, bytes, meta),
                            outcome_text(&got)
                        )
                    });
                }
            }
        }
        // Towards the guest: the outer tag carried in the mark.
        if dir == Dir::ToGuest
            && let Some(p) = policy
        {
            let (bytes, carried) = (meta_variant.0.as_slice(), meta_variant.1);
            let expected = model::model(dir, policy, bytes, Some(carried));
            let want = (
                expected.verdict,
                expected.vlan,
                full(&expected.bytes, expected.meta),
            );
            tally.pure_runs += 1;
            if let Some(why) = fast_disagrees(dir, p, bytes, None, Some(carried)) {
                let kind = format!("fast path (mark) {dir:?} {}", port_kind(policy));
                tally.disagree(kind, || {
                    format!(
                        "{}\n  {why}",
                        case_text("fast path (mark)", dir, policy, bytes, Some(carried))
                    )
                });
            }
            let got = pure_carried(p, bytes, carried);
            let same =
                got.0 == want.0 && got.1 == want.1 && (got.0 != Verdict::Pass || got.2 == want.2);
            if !same {
                let kind = kind_text(
                    "decide (mark)",
                    dir,
                    policy,
                    Some(carried),
                    &expected,
                    &verdict_text(got.0),
                );
                tally.disagree(kind, || {
                    format!(
                        "{}\n  model: {}\n  decide with the tag in the mark: {:?}, VLAN {:?}, [{}]",
                        case_text("decide (mark) vs model", dir, policy, bytes, Some(carried)),
                        outcome_text(&expected),
                        got.0,
                        got.1,
                        hex(&got.2)
                    )
                });
            }
            if let Some((kernel, expected_counters)) = kernel.as_mut()
                && test_run_accepts(bytes)
            {
                tally.test_runs += 1;
                let mark = test_carriage().carry(
                    0,
                    macvswitch_common::Tag {
                        tpid: carried.tpid,
                        tci: carried.tci,
                    },
                );
                let observed = kernel.run_marked(dir, bytes, mark);
                let pass = observed.retval == TC_ACT_OK;
                let pushed = (observed.cb0 != 0).then_some(Tag {
                    tpid: (observed.cb0 >> 16) as u16,
                    tci: observed.cb0 as u16,
                });
                let seen = full(&observed.bytes, pushed);
                let ok = pass == (expected.verdict == Verdict::Pass)
                    && (!pass || (seen == want.2 && observed.mark == 0));
                if !ok {
                    tally.program_disagreements += 1;
                    let kind = kind_text(
                        "program (mark)",
                        dir,
                        policy,
                        Some(carried),
                        &expected,
                        if pass { "pass" } else { "drop" },
                    );
                    tally.disagree(kind, || {
                        format!(
                            "{}\n  model: {}\n  program: verdict {}, guest sees [{}], mark after {:08x}",
                            case_text("program (mark) vs model", dir, policy, bytes, Some(carried)),
                            outcome_text(&expected),
                            observed.retval,
                            hex(&seen),
                            observed.mark
                        )
                    });
                }
                if pass
                    && let Some(why) =
                        isolation_violation(dir, p, &full(bytes, Some(carried)), &seen)
                {
                    let kind = format!("program (mark) {dir:?} {}", port_kind(policy));
                    tally.violate(kind, || {
                        format!(
                            "{}\n  {why}",
                            case_text("program (mark)", dir, policy, bytes, Some(carried))
                        )
                    });
                }
                // The counters move as for any frame to the guest.
                expected_counters.count(dir, &expected, bytes.len());
            }
        }
        // The real program.
        let Some((kernel, expected_counters)) = kernel.as_mut() else {
            continue;
        };
        if !test_run_accepts(frame) {
            tally.test_run_refused += 1;
            continue;
        }
        tally.test_runs += 1;
        let expected = model::model(dir, policy, frame, None);
        let (retval, bytes, cb0) = as_test_run(&expected);
        let observed = kernel.run(dir, frame);
        let verdict_ok = observed.retval == retval;
        let pass = observed.retval == TC_ACT_OK;
        let output_ok = !pass || (observed.bytes == bytes && observed.cb0 == cb0);
        let run_ok = verdict_ok && output_ok;
        if !run_ok {
            tally.program_disagreements += 1;
            let what = if verdict_ok {
                "program (output)"
            } else {
                "program"
            };
            let got = if pass { "pass" } else { "drop" };
            let kind = kind_text(what, dir, policy, None, &expected, got);
            tally.disagree(kind, || {
                format!(
                    "{}\n  model: {}\n    as test-run: verdict {retval}, bytes [{}], cb[0] {cb0:08x}\n  \
                     program: verdict {}, bytes [{}], cb[0] {:08x}",
                    case_text("program vs model", dir, policy, frame, None),
                    outcome_text(&expected),
                    hex(&bytes),
                    observed.retval,
                    hex(&observed.bytes),
                    observed.cb0
                )
            });
        }
        if pass {
            match policy {
                Some(p) => {
                    if let Some(why) =
                        isolation_violation(dir, p, frame, &observed_full(frame, &observed))
                    {
                        let kind = format!("program {dir:?} {}", port_kind(policy));
                        tally.violate(kind, || {
                            format!(
                                "{}\n  program: bytes [{}], cb[0] {:08x}\n  {why}",
                                case_text("program", dir, policy, frame, None),
                                hex(&observed.bytes),
                                observed.cb0
                            )
                        });
                    }
                }
                None => tally.violate("program passed without policy".into(), || {
                    case_text(
                        "program passed a frame without policy",
                        dir,
                        policy,
                        frame,
                        None,
                    )
                }),
            }
        }
        // Counters: the endpoint's after every run; the VLAN's when the
        // model counts one (all of them at the end of the policy).
        let before = expected_counters.count(dir, &expected, bytes.len());
        {
            let got = kernel.endpoint_counters();
            let want = expected_counters.endpoint.expect("set above");
            if got != want && run_ok {
                let kind = kind_text(
                    "counters",
                    dir,
                    policy,
                    None,
                    &expected,
                    &counted(&before, &got),
                );
                tally.disagree(kind, || {
                    format!(
                        "{}\n  model: {}\n  endpoint counters: want {want:?}\n  got {got:?}",
                        case_text("counters vs model", dir, policy, frame, None),
                        outcome_text(&expected)
                    )
                });
            }
            if got != want {
                // Resynchronise so one miscount is reported once.
                expected_counters.endpoint = Some(got);
            }
        }
    }
}

/// What the counters went up by, as a verdict.
fn counted(before: &EndpointCounters, after: &EndpointCounters) -> String {
    if after.to_guest_packets != before.to_guest_packets
        || after.from_guest_packets != before.from_guest_packets
    {
        return "pass".into();
    }
    let reasons: Vec<&str> = DropReason::ALL
        .iter()
        .filter(|r| after.drops[**r as usize] != before.drops[**r as usize])
        .map(|r| r.name())
        .collect();
    if reasons.is_empty() {
        "nothing counted".into()
    } else {
        reasons.join("+")
    }
}

/// The VLAN counters of a policy's run against the model's.
fn check_vlan_counters(
    tally: &mut Tally,
    kernel: &Kernel,
    policy: Option<&EndpointPolicy>,
    expected: &Expected,
) {
    let got = kernel.vlan_counter_map();
    let mut vids: Vec<u16> = got.keys().chain(expected.vlans.keys()).copied().collect();
    vids.sort_unstable();
    vids.dedup();
    for vid in vids {
        let (want, have) = (expected.vlans.get(&vid), got.get(&vid));
        if want != have {
            let kind = format!("VLAN counters {}", port_kind(policy));
            tally.disagree(kind, || {
                format!(
                    "VLAN counters of VID {vid} after a policy's frames\n  policy: {}\n  \
                     model: {want:?}\n  program: {have:?}",
                    policy_text(policy)
                )
            });
        }
    }
}

#[test]
fn no_frame_leaves_its_vlan() {
    let seed = env_u64("MSW_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let frames = env_u64("MSW_FUZZ_FRAMES").unwrap_or(50_000);
    let per_policy = env_u64("MSW_FUZZ_PER_POLICY").unwrap_or(250).max(1);
    println!(
        "isolation property: seed {seed:#x} (MSW_FUZZ_SEED), {frames} frames (MSW_FUZZ_FRAMES), \
         {per_policy} per policy"
    );
    let mut kernel = if macvswitch_tests::is_root() {
        Some(Kernel::load())
    } else {
        eprintln!(
            "isolation property: not root, so only the pure decision functions are checked; \
             BPF_PROG_TEST_RUN of the real programs needs root"
        );
        None
    };
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut policies = 0u64;
    let start = Instant::now();
    while tally.frames < frames {
        let port = generate::policy(&mut rng);
        // Now and then the device has no policy at all: fail closed.
        let policy = (!rng.chance(1)).then_some(&port.policy);
        policies += 1;
        let mut expected = Expected::default();
        if let Some(kernel) = kernel.as_mut() {
            kernel.set_policy(policy);
        }
        let batch = per_policy.min(frames - tally.frames);
        let disagreements_before = tally.program_disagreements;
        for _ in 0..batch {
            let frame = generate::frame(&mut rng, &port);
            check_frame(
                &mut tally,
                &mut rng,
                &port,
                policy,
                &frame,
                kernel.as_mut().map(|k| (k, &mut expected)),
            );
        }
        // After a program disagreed on a frame the VLAN counters are off
        // too; that is reported already.
        if let Some(kernel) = kernel.as_ref()
            && tally.program_disagreements == disagreements_before
        {
            check_vlan_counters(&mut tally, kernel, policy, &expected);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("model verdicts over the frames (pure decisions, with and without a metadata tag):");
    tally.print_coverage();
    tally.print();
    println!(
        "isolation property: {} frames in {secs:.1} s ({:.0} frames/s), {policies} policies, \
         {} BPF_PROG_TEST_RUN runs ({} refused by it: pure only), {} pure decisions; \
         disagreements {}, violations {} (seed {seed:#x})",
        tally.frames,
        tally.frames as f64 / secs,
        tally.test_runs,
        tally.test_run_refused,
        tally.pure_runs,
        tally.disagreements,
        tally.violations,
    );
    assert!(
        tally.disagreements == 0 && tally.violations == 0,
        "{} disagreements, {} isolation violations (seed {seed:#x}; first ones above)",
        tally.disagreements,
        tally.violations
    );
}
