//! TC egress of the macvtap: frames the guest wrote to its tap fd.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_skb_vlan_push,
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use macvswitch_common::{Action, DropReason, TPID_8021Q, from_guest as decide};

use crate::{counters, frame, maps::POLICIES};

#[classifier]
pub fn from_guest(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's whole run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the value is plain old data, read once.
    let Some(policy) = (unsafe { POLICIES.get(ifindex) }) else {
        // Not ours (yet, or any more): fail closed.
        return TC_ACT_SHOT;
    };
    let frame = frame::view(&ctx);
    let verdict = match decide(policy, &frame) {
        Action::Pass => Ok(()),
        Action::PushTag { tci } => {
            // SAFETY: plain helper call on our own context.
            let ret = unsafe { bpf_skb_vlan_push(ctx.skb.skb, TPID_8021Q.to_be(), tci) };
            if ret == 0 {
                Ok(())
            } else {
                Err(DropReason::HelperFailed)
            }
        }
        Action::PopTag => Err(DropReason::HelperFailed),
        Action::Drop(reason) => Err(reason),
    };
    match verdict {
        Ok(()) => {
            counters::count_from_guest(ifindex, frame.len);
            TC_ACT_OK
        }
        Err(reason) => {
            debug!(&ctx, "from guest on {}: drop {}", ifindex, reason as u32);
            counters::count_drop(ifindex, reason);
            TC_ACT_SHOT
        }
    }
}
