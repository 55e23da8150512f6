//! What the per-program benchmark runs: a table of (row, program, policy or
//! uplink setting, frame, expected outcome). New port types and programs get
//! rows here.

use macvswitch_common::{
    DropReason, EndpointCounters, EndpointPolicy, PORT_TRUNK, PORT_TUNNEL, UplinkCounters, VidSet,
    names,
};
use macvswitch_tests::frame::{
    BROADCAST, ETHERTYPE_TEST, Mac, TPID_8021AD, TPID_8021Q, double_tagged, eth, tagged, test_mac,
};

use crate::guards::{self, Guarding};

/// The endpoint's MAC in test runs.
pub const GUEST_MAC: Mac = test_mac(0x0a);
/// The other end of the conversation.
pub const PEER_MAC: Mac = test_mac(0x0b);
/// A source the guest does not own.
pub const SPOOFED_MAC: Mac = test_mac(0x66);

/// The port an endpoint is configured as.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    Untagged,
    Access(u16),
    /// Tagged VLANs `vids`, native VLAN `native` (0: none).
    Trunk {
        native: u16,
        vids: &'static [u16],
    },
    /// dot1q-tunnel into service VLAN `svlan`, any customer VLAN.
    Tunnel {
        svlan: u16,
    },
}

/// A row's map value: its port's, with its guards applied as the
/// controller applies them.
pub fn row_policy(mac: Mac, port: Port, guarding: Guarding) -> EndpointPolicy {
    let mut policy = policy(mac, port);
    guarding.guards().apply(&mut policy);
    policy
}

/// The one place that builds map values from a port: adapt it when
/// `EndpointPolicy` changes. A new endpoint's guards (see [`row_policy`]).
pub fn policy(mac: Mac, port: Port) -> EndpointPolicy {
    match port {
        Port::Untagged => EndpointPolicy::untagged(mac),
        Port::Access(vlan) => EndpointPolicy::access(mac, vlan),
        Port::Trunk { native, vids } => {
            let mut set = VidSet::EMPTY;
            for vid in vids {
                set.insert(*vid);
            }
            EndpointPolicy {
                kind: PORT_TRUNK,
                vlan: native,
                vids: set,
                ..EndpointPolicy::untagged(mac)
            }
        }
        Port::Tunnel { svlan } => EndpointPolicy {
            kind: PORT_TUNNEL,
            vlan: svlan,
            ..EndpointPolicy::untagged(mac)
        },
    }
}

/// The frame handed to the program: 60 bytes (64 with FCS), the IPv6
/// ones 78 (UDP) and 70 (RA). Test-ethertype frames unless named otherwise:
/// no guard parses them.
#[derive(Clone, Copy, Debug)]
pub enum Frame {
    /// Untagged, from the guest's own MAC.
    FromGuest,
    /// Untagged IPv4 UDP from the guest's own MAC and address.
    FromGuestUdp4,
    /// Untagged IPv6 UDP from the guest's own MAC and address, as long as
    /// a header and the 16-byte payload of the other frames make it.
    FromGuestUdp6,
    /// An ICMPv6 router advertisement from the guest, to all nodes.
    FromGuestRouterAdvert,
    /// From the guest, already carrying an 802.1Q tag.
    FromGuestTagged(u16),
    /// Untagged, from a MAC the guest does not own.
    FromGuestSpoofed,
    /// Towards the guest, with an inline 802.1Q tag.
    ToGuestTagged(u16),
    /// Towards the guest, untagged.
    ToGuest,
    /// Towards the guest: 802.1ad service tag over an 802.1Q customer tag.
    ToGuestQinQ { svlan: u16, cvlan: u16 },
    /// Untagged broadcast from the guest's own MAC.
    FromGuestBroadcast,
}

impl Frame {
    pub fn bytes(self) -> Vec<u8> {
        let payload = b"macvswitch bench";
        match self {
            Frame::FromGuest => eth(PEER_MAC, GUEST_MAC, ETHERTYPE_TEST, payload),
            Frame::FromGuestUdp4 => guards::udp4(PEER_MAC, GUEST_MAC, 60),
            Frame::FromGuestUdp6 => guards::udp6(PEER_MAC, GUEST_MAC, 14 + 40 + 8 + payload.len()),
            Frame::FromGuestRouterAdvert => guards::router_advert(GUEST_MAC),
            Frame::FromGuestTagged(vid) => tagged(
                PEER_MAC,
                GUEST_MAC,
                TPID_8021Q,
                vid,
                ETHERTYPE_TEST,
                payload,
            ),
            Frame::FromGuestSpoofed => eth(PEER_MAC, SPOOFED_MAC, ETHERTYPE_TEST, payload),
            Frame::ToGuestTagged(vid) => tagged(
                GUEST_MAC,
                PEER_MAC,
                TPID_8021Q,
                vid,
                ETHERTYPE_TEST,
                payload,
            ),
            Frame::ToGuest => eth(GUEST_MAC, PEER_MAC, ETHERTYPE_TEST, payload),
            Frame::ToGuestQinQ { svlan, cvlan } => double_tagged(
                GUEST_MAC,
                PEER_MAC,
                (TPID_8021AD, svlan),
                (TPID_8021Q, cvlan),
                ETHERTYPE_TEST,
                payload,
            ),
            Frame::FromGuestBroadcast => eth(BROADCAST, GUEST_MAC, ETHERTYPE_TEST, payload),
        }
    }
}

