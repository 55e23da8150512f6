//! Publishing frames to running `macvswitch monitor`s (see
//! `macvswitch_common::monitor`). Nobody watching costs a frame one array
//! read; the rest runs only while a monitor holds a slot, in a program of
//! its own that the frame's program tail-calls with the frame's verdict:
//! the verifier checks it once, on its own, instead of once per path
//! through the frame's program (inlined there, or as a BPF-to-BPF call,
//! which costs kernels before 6.x their precision tracking, 5.10 took
//! minutes to verify the programs).

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{Array, PerCpuArray, ProgramArray, RingBuf},
    programs::TcContext,
};
use macvswitch_common::{
    DropReason, ETH_HLEN, Tag,
    monitor::{
        MONITOR_CAPTURE, MONITOR_DROPS, MONITOR_FROM_GUEST, MONITOR_PASSES, MONITOR_RATE,
        MONITOR_RING_BYTES, MONITOR_SLOTS, MONITOR_TO_GUEST, MONITOR_WINDOW_SHIFT, MonitorControl,
        MonitorEvent, MonitorStats,
    },
};

use crate::{counters::Direction, frame};

#[map]
pub static MONITOR: Array<MonitorControl> = Array::with_max_entries(1, 0);

/// Per CPU, so the rate limit and the loss counts need no atomics.
#[map]
pub static MONITOR_STATS: PerCpuArray<MonitorStats> = PerCpuArray::with_max_entries(1, 0);

/// Where an event is put together: the stack is too small beside the
/// frame's own path (512 bytes for both).
#[map]
pub static MONITOR_SCRATCH: PerCpuArray<MonitorEvent> = PerCpuArray::with_max_entries(1, 0);

/// Entry 0: `monitor_publish`, set by the controller when it loads the
/// programs. Empty (a private copy of the object), a hand-over just
/// returns and the frame's program returns its verdict itself.
#[map]
pub static MONITOR_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What a frame's program hands over to `monitor_publish`: ifindex,
/// direction and reason, carried tag, verdict.
#[map]
pub static MONITOR_PENDING: PerCpuArray<[u32; 4]> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static MONITOR_EVENTS0: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);
#[map]
pub static MONITOR_EVENTS1: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);
#[map]
pub static MONITOR_EVENTS2: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);
#[map]
pub static MONITOR_EVENTS3: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);

const _: () = assert!(MONITOR_SLOTS == 4);

/// A dropped frame, for monitors that watch drops. Call it last: if a
/// monitor watches, the rest of the frame's program does not run.
#[inline(always)]
pub fn dropped(
    ctx: &TcContext,
    ifindex: u32,
    direction: Direction,
    reason: DropReason,
    carried: u32,
) {
    if watching(MONITOR_DROPS) {
        hand_over(
            ctx,
            [
                ifindex,
                info(direction, reason as u8),
                carried,
                TC_ACT_SHOT as u32,
            ],
        );
    }
}

/// A passed frame, for monitors that sample them (`--all`); `verdict` is
/// what the frame's program returns. Call it last, as [`dropped`].
#[inline(always)]
pub fn passed(ctx: &TcContext, ifindex: u32, direction: Direction, carried: u32, verdict: i32) {
    if watching(MONITOR_PASSES) {
        hand_over(ctx, [ifindex, info(direction, 0), carried, verdict as u32]);
    }
}

/// Tail-calls `monitor_publish`, which returns the verdict in `pending`;
/// returns only if there is no such program.
#[inline(always)]
fn hand_over(ctx: &TcContext, pending: [u32; 4]) {
    if let Some(slot) = MONITOR_PENDING.get_ptr_mut(0) {
        // SAFETY: this CPU's entry; read by the program tail-called next,
        // on this CPU, before anything else can run here.
        unsafe { *slot = pending };
        // SAFETY: a tail call with our own context.
        unsafe { MONITOR_PROGS.tail_call(ctx, 0) };
    }
}

/// Publishes the frame a program handed over, and returns its verdict.
#[classifier]
pub fn monitor_publish(ctx: TcContext) -> i32 {
    let Some(pending) = MONITOR_PENDING.get(0) else {
        return TC_ACT_SHOT;
    };
    let [ifindex, info, carried, verdict] = *pending;
    publish(&ctx, ifindex, info, carried);
    verdict as i32
}

/// Whether some slot wants this kind of frame: the one read a frame pays
/// when nobody watches.
#[inline(always)]
pub(crate) fn watching(kind: u32) -> bool {
    // SAFETY: a valid map value that monitors rewrite whole; one load.
    MONITOR
        .get(0)
        .is_some_and(|control| unsafe { core::ptr::read_volatile(&control.active) } & kind != 0)
}

/// Direction and reason (0: passed) in one argument.
#[inline(always)]
fn info(direction: Direction, reason: u8) -> u32 {
    let direction = match direction {
        Direction::FromGuest => MONITOR_FROM_GUEST,
        Direction::ToGuest => MONITOR_TO_GUEST,
    };
    (u32::from(direction) << 8) | u32::from(reason)
}

