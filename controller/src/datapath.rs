//! The kernel side: loading, pinning and attaching the TC programs, and
//! reading and writing their maps.
//!
//! Layout under the bpffs directory:
//! - `progs/from_guest`, `progs/to_guest`: the programs, loaded once;
//! - `maps/POLICIES`, `maps/COUNTERS`, `maps/AYA_LOGS`: shared by all endpoints;
//! - `links/NAME/egress`, `links/NAME/ingress`: the TCX links of endpoint
//!   NAME (escaped: bpffs refuses '.' in names, interface names allow it).
//!
//! Everything is pinned, so forwarding goes on after the process exits and
//! the next invocation adopts what is there.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{HashMap, Map, MapData, PerCpuHashMap},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, TcAttachOptions},
    },
    util::KernelVersion,
};
use macvswitch_common::{
    EndpointCounters, EndpointPolicy, SourceInfo, SourceKey, UplinkConfig, UplinkCounters, VlanKey,
    names,
};

use crate::{
    EBPF_OBJECT,
    error::{Error, Result},
};

/// aya-log level compiled into the programs at load: info, so that the
/// per-drop debug logs cost a compare and nothing more.
const EBPF_LOG_LEVEL: u8 = 3;
const MAP_AYA_LOGS: &str = "AYA_LOGS";

/// Where the pins live.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }

    fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    fn links_of(&self, endpoint: &str) -> PathBuf {
        self.root.join("links").join(escape_pin_name(endpoint))
    }

    fn link(&self, endpoint: &str, hook: Hook) -> PathBuf {
        self.links_of(endpoint).join(hook.suffix())
    }

    fn uplink_link(&self, lower: &str) -> PathBuf {
        self.root
            .join("uplinks")
            .join(escape_pin_name(lower))
            .join("egress")
    }

    fn is_loaded(&self) -> bool {
        PROGRAMS.iter().all(|name| self.prog(name).exists())
    }
}

/// Every program of the object that the controller loads.
const PROGRAMS: [&str; 3] = [
    names::PROG_FROM_GUEST,
    names::PROG_TO_GUEST,
    names::PROG_UPLINK_EGRESS,
];

/// The two hooks of an endpoint.
#[derive(Clone, Copy, Debug)]
enum Hook {
    /// The macvtap's egress: frames the guest wrote.
    FromGuest,
    /// The macvtap's ingress: frames for the guest.
    ToGuest,
}

impl Hook {
    const ALL: [Hook; 2] = [Hook::FromGuest, Hook::ToGuest];

    fn suffix(self) -> &'static str {
        match self {
            Hook::FromGuest => "egress",
            Hook::ToGuest => "ingress",
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::FromGuest => TcAttachType::Egress,
            Hook::ToGuest => TcAttachType::Ingress,
        }
    }
}

fn map_err(context: String) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |e| Error::bpf(context, e)
}

/// The maps, opened from their pins.
pub struct Maps {
    policies: HashMap<MapData, u32, EndpointPolicy>,
    counters: PerCpuHashMap<MapData, u32, EndpointCounters>,
    vlan_counters: PerCpuHashMap<MapData, VlanKey, EndpointCounters>,
    sources: HashMap<MapData, SourceKey, SourceInfo>,
    uplinks: HashMap<MapData, u32, UplinkConfig>,
    uplink_counters: PerCpuHashMap<MapData, u32, UplinkCounters>,
}

/// The data path's maps, by name, in the order `Maps::from_maps` takes them.
const MAP_NAMES: [&str; 6] = [
    names::MAP_POLICIES,
    names::MAP_COUNTERS,
    names::MAP_VLAN_COUNTERS,
    names::MAP_SOURCES,
    names::MAP_UPLINKS,
    names::MAP_UPLINK_COUNTERS,
];

