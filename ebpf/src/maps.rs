//! Maps shared by all endpoints, keyed by the macvtap's ifindex.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use macvswitch_common::{
    EndpointCounters, EndpointPolicy, MAX_ENDPOINTS, MAX_UPLINKS, MAX_VLAN_COUNTERS, SourceInfo,
    SourceKey, UplinkConfig, UplinkCounters, VlanKey,
};

#[map]
pub static POLICIES: HashMap<u32, EndpointPolicy> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// Per-CPU so that the fast path increments without atomics; an array
/// indexed by the policy's slot, so the lookup costs no hashing.
#[map]
pub static COUNTERS: PerCpuArray<EndpointCounters> =
    PerCpuArray::with_max_entries(MAX_ENDPOINTS, 0);

/// Per VLAN of trunk and tunnel endpoints; entries appear on first use, so
/// the map is not preallocated.
#[map]
pub static VLAN_COUNTERS: PerCpuHashMap<VlanKey, EndpointCounters> =
    PerCpuHashMap::with_max_entries(MAX_VLAN_COUNTERS, BPF_F_NO_PREALLOC);

/// Local endpoints as senders, by MAC on their lower device.
#[map]
pub static SOURCES: HashMap<SourceKey, SourceInfo> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// Lower devices with relay settings, by ifindex.
#[map]
pub static UPLINKS: HashMap<u32, UplinkConfig> = HashMap::with_max_entries(MAX_UPLINKS, 0);

#[map]
pub static UPLINK_COUNTERS: PerCpuHashMap<u32, UplinkCounters> =
    PerCpuHashMap::with_max_entries(MAX_UPLINKS, 0);
