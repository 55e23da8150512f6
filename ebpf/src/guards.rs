//! Access-port guards on frames from the guest: the checks in
//! `macvswitch_common::guard`, read from the packet in place, and storm
//! control, which needs the clock and a bucket shared by all CPUs.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use macvswitch_common::{
    DropReason, EndpointPolicy, STORM_BURST_NS,
    guard::{self, FrameBytes, MAX_HEADER_OFFSET, Payload},
};

use crate::maps::STORM;

/// The packet, read in place where its linear area holds the bytes, else
/// copied by the kernel (a frame written by a guest is linear up to a page,
/// so that is rare).
struct Packet<'a>(&'a TcContext);

impl FrameBytes for Packet<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: u32) -> Option<[u8; N]> {
        // Bounded, so that the verifier can check the access below.
        if offset > 2 * MAX_HEADER_OFFSET {
            return None;
        }
        let (start, end) = (self.0.data(), self.0.data_end());
        let at = start + offset as usize;
        if at + N <= end {
            // SAFETY: bounds checked just above, as the verifier wants.
            Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
        } else {
            self.0.load::<[u8; N]>(offset as usize).ok()
        }
    }

    #[inline(always)]
    fn read_far<const N: usize>(&self, offset: u32) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(offset as usize).ok()
    }
}

/// Whether a frame from the guest, passed by its VLAN policy, may go.
#[inline(always)]
pub fn check(ctx: &TcContext, policy: &EndpointPolicy, payload: Payload) -> Result<(), DropReason> {
    let passed = guard::check(policy, &Packet(ctx), payload)?;
    if passed.to_group && policy.storm_interval_ns != 0 && !storm_admits(policy) {
        return Err(DropReason::Storm);
    }
    Ok(())
}

/// Storm control as GCRA, the token bucket in one number: the bucket's
/// "theoretical arrival time" moves on by one interval per frame let
/// through, and a frame goes if that leaves at most a second of the limit
/// ahead of now. All CPUs share the number: an atomic add per frame (no
/// fetch, which older kernels lack); two CPUs that read it at once may both
/// pass a frame at the very edge, one frame each at most.
#[inline(always)]
fn storm_admits(policy: &EndpointPolicy) -> bool {
    let Some(slot) = STORM.get_ptr_mut(u32::from(policy.slot)) else {
        return true;
    };
    let interval = u64::from(policy.storm_interval_ns);
    // SAFETY: a kernel clock read without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a valid, aligned map value, alive for the program's run.
    let due = unsafe { core::ptr::read_volatile(slot) };
    if due < now {
        // Idle long enough that the bucket is full: start again from now.
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(slot, now + interval) };
        return true;
    }
    if due - now + interval > STORM_BURST_NS {
        return false;
    }
    // The intrinsic, since the BPF target has no `AtomicU64::fetch_add`;
    // its result unused, it compiles to BPF_XADD, which every kernel has.
    // SAFETY: as above; the map value is 8-byte aligned.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, interval) };
    true
}