impl Maps {
    fn from_maps(
        [
            policies,
            counters,
            vlan_counters,
            sources,
            uplinks,
            uplink_counters,
        ]: [Map; 6],
    ) -> Result<Self> {
        Ok(Self {
            sources: HashMap::try_from(sources)
                .map_err(map_err(format!("opening {}", names::MAP_SOURCES)))?,
            uplinks: HashMap::try_from(uplinks)
                .map_err(map_err(format!("opening {}", names::MAP_UPLINKS)))?,
            uplink_counters: PerCpuHashMap::try_from(uplink_counters)
                .map_err(map_err(format!("opening {}", names::MAP_UPLINK_COUNTERS)))?,
            policies: HashMap::try_from(policies)
                .map_err(map_err(format!("opening {}", names::MAP_POLICIES)))?,
            counters: PerCpuHashMap::try_from(counters)
                .map_err(map_err(format!("opening {}", names::MAP_COUNTERS)))?,
            vlan_counters: PerCpuHashMap::try_from(vlan_counters)
                .map_err(map_err(format!("opening {}", names::MAP_VLAN_COUNTERS)))?,
        })
    }

    /// Opens the pinned maps, if the data path was ever loaded here.
    pub fn open(pins: &PinLayout) -> Result<Option<Self>> {
        let open = |name: &str| -> Result<Option<Map>> {
            match MapData::from_pin(pins.map(name)) {
                Ok(data) => Map::from_map_data(data)
                    .map(Some)
                    .map_err(map_err(format!("opening pinned map {name}"))),
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.kind() == io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(e) => Err(Error::bpf(format!("opening pinned map {name}"), e)),
            }
        };
        let mut maps = Vec::with_capacity(MAP_NAMES.len());
        for name in MAP_NAMES {
            match open(name)? {
                Some(map) => maps.push(map),
                // Missing (never loaded, or pinned by an older build).
                None => return Ok(None),
            }
        }
        let maps: [Map; 6] = maps.try_into().map_err(|_| ()).expect("one map per name");
        Self::from_maps(maps).map(Some)
    }

    pub fn set_policy(&mut self, ifindex: u32, policy: &EndpointPolicy) -> Result<()> {
        self.policies
            .insert(ifindex, policy, 0)
            .map_err(map_err(format!("writing the policy of ifindex {ifindex}")))
    }

