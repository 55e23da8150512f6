//! Types shared by the eBPF programs and the controller.
//!
//! Everything here is `no_std`, `#[repr(C)]` and padding-free so that the
//! kernel and user space agree on map layouts byte for byte. The per-frame
//! decisions live here too, as pure functions: the programs call them, and
//! host tests call the very same code to check the programs' verdicts.
#![no_std]

pub mod carriage;
pub mod decide;
pub mod drop_reason;
pub mod guard;
pub mod isolation;
pub mod monitor;

pub use carriage::MarkCarriage;
pub use decide::{Action, Decision, FrameView, Tag, from_guest, to_guest};
pub use drop_reason::DropReason;
pub use guard::AddressGuard;
pub use isolation::{SourceInfo, SourceKey, UplinkConfig, UplinkCounters};

/// Length of an Ethernet header (dst, src, ethertype).
pub const ETH_HLEN: u32 = 14;
/// Length of an Ethernet header followed by one inline VLAN tag.
pub const ETH_VLAN_HLEN: u32 = 18;

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ TPID some switches still send.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;

/// Whether an ethertype announces a VLAN tag rather than a payload.
#[inline(always)]
pub const fn is_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_8021Q | TPID_8021AD | TPID_QINQ_LEGACY)
}

/// The VLAN id in a tag control information field.
#[inline(always)]
pub const fn tci_vid(tci: u16) -> u16 {
    tci & 0x0fff
}

/// Entries in the policy and counter maps; one per endpoint.
pub const MAX_ENDPOINTS: u32 = 4096;
/// Ifindexes below this index the per-device arrays (`PORTS`, `UPLINKS`)
/// directly: an array lookup, no hashing. Larger ones (a namespace that
/// has made this many links) use the `*_HIGH` hash maps.
pub const IFINDEX_DIRECT: u32 = 1 << 16;
/// Entries in `POLICIES`: two copies per slot, so that an update is
/// written where no frame looks and then switched to (see [`PortWord`]).
pub const POLICY_ENTRIES: u32 = 2 * MAX_ENDPOINTS;

/// The value of `PORTS`: which copy of which slot's policy is current, as
/// `slot << 8 | copy` with copy 1 or 2 (0: no policy, frames are dropped).
///
/// Every change writes either the copy byte alone or, while the copy is 0,
/// the slot alone, so a reader sees the old or the new word even if the
/// kernel copies the value byte by byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortWord(pub u32);

impl PortWord {
    pub const NONE: Self = Self(0);

    #[inline(always)]
    pub const fn new(slot: u16, copy: u8) -> Self {
        Self(((slot as u32) << 8) | copy as u32)
    }

    #[inline(always)]
    pub const fn slot(self) -> u16 {
        (self.0 >> 8) as u16
    }

    /// 0 (none), 1 or 2.
    #[inline(always)]
    pub const fn copy(self) -> u8 {
        self.0 as u8
    }

    /// The index of the current policy in `POLICIES`.
    #[inline(always)]
    pub const fn policy_index(self) -> Option<u32> {
        match self.copy() {
            1 | 2 => Some(self.slot() as u32 * 2 + self.copy() as u32 - 1),
            _ => None,
        }
    }
}

/// Entries in the per-lower-device maps.
pub const MAX_UPLINKS: u32 = 256;
/// Entries in the per-VLAN counter map (allocated on first use).
pub const MAX_VLAN_COUNTERS: u32 = 65536;

/// `EndpointPolicy::kind`: passes only untagged frames.
pub const PORT_UNTAGGED: u8 = 0;
/// One VLAN, `vlan`; the guest sees untagged frames.
pub const PORT_ACCESS: u8 = 1;
/// The VLANs in `vids` arrive tagged; `vlan` is the native VLAN (0: none).
pub const PORT_TRUNK: u8 = 2;
/// dot1q-tunnel: everything from the guest goes into service VLAN `vlan`
/// under an 802.1ad tag; `vids` limits the customer VLANs if
/// `POLICY_CVLANS_LIMITED` is set.
pub const PORT_TUNNEL: u8 = 3;