/// What the program must do with the frame, checked through its counters.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// TC_ACT_OK, counted in `from_guest_packets`.
    PassFromGuest,
    /// TC_ACT_OK, counted in `to_guest_packets`.
    PassToGuest,
    /// TC_ACT_SHOT, counted under the reason.
    Drop(DropReason),
    /// TC_ACT_SHOT without a policy, so without a counter.
    FailClosed,
    /// The empty program: TC_ACT_OK, counts nothing.
    Baseline,
    /// uplink_egress: `bpf_redirect` to the lower device's ingress,
    /// TC_ACT_REDIRECT (BPF_PROG_TEST_RUN returns it without redirecting),
    /// counted in `relayed_unicast`.
    Relayed,
    /// uplink_egress: a copy back in (`bpf_clone_redirect`, which does run
    /// under BPF_PROG_TEST_RUN) and TC_ACT_OK for the original, counted in
    /// `relayed_multicast`.
    RelayedCopy,
    /// uplink_egress: onto the wire untouched, TC_ACT_OK, counts nothing.
    ToWire,
}

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

impl Outcome {
    pub fn verdict(self) -> u32 {
        match self {
            Outcome::PassFromGuest
            | Outcome::PassToGuest
            | Outcome::Baseline
            | Outcome::RelayedCopy
            | Outcome::ToWire => TC_ACT_OK,
            Outcome::Drop(_) | Outcome::FailClosed => TC_ACT_SHOT,
            Outcome::Relayed => TC_ACT_REDIRECT,
        }
    }

    /// The counter this outcome moves, if any: an endpoint's for the
    /// endpoint programs, the lower device's for uplink_egress.
    pub fn count(self, c: &EndpointCounters, u: &UplinkCounters) -> Option<u64> {
        match self {
            Outcome::PassFromGuest => Some(c.from_guest_packets),
            Outcome::PassToGuest => Some(c.to_guest_packets),
            Outcome::Drop(reason) => Some(c.drops[reason as usize]),
            Outcome::Relayed => Some(u.relayed_unicast),
            Outcome::RelayedCopy => Some(u.relayed_multicast),
            Outcome::FailClosed | Outcome::Baseline | Outcome::ToWire => None,
        }
    }

    /// How the lower device's relay counters must move on one run.
    pub fn uplink_delta(self) -> UplinkCounters {
        UplinkCounters {
            relayed_unicast: u64::from(matches!(self, Outcome::Relayed)),
            relayed_multicast: u64::from(matches!(self, Outcome::RelayedCopy)),
        }
    }
}

/// The lower device's side, for uplink_egress rows: the test device (lo,
/// ifindex 1) plays the lower device; the guest and the peer are local VEPA
/// endpoints on it (both in SOURCES).
#[derive(Clone, Copy, Debug)]
pub struct Uplink {
    /// An UPLINKS entry with `UPLINK_REFLECTIVE_RELAY`; `false`: no entry
    /// at all (the state of a lower device without `--reflective-relay on`).
    pub relay: bool,
    /// The guest and the peer are in SOURCES; `false`: neither is (a frame
    /// the host itself sends out of the lower device).
    pub local: bool,
}

/// One measured row.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub name: &'static str,
    pub program: &'static str,
    /// `None`: the device has no policy.
    pub port: Option<Port>,
    pub frame: Frame,
    pub expect: Outcome,
    /// uplink_egress rows: the relay setting and local senders.
    pub uplink: Option<Uplink>,
    /// The endpoint's guards (with `port`).
    pub guards: Guarding,
}

/// The empty program, built and loaded like the others.
pub const BASELINE: Row = Row {
    name: "empty program (baseline)",
    program: names::PROG_BASELINE,
    port: Some(Port::Access(10)),
    frame: Frame::FromGuest,
    expect: Outcome::Baseline,
    uplink: None,
    guards: Guarding::Default,
};

/// Bench-only (ebpf/src/bench_monitor.rs): the monitor's switch read alone.
pub const PROG_BENCH_MONITOR_IDLE: &str = "bench_monitor_idle";

