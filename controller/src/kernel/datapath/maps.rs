//! The data path's maps, opened from their pins: policies, counters,
//! senders and uplink settings.

use std::{collections::HashSet, io};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use macvswitch_common::{
    EndpointCounters, EndpointPolicy, IFINDEX_DIRECT, MarkCarriage, PortWord, SourceInfo,
    SourceKey, UplinkConfig, UplinkCounters, VlanKey,
    isolation::{UPLINK_REFLECTIVE_RELAY, UPLINK_TAGS_FROM_MARK},
    names,
};

use super::pins::PinLayout;
use crate::error::{Error, Result};

/// A device's value: in the array below `IFINDEX_DIRECT` (what the programs
/// read without hashing), in the hash map above; `None` if it has none.
fn by_ifindex<V: aya::Pod>(
    low: &Array<MapData, V>,
    high: &HashMap<MapData, u32, V>,
    ifindex: u32,
) -> std::result::Result<Option<V>, aya::maps::MapError> {
    let found = if ifindex < IFINDEX_DIRECT {
        low.get(&ifindex, 0)
    } else {
        high.get(&ifindex, 0)
    };
    match found {
        Ok(value) => Ok(Some(value)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The pinned map `name`; `None` if it is not pinned.
pub(super) fn open_pinned(pins: &PinLayout, name: &str) -> Result<Option<Map>> {
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
}

pub(super) fn map_err(context: String) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |e| Error::bpf(context, e)
}

/// The maps, opened from their pins.
pub struct Maps {
    policies: Array<MapData, EndpointPolicy>,
    ports: Array<MapData, u32>,
    ports_high: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, EndpointCounters>,
    vlan_counters: PerCpuHashMap<MapData, VlanKey, EndpointCounters>,
    sources: HashMap<MapData, SourceKey, SourceInfo>,
    uplinks: Array<MapData, UplinkConfig>,
    uplinks_high: HashMap<MapData, u32, UplinkConfig>,
    uplink_counters: PerCpuHashMap<MapData, u32, UplinkCounters>,
    carriage: Array<MapData, MarkCarriage>,
    storm: Array<MapData, u64>,
    /// Slots whose previous policy copy a program may still be reading:
    /// switched to another copy, or freed, since the last wait for readers.
    unsettled: HashSet<u16>,
}

/// The data path's maps, by name, in the order `Maps::from_maps` takes them.
pub(super) const MAP_NAMES: [&str; 11] = [
    names::MAP_POLICIES,
    names::MAP_PORTS,
    names::MAP_PORTS_HIGH,
    names::MAP_COUNTERS,
    names::MAP_VLAN_COUNTERS,
    names::MAP_SOURCES,
    names::MAP_UPLINKS,
    names::MAP_UPLINKS_HIGH,
    names::MAP_UPLINK_COUNTERS,
    names::MAP_CARRIAGE,
    names::MAP_STORM,
];

impl Maps {
    pub(super) fn from_maps(
        [
            policies,
            ports,
            ports_high,
            counters,
            vlan_counters,
            sources,
            uplinks,
            uplinks_high,
            uplink_counters,
            carriage,
            storm,
        ]: [Map; MAP_NAMES.len()],
    ) -> Result<Self> {
        fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(map: Map, name: &str) -> Result<T> {
            T::try_from(map).map_err(map_err(format!("opening {name}")))
        }
        Ok(Self {
            policies: open(policies, names::MAP_POLICIES)?,
            ports: open(ports, names::MAP_PORTS)?,
            ports_high: open(ports_high, names::MAP_PORTS_HIGH)?,
            counters: open(counters, names::MAP_COUNTERS)?,
            vlan_counters: open(vlan_counters, names::MAP_VLAN_COUNTERS)?,
            sources: open(sources, names::MAP_SOURCES)?,
            uplinks: open(uplinks, names::MAP_UPLINKS)?,
            uplinks_high: open(uplinks_high, names::MAP_UPLINKS_HIGH)?,
            uplink_counters: open(uplink_counters, names::MAP_UPLINK_COUNTERS)?,
            carriage: open(carriage, names::MAP_CARRIAGE)?,
            storm: open(storm, names::MAP_STORM)?,
            unsettled: HashSet::new(),
        })
    }

    /// Opens the pinned maps, if the data path was ever loaded here.
    /// `None` too when a pinned map does not match this build (an older
    /// build's layout): the caller then loads this build, which recreates it.
    pub fn open(pins: &PinLayout) -> Result<Option<Self>> {
        let expected = super::compat::expected_maps_cached()?;
        if expected
            .iter()
            .any(|spec| super::compat::check_pinned(&pins.map(&spec.name), spec).is_some())
        {
            return Ok(None);
        }
        let open = |name: &str| open_pinned(pins, name);
        let mut maps = Vec::with_capacity(MAP_NAMES.len());
        for name in MAP_NAMES {
            match open(name)? {
                Some(map) => maps.push(map),
                // Missing (never loaded, or pinned by an older build).
                None => return Ok(None),
            }
        }
        let Ok(maps) = <[Map; MAP_NAMES.len()]>::try_from(maps) else {
            unreachable!("one map per name in MAP_NAMES")
        };
        Self::from_maps(maps).map(Some)
    }

    /// How tags are carried in the mark; `None` before the first load set it.
    pub fn carriage(&self) -> Result<Option<MarkCarriage>> {
        let carriage = self
            .carriage
            .get(&0, 0)
            .map_err(map_err(format!("reading {}", names::MAP_CARRIAGE)))?;
        Ok((carriage.mask != 0).then_some(carriage))
    }

    /// Sets how tags are carried. Only while no endpoint carries a tag: a
    /// frame in flight with the old pattern would be taken for a wire frame.
    pub fn set_carriage(&mut self, carriage: &MarkCarriage) -> Result<()> {
        self.carriage
            .set(0, carriage, 0)
            .map_err(map_err(format!("writing {}", names::MAP_CARRIAGE)))
    }

    fn port_word(&self, ifindex: u32) -> Result<PortWord> {
        by_ifindex(&self.ports, &self.ports_high, ifindex)
            .map(|word| word.map_or(PortWord::NONE, PortWord))
            .map_err(|e| Error::bpf(format!("reading the port of ifindex {ifindex}"), e))
    }

    fn set_port_word(&mut self, ifindex: u32, word: PortWord) -> Result<()> {
        let context = || format!("switching the policy of ifindex {ifindex}");
        if ifindex < IFINDEX_DIRECT {
            self.ports
                .set(ifindex, word.0, 0)
                .map_err(map_err(context()))
        } else {
            // A replaced hash element may be reused at once by the next
            // update, under a reader that still holds it: wait each time.
            let written = if word == PortWord::NONE {
                ignore_missing(self.ports_high.remove(&ifindex)).map_err(map_err(context()))
            } else {
                self.ports_high
                    .insert(ifindex, word.0, 0)
                    .map_err(map_err(context()))
            };
            wait_for_readers();
            written
        }
    }

    /// Writes the policy of the port at `ifindex` (in `policy.slot`) so that
    /// no frame sees it half-written: into the copy no frame reads, then
    /// one switch of the port's word.
    pub fn set_policy(&mut self, ifindex: u32, policy: &EndpointPolicy) -> Result<()> {
        let slot = policy.slot;
        let word = self.port_word(ifindex)?;
        let current = word.policy_index().filter(|_| word.slot() == slot);
        if let Some(index) = current
            && self.policies.get(&index, 0).ok().as_ref() == Some(policy)
        {
            return Ok(());
        }
        if word != PortWord::NONE && word.slot() != slot {
            // Another slot (a recreated endpoint's): let go of it first.
            self.remove_port(ifindex)?;
        }
        if self.unsettled.contains(&slot) {
            wait_for_readers();
            self.unsettled.clear();
        }
        let next = match current {
            Some(_) if word.copy() == 1 => 2,
            _ => 1,
        };
        let index = PortWord::new(slot, next)
            .policy_index()
            .expect("copy 1 or 2 has an index");
        self.policies
            .set(index, policy, 0)
            .map_err(map_err(format!("writing the policy of ifindex {ifindex}")))?;
        if current.is_none() {
            // From no word to this slot with no copy, then to the copy.
            self.set_port_word(ifindex, PortWord::new(slot, 0))?;
        } else {
            self.unsettled.insert(slot);
        }
        self.set_port_word(ifindex, PortWord::new(slot, next))
    }

    /// The current policy of the port at `ifindex`, if it has one.
    pub fn policy(&self, ifindex: u32) -> Result<Option<EndpointPolicy>> {
        let Some(index) = self.port_word(ifindex)?.policy_index() else {
            return Ok(None);
        };
        self.policies
            .get(&index, 0)
            .map(Some)
            .map_err(map_err(format!("reading the policy of ifindex {ifindex}")))
    }

    /// Lets go of the port at `ifindex`: its frames are dropped from now on
    /// (copy first, then slot, each change one field of the word).
    fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        let word = self.port_word(ifindex)?;
        if word == PortWord::NONE {
            return Ok(());
        }
        self.set_port_word(ifindex, PortWord::new(word.slot(), 0))?;
        self.set_port_word(ifindex, PortWord::NONE)?;
        self.unsettled.insert(word.slot());
        Ok(())
    }

    /// Starts counting in `slot` from zero, with a full storm bucket (for
    /// a newly added endpoint: a bucket left by the slot's last owner could
    /// be due far ahead).
    pub fn reset_counters(&mut self, slot: u16) -> Result<()> {
        self.counters
            .set(u32::from(slot), per_cpu(EndpointCounters::ZERO)?, 0)
            .map_err(map_err(format!("resetting the counters in slot {slot}")))?;
        self.storm
            .set(u32::from(slot), 0, 0)
            .map_err(map_err(format!(
                "resetting the storm bucket of slot {slot}"
            )))
    }

    /// Records a local endpoint as a sender on its lower device.
    pub fn set_source(
        &mut self,
        lower: u32,
        mac: crate::model::types::Mac,
        info: &SourceInfo,
    ) -> Result<()> {
        self.sources
            .insert(SourceKey::new(lower, mac.octets()), info, 0)
            .map_err(map_err(format!("recording sender {mac}")))
    }

    pub fn remove_source(&mut self, lower: u32, mac: crate::model::types::Mac) -> Result<()> {
        ignore_missing(self.sources.remove(&SourceKey::new(lower, mac.octets())))
            .map_err(|e| Error::bpf(format!("forgetting sender {mac}"), e))
    }

    /// The local endpoint that sends from `mac` on lower device `lower`.
    pub fn source(&self, lower: u32, mac: [u8; 6]) -> Result<Option<SourceInfo>> {
        match self.sources.get(&SourceKey::new(lower, mac), 0) {
            Ok(info) => Ok(Some(info)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::bpf("reading a sender".to_string(), e)),
        }
    }

    fn uplink_flags(&self, lower: u32) -> Result<u32> {
        by_ifindex(&self.uplinks, &self.uplinks_high, lower)
            .map(|config| config.map_or(0, |c| c.flags))
            .map_err(|e| Error::bpf(format!("reading uplink {lower}"), e))
    }

    /// Sets the bits `flags` of lower device `lower` to `on`. One 4-byte
    /// value, one bit changed: a reader sees the old or the new flags.
    fn set_uplink_flag(&mut self, lower: u32, flag: u32, on: bool) -> Result<()> {
        let old = self.uplink_flags(lower)?;
        let flags = if on { old | flag } else { old & !flag };
        if flags == old {
            return Ok(());
        }
        let context = || format!("configuring uplink {lower}");
        let config = UplinkConfig { flags };
        if lower < IFINDEX_DIRECT {
            self.uplinks
                .set(lower, config, 0)
                .map_err(map_err(context()))
        } else if flags == 0 {
            ignore_missing(self.uplinks_high.remove(&lower)).map_err(map_err(context()))
        } else {
            self.uplinks_high
                .insert(lower, config, 0)
                .map_err(map_err(context()))
        }
    }

    /// Switches reflective-relay emulation of a lower device on or off.
    pub fn set_relay(&mut self, lower: u32, on: bool) -> Result<()> {
        if on && self.uplink_counters.get(&lower, 0).is_err() {
            self.uplink_counters
                .insert(lower, per_cpu(UplinkCounters::default())?, 0)
                .map_err(map_err(format!("counters of uplink {lower}")))?;
        }
        self.set_uplink_flag(lower, UPLINK_REFLECTIVE_RELAY, on)?;
        if !on {
            ignore_missing(self.uplink_counters.remove(&lower))
                .map_err(|e| Error::bpf(format!("forgetting uplink {lower}"), e))?;
        }
        Ok(())
    }

    /// Lets the endpoints on `lower` carry their tags in the mark (its
    /// egress program is attached and tags them), or makes them push tags
    /// themselves again. Switching off waits until no frame is still
    /// judged by the old setting, so the program may go afterwards.
    pub fn set_tags_from_mark(&mut self, lower: u32, on: bool) -> Result<()> {
        let was = self.uplink_flags(lower)? & UPLINK_TAGS_FROM_MARK != 0;
        self.set_uplink_flag(lower, UPLINK_TAGS_FROM_MARK, on)?;
        if was && !on {
            wait_for_readers();
        }
        Ok(())
    }

    /// Whether endpoints on `lower` carry their tags in the mark.
    pub fn tags_from_mark(&self, lower: u32) -> Result<bool> {
        Ok(self.uplink_flags(lower)? & UPLINK_TAGS_FROM_MARK != 0)
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
        self.remove_port(ifindex)?;
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
    pub fn counters(&self, slot: u16) -> Result<EndpointCounters> {
        let per_cpu = self
            .counters
            .get(&u32::from(slot), 0)
            .map_err(|e| Error::bpf(format!("reading the counters in slot {slot}"), e))?;
        let mut total = EndpointCounters::ZERO;
        for counters in per_cpu.iter() {
            total.accumulate(counters);
        }
        Ok(total)
    }
}

impl Drop for Maps {
    /// The next process may reuse a slot this one let go of: make sure no
    /// frame still reads it by then.
    fn drop(&mut self) {
        if !self.unsettled.is_empty() {
            wait_for_readers();
        }
    }
}

/// Waits until every program run that started before now has finished (an
/// RCU grace period: TC programs run inside RCU read-side sections), so
/// that a policy copy switched away from may be written again.
pub fn wait_for_readers() {
    // MEMBARRIER_CMD_GLOBAL is synchronize_rcu() on a machine with more
    // than one CPU; with one, no program run can be in progress while this
    // process runs a system call.
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: a system call without pointers.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if ret != 0 {
        // nohz_full kernels refuse it. A program run takes microseconds;
        // a pause many orders of magnitude longer stands in for the wait.
        log::debug!(
            "membarrier: {}; pausing instead",
            io::Error::last_os_error()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `value` once for every possible CPU, for a per-CPU map entry.
pub(super) fn per_cpu<T: aya::Pod + Clone>(value: T) -> Result<aya::maps::PerCpuValues<T>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::io("counting CPUs", e))?;
    aya::maps::PerCpuValues::try_from(vec![value; cpus])
        .map_err(|e| Error::io("building per-CPU values", e))
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
