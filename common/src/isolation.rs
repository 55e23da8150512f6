//! Private-VLAN isolation between endpoints on one lower device, and
//! reflective-relay emulation on the lower device.
//!
//! A local sender is recognised by its source MAC on the lower device
//! (`SOURCES`), which anti-spoofing makes trustworthy. So the rule holds on
//! every path a frame can take to a guest: bridge-mode delivery, broadcast
//! copies, frames a hairpin switch reflects, and relayed frames.

use crate::{DropReason, EndpointPolicy, POLICY_ISOLATED, POLICY_PROMISCUOUS};

/// `SourceInfo::mode`: the macvtap/macvlan mode of a local sender.
pub const SOURCE_MODE_BRIDGE: u32 = 1;
pub const SOURCE_MODE_VEPA: u32 = 2;
pub const SOURCE_MODE_PRIVATE: u32 = 3;
pub const SOURCE_MODE_PASSTHRU: u32 = 4;

/// `UplinkConfig::flags`: emulate reflective relay (hairpin) on the lower
/// device's egress.
pub const UPLINK_REFLECTIVE_RELAY: u32 = 1 << 0;
/// `UplinkConfig::flags`: the lower device's egress program is attached, so
/// its endpoints carry tags in the mark and leave the tagging to it. Unset,
/// they push tags themselves: no frame leaves untagged (fail closed).
pub const UPLINK_TAGS_FROM_MARK: u32 = 1 << 1;

/// Key of `SOURCES`: a local endpoint's MAC on its lower device.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub lower: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl SourceKey {
    #[inline(always)]
    pub const fn new(lower: u32, mac: [u8; 6]) -> Self {
        Self {
            lower,
            mac,
            _pad: [0; 2],
        }
    }
}

/// A local endpoint as a sender.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub ifindex: u32,
    /// Community id; 0 for none.
    pub community: u32,
    /// `POLICY_ISOLATED` / `POLICY_PROMISCUOUS` bits of its policy.
    pub flags: u32,
    /// `SOURCE_MODE_*`.
    pub mode: u32,
}

/// Per lower device, at its ifindex in `UPLINKS` (or `UPLINKS_HIGH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkConfig {
    /// `UPLINK_*` bits.
    pub flags: u32,
}

/// Per lower device, per CPU, in `UPLINK_COUNTERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkCounters {
    /// Unicast frames sent back into the lower device instead of the wire.
    pub relayed_unicast: u64,
    /// Broadcast and multicast frames copied back in (and also sent out).
    pub relayed_multicast: u64,
}

impl UplinkCounters {
    pub fn accumulate(&mut self, other: &Self) {
        self.relayed_unicast += other.relayed_unicast;
        self.relayed_multicast += other.relayed_multicast;
    }
}

/// Whether a frame from local endpoint `source` may reach the endpoint
/// `ifindex` with `policy`; `None` if it may.
///
/// Promiscuous ports (the host port) reach and are reached by everyone;
/// otherwise isolated ports reach no local endpoint, and the others reach
/// exactly those of their own community (endpoints in no community form one
/// community of their own). An endpoint never gets its own frame back.
pub fn isolation(policy: &EndpointPolicy, ifindex: u32, source: &SourceInfo) -> Option<DropReason> {
    if source.ifindex == ifindex {
        return Some(DropReason::OwnFrame);
    }
    let promiscuous = (policy.flags | source.flags) & POLICY_PROMISCUOUS != 0;
    let isolated = (policy.flags | source.flags) & POLICY_ISOLATED != 0;
    if promiscuous || (!isolated && policy.community == source.community) {
        None
    } else {
        Some(DropReason::Isolation)
    }
}

/// What the lower device's egress does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    /// Onto the wire, as usual.
    Wire,
    /// Back into the lower device's receive path instead of the wire.
    Reflect,
    /// Both: onto the wire and a copy back in.
    ReflectCopy,
}