/// What every frame pays for the drop monitor while nobody watches: one
/// read of its switch, over the empty program.
pub const MONITOR_IDLE: Row = Row {
    name: "monitor switch, nobody watching: one MONITOR read (bench-only program)",
    program: PROG_BENCH_MONITOR_IDLE,
    port: Some(Port::Access(10)),
    frame: Frame::FromGuest,
    expect: Outcome::Baseline,
    uplink: None,
    guards: Guarding::Default,
};

pub const ACCESS_PUSH: Row = Row {
    name: "access push: from_guest, untagged test-ethertype frame, VLAN 10",
    program: names::PROG_FROM_GUEST,
    port: Some(Port::Access(10)),
    frame: Frame::FromGuest,
    expect: Outcome::PassFromGuest,
    uplink: None,
    guards: Guarding::Default,
};

pub const ACCESS_POP: Row = Row {
    name: "access pop+filter: to_guest, tagged VID 10, VLAN 10",
    program: names::PROG_TO_GUEST,
    port: Some(Port::Access(10)),
    frame: Frame::ToGuestTagged(10),
    expect: Outcome::PassToGuest,
    uplink: None,
    guards: Guarding::Default,
};

pub const WRONG_VLAN: Row = Row {
    name: "drop wrong-vlan: to_guest, tagged VID 20, VLAN 10",
    program: names::PROG_TO_GUEST,
    port: Some(Port::Access(10)),
    frame: Frame::ToGuestTagged(20),
    expect: Outcome::Drop(DropReason::WrongVlan),
    uplink: None,
    guards: Guarding::Default,
};

pub const UNTAGGED_FROM: Row = Row {
    name: "untagged port: from_guest, untagged frame",
    program: names::PROG_FROM_GUEST,
    port: Some(Port::Untagged),
    frame: Frame::FromGuest,
    expect: Outcome::PassFromGuest,
    uplink: None,
    guards: Guarding::Default,
};

pub const UNTAGGED_TO: Row = Row {
    name: "untagged port: to_guest, untagged frame",
    program: names::PROG_TO_GUEST,
    port: Some(Port::Untagged),
    frame: Frame::ToGuest,
    expect: Outcome::PassToGuest,
    uplink: None,
    guards: Guarding::Default,
};

const TRUNK: Port = Port::Trunk {
    native: 0,
    vids: &[20, 30],
};

/// From the guest on an access port, honest IP: parsed by the guards.
const fn guarded(name: &'static str, frame: Frame, guards: Guarding, expect: Outcome) -> Row {
    Row {
        name,
        program: names::PROG_FROM_GUEST,
        port: Some(Port::Access(10)),
        frame,
        expect,
        uplink: None,
        guards,
    }
}

/// The guard rows (issue 12): honest IPv4 and IPv6 with the default guards
/// and with `--ip`, and a router advertisement the RA guard drops.
pub const GUARD_ROWS: [Row; 5] = [
    guarded(
        "guards default: from_guest, IPv4 UDP from 192.0.2.10, VLAN 10",
        Frame::FromGuestUdp4,
        Guarding::Default,
        Outcome::PassFromGuest,
    ),
    guarded(
        "guards + --ip: from_guest, IPv4 UDP from 192.0.2.10 (listed), VLAN 10",
        Frame::FromGuestUdp4,
        Guarding::Ip,
        Outcome::PassFromGuest,
    ),
    guarded(
        "guards default: from_guest, IPv6 UDP from 2001:db8::10, VLAN 10",
        Frame::FromGuestUdp6,
        Guarding::Default,
        Outcome::PassFromGuest,
    ),
    guarded(
        "guards + --ip: from_guest, IPv6 UDP from 2001:db8::10 (listed), VLAN 10",
        Frame::FromGuestUdp6,
        Guarding::Ip,
        Outcome::PassFromGuest,
    ),
    DROP_RA,
];

pub const DROP_RA: Row = guarded(
    "drop router-advert: from_guest, ICMPv6 RA, default guards, VLAN 10",
    Frame::FromGuestRouterAdvert,
    Guarding::Default,
    Outcome::Drop(DropReason::RouterAdvert),
);

