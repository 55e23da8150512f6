//! Counting, per endpoint (and per VLAN on trunk and tunnel ports), per CPU.

use aya_ebpf::bindings::BPF_NOEXIST;
use macvswitch_common::{DROP_SLOTS, DropReason, EndpointCounters, VlanKey};

use crate::maps::{COUNTERS, VLAN_COUNTERS};

/// Which way a frame goes, for the packet and byte counters.
#[derive(Clone, Copy)]
pub enum Direction {
    ToGuest,
    FromGuest,
}

#[inline(always)]
fn bump(counters: &mut EndpointCounters, direction: Direction, bytes: u32) {
    let (packets, total) = match direction {
        Direction::ToGuest => (&mut counters.to_guest_packets, &mut counters.to_guest_bytes),
        Direction::FromGuest => (
            &mut counters.from_guest_packets,
            &mut counters.from_guest_bytes,
        ),
    };
    *packets += 1;
    *total += u64::from(bytes);
}

#[inline(always)]
fn bump_drop(counters: &mut EndpointCounters, reason: DropReason) {
    // The compiler knows every reason is in range and drops any bounds
    // check; the verifier, which loses track of the value through the
    // stack, needs one. A volatile read hides the range so the mask stays.
    const _: () = assert!(DROP_SLOTS.is_power_of_two());
    let reason = reason as u32;
    // SAFETY: reading a local.
    let slot = unsafe { core::ptr::read_volatile(&reason) } as usize & (DROP_SLOTS - 1);
    counters.drops[slot] += 1;
}

/// The endpoint's counters on this CPU.
#[inline(always)]
fn endpoint(slot: u16) -> Option<&'static mut EndpointCounters> {
    // SAFETY: the per-CPU slot is only touched by this CPU.
    COUNTERS
        .get_ptr_mut(u32::from(slot))
        .map(|ptr| unsafe { &mut *ptr })
}

/// A new VLAN's first value, in read-only data: on the stack it would
/// take more than half of the 512 bytes a program has.
static ZERO: EndpointCounters = EndpointCounters::ZERO;

/// The VLAN's counters on this CPU, created on first use.
#[inline(always)]
fn vlan(ifindex: u32, vid: u16) -> Option<&'static mut EndpointCounters> {
    let key = VlanKey {
        ifindex,
        vid,
        _pad: 0,
    };
    let ptr = match VLAN_COUNTERS.get_ptr_mut(key) {
        Some(ptr) => ptr,
        None => {
            // Another CPU may win the race; either way the entry then exists.
            let _ = VLAN_COUNTERS.insert(key, &ZERO, u64::from(BPF_NOEXIST));
            VLAN_COUNTERS.get_ptr_mut(key)?
        }
    };
    // SAFETY: as above.
    Some(unsafe { &mut *ptr })
}

#[inline(always)]
pub fn count_pass(ifindex: u32, slot: u16, vid: Option<u16>, direction: Direction, bytes: u32) {
    if let Some(counters) = endpoint(slot) {
        bump(counters, direction, bytes);
    }
    if let Some(counters) = vid.and_then(|vid| vlan(ifindex, vid)) {
        bump(counters, direction, bytes);
    }
}

#[inline(always)]
pub fn count_drop(ifindex: u32, slot: u16, vid: Option<u16>, reason: DropReason) {
    if let Some(counters) = endpoint(slot) {
        bump_drop(counters, reason);
    }
    if let Some(counters) = vid.and_then(|vid| vlan(ifindex, vid)) {
        bump_drop(counters, reason);
    }
}
