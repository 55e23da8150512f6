//! The drop monitor: what the programs publish while a `macvswitch monitor`
//! runs, and the maps through which monitors switch it on and off.
//!
//! Up to [`MONITOR_SLOTS`] monitors run at once, each in a slot of its own
//! with a ring buffer of its own (a ring buffer has one reader position, so
//! two readers of one would steal each other's events). A slot is on while
//! its lease (`*_until`, `bpf_ktime_get_ns` time) lies ahead: a monitor
//! renews it every second and clears it when it exits, and a monitor killed
//! with SIGKILL stops being published to when its lease runs out.

/// Monitors that can run at once.
pub const MONITOR_SLOTS: usize = 4;
/// Events the programs publish per CPU per window, over all slots; the
/// rest are counted as lost, so a flood cannot make the monitor the load.
pub const MONITOR_RATE: u32 = 1000;
/// The rate limit's window: 2^30 ns, about a second.
pub const MONITOR_WINDOW_SHIFT: u32 = 30;
/// Bytes of the frame an event carries: an Ethernet header, two tags and
/// an IPv6 header's addresses.
pub const MONITOR_CAPTURE: usize = 64;
/// Bytes of each slot's ring buffer (about 2,500 events).
pub const MONITOR_RING_BYTES: u32 = 256 * 1024;

/// `MonitorControl::active`: the slots that want drops.
pub const MONITOR_DROPS: u32 = 0x0f;
/// `MonitorControl::active`: the slots that sample passed frames.
pub const MONITOR_PASSES: u32 = 0x0f << 8;

/// `MonitorEvent::direction`.
pub const MONITOR_FROM_GUEST: u8 = 0;
pub const MONITOR_TO_GUEST: u8 = 1;

/// The one entry of `MONITOR`, written whole by monitors (under a lock
/// file of theirs) and read by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorControl {
    /// Bit `i` ([`MONITOR_DROPS`]): slot `i` wants drops; bit `8 + i`
    /// ([`MONITOR_PASSES`]): it samples passed frames. A frame whose kind
    /// no slot wants costs the programs this one read. A program that finds
    /// every lease run out (its monitor was killed) clears the word.
    pub active: u32,
    pub _pad: u32,
    /// Per slot: publish drops until this time (0: not).
    pub drops_until: [u64; MONITOR_SLOTS],
    /// Per slot: publish passed frames until this time (0: not).
    pub passes_until: [u64; MONITOR_SLOTS],
    /// Per slot: of passed frames, 1 in this many per CPU.
    pub sample: [u32; MONITOR_SLOTS],
}

impl MonitorControl {
    pub const OFF: Self = Self {
        active: 0,
        _pad: 0,
        drops_until: [0; MONITOR_SLOTS],
        passes_until: [0; MONITOR_SLOTS],
        sample: [0; MONITOR_SLOTS],
    };
}

/// Per CPU, in `MONITOR_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// Events written to a ring buffer.
    pub published: u64,
    /// Events not written: over the rate limit.
    pub lost_rate: u64,
    /// Events not written: a ring buffer was full (its monitor is slow).
    pub lost_full: u64,
    /// The rate limit's current window and events published in it.
    pub window: u64,
    pub used: u32,
    /// Passed frames seen while some slot samples them.
    pub seen: u32,
}

impl MonitorStats {
    pub fn accumulate(&mut self, other: &Self) {
        self.published += other.published;
        self.lost_rate += other.lost_rate;
        self.lost_full += other.lost_full;
    }
}

/// One published frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub time_ns: u64,
    pub ifindex: u32,
    /// The frame's length (an offloaded tag not counted).
    pub len: u32,
    /// The drop reason; 0 for a passed frame.
    pub reason: u8,
    /// `MONITOR_FROM_GUEST` or `MONITOR_TO_GUEST`.
    pub direction: u8,
    /// How many of `bytes` are the frame's.
    pub captured: u8,
    pub _pad: u8,
    /// The tag in skb metadata (TPID 0: none).
    pub meta_tpid: u16,
    pub meta_tci: u16,
    /// The tag carried in the mark from another endpoint (TPID 0: none).
    pub carried_tpid: u16,
    pub carried_tci: u16,
    pub _pad2: u32,
    pub bytes: [u8; MONITOR_CAPTURE],
}
