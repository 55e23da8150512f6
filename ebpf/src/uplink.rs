//! TC egress of the lower device: reflective-relay emulation. Frames a
//! hairpin switch would send back are sent back into the lower device's
//! receive path here instead, so VEPA endpoints reach each other behind a
//! switch without reflective relay.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_OK},
    helpers::{bpf_clone_redirect, bpf_redirect},
    macros::classifier,
    programs::TcContext,
};
use macvswitch_common::{
    SourceKey, UplinkCounters,
    isolation::{Relay, relay},
};

use crate::maps::{SOURCES, UPLINK_COUNTERS, UPLINKS};

#[inline(always)]
fn count(lower: u32, f: impl FnOnce(&mut UplinkCounters)) {
    if let Some(counters) = UPLINK_COUNTERS.get_ptr_mut(lower) {
        // SAFETY: the per-CPU slot is only touched by this CPU.
        f(unsafe { &mut *counters });
    }
}

#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's whole run.
    let lower = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain old data.
    let Some(config) = (unsafe { UPLINKS.get(lower) }) else {
        return TC_ACT_OK;
    };
    // The two addresses, read in place when they are in the linear area.
    let (start, end) = (ctx.data(), ctx.data_end());
    let header = if start + 12 <= end {
        // SAFETY: bounds checked just above, as the verifier wants.
        unsafe { core::ptr::read_unaligned(start as *const [u8; 12]) }
    } else {
        match ctx.load::<[u8; 12]>(0) {
            Ok(header) => header,
            Err(_) => return TC_ACT_OK,
        }
    };
    let dst = [
        header[0], header[1], header[2], header[3], header[4], header[5],
    ];
    let src = [
        header[6], header[7], header[8], header[9], header[10], header[11],
    ];
    // SAFETY: plain old data.
    let source = unsafe { SOURCES.get(SourceKey::new(lower, src)) };
    let to_local = dst[0] & 1 == 0 && unsafe { SOURCES.get(SourceKey::new(lower, dst)) }.is_some();
    match relay(config, &dst, source, to_local) {
        Relay::Wire => TC_ACT_OK,
        Relay::Reflect => {
            count(lower, |c| c.relayed_unicast += 1);
            // SAFETY: plain helper call; returns TC_ACT_REDIRECT.
            unsafe { bpf_redirect(lower, u64::from(BPF_F_INGRESS)) as i32 }
        }
        Relay::ReflectCopy => {
            // SAFETY: plain helper call on our own context.
            if unsafe { bpf_clone_redirect(ctx.skb.skb, lower, u64::from(BPF_F_INGRESS)) } == 0 {
                count(lower, |c| c.relayed_multicast += 1);
            }
            TC_ACT_OK
        }
    }
}