    /// Starts counting for `ifindex` from zero.
    pub fn reset_counters(&mut self, ifindex: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::io("counting CPUs", e))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![EndpointCounters::ZERO; cpus])
            .map_err(|e| Error::io("building per-CPU counters", e))?;
        self.counters
            .insert(ifindex, zeros, 0)
            .map_err(map_err(format!(
                "resetting the counters of ifindex {ifindex}"
            )))
    }

    /// Records a local endpoint as a sender on its lower device.
    pub fn set_source(
        &mut self,
        lower: u32,
        mac: crate::types::Mac,
        info: &SourceInfo,
    ) -> Result<()> {
        self.sources
            .insert(SourceKey::new(lower, mac.octets()), info, 0)
            .map_err(map_err(format!("recording sender {mac}")))
    }

    pub fn remove_source(&mut self, lower: u32, mac: crate::types::Mac) -> Result<()> {
        ignore_missing(self.sources.remove(&SourceKey::new(lower, mac.octets())))
            .map_err(|e| Error::bpf(format!("forgetting sender {mac}"), e))
    }

    /// Sets (or with `None` removes) the relay settings of a lower device.
    pub fn set_uplink(&mut self, lower: u32, config: Option<UplinkConfig>) -> Result<()> {
        match config {
            Some(config) => {
                let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::io("counting CPUs", e))?;
                if self.uplink_counters.get(&lower, 0).is_err() {
                    let zeros =
                        aya::maps::PerCpuValues::try_from(vec![UplinkCounters::default(); cpus])
                            .map_err(|e| Error::io("building per-CPU counters", e))?;
                    self.uplink_counters
                        .insert(lower, zeros, 0)
                        .map_err(map_err(format!("counters of uplink {lower}")))?;
                }
                self.uplinks
                    .insert(lower, config, 0)
                    .map_err(map_err(format!("configuring uplink {lower}")))
            }
            None => ignore_missing(self.uplinks.remove(&lower))
                .and_then(|()| ignore_missing(self.uplink_counters.remove(&lower)))
                .map_err(|e| Error::bpf(format!("forgetting uplink {lower}"), e)),
        }
    }

    /// Relay counters of a lower device, summed over CPUs.
    pub fn uplink_counters(&self, lower: u32) -> Result<UplinkCounters> {
        let mut total = UplinkCounters::default();
        match self.uplink_counters.get(&lower, 0) {
            Ok(per_cpu) => per_cpu.iter().for_each(|c| total.accumulate(c)),
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(Error::bpf(format!("reading counters of uplink {lower}"), e)),
        }
        Ok(total)
    }

    /// Forgets `ifindex`; frames still in flight then fail closed.
    pub fn remove(&mut self, ifindex: u32) -> Result<()> {
        for result in [
            self.policies.remove(&ifindex),
            self.counters.remove(&ifindex),
        ] {
            ignore_missing(result)
                .map_err(|e| Error::bpf(format!("forgetting ifindex {ifindex}"), e))?;
        }
        self.forget_vlans(ifindex, |_| false)
    }

    /// Removes the per-VLAN counters of `ifindex` whose VID fails `keep`.
    pub fn forget_vlans(&mut self, ifindex: u32, keep: impl Fn(u16) -> bool) -> Result<()> {
        let stale: Vec<VlanKey> = self
            .vlan_counters
            .keys()
            .filter_map(|key| key.ok())
            .filter(|key| key.ifindex == ifindex && !keep(key.vid))
            .collect();
        for key in stale {
            ignore_missing(self.vlan_counters.remove(&key))
                .map_err(|e| Error::bpf(format!("forgetting VLAN {} counters", key.vid), e))?;
        }
        Ok(())
    }

    /// Per-VLAN counters of `ifindex`, summed over CPUs, by VID.
    pub fn vlan_counters(&self, ifindex: u32) -> Result<Vec<(u16, EndpointCounters)>> {
        let mut rows = Vec::new();
        for entry in self.vlan_counters.iter() {
            let (key, per_cpu) = entry.map_err(|e| Error::bpf("reading per-VLAN counters", e))?;
            if key.ifindex != ifindex {
                continue;
            }
            let mut total = EndpointCounters::ZERO;
            for counters in per_cpu.iter() {
                total.accumulate(counters);
            }
            rows.push((key.vid, total));
        }
        rows.sort_by_key(|(vid, _)| *vid);
        Ok(rows)
    }

    /// The counters of `ifindex`, summed over CPUs.
    pub fn counters(&self, ifindex: u32) -> Result<Option<EndpointCounters>> {
        match self.counters.get(&ifindex, 0) {
            Ok(per_cpu) => {
                let mut total = EndpointCounters::ZERO;
                for counters in per_cpu.iter() {
                    total.accumulate(counters);
                }
                Ok(Some(total))
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::bpf(
                format!("reading the counters of ifindex {ifindex}"),
                e,
            )),
        }
    }
}

/// Programs and maps, ready to attach endpoints.
pub struct Datapath {
    pins: PinLayout,
    from_guest: SchedClassifier,
    to_guest: SchedClassifier,
    uplink_egress: SchedClassifier,
    pub maps: Maps,
    /// Loaded by this process rather than adopted from pins: endpoints
    /// attached earlier still run the old programs and must be re-attached.
    pub fresh: bool,
}

