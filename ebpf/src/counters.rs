//! Counting, per endpoint and per CPU.

use macvswitch_common::{DROP_SLOTS, DropReason, EndpointCounters};

use crate::maps::COUNTERS;

#[inline(always)]
fn with_counters(ifindex: u32, f: impl FnOnce(&mut EndpointCounters)) {
    if let Some(counters) = COUNTERS.get_ptr_mut(ifindex) {
        // SAFETY: the per-CPU slot is only touched by this CPU.
        f(unsafe { &mut *counters });
    }
}

#[inline(always)]
pub fn count_to_guest(ifindex: u32, bytes: u32) {
    with_counters(ifindex, |c| {
        c.to_guest_packets += 1;
        c.to_guest_bytes += u64::from(bytes);
    });
}

#[inline(always)]
pub fn count_from_guest(ifindex: u32, bytes: u32) {
    with_counters(ifindex, |c| {
        c.from_guest_packets += 1;
        c.from_guest_bytes += u64::from(bytes);
    });
}

#[inline(always)]
pub fn count_drop(ifindex: u32, reason: DropReason) {
    let slot = reason as usize;
    if slot < DROP_SLOTS {
        with_counters(ifindex, |c| c.drops[slot] += 1);
    }
}
