//! TC ingress of the macvtap: frames on their way to the guest, from the
//! wire or from other endpoints on the same lower device.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_skb_vlan_pop,
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use macvswitch_common::{Action, DropReason, to_guest as decide};

use crate::{counters, frame, maps::POLICIES};

#[classifier]
pub fn to_guest(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's whole run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the value is plain old data, read once.
    let Some(policy) = (unsafe { POLICIES.get(ifindex) }) else {
        return TC_ACT_SHOT;
    };
    let frame = frame::view(&ctx);
    let verdict = match decide(policy, &frame) {
        Action::Pass => Ok(()),
        Action::PopTag => {
            // Pops the offloaded tag, or the inline one when there is none.
            // SAFETY: plain helper call on our own context.
            let ret = unsafe { bpf_skb_vlan_pop(ctx.skb.skb) };
            if ret == 0 {
                Ok(())
            } else {
                Err(DropReason::HelperFailed)
            }
        }
        Action::PushTag { .. } => Err(DropReason::HelperFailed),
        Action::Drop(reason) => Err(reason),
    };
    match verdict {
        Ok(()) => {
            counters::count_to_guest(ifindex, ctx.len());
            TC_ACT_OK
        }
        Err(reason) => {
            debug!(&ctx, "to guest on {}: drop {}", ifindex, reason as u32);
            counters::count_drop(ifindex, reason);
            TC_ACT_SHOT
        }
    }
}
