//! dot1q-tunnel (QinQ) ports (`--tunnel SVID [--tunnel-cvlans LIST]`)
//! against the wire (sw0). The S-tag the program pushes lives in skb
//! metadata and shows up in PACKET_AUXDATA as TPID 0x88a8; customer tags
//! stay inline. Wire frames are sent double-tagged inline: lower0's receive
//! path moves the outer S-tag into metadata before the macvtap sees it.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{
    Refused, Way, absent, all_absent, assert_drops, assert_vlan_packets, at_guest, drops_of,
    on_wire, refused, sent_to_wire,
};
use macvswitch_tests::frame::{
    self, BROADCAST, ETHERTYPE_TEST, Marker, TPID_8021AD, TPID_8021Q, ad_frame, marked, q_frame,
    stacked, tags,
};
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::{OnePort, root_port};

/// Wire frames a tunnel 100 must not deliver, by drop reason.
#[rustfmt::skip]
const WIRE_REFUSED: &[Refused] = &[
    Refused::new("wire S-VID 101 + C 7 to tunnel 100", "wrong-vlan", &[(TPID_8021AD, 101), (TPID_8021Q, 7)]),
    Refused::new("wire 802.1Q 100 + C 7 to a tunnel", "foreign-tpid", &[(TPID_8021Q, 100), (TPID_8021Q, 7)]),
    Refused::new("wire 802.1Q 100 to a tunnel", "foreign-tpid", &[(TPID_8021Q, 100)]),
    Refused::new("untagged wire frame to a tunnel", "untagged", &[]),
];

/// Guest frames a tunnel 100 must not send: the guest's own 802.1ad tag
/// is not a customer tag.
#[rustfmt::skip]
const GUEST_REFUSED: &[Refused] = &[
    Refused::new("guest 802.1ad frame", "foreign-tpid", &[(TPID_8021AD, 100)]),
];

/// Wire frame: S-tag `stci` (0x88a8) over C-tag `ctci`.
fn s_c_frame(dst: frame::Mac, stci: u16, ctci: u16, m: &Marker) -> Vec<u8> {
    stacked(dst, SWITCH_MAC, (TPID_8021AD, stci), (TPID_8021Q, ctci), m)
}

/// Wire frame: S-tag `stci` over an untagged customer frame.
fn s_frame(dst: frame::Mac, stci: u16, m: &Marker) -> Vec<u8> {
    ad_frame(dst, SWITCH_MAC, stci, m)
}

#[test]
fn guest_frames_leave_under_an_8021ad_s_tag_with_customer_tags_kept() {
    let OnePort { h, ep, tap, wire } = root_port!("q0", "tunnel", &["--tunnel", "100"]);
    assert_eq!(ep.raw["tunnel"], 100, "show: {}", ep.raw);

    // Untagged customer frame: S-tag 100 in metadata, bytes untagged.
    let f = sent_to_wire(&tap, ep.mac, &wire, "untagged guest frame");
    assert_eq!(f.vlan, Some((TPID_8021AD, 100)), "outer tag: {f:?}");
    let p = frame::parse(&f.bytes).unwrap();
    assert!(p.tags.is_empty(), "inline tag on untagged customer: {f:?}");
    assert_eq!(
        (p.dst, p.src, p.ethertype),
        (SWITCH_MAC, ep.mac, ETHERTYPE_TEST)
    );

    // C-tag 7 with PCP 3: S-tag 100 takes the customer's PCP, C-tag kept inline.
    for (dst, ctci) in [(SWITCH_MAC, 0x6007_u16), (BROADCAST, 0x0007)] {
        let m = Marker::new();
        tap.write(&q_frame(dst, ep.mac, ctci, &m));
        let what = format!("guest frame with C-tag {ctci:#06x}");
        let f = on_wire(&wire, &m, &what);
        assert_eq!(
            f.vlan,
            Some((TPID_8021AD, (ctci & 0xf000) | 100)),
            "{what}: outer tag: {f:?}"
        );
        let p = frame::parse(&f.bytes).unwrap();
        assert_eq!(p.tags, [(TPID_8021Q, ctci)], "{what}: customer tag: {f:?}");
        assert_eq!((p.dst, p.ethertype), (dst, ETHERTYPE_TEST), "{what}");
    }

    // Counters per customer VLAN, 0 for untagged customer frames.
    let s = h.stats("q0");
    assert_vlan_packets(&h, "q0", &[(0, "from_guest", 1), (7, "from_guest", 2)]);
    assert_eq!(s["from_guest"]["packets"], 3, "stats: {s}");
}