impl Datapath {
    /// Adopts the pinned programs and maps, or loads and pins them the
    /// first time.
    pub fn open_or_load(pins: PinLayout) -> Result<Self> {
        if pins.is_loaded()
            && let Some(maps) = Maps::open(&pins)?
        {
            let from_pin = |name: &str| {
                SchedClassifier::from_pin(pins.prog(name))
                    .map_err(|e| Error::bpf(format!("opening pinned program {name}"), e))
            };
            return Ok(Self {
                from_guest: from_pin(names::PROG_FROM_GUEST)?,
                to_guest: from_pin(names::PROG_TO_GUEST)?,
                uplink_egress: from_pin(names::PROG_UPLINK_EGRESS)?,
                maps,
                pins,
                fresh: false,
            });
        }
        Self::load(pins)
    }

    fn load(pins: PinLayout) -> Result<Self> {
        // Whatever a crash left half-pinned goes; endpoints are re-attached
        // from the state by the caller.
        for dir in ["progs", "maps"] {
            remove_dir_if_exists(&pins.root.join(dir))?;
            create_dir(&pins.root.join(dir))?;
        }
        if EBPF_OBJECT.is_empty() {
            return Err(Error::Refused(
                "this binary was built with AYA_BUILD_SKIP=1 and carries no eBPF object".into(),
            ));
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &EBPF_LOG_LEVEL, false)
            .load(EBPF_OBJECT)
            .map_err(|e| Error::bpf("loading the eBPF object", e))?;
        for name in MAP_NAMES.into_iter().chain([MAP_AYA_LOGS]) {
            if let Some(map) = ebpf.map(name) {
                map.pin(pins.map(name))
                    .map_err(|e| Error::bpf(format!("pinning map {name}"), e))?;
            }
        }
        let mut take_program = |name: &str| -> Result<SchedClassifier> {
            let program = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Refused(format!("the eBPF object lacks program {name}")))?;
            let classifier: &mut SchedClassifier = program
                .try_into()
                .map_err(|e| Error::bpf(format!("program {name}"), e))?;
            classifier
                .load()
                .map_err(|e| Error::bpf(format!("loading program {name}"), e))?;
            classifier
                .pin(pins.prog(name))
                .map_err(|e| Error::bpf(format!("pinning program {name}"), e))?;
            SchedClassifier::from_pin(pins.prog(name))
                .map_err(|e| Error::bpf(format!("reopening program {name}"), e))
        };
        let from_guest = take_program(names::PROG_FROM_GUEST)?;
        let to_guest = take_program(names::PROG_TO_GUEST)?;
        let uplink_egress = take_program(names::PROG_UPLINK_EGRESS)?;
        let take = |ebpf: &mut aya::Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| Error::Refused(format!("the eBPF object lacks map {name}")))
        };
        let maps = Maps::from_maps([
            take(&mut ebpf, names::MAP_POLICIES)?,
            take(&mut ebpf, names::MAP_COUNTERS)?,
            take(&mut ebpf, names::MAP_VLAN_COUNTERS)?,
            take(&mut ebpf, names::MAP_SOURCES)?,
            take(&mut ebpf, names::MAP_UPLINKS)?,
            take(&mut ebpf, names::MAP_UPLINK_COUNTERS)?,
        ])?;
        log::info!(
            "loaded and pinned the data path under {}",
            pins.root.display()
        );
        Ok(Self {
            pins,
            from_guest,
            to_guest,
            uplink_egress,
            maps,
            fresh: true,
        })
    }

    /// Attaches both programs to the endpoint `name` and pins the links.
    pub fn attach(&mut self, name: &str) -> Result<()> {
        create_dir(&self.pins.links_of(name))?;
        for hook in Hook::ALL {
            let program = match hook {
                Hook::FromGuest => &mut self.from_guest,
                Hook::ToGuest => &mut self.to_guest,
            };
            attach_one(
                program,
                name,
                hook.attach_type(),
                &self.pins.link(name, hook),
            )?;
        }
        Ok(())
    }

    /// Removes the link pins of `name`; the links detach once unpinned (or
    /// when the macvtap goes).
    pub fn detach(pins: &PinLayout, name: &str) -> Result<()> {
        for hook in Hook::ALL {
            unpin_link(&pins.link(name, hook))?;
        }
        remove_dir_if_exists(&pins.links_of(name))
    }

    /// Whether both links of endpoint `name` are pinned.
    pub fn is_attached(pins: &PinLayout, name: &str) -> bool {
        Hook::ALL.iter().all(|hook| pins.link(name, *hook).exists())
    }

    /// Whether the relay program's link on `lower` is pinned.
    pub fn is_uplink_attached(pins: &PinLayout, lower: &str) -> bool {
        pins.uplink_link(lower).exists()
    }

    /// Attaches the relay program to the lower device's egress.
    pub fn attach_uplink(&mut self, lower: &str) -> Result<()> {
        let pin = self.pins.uplink_link(lower);
        if let Some(dir) = pin.parent() {
            create_dir(dir)?;
        }
        attach_one(&mut self.uplink_egress, lower, TcAttachType::Egress, &pin)
    }

    /// Detaches the relay program from the lower device.
    pub fn detach_uplink(pins: &PinLayout, lower: &str) -> Result<()> {
        let pin = pins.uplink_link(lower);
        unpin_link(&pin)?;
        if let Some(dir) = pin.parent() {
            remove_dir_if_exists(dir)?;
        }
        Ok(())
    }

    /// Removes every pin (for `reset`).
    pub fn remove_all_pins(pins: &PinLayout) -> Result<()> {
        for dir in ["links", "uplinks", "progs", "maps"] {
            remove_dir_if_exists(&pins.root.join(dir))?;
        }
        Ok(())
    }
}