/// `EndpointPolicy::flags`: accept any source MAC from the guest.
pub const POLICY_ALLOW_MAC_SPOOFING: u32 = 1 << 0;
/// Trunk: frames of the native VLAN reach the guest tagged.
pub const POLICY_NATIVE_TAGGED: u32 = 1 << 1;
/// Tunnel: only customer VLANs in `vids` are carried.
pub const POLICY_CVLANS_LIMITED: u32 = 1 << 2;
/// `priority` holds the PCP for tags macvswitch pushes.
pub const POLICY_PRIORITY_SET: u32 = 1 << 3;
/// Private VLAN: exchanges frames with the wire only.
pub const POLICY_ISOLATED: u32 = 1 << 4;
/// Private VLAN: reaches and is reached by every local endpoint (the
/// host port).
pub const POLICY_PROMISCUOUS: u32 = 1 << 5;
/// Look senders up in `SOURCES` for frames to the guest (private-VLAN rules,
/// own frames come back). Off when every endpoint on the lower device is
/// open and in bridge mode, where neither can happen: one hash lookup less
/// per frame.
pub const POLICY_CHECK_SENDERS: u32 = 1 << 6;
/// Source guard: IP sources, ARP and neighbour advertisements must match
/// `addresses` (see [`guard`]).
pub const POLICY_GUARD_IP: u32 = 1 << 7;
/// The guest may send DHCP and DHCPv6 server messages.
pub const POLICY_ALLOW_DHCP_SERVER: u32 = 1 << 8;
/// The guest may send IPv6 router advertisements and redirects.
pub const POLICY_ALLOW_RA: u32 = 1 << 9;
/// The guest may send to the STP and slow-protocols group addresses.
pub const POLICY_ALLOW_BPDU: u32 = 1 << 10;

/// Storm control: the fastest `--storm-limit`, frames per second. Its
/// interval (1000 ns) keeps the bucket's arithmetic exact to 0.1 %.
pub const MAX_STORM_PPS: u32 = 1_000_000;
/// The burst a storm bucket allows: one second of the limit.
pub const STORM_BURST_NS: u64 = 1_000_000_000;

/// A set of VLAN ids as a 4096-bit bitmap: one lookup, constant time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VidSet {
    pub words: [u64; 64],
}

impl VidSet {
    pub const EMPTY: Self = Self { words: [0; 64] };

    #[inline(always)]
    pub const fn contains(&self, vid: u16) -> bool {
        let vid = vid & 0x0fff;
        self.words[(vid >> 6) as usize] >> (vid & 63) & 1 != 0
    }

    pub fn insert(&mut self, vid: u16) {
        let vid = vid & 0x0fff;
        self.words[(vid >> 6) as usize] |= 1 << (vid & 63);
    }

    pub fn remove(&mut self, vid: u16) {
        let vid = vid & 0x0fff;
        self.words[(vid >> 6) as usize] &= !(1 << (vid & 63));
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..4096).filter(|vid| self.contains(*vid))
    }

    /// The set as maximal runs `(first, last)`, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        let mut vids = self.iter().peekable();
        core::iter::from_fn(move || {
            let first = vids.next()?;
            let mut last = first;
            while vids.peek() == Some(&(last + 1)) {
                last = vids.next()?;
            }
            Some((first, last))
        })
    }
}

/// Ranges collapsed, as the CLI writes a VLAN list: `10,20,100-199`
/// (nothing for the empty set).
impl core::fmt::Display for VidSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, (first, last)) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