#[test]
fn priority_sets_the_pcp_of_the_s_tag() {
    let port = root_port!("q0", "tunnel", &["--tunnel", "100", "--priority", "6"]);
    let OnePort { ep, tap, wire, .. } = &port;
    assert_eq!(ep.raw["priority"], 6, "show: {}", ep.raw);
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 0x2007, &m));
    let f = on_wire(wire, &m, "guest frame with C-tag 7 PCP 1");
    assert_eq!(f.vlan, Some((TPID_8021AD, 0xc064)), "S-tag: {f:?}");
    assert_eq!(
        frame::parse(&f.bytes).unwrap().tags,
        [(TPID_8021Q, 0x2007)],
        "the customer tag's PCP must stay: {f:?}"
    );
}

#[test]
fn wire_frames_under_the_s_tag_arrive_with_the_s_tag_removed() {
    let OnePort { h, ep, tap, wire } = root_port!("q0", "tunnel", &["--tunnel", "100"]);

    // S 100 (PCP 5) + C 7 (PCP 2): the guest sees exactly the C-tag.
    for (dst, ctci) in [(ep.mac, 0x4007_u16), (BROADCAST, 0x0007)] {
        let m = Marker::new();
        wire.send(&s_c_frame(dst, 0xa064, ctci, &m));
        let what = format!("wire S100 + C {ctci:#06x}");
        let f = at_guest(&tap, &m, &what);
        let p = frame::parse(&f).unwrap();
        assert_eq!(p.tags, [(TPID_8021Q, ctci)], "{what}: {f:02x?}");
        assert_eq!(
            (p.dst, p.src, p.ethertype),
            (dst, SWITCH_MAC, ETHERTYPE_TEST)
        );
    }
    // S 100 over an untagged customer frame: arrives untagged.
    let m = Marker::new();
    wire.send(&s_frame(ep.mac, 100, &m));
    let f = at_guest(&tap, &m, "wire S100 over untagged");
    assert!(tags(&f).is_empty(), "{f:02x?}");

    // Other S-VIDs, a plain 802.1Q tag 100, untagged: all dropped.
    refused(&tap, ep.mac, &wire, Way::WireToGuest, WIRE_REFUSED);
    assert_drops(&h, "q0", &drops_of(WIRE_REFUSED));
    assert_vlan_packets(&h, "q0", &[(7, "to_guest", 2), (0, "to_guest", 1)]);
}

#[test]
fn tunnel_cvlans_limit_customer_vlans_both_ways() {
    let OnePort { h, ep, tap, wire } =
        root_port!("q0", "tunnel", &["--tunnel", "100", "--tunnel-cvlans", "7"]);
    assert_eq!(ep.raw["tunnel_cvlans"], "7", "show: {}", ep.raw);

    // Allowed C-VID 7 passes both ways.
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 7, &m));
    let f = on_wire(&wire, &m, "guest C7");
    assert_eq!(f.vlan, Some((TPID_8021AD, 100)), "{f:?}");
    let m = Marker::new();
    wire.send(&s_c_frame(ep.mac, 100, 7, &m));
    at_guest(&tap, &m, "wire S100 + C7");

    // C-VID 8 and untagged customer frames: dropped both ways.
    let g8 = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 8, &g8));
    let gu = Marker::new();
    tap.write(&marked(SWITCH_MAC, ep.mac, &gu));
    let w8 = Marker::new();
    wire.send(&s_c_frame(ep.mac, 100, 8, &w8));
    all_absent(
        &wire,
        &[(g8, "guest C-VID 8"), (gu, "untagged customer frame")],
    );
    absent(&tap, &w8, "wire C-VID 8");
    assert_drops(&h, "q0", &[("cvlan-not-allowed", 2), ("untagged", 1)]);
    let s = h.stats("q0");
    assert_vlan_packets(&h, "q0", &[(7, "from_guest", 1), (7, "to_guest", 1)]);
    assert!(h.vlan_stats("q0", 8).is_none(), "VLAN 8 row: {s}");
}

#[test]
fn guest_8021ad_frame_into_a_tunnel_is_dropped() {
    let OnePort { h, ep, tap, wire } = root_port!("q0", "tunnel", &["--tunnel", "100"]);

    refused(&tap, ep.mac, &wire, Way::GuestToWire, GUEST_REFUSED);
    assert_drops(&h, "q0", &drops_of(GUEST_REFUSED));
}
