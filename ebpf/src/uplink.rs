//! TC egress of the lower device: tags for frames that carry them in the
//! mark, and reflective-relay emulation.
//!
//! Endpoints on this lower device carry their tags in `skb->mark`; here the
//! tag goes into the skb's metadata (a NIC or veth inserts it by offload)
//! and the mark is cleared, so nothing leaves with our bits. Frames a
//! hairpin switch would send back are sent back into the lower device's
//! receive path instead, mark kept and untagged, so VEPA endpoints reach
//! each other behind a switch without reflective relay.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_clone_redirect, bpf_redirect},
    macros::classifier,
    programs::TcContext,
};
use macvswitch_common::{
    SourceKey, UplinkConfig, UplinkCounters,
    isolation::{Relay, UPLINK_REFLECTIVE_RELAY, relay},
};

use crate::{
    maps::{self, SOURCES, UPLINK_COUNTERS},
    port,
};

#[inline(always)]
fn count(lower: u32, f: impl FnOnce(&mut UplinkCounters)) {
    if let Some(counters) = UPLINK_COUNTERS.get_ptr_mut(lower) {
        // SAFETY: the per-CPU slot is only touched by this CPU.
        f(unsafe { &mut *counters });
    }
}

/// Where a hairpin switch would send the frame.
#[inline(always)]
fn relay_decision(ctx: &TcContext, lower: u32, config: &UplinkConfig) -> Relay {
    // The two addresses, read in place when they are in the linear area.
    let (start, end) = (ctx.data(), ctx.data_end());
    let header = if start + 12 <= end {
        // SAFETY: bounds checked just above, as the verifier wants.
        unsafe { core::ptr::read_unaligned(start as *const [u8; 12]) }
    } else {
        match ctx.load::<[u8; 12]>(0) {
            Ok(header) => header,
            Err(_) => return Relay::Wire,
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
    relay(config, &dst, source, || {
        // SAFETY: plain old data.
        unsafe { SOURCES.get(SourceKey::new(lower, dst)) }.is_some()
    })
}

#[classifier]
pub fn uplink_egress(mut ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's whole run.
    let (lower, mark) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    let Some(carriage) = maps::carriage() else {
        return TC_ACT_OK;
    };
    let config = maps::uplink(lower);
    if config.flags & UPLINK_REFLECTIVE_RELAY != 0 {
        match relay_decision(&ctx, lower, &config) {
            Relay::Wire => {}
            Relay::Reflect => {
                count(lower, |c| c.relayed_unicast += 1);
                // SAFETY: plain helper call; returns TC_ACT_REDIRECT.
                return unsafe { bpf_redirect(lower, u64::from(BPF_F_INGRESS)) as i32 };
            }
            Relay::ReflectCopy => {
                // The copy keeps the mark and goes back in untagged.
                // SAFETY: plain helper call on our own context.
                if unsafe { bpf_clone_redirect(ctx.skb.skb, lower, u64::from(BPF_F_INGRESS)) } == 0
                {
                    count(lower, |c| c.relayed_multicast += 1);
                }
            }
        }
    }
    if let Some(tag) = carriage.carried(mark) {
        port::set_mark(&ctx, carriage.cleared(mark));
        // A frame whose tag cannot be pushed must not leave untagged.
        if port::push(&mut ctx, tag).is_err() {
            return TC_ACT_SHOT;
        }
    }
    TC_ACT_OK
}