/// Per-endpoint policy, keyed by the macvtap's ifindex in `POLICIES`.
/// Updated in place by `endpoint set`: one map update, atomic per entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// The only source MAC the guest may send from.
    pub mac: [u8; 6],
    /// `PORT_*`.
    pub kind: u8,
    /// PCP (0..=7) for pushed tags when `POLICY_PRIORITY_SET`.
    pub priority: u8,
    /// Access VLAN, native VLAN of a trunk (0: none) or service VLAN of a
    /// tunnel.
    pub vlan: u16,
    /// The endpoint's slot in the per-CPU counter array.
    pub slot: u16,
    /// `POLICY_*` bits.
    pub flags: u32,
    /// Ifindex of the lower device: the scope of local senders.
    pub lower: u32,
    /// Community id (private VLAN); 0 for endpoints in no community.
    pub community: u32,
    /// Trunk: allowed VLANs. Tunnel: allowed customer VLANs.
    pub vids: VidSet,
    /// Storm control: nanoseconds between broadcast or multicast frames
    /// at the limit (1e9 / PPS); 0: no limit.
    pub storm_interval_ns: u32,
    pub _reserved: u32,
    /// The guest's addresses, with `POLICY_GUARD_IP`.
    pub addresses: AddressGuard,
}

impl EndpointPolicy {
    /// An untagged port (no VLAN) for `mac`.
    pub const fn untagged(mac: [u8; 6]) -> Self {
        Self {
            mac,
            kind: PORT_UNTAGGED,
            priority: 0,
            vlan: 0,
            slot: 0,
            flags: 0,
            lower: 0,
            community: 0,
            vids: VidSet::EMPTY,
            storm_interval_ns: 0,
            _reserved: 0,
            addresses: AddressGuard::EMPTY,
        }
    }

    /// An access port on `vlan` for `mac`.
    pub const fn access(mac: [u8; 6], vlan: u16) -> Self {
        Self {
            kind: PORT_ACCESS,
            vlan,
            ..Self::untagged(mac)
        }
    }

    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    #[inline(always)]
    pub const fn allows_mac_spoofing(&self) -> bool {
        self.has(POLICY_ALLOW_MAC_SPOOFING)
    }
}

/// Slots in `EndpointCounters::drops`; room for reasons added later
/// without changing the map's value size.
pub const DROP_SLOTS: usize = 32;

/// Per-endpoint counters: the per-CPU array `COUNTERS`, indexed by the
/// endpoint's `slot` (an array lookup the verifier inlines, no hashing).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointCounters {
    pub to_guest_packets: u64,
    pub to_guest_bytes: u64,
    pub from_guest_packets: u64,
    pub from_guest_bytes: u64,
    /// Indexed by `DropReason as usize`.
    pub drops: [u64; DROP_SLOTS],
}

impl EndpointCounters {
    pub const ZERO: Self = Self {
        to_guest_packets: 0,
        to_guest_bytes: 0,
        from_guest_packets: 0,
        from_guest_bytes: 0,
        drops: [0; DROP_SLOTS],
    };

    /// Sum of per-CPU copies.
    pub fn accumulate(&mut self, other: &Self) {
        self.to_guest_packets += other.to_guest_packets;
        self.to_guest_bytes += other.to_guest_bytes;
        self.from_guest_packets += other.from_guest_packets;
        self.from_guest_bytes += other.from_guest_bytes;
        for (mine, theirs) in self.drops.iter_mut().zip(other.drops.iter()) {
            *mine += *theirs;
        }
    }
}

/// Key of the per-VLAN counters of trunk and tunnel endpoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlanKey {
    pub ifindex: u32,
    /// Trunk: the VLAN. Tunnel: the customer VLAN (0: untagged).
    pub vid: u16,
    pub _pad: u16,
}