/// A tag carried in the mark as `TPID << 16 | TCI` (0: none), as
/// [`dropped`] and [`passed`] take it.
#[inline(always)]
pub fn word(tag: Option<Tag>) -> u32 {
    tag.map_or(0, |tag| (u32::from(tag.tpid) << 16) | u32::from(tag.tci))
}

#[inline(always)]
fn publish(ctx: &TcContext, ifindex: u32, info: u32, carried: u32) {
    let Some(control) = MONITOR.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid map value; monitors replace it whole, and the one
    // field written here is written whole.
    let control = unsafe { &mut *control };
    let reason = info as u8;
    let direction = (info >> 8) as u8;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(stats) = MONITOR_STATS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry; a program is not preempted by another run
    // of a TC program on the same CPU.
    let stats = unsafe { &mut *stats };
    let pass = reason == 0;
    if pass {
        stats.seen = stats.seen.wrapping_add(1);
    }
    let mut want = 0u32;
    let mut live = false;
    for slot in 0..MONITOR_SLOTS {
        // SAFETY: reads of a valid map value.
        let (drops_until, passes_until, sample) = unsafe {
            (
                core::ptr::read_volatile(&control.drops_until[slot]),
                core::ptr::read_volatile(&control.passes_until[slot]),
                core::ptr::read_volatile(&control.sample[slot]),
            )
        };
        live |= now < drops_until || now < passes_until;
        let wanted = if pass {
            now < passes_until && (sample <= 1 || stats.seen % sample == 0)
        } else {
            now < drops_until
        };
        if wanted {
            want |= 1 << slot;
        }
    }
    if !live {
        // Every lease ran out, so every monitor is gone (killed, or it
        // could not clear its slot): back to the one read per frame. A
        // monitor that starts at this moment checks that its bit stayed.
        // SAFETY: as above; a 4-byte store.
        unsafe { core::ptr::write_volatile(&mut control.active, 0) };
        return;
    }
    if want == 0 {
        return;
    }
    let window = now >> MONITOR_WINDOW_SHIFT;
    if stats.window != window {
        stats.window = window;
        stats.used = 0;
    }
    if stats.used >= MONITOR_RATE {
        stats.lost_rate += 1;
        return;
    }
    stats.used += 1;
    let Some(event) = MONITOR_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry, not in use by anything else now.
    let event = unsafe { &mut *event };
    fill(event, ctx, now, ifindex, direction, reason, carried);
    // One statement per ring: the verifier needs each map as a constant.
    if want & 1 != 0 {
        emit(&MONITOR_EVENTS0, event, stats);
    }
    if want & 2 != 0 {
        emit(&MONITOR_EVENTS1, event, stats);
    }
    if want & 4 != 0 {
        emit(&MONITOR_EVENTS2, event, stats);
    }
    if want & 8 != 0 {
        emit(&MONITOR_EVENTS3, event, stats);
    }
}

#[inline(always)]
fn emit(ring: &RingBuf, event: &MonitorEvent, stats: &mut MonitorStats) {
    match ring.output::<MonitorEvent>(event, 0) {
        Ok(()) => stats.published += 1,
        Err(_) => stats.lost_full += 1,
    }
}

/// The event for the frame in `ctx`: the fields the kernel holds outside
/// the bytes, and the bytes themselves for user space to read.
#[inline(always)]
fn fill(
    event: &mut MonitorEvent,
    ctx: &TcContext,
    now: u64,
    ifindex: u32,
    direction: u8,
    reason: u8,
    carried: u32,
) {
    let meta = frame::meta(ctx);
    let (start, end) = (ctx.data(), ctx.data_end());
    event.bytes = [0; MONITOR_CAPTURE];
    // Fixed sizes keep every read's bounds constant for the verifier.
    let captured = if start + MONITOR_CAPTURE <= end {
        // SAFETY: bounds checked just above.
        event.bytes = unsafe { core::ptr::read_unaligned(start as *const [u8; MONITOR_CAPTURE]) };
        MONITOR_CAPTURE
    } else if start + 42 <= end {
        // Enough for an IPv4 header's addresses under two tags.
        // SAFETY: bounds checked just above.
        let head = unsafe { core::ptr::read_unaligned(start as *const [u8; 42]) };
        event.bytes[..42].copy_from_slice(&head);
        42
    } else if start + ETH_HLEN as usize <= end {
        // SAFETY: bounds checked just above.
        let head = unsafe { core::ptr::read_unaligned(start as *const [u8; 14]) };
        event.bytes[..14].copy_from_slice(&head);
        14
    } else if let Ok(head) = ctx.load::<[u8; 14]>(0) {
        event.bytes[..14].copy_from_slice(&head);
        14
    } else {
        0
    };
    let (meta_tpid, meta_tci) = meta.map_or((0, 0), |tag| (tag.tpid, tag.tci));
    event.time_ns = now;
    event.ifindex = ifindex;
    event.len = ctx.len();
    event.reason = reason;
    event.direction = direction;
    event.captured = captured as u8;
    event._pad = 0;
    event.meta_tpid = meta_tpid;
    event.meta_tci = meta_tci;
    event.carried_tpid = (carried >> 16) as u16;
    event.carried_tci = carried as u16;
    event._pad2 = 0;
}