/// TCX with a pinned link where the kernel has it (>= 6.6); clsact and a
/// netlink filter, which outlives the process by itself, elsewhere.
fn attach_one(
    program: &mut SchedClassifier,
    ifname: &str,
    attach_type: TcAttachType,
    pin: &Path,
) -> Result<()> {
    let context = || format!("attaching a program to {ifname} {attach_type:?}");
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if tcx {
        let id = program
            .attach_with_options(
                ifname,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| Error::bpf(context(), e))?;
        let link = program
            .take_link(id)
            .map_err(|e| Error::bpf(context(), e))?;
        let link: FdLink = link.try_into().map_err(|e| Error::bpf(context(), e))?;
        if pin.exists() {
            fs::remove_file(pin)
                .map_err(|e| Error::io(format!("replacing {}", pin.display()), e))?;
        }
        link.pin(pin)
            .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
    } else {
        // An existing clsact qdisc is fine.
        let _ = tc::qdisc_add_clsact(ifname);
        let id = program
            .attach_with_options(
                ifname,
                attach_type,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(|e| Error::bpf(context(), e))?;
        let link = program
            .take_link(id)
            .map_err(|e| Error::bpf(context(), e))?;
        // Dropping the link would detach the filter; it lives with the device.
        std::mem::forget(link);
    }
    Ok(())
}

/// Escapes a name for bpffs, which refuses '.' in file names: bytes other
/// than ASCII letters, digits, '-' and '_' become `%XX`.
fn escape_pin_name(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            escaped.push(byte as char);
        } else {
            escaped += &format!("%{byte:02X}");
        }
    }
    escaped
}

/// Removes a link's pin, which detaches it; a missing pin is fine.
fn unpin_link(path: &Path) -> Result<()> {
    match PinnedLink::from_pin(path) {
        Ok(link) => link
            .unpin()
            .map(drop)
            .map_err(|e| Error::io(format!("unpinning {}", path.display()), e)),
        Err(_) if !path.exists() => Ok(()),
        Err(e) => Err(Error::bpf(format!("opening {}", path.display()), e)),
    }
}

/// A removal of a key that is already gone succeeded.
fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        other => other,
    }
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_have_no_dots() {
        assert_eq!(escape_pin_name("eth0.10"), "eth0%2E10");
        assert_eq!(escape_pin_name("a%b"), "a%25b");
        assert_eq!(escape_pin_name("vm-1_x"), "vm-1_x");
    }
}