/// Every row of the per-program table, in report order.
pub const TABLE: &[Row] = &[
    MONITOR_IDLE,
    ACCESS_PUSH,
    GUARD_ROWS[0],
    GUARD_ROWS[1],
    GUARD_ROWS[2],
    GUARD_ROWS[3],
    GUARD_ROWS[4],
    ACCESS_POP,
    UNTAGGED_FROM,
    UNTAGGED_TO,
    Row {
        name: "drop guest-tagged: from_guest, tagged VID 10",
        program: names::PROG_FROM_GUEST,
        port: Some(Port::Access(10)),
        frame: Frame::FromGuestTagged(10),
        expect: Outcome::Drop(DropReason::GuestTagged),
        uplink: None,
        guards: Guarding::Default,
    },
    Row {
        name: "drop spoofed-source: from_guest, foreign source MAC",
        program: names::PROG_FROM_GUEST,
        port: Some(Port::Access(10)),
        frame: Frame::FromGuestSpoofed,
        expect: Outcome::Drop(DropReason::SpoofedSource),
        uplink: None,
        guards: Guarding::Default,
    },
    WRONG_VLAN,
    Row {
        name: "drop untagged: to_guest, untagged frame, VLAN 10",
        program: names::PROG_TO_GUEST,
        port: Some(Port::Access(10)),
        frame: Frame::ToGuest,
        expect: Outcome::Drop(DropReason::Untagged),
        uplink: None,
        guards: Guarding::Default,
    },
    Row {
        name: "fail closed: from_guest on a device without policy",
        program: names::PROG_FROM_GUEST,
        port: None,
        frame: Frame::FromGuest,
        expect: Outcome::FailClosed,
        uplink: None,
        guards: Guarding::Default,
    },
    TRUNK_FROM,
    TRUNK_TO,
    TUNNEL_PUSH,
    TUNNEL_POP,
    RELAY_UNICAST,
    RELAY_BROADCAST,
    RELAY_OFF,
    RELAY_NON_LOCAL,
];

pub const RELAY_UNICAST: Row = Row {
    name: "relay unicast: uplink_egress, to a local endpoint, redirect to ingress",
    program: names::PROG_UPLINK_EGRESS,
    port: None,
    frame: Frame::FromGuest,
    expect: Outcome::Relayed,
    uplink: Some(Uplink {
        relay: true,
        local: true,
    }),
    guards: Guarding::Default,
};

pub const RELAY_BROADCAST: Row = Row {
    name: "relay broadcast: uplink_egress, clone back in + pass to the wire",
    program: names::PROG_UPLINK_EGRESS,
    port: None,
    frame: Frame::FromGuestBroadcast,
    expect: Outcome::RelayedCopy,
    uplink: Some(Uplink {
        relay: true,
        local: true,
    }),
    guards: Guarding::Default,
};

pub const TRUNK_FROM: Row = Row {
    name: "trunk: from_guest, tagged VID 20 (allowed 20,30)",
    program: names::PROG_FROM_GUEST,
    port: Some(TRUNK),
    frame: Frame::FromGuestTagged(20),
    expect: Outcome::PassFromGuest,
    uplink: None,
    guards: Guarding::Default,
};

pub const TRUNK_TO: Row = Row {
    name: "trunk: to_guest, tagged VID 20 (allowed 20,30)",
    program: names::PROG_TO_GUEST,
    port: Some(TRUNK),
    frame: Frame::ToGuestTagged(20),
    expect: Outcome::PassToGuest,
    uplink: None,
    guards: Guarding::Default,
};

pub const TUNNEL_PUSH: Row = Row {
    name: "tunnel push: from_guest, C-tag 100 into S-VLAN 200",
    program: names::PROG_FROM_GUEST,
    port: Some(Port::Tunnel { svlan: 200 }),
    frame: Frame::FromGuestTagged(100),
    expect: Outcome::PassFromGuest,
    uplink: None,
    guards: Guarding::Default,
};

pub const TUNNEL_POP: Row = Row {
    name: "tunnel pop: to_guest, S-tag 200 over C-tag 100",
    program: names::PROG_TO_GUEST,
    port: Some(Port::Tunnel { svlan: 200 }),
    frame: Frame::ToGuestQinQ {
        svlan: 200,
        cvlan: 100,
    },
    expect: Outcome::PassToGuest,
    uplink: None,
    guards: Guarding::Default,
};

pub const RELAY_OFF: Row = Row {
    name: "relay off: uplink_egress, no UPLINKS entry, pass to the wire",
    program: names::PROG_UPLINK_EGRESS,
    port: None,
    frame: Frame::FromGuest,
    expect: Outcome::ToWire,
    uplink: Some(Uplink {
        relay: false,
        local: true,
    }),
    guards: Guarding::Default,
};

pub const RELAY_NON_LOCAL: Row = Row {
    name: "relay on, non-local sender: uplink_egress, pass to the wire",
    program: names::PROG_UPLINK_EGRESS,
    port: None,
    frame: Frame::FromGuest,
    expect: Outcome::ToWire,
    uplink: Some(Uplink {
        relay: true,
        local: false,
    }),
    guards: Guarding::Default,
};
