//! The data path's maps, opened from their pins: policies, counters,
//! senders and uplink settings.

use std::io;

use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use macvswitch_common::{
    EndpointCounters, EndpointPolicy, SourceInfo, SourceKey, UplinkConfig, UplinkCounters, VlanKey,
    names,
};

use super::pins::PinLayout;
use crate::error::{Error, Result};

pub(super) fn map_err(context: String) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |e| Error::bpf(context, e)
}

/// The maps, opened from their pins.
pub struct Maps {
    policies: HashMap<MapData, u32, EndpointPolicy>,
    counters: PerCpuArray<MapData, EndpointCounters>,
    vlan_counters: PerCpuHashMap<MapData, VlanKey, EndpointCounters>,
    sources: HashMap<MapData, SourceKey, SourceInfo>,
    uplinks: HashMap<MapData, u32, UplinkConfig>,
    uplink_counters: PerCpuHashMap<MapData, u32, UplinkCounters>,
}

/// The data path's maps, by name, in the order `Maps::from_maps` takes them.
pub(super) const MAP_NAMES: [&str; 6] = [
    names::MAP_POLICIES,
    names::MAP_COUNTERS,
    names::MAP_VLAN_COUNTERS,
    names::MAP_SOURCES,
    names::MAP_UPLINKS,
    names::MAP_UPLINK_COUNTERS,
];

impl Maps {
    pub(super) fn from_maps(
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
            counters: PerCpuArray::try_from(counters)
                .map_err(map_err(format!("opening {}", names::MAP_COUNTERS)))?,
            vlan_counters: PerCpuHashMap::try_from(vlan_counters)
                .map_err(map_err(format!("opening {}", names::MAP_VLAN_COUNTERS)))?,
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

    /// Starts counting in `slot` from zero (for a newly added endpoint).
    pub fn reset_counters(&mut self, slot: u16) -> Result<()> {
        self.counters
            .set(u32::from(slot), per_cpu(EndpointCounters::ZERO)?, 0)
            .map_err(map_err(format!("resetting the counters in slot {slot}")))
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
                if self.uplink_counters.get(&lower, 0).is_err() {
                    self.uplink_counters
                        .insert(lower, per_cpu(UplinkCounters::default())?, 0)
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
        ignore_missing(self.policies.remove(&ifindex))
            .map_err(|e| Error::bpf(format!("forgetting ifindex {ifindex}"), e))?;
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

/// `value` once for every possible CPU, for a per-CPU map entry.
fn per_cpu<T: aya::Pod + Clone>(value: T) -> Result<aya::maps::PerCpuValues<T>> {
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