/// Names shared by the eBPF object and the controller.
pub mod names {
    pub const PROG_FROM_GUEST: &str = "from_guest";
    pub const PROG_TO_GUEST: &str = "to_guest";
    /// An empty program, for benchmarks only; never attached.
    pub const PROG_BASELINE: &str = "baseline";
    pub const MAP_POLICIES: &str = "POLICIES";
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const MAP_VLAN_COUNTERS: &str = "VLAN_COUNTERS";
    pub const MAP_SOURCES: &str = "SOURCES";
    pub const MAP_UPLINKS: &str = "UPLINKS";
    pub const MAP_UPLINKS_HIGH: &str = "UPLINKS_HIGH";
    pub const MAP_PORTS: &str = "PORTS";
    pub const MAP_PORTS_HIGH: &str = "PORTS_HIGH";
    pub const MAP_CARRIAGE: &str = "CARRIAGE";
    /// Storm control's bucket per endpoint slot (shared by all CPUs).
    pub const MAP_STORM: &str = "STORM";
    pub const MAP_UPLINK_COUNTERS: &str = "UPLINK_COUNTERS";
    /// On the lower device's egress: reflective-relay emulation.
    pub const PROG_UPLINK_EGRESS: &str = "uplink_egress";
    /// The drop monitor's switch, statistics and per-slot ring buffers.
    pub const MAP_MONITOR: &str = "MONITOR";
    /// Entry 0: `PROG_MONITOR_PUBLISH`, which the frames' programs
    /// tail-call while a monitor watches.
    pub const MAP_MONITOR_PROGS: &str = "MONITOR_PROGS";
    pub const PROG_MONITOR_PUBLISH: &str = "monitor_publish";
    pub const MAP_MONITOR_STATS: &str = "MONITOR_STATS";
    pub const MAP_MONITOR_EVENTS: [&str; crate::monitor::MONITOR_SLOTS] = [
        "MONITOR_EVENTS0",
        "MONITOR_EVENTS1",
        "MONITOR_EVENTS2",
        "MONITOR_EVENTS3",
    ];
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), made of integers only, with no padding.
    unsafe impl aya::Pod for super::EndpointPolicy {}
    unsafe impl aya::Pod for super::EndpointCounters {}
    unsafe impl aya::Pod for super::VlanKey {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceInfo {}
    unsafe impl aya::Pod for super::UplinkConfig {}
    unsafe impl aya::Pod for super::UplinkCounters {}
    unsafe impl aya::Pod for super::MarkCarriage {}
    unsafe impl aya::Pod for super::monitor::MonitorControl {}
    unsafe impl aya::Pod for super::monitor::MonitorStats {}
    unsafe impl aya::Pod for super::monitor::MonitorEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_values_have_no_padding() {
        assert_eq!(
            core::mem::size_of::<EndpointPolicy>(),
            24 + 512 + 8 + core::mem::size_of::<AddressGuard>()
        );
        assert_eq!(core::mem::size_of::<AddressGuard>(), 16 * 8 + 16 * 32 + 8);
        assert_eq!(core::mem::size_of::<SourceKey>(), 12);
        assert_eq!(core::mem::size_of::<SourceInfo>(), 16);
        assert_eq!(core::mem::size_of::<VlanKey>(), 8);
        assert_eq!(core::mem::size_of::<monitor::MonitorControl>(), 8 + 64 + 16);
        assert_eq!(core::mem::size_of::<monitor::MonitorStats>(), 40);
        assert_eq!(core::mem::size_of::<monitor::MonitorEvent>(), 32 + 64);
        assert_eq!(
            core::mem::size_of::<EndpointCounters>(),
            8 * (4 + DROP_SLOTS)
        );
    }

    #[test]
    fn vid_set_bits() {
        let mut set = VidSet::EMPTY;
        for vid in [1, 63, 64, 4094] {
            set.insert(vid);
        }
        assert!(set.contains(63) && set.contains(64) && set.contains(4094));
        assert!(!set.contains(0) && !set.contains(2) && !set.contains(4095));
        set.remove(64);
        assert!(!set.contains(64));
        assert_eq!(set.iter().count(), 3);
        set.insert(2);
        set.insert(3);
        let ranges: [(u16, u16); 3] = [(1, 3), (63, 63), (4094, 4094)];
        assert!(set.ranges().eq(ranges));
    }

    #[test]
    fn every_drop_reason_has_a_slot() {
        for reason in DropReason::ALL {
            assert!((*reason as usize) < DROP_SLOTS, "{reason:?}");
        }
    }
}