/// Reflective-relay emulation: what a hairpin switch would send back.
/// `source` is the sending local endpoint, if any; `to_local` says whether
/// the destination MAC is a local endpoint on this lower device, asked only
/// for a local sender's unicast frame (it costs the program a lookup).
pub fn relay(
    config: &UplinkConfig,
    dst: &[u8; 6],
    source: Option<&SourceInfo>,
    to_local: impl FnOnce() -> bool,
) -> Relay {
    if config.flags & UPLINK_REFLECTIVE_RELAY == 0 {
        return Relay::Wire;
    }
    // Only local endpoints' frames come back from a hairpin; private mode
    // asks the kernel to keep them apart, so they stay on the wire.
    match source {
        Some(source) if source.mode != SOURCE_MODE_PRIVATE => {}
        _ => return Relay::Wire,
    }
    if dst[0] & 1 != 0 {
        Relay::ReflectCopy
    } else if to_local() {
        Relay::Reflect
    } else {
        Relay::Wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointPolicy;

    fn source(ifindex: u32, community: u32, flags: u32, mode: u32) -> SourceInfo {
        SourceInfo {
            ifindex,
            community,
            flags,
            mode,
        }
    }

    fn port(community: u32, flags: u32) -> EndpointPolicy {
        EndpointPolicy {
            community,
            flags,
            ..EndpointPolicy::access([2, 0, 0, 0, 0, 1], 10)
        }
    }

    #[test]
    fn private_vlan_rules() {
        let plain = source(5, 0, 0, SOURCE_MODE_BRIDGE);
        let isolated = source(5, 0, POLICY_ISOLATED, SOURCE_MODE_BRIDGE);
        let blue = source(5, 7, 0, SOURCE_MODE_BRIDGE);
        let host = source(5, 0, POLICY_PROMISCUOUS, SOURCE_MODE_BRIDGE);
        assert_eq!(isolation(&port(0, 0), 9, &plain), None);
        assert_eq!(
            isolation(&port(0, 0), 9, &isolated),
            Some(DropReason::Isolation)
        );
        assert_eq!(
            isolation(&port(0, POLICY_ISOLATED), 9, &plain),
            Some(DropReason::Isolation)
        );
        assert_eq!(isolation(&port(7, 0), 9, &blue), None);
        assert_eq!(
            isolation(&port(8, 0), 9, &blue),
            Some(DropReason::Isolation)
        );
        assert_eq!(
            isolation(&port(0, 0), 9, &blue),
            Some(DropReason::Isolation)
        );
        assert_eq!(isolation(&port(0, POLICY_ISOLATED), 9, &host), None);
        assert_eq!(isolation(&port(0, POLICY_PROMISCUOUS), 9, &isolated), None);
        assert_eq!(
            isolation(&port(0, 0), 5, &plain),
            Some(DropReason::OwnFrame)
        );
    }

    #[test]
    fn relay_rules() {
        let on = UplinkConfig {
            flags: UPLINK_REFLECTIVE_RELAY,
        };
        let off = UplinkConfig { flags: 0 };
        let vepa = source(5, 0, 0, SOURCE_MODE_VEPA);
        let private = source(5, 0, 0, SOURCE_MODE_PRIVATE);
        let unicast = [2, 0, 0, 0, 0, 9];
        let broadcast = [0xff; 6];
        assert_eq!(relay(&off, &unicast, Some(&vepa), || true), Relay::Wire);
        assert_eq!(relay(&on, &unicast, Some(&vepa), || true), Relay::Reflect);
        assert_eq!(relay(&on, &unicast, Some(&vepa), || false), Relay::Wire);
        assert_eq!(
            relay(&on, &broadcast, Some(&vepa), || false),
            Relay::ReflectCopy
        );
        assert_eq!(relay(&on, &unicast, Some(&private), || true), Relay::Wire);
        assert_eq!(relay(&on, &broadcast, None, || false), Relay::Wire);
        // The destination lookup costs a hash: only a local sender's
        // unicast frame may ask for it.
        let never = || -> bool { panic!("destination looked up") };
        assert_eq!(relay(&off, &unicast, Some(&vepa), never), Relay::Wire);
        assert_eq!(relay(&on, &unicast, None, never), Relay::Wire);
        assert_eq!(relay(&on, &unicast, Some(&private), never), Relay::Wire);
        assert_eq!(
            relay(&on, &broadcast, Some(&vepa), never),
            Relay::ReflectCopy
        );
    }
}
