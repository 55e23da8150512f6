//! What both hooks of an endpoint do: look up the policy, decide, carry out
//! the decision, count.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_skb_vlan_pop, bpf_skb_vlan_push},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use macvswitch_common::{
    Action, Decision, DropReason, EndpointPolicy, FrameView, POLICY_CHECK_SENDERS, SourceKey, Tag,
    isolation::isolation,
};

use crate::{
    counters::{self, Direction},
    frame,
    maps::{POLICIES, SOURCES},
};

/// Index of `__sk_buff.cb` where a pushed tag is recorded as
/// `TPID << 16 | TCI`: BPF_PROG_TEST_RUN returns `cb` but not the skb's
/// VLAN metadata, so tests can see what was pushed.
const CB_PUSHED_TAG: usize = 0;

#[inline(always)]
fn push(ctx: &mut TcContext, tag: Tag) -> Result<(), DropReason> {
    // SAFETY: plain helper call on our own context.
    let ret = unsafe { bpf_skb_vlan_push(ctx.skb.skb, tag.tpid.to_be(), tag.tci) };
    if ret != 0 {
        return Err(DropReason::HelperFailed);
    }
    ctx.cb_mut()[CB_PUSHED_TAG] = (u32::from(tag.tpid) << 16) | u32::from(tag.tci);
    Ok(())
}

/// Pops the offloaded tag, or the inline one when there is none.
#[inline(always)]
fn pop(ctx: &TcContext) -> Result<(), DropReason> {
    // SAFETY: plain helper call on our own context.
    match unsafe { bpf_skb_vlan_pop(ctx.skb.skb) } {
        0 => Ok(()),
        _ => Err(DropReason::HelperFailed),
    }
}

#[inline(always)]
pub fn handle(
    mut ctx: TcContext,
    direction: Direction,
    decide: fn(&EndpointPolicy, &FrameView) -> Decision,
) -> i32 {
    // SAFETY: the context pointer is valid for the program's whole run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the value is plain old data.
    let Some(policy) = (unsafe { POLICIES.get(ifindex) }) else {
        // Not ours (yet, or any more): fail closed.
        return TC_ACT_SHOT;
    };
    let frame = frame::view(&ctx);
    let mut decision = decide(policy, &frame);
    // Towards the guest, a frame from another local endpoint must also
    // pass the private-VLAN policy, whichever path it took.
    if matches!(direction, Direction::ToGuest)
        && policy.flags & POLICY_CHECK_SENDERS != 0
        && !matches!(decision.action, Action::Drop(_))
        // SAFETY: the value is plain old data.
        && let Some(source) = unsafe { SOURCES.get(SourceKey::new(policy.lower, frame.src)) }
        && let Some(reason) = isolation(policy, ifindex, source)
    {
        decision.action = Action::Drop(reason);
    }
    let done = match decision.action {
        Action::Pass => Ok(()),
        Action::Push(tag) => push(&mut ctx, tag),
        Action::Pop => pop(&ctx),
        Action::PopPush(tag) => pop(&ctx).and_then(|()| push(&mut ctx, tag)),
        Action::Drop(reason) => Err(reason),
    };
    match done {
        Ok(()) => {
            counters::count_pass(ifindex, policy.slot, decision.vlan, direction, ctx.len());
            TC_ACT_OK
        }
        Err(reason) => {
            debug!(&ctx, "ifindex {}: drop {}", ifindex, reason as u32);
            counters::count_drop(ifindex, policy.slot, decision.vlan, reason);
            TC_ACT_SHOT
        }
    }
}
