//! Maps shared by all endpoints and lower devices.
//!
//! Per-device settings are arrays indexed by ifindex (an array lookup the
//! verifier inlines: no hashing on the fast path); ifindexes from
//! `IFINDEX_DIRECT` up, rare, use the `*_HIGH` hash maps.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use macvswitch_common::{
    EndpointCounters, EndpointPolicy, IFINDEX_DIRECT, MAX_ENDPOINTS, MAX_UPLINKS,
    MAX_VLAN_COUNTERS, MarkCarriage, POLICY_ENTRIES, PortWord, SourceInfo, SourceKey, UplinkConfig,
    UplinkCounters, VlanKey,
};

/// Two copies per endpoint slot; `PORTS` says which one is current.
#[map]
pub static POLICIES: Array<EndpointPolicy> = Array::with_max_entries(POLICY_ENTRIES, 0);

/// A macvtap's (or host port's) `PortWord`, by ifindex.
#[map]
pub static PORTS: Array<u32> = Array::with_max_entries(IFINDEX_DIRECT, 0);

#[map]
pub static PORTS_HIGH: HashMap<u32, u32> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

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

/// Lower devices' settings, by ifindex.
#[map]
pub static UPLINKS: Array<UplinkConfig> = Array::with_max_entries(IFINDEX_DIRECT, 0);

#[map]
pub static UPLINKS_HIGH: HashMap<u32, UplinkConfig> = HashMap::with_max_entries(MAX_UPLINKS, 0);

#[map]
pub static UPLINK_COUNTERS: PerCpuHashMap<u32, UplinkCounters> =
    PerCpuHashMap::with_max_entries(MAX_UPLINKS, 0);

/// One entry: how tags are carried in `skb->mark`.
#[map]
pub static CARRIAGE: Array<MarkCarriage> = Array::with_max_entries(1, 0);

/// Storm control: per endpoint slot, when its bucket is due (see
/// `guards`); shared by all CPUs, so the limit holds across them.
#[map]
pub static STORM: Array<u64> = Array::with_max_entries(MAX_ENDPOINTS, 0);

/// The current policy of the port at `ifindex`.
#[inline(always)]
pub fn policy(ifindex: u32) -> Option<&'static EndpointPolicy> {
    let word = if ifindex < IFINDEX_DIRECT {
        PORTS.get(ifindex)
    } else {
        // SAFETY: plain old data.
        unsafe { PORTS_HIGH.get(&ifindex) }
    }?;
    // One load: the word is written whole or in a way that any byte mix is
    // the old or the new word (see `PortWord`). SAFETY: a valid map value.
    let word = PortWord(unsafe { core::ptr::read_volatile(word) });
    POLICIES.get(word.policy_index()?)
}

/// The settings of lower device `ifindex`; all clear if it has none.
#[inline(always)]
pub fn uplink(ifindex: u32) -> UplinkConfig {
    let config = if ifindex < IFINDEX_DIRECT {
        UPLINKS.get(ifindex)
    } else {
        // SAFETY: plain old data.
        unsafe { UPLINKS_HIGH.get(&ifindex) }
    };
    match config {
        // SAFETY: a valid map value; one 4-byte load.
        Some(config) => UplinkConfig {
            flags: unsafe { core::ptr::read_volatile(&config.flags) },
        },
        None => UplinkConfig { flags: 0 },
    }
}

/// How tags are carried in the mark (all zero, never ours, if unset).
/// `None` only if the lookup fails, which it cannot for index 0 of a
/// one-entry array; callers return at once then, so that no value is half
/// defined on one path (older verifiers refuse reading a stack slot that
/// one path left unwritten).
#[inline(always)]
pub fn carriage() -> Option<MarkCarriage> {
    CARRIAGE.get(0).copied()
}
