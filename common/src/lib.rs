//! Types shared by the eBPF programs and the controller.
//!
//! Everything here is `no_std`, `#[repr(C)]` and padding-free so that the
//! kernel and user space agree on map layouts byte for byte. The per-frame
//! decisions live here too, as pure functions: the programs call them, and
//! host tests call the very same code to check the programs' verdicts.
#![no_std]

pub mod decide;
pub mod drop_reason;

pub use decide::{Action, FrameView, Tag, from_guest, to_guest};
pub use drop_reason::DropReason;

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

/// `EndpointPolicy::flags`: accept any source MAC from the guest.
pub const POLICY_ALLOW_MAC_SPOOFING: u32 = 1 << 0;

/// Per-endpoint policy, keyed by the macvtap's ifindex in `POLICIES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// The only source MAC the guest may send from.
    pub mac: [u8; 6],
    /// Access VLAN; 0 makes an untagged port.
    pub vlan: u16,
    /// `POLICY_*` bits.
    pub flags: u32,
}

impl EndpointPolicy {
    #[inline(always)]
    pub const fn allows_mac_spoofing(&self) -> bool {
        self.flags & POLICY_ALLOW_MAC_SPOOFING != 0
    }
}

/// Slots in `EndpointCounters::drops`; room for reasons added later
/// without changing the map's value size.
pub const DROP_SLOTS: usize = 16;

/// Per-endpoint counters, keyed by ifindex in the per-CPU map `COUNTERS`.
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

/// Names shared by the eBPF object and the controller.
pub mod names {
    pub const PROG_FROM_GUEST: &str = "from_guest";
    pub const PROG_TO_GUEST: &str = "to_guest";
    /// An empty program, for benchmarks only; never attached.
    pub const PROG_BASELINE: &str = "baseline";
    pub const MAP_POLICIES: &str = "POLICIES";
    pub const MAP_COUNTERS: &str = "COUNTERS";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), made of integers only, with no padding.
    unsafe impl aya::Pod for super::EndpointPolicy {}
    unsafe impl aya::Pod for super::EndpointCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_values_have_no_padding() {
        assert_eq!(core::mem::size_of::<EndpointPolicy>(), 6 + 2 + 4);
        assert_eq!(
            core::mem::size_of::<EndpointCounters>(),
            8 * (4 + DROP_SLOTS)
        );
    }

    #[test]
    fn every_drop_reason_has_a_slot() {
        for reason in DropReason::ALL {
            assert!((*reason as usize) < DROP_SLOTS, "{reason:?}");
        }
    }
}
