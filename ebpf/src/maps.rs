//! Maps shared by all endpoints, keyed by the macvtap's ifindex.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuHashMap},
};
use macvswitch_common::{EndpointCounters, EndpointPolicy, MAX_ENDPOINTS};

#[map]
pub static POLICIES: HashMap<u32, EndpointPolicy> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// Per-CPU so that the fast path increments without atomics.
#[map]
pub static COUNTERS: PerCpuHashMap<u32, EndpointCounters> =
    PerCpuHashMap::with_max_entries(MAX_ENDPOINTS, 0);
