//! The one way the embedded eBPF object is loaded: production's pinned
//! load ([`super::Datapath::load`]) builds on [`loader`] and
//! [`classifier`], and the BPF_PROG_TEST_RUN tests, the property test and
//! the benchmarks take a private, unpinned copy with [`load_object`], so
//! that what they run is what production runs (same globals, same
//! verifier).

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, PerCpuArray},
    programs::SchedClassifier,
};
use macvswitch_common::{
    EndpointCounters, EndpointPolicy, IFINDEX_DIRECT, MarkCarriage, PortWord, UplinkConfig, names,
};

use super::maps::{map_err, per_cpu};
use crate::{
    EBPF_OBJECT,
    error::{Error, Result},
};

/// The loader every copy of the object goes through: production adds its
/// map pin paths, the private copies nothing.
pub fn loader<'a>() -> EbpfLoader<'a> {
    EbpfLoader::new()
}

/// Refuses a binary built without the eBPF object (`AYA_BUILD_SKIP=1`).
pub fn check_embedded() -> Result<()> {
    if EBPF_OBJECT.is_empty() {
        return Err(Error::Refused(
            "this binary was built with AYA_BUILD_SKIP=1 and carries no eBPF object".into(),
        ));
    }
    Ok(())
}

/// A private, unpinned copy of the object (maps of its own), with the
/// programs `programs` loaded into the kernel, i.e. past the verifier.
pub fn load_object(programs: &[&str]) -> Result<Ebpf> {
    check_embedded()?;
    let mut ebpf = loader()
        .load(EBPF_OBJECT)
        .map_err(|e| Error::bpf("loading the eBPF object", e))?;
    for &name in programs {
        classifier(&mut ebpf, name)?
            .load()
            .map_err(|e| Error::bpf(format!("loading program {name}"), e))?;
    }
    Ok(ebpf)
}

/// The TC program `name` of a loaded object.
pub fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Refused(format!("the eBPF object lacks program {name}")))?
        .try_into()
        .map_err(|e| Error::bpf(format!("program {name}"), e))
}

/// Writes (or with `None` removes) the policy of the port at `ifindex` in a
/// freshly loaded, unpinned object: for BPF_PROG_TEST_RUN tests and the
/// benchmarks, where no program runs concurrently. Production goes through
/// [`super::Maps::set_policy`].
pub fn set_object_policy(
    ebpf: &mut aya::Ebpf,
    ifindex: u32,
    policy: Option<&EndpointPolicy>,
) -> Result<()> {
    let word = match policy {
        Some(policy) => {
            let word = PortWord::new(policy.slot, 1);
            let mut policies: Array<_, EndpointPolicy> = object_map(ebpf, names::MAP_POLICIES)?;
            policies
                .set(word.policy_index().expect("copy 1"), policy, 0)
                .map_err(map_err("writing a policy".into()))?;
            word
        }
        None => PortWord::NONE,
    };
    if ifindex < IFINDEX_DIRECT {
        let mut ports: Array<_, u32> = object_map(ebpf, names::MAP_PORTS)?;
        ports
            .set(ifindex, word.0, 0)
            .map_err(map_err("writing a port".into()))
    } else {
        let mut ports: HashMap<_, u32, u32> = object_map(ebpf, names::MAP_PORTS_HIGH)?;
        ports
            .insert(ifindex, word.0, 0)
            .map_err(map_err("writing a port".into()))
    }
}

/// Sets the flags of lower device `lower` (below `IFINDEX_DIRECT`) and, if
/// `carriage` is given, how tags travel in the mark, in an unpinned object
/// (see [`set_object_policy`]).
pub fn set_object_uplink(
    ebpf: &mut aya::Ebpf,
    lower: u32,
    flags: u32,
    carriage: Option<&MarkCarriage>,
) -> Result<()> {
    let mut uplinks: Array<_, UplinkConfig> = object_map(ebpf, names::MAP_UPLINKS)?;
    uplinks
        .set(lower, UplinkConfig { flags }, 0)
        .map_err(map_err("writing an uplink".into()))?;
    if let Some(carriage) = carriage {
        let mut map: Array<_, MarkCarriage> = object_map(ebpf, names::MAP_CARRIAGE)?;
        map.set(0, carriage, 0)
            .map_err(map_err("writing the carriage".into()))?;
    }
    Ok(())
}

/// Starts the counters in `slot` from zero in an unpinned object.
pub fn reset_object_counters(ebpf: &mut Ebpf, slot: u16) -> Result<()> {
    let mut counters: PerCpuArray<_, EndpointCounters> = object_map(ebpf, names::MAP_COUNTERS)?;
    counters
        .set(u32::from(slot), per_cpu(EndpointCounters::ZERO)?, 0)
        .map_err(map_err(format!("resetting the counters in slot {slot}")))
}

/// The counters in `slot` of an unpinned object, summed over CPUs.
pub fn object_counters(ebpf: &Ebpf, slot: u16) -> Result<EndpointCounters> {
    let map = ebpf.map(names::MAP_COUNTERS).ok_or_else(|| {
        Error::Refused(format!("the eBPF object lacks map {}", names::MAP_COUNTERS))
    })?;
    let counters: PerCpuArray<_, EndpointCounters> =
        PerCpuArray::try_from(map).map_err(map_err(format!("opening {}", names::MAP_COUNTERS)))?;
    let per_cpu = counters
        .get(&u32::from(slot), 0)
        .map_err(map_err(format!("reading the counters in slot {slot}")))?;
    let mut total = EndpointCounters::ZERO;
    for c in per_cpu.iter() {
        total.accumulate(c);
    }
    Ok(total)
}

fn object_map<'a, T>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| Error::Refused(format!("the eBPF object lacks map {name}")))?;
    T::try_from(map).map_err(map_err(format!("opening {name}")))
}
