//! What both hooks of an endpoint do: look up the policy, decide, carry out
//! the decision, count.
//!
//! Tags travel between local endpoints in `skb->mark` (see
//! `macvswitch_common::carriage`): the egress program writes the tag there
//! when the lower device's egress program is attached to turn it into a
//! metadata tag, and pushes it itself otherwise; the ingress program reads
//! a carried tag as the frame's outermost tag.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_skb_vlan_pop, bpf_skb_vlan_push},
    programs::TcContext,
};
use macvswitch_common::{
    Action, Decision, DropReason, ETH_HLEN, EndpointPolicy, FrameView, MarkCarriage,
    POLICY_CHECK_SENDERS, SourceKey, Tag, decide, guard::Payload, isolation::UPLINK_TAGS_FROM_MARK,
    isolation::isolation,
};

use crate::{
    counters::{self, Direction},
    frame, guards,
    maps::{self, SOURCES},
    monitor,
};

/// Index of `__sk_buff.cb` where a pushed tag is recorded as
/// `TPID << 16 | TCI`: BPF_PROG_TEST_RUN returns `cb` but not the skb's
/// VLAN metadata, so tests can see what was pushed.
const CB_PUSHED_TAG: usize = 0;

/// Sets `skb->mark`. The verifier accepts context accesses only at a
/// constant offset from the unmodified context pointer; an opaque copy of
/// the pointer keeps LLVM from precomputing (and spilling) `ctx + 8`.
#[inline(always)]
pub fn set_mark(ctx: &TcContext, mark: u32) {
    let skb = core::hint::black_box(ctx.skb.skb);
    // SAFETY: the context pointer is valid for the program's whole run, and
    // TC programs may write the mark.
    unsafe { core::ptr::write_volatile(&raw mut (*skb).mark, mark) }
}

/// Pushes `tag` into the skb's metadata.
#[inline(always)]
pub fn push(ctx: &mut TcContext, tag: Tag) -> Result<(), DropReason> {
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

/// Gives a frame from the guest the port's tag: in the mark where the lower
/// device's program will tag it, else in the skb's metadata.
#[inline(always)]
fn tag(
    ctx: &mut TcContext,
    policy: &EndpointPolicy,
    carriage: &MarkCarriage,
    mark: u32,
    tag: Tag,
) -> Result<(), DropReason> {
    if carriage.mask != 0 && maps::uplink(policy.lower).flags & UPLINK_TAGS_FROM_MARK != 0 {
        set_mark(ctx, carriage.carry(mark, tag));
        Ok(())
    } else {
        push(ctx, tag)
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
    let Some(policy) = maps::policy(ifindex) else {
        // Not ours (yet, or any more): fail closed.
        return TC_ACT_SHOT;
    };
    let Some(carriage) = maps::carriage() else {
        return TC_ACT_SHOT;
    };
    // Read once: the verifier refuses a context pointer kept with an offset.
    // SAFETY: the context pointer is valid for the program's whole run.
    let mark = unsafe { core::ptr::read_volatile(&(*ctx.skb.skb).mark) };
    // Only frames towards a guest can carry a tag from another endpoint; a
    // mark that looks like ours on a frame from the guest side (the host
    // port's stack can set marks) is cleared, never believed.
    let ours = carriage.is_ours(mark);
    let carried = match direction {
        Direction::ToGuest if ours => carriage.carried(mark),
        _ => None,
    };
    // As a word, here, where every path defines it: a 5.10 verifier
    // refuses a read of the tag's bytes that a `None` left unwritten.
    let carried_word = monitor::word(carried);
    let len = ctx.len();
    // Runts leave at once, so that no later check of the length has a
    // branch an older verifier would walk with impossible bounds.
    if len < ETH_HLEN {
        counters::count_drop(ifindex, policy.slot, None, DropReason::Runt);
        monitor::dropped(&ctx, ifindex, direction, DropReason::Runt, carried_word);
        return TC_ACT_SHOT;
    }
    let meta = frame::meta(&ctx);
    let to_guest = matches!(direction, Direction::ToGuest);
    let check_senders = to_guest && policy.flags & POLICY_CHECK_SENDERS != 0;
    // The common cases from a glance; the others, and frames towards a
    // guest whose sender must be looked up, from the whole view.
    let glance = if check_senders {
        None
    } else {
        frame::glance(&ctx, len, &policy.mac, meta, carried)
    };
    let quick = glance.and_then(|glance| {
        decide::fast(policy, to_guest, &glance)
            .map(|decision| (decision, Payload::untagged(glance.ethertype)))
    });
    let (mut decision, payload) = match quick {
        Some(quick) => quick,
        None => {
            let frame = frame::view(&ctx, len, meta).with_carried(carried);
            let mut decision = decide(policy, &frame);
            // Towards the guest, a frame from another local endpoint must
            // also pass the private-VLAN policy, whichever path it took.
            if check_senders
                && !matches!(decision.action, Action::Drop(_))
                // SAFETY: the value is plain old data.
                && let Some(source) =
                    unsafe { SOURCES.get(SourceKey::new(policy.lower, frame.src)) }
                && let Some(reason) = isolation(policy, ifindex, source)
            {
                decision.action = Action::Drop(reason);
            }
            (decision, Payload::of(&frame))
        }
    };
    if !to_guest
        && !matches!(decision.action, Action::Drop(_))
        && let Err(reason) = guards::check(&ctx, policy, payload)
    {
        decision.action = Action::Drop(reason);
    }
    if ours && !matches!(decision.action, Action::Drop(_)) {
        set_mark(&ctx, carriage.cleared(mark));
    }
    let done = match (decision.action, carried) {
        (Action::Pass, None) => Ok(()),
        // The guest sees the carried tag: it goes into the metadata, which
        // the tap's read puts inline.
        (Action::Pass, Some(outer)) => push(&mut ctx, outer),
        (Action::Pop, None) => pop(&ctx),
        // The carried tag was the outer one; clearing the mark removed it.
        (Action::Pop, Some(_)) => Ok(()),
        (Action::Push(port_tag), _) => tag(&mut ctx, policy, &carriage, mark, port_tag),
        (Action::PopPush(port_tag), _) => {
            pop(&ctx).and_then(|()| tag(&mut ctx, policy, &carriage, mark, port_tag))
        }
        (Action::Drop(reason), _) => Err(reason),
    };
    match done {
        Ok(()) => {
            counters::count_pass(ifindex, policy.slot, decision.vlan, direction, ctx.len());
            monitor::passed(&ctx, ifindex, direction, carried_word, TC_ACT_OK);
            TC_ACT_OK
        }
        Err(reason) => {
            counters::count_drop(ifindex, policy.slot, decision.vlan, reason);
            monitor::dropped(&ctx, ifindex, direction, reason, carried_word);
            TC_ACT_SHOT
        }
    }
}
