//! Trunk ports (`--trunk LIST [--native N [--native-tagged]] [--priority P]`)
//! against the wire (sw0): which tags pass each way, what is pushed and
//! popped, which drop reason counts, and the per-VLAN counters.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{
    Refused, Way, absent, all_absent, assert_drops, assert_vlan_packets, at_guest, drops_of,
    on_wire, refused, send_refused, sent_to_wire,
};
use macvswitch_tests::frame::{
    self, BROADCAST, ETHERTYPE_TEST, Marker, TPID_8021AD, TPID_8021Q, marked, q_frame, test_mac,
};
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::wire::WireFrame;
use macvswitch_tests::{OnePort, root_port};

/// Guest frames a trunk 10,20 must not send, by drop reason.
#[rustfmt::skip]
const GUEST_REFUSED: &[Refused] = &[
    Refused::new("VID 30 guest frame", "wrong-vlan", &[(TPID_8021Q, 30)]),
    Refused::new("untagged guest frame", "untagged", &[]),
    Refused::new("802.1ad guest frame", "foreign-tpid", &[(TPID_8021AD, 10)]),
    Refused::new("double-tagged guest frame", "stacked-tag", &[(TPID_8021Q, 10), (TPID_8021Q, 20)]),
];

/// Wire frames a trunk 10,20 without a native VLAN must not deliver.
#[rustfmt::skip]
const WIRE_REFUSED: &[Refused] = &[
    Refused::new("VID 30 wire frame to trunk 10,20", "wrong-vlan", &[(TPID_8021Q, 30)]),
    Refused::new("untagged wire frame to a trunk without native", "untagged", &[]),
    Refused::new("802.1ad wire frame to a trunk", "foreign-tpid", &[(TPID_8021AD, 10)]),
];

/// The frame's inline bytes carry no tag: the tag (if any) is in metadata.
fn assert_inline_untagged(f: &WireFrame, what: &str) {
    let p = frame::parse(&f.bytes).unwrap_or_else(|| panic!("{what}: unparsable {f:?}"));
    assert!(p.tags.is_empty(), "{what}: unexpected inline tag: {f:?}");
    assert_eq!(p.ethertype, ETHERTYPE_TEST, "{what}: {f:?}");
}

#[test]
fn guest_frames_of_allowed_vlans_leave_unchanged_with_their_priority() {
    let OnePort { h, ep, tap, wire } = root_port!("t0", "trunk", &["--trunk", "10,20"]);
    assert_eq!(ep.raw["trunk"], "10,20", "show: {}", ep.raw);
    assert!(ep.raw["native"].is_null(), "show: {}", ep.raw);

    // (dst, TCI): PCP 3 + DEI on 10, PCP 7 on 20, plain 20, a broadcast on 10.
    let cases = [
        (SWITCH_MAC, 0x700a_u16),
        (SWITCH_MAC, 0xe014),
        (SWITCH_MAC, 0x0014),
        (BROADCAST, 0x000a),
    ];
    for (dst, tci) in cases {
        let m = Marker::new();
        tap.write(&q_frame(dst, ep.mac, tci, &m));
        let what = format!("guest frame tci {tci:#06x}");
        let f = on_wire(&wire, &m, &what);
        assert_eq!(
            f.vlan,
            Some((TPID_8021Q, tci)),
            "{what}: tag changed on the way out: {f:?}"
        );
        assert_inline_untagged(&f, &what);
        let p = frame::parse(&f.bytes).unwrap();
        assert_eq!((p.dst, p.src), (dst, ep.mac), "{what}");
    }

    let s = h.stats("t0");
    assert_vlan_packets(&h, "t0", &[(10, "from_guest", 2), (20, "from_guest", 2)]);
    assert_eq!(s["from_guest"]["packets"], 4, "stats: {s}");
    let v10 = h.vlan_stats("t0", 10).expect("no VLAN 10 row");
    assert!(
        v10["from_guest"]["bytes"].as_u64().unwrap_or(0) >= 120,
        "VLAN 10 bytes: {v10}"
    );
}

#[test]
fn guest_frames_outside_the_trunk_are_dropped_by_reason() {
    let OnePort { h, ep, tap, wire } = root_port!("t0", "trunk", &["--trunk", "10,20"]);

    let sent = send_refused(GUEST_REFUSED, SWITCH_MAC, ep.mac, |f| tap.write(f));
    // A frame that made it would be on the wire long before this one.
    let ok = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 10, &ok));
    let seen = all_absent(&wire, &sent);
    assert!(
        seen.iter().any(|f| ok.is_in(&f.bytes)),
        "the allowed VID 10 frame did not reach the wire"
    );

    assert_drops(&h, "t0", &drops_of(GUEST_REFUSED));
    let s = h.stats("t0");
    // No counter row for a VLAN the port does not carry.
    assert!(h.vlan_stats("t0", 30).is_none(), "VLAN 30 row: {s}");
}

#[test]
fn wire_frames_of_allowed_vlans_arrive_tagged_others_are_dropped() {
    let OnePort { h, ep, tap, wire } = root_port!("t0", "trunk", &["--trunk", "10,20"]);

    for (dst, tci) in [(ep.mac, 0x600a_u16), (ep.mac, 0x0014), (BROADCAST, 0xb014)] {
        let m = Marker::new();
        wire.send(&q_frame(dst, SWITCH_MAC, tci, &m));
        let what = format!("wire frame tci {tci:#06x}");
        let f = at_guest(&tap, &m, &what);
        let p = frame::parse(&f).unwrap();
        assert_eq!(p.tags, [(TPID_8021Q, tci)], "{what}: {f:02x?}");
        assert_eq!((p.dst, p.src), (dst, SWITCH_MAC), "{what}");
        assert_eq!(p.ethertype, ETHERTYPE_TEST, "{what}");
    }

    refused(&tap, ep.mac, &wire, Way::WireToGuest, WIRE_REFUSED);
    assert_drops(&h, "t0", &drops_of(WIRE_REFUSED));
    assert_vlan_packets(
        &h,
        "t0",
        &[
            (10, "to_guest", 1),
            (20, "to_guest", 2),
            (10, "from_guest", 0),
        ],
    );
}

#[test]
fn native_untagged_pushes_and_pops_the_native_vlan() {
    let OnePort { h, ep, tap, wire } =
        root_port!("t0", "trunk", &["--trunk", "10,20", "--native", "30"]);
    assert_eq!(ep.raw["native"], 30, "show: {}", ep.raw);
    assert_eq!(ep.raw["native_tagged"], false, "show: {}", ep.raw);

    // guest -> wire: untagged goes into 30 (PCP 0), tagged 10 untouched.
    let f = sent_to_wire(&tap, ep.mac, &wire, "untagged guest frame");
    assert_eq!(f.vlan, Some((TPID_8021Q, 30)), "{f:?}");
    assert_inline_untagged(&f, "untagged guest frame");
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 0x200a, &m));
    let f = on_wire(&wire, &m, "guest frame tagged 10");
    assert_eq!(f.vlan, Some((TPID_8021Q, 0x200a)), "{f:?}");
    // A guest-tagged native VID is carried too (the native VLAN is on the port).
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 30, &m));
    let f = on_wire(&wire, &m, "guest frame tagged 30");
    assert_eq!(f.vid(), Some(30), "{f:?}");

    // wire -> guest: 30 untagged, 10 tagged, untagged dropped.
    let m = Marker::new();
    wire.send(&q_frame(ep.mac, SWITCH_MAC, 0x401e, &m));
    let f = at_guest(&tap, &m, "wire frame on native 30");
    let p = frame::parse(&f).unwrap();
    assert!(p.tags.is_empty(), "native VLAN arrived tagged: {f:02x?}");
    assert_eq!(p.ethertype, ETHERTYPE_TEST);
    let m = Marker::new();
    wire.send(&q_frame(ep.mac, SWITCH_MAC, 10, &m));
    let f = at_guest(&tap, &m, "wire frame on 10");
    assert_eq!(frame::parse(&f).unwrap().tags, [(TPID_8021Q, 10)]);
    let m = Marker::new();
    wire.send(&marked(ep.mac, SWITCH_MAC, &m));
    absent(
        &tap,
        &m,
        "untagged wire frame to a trunk (native is a VLAN, not 'untagged')",
    );

    assert_vlan_packets(
        &h,
        "t0",
        &[
            (30, "from_guest", 2),
            (30, "to_guest", 1),
            (10, "from_guest", 1),
            (10, "to_guest", 1),
        ],
    );
}

#[test]
fn native_tagged_delivers_the_native_vlan_tagged() {
    let port = root_port!(
        "t0",
        "trunk",
        &["--trunk", "10,20", "--native", "30", "--native-tagged"],
    );
    let OnePort { ep, tap, wire, .. } = &port;
    assert_eq!(ep.raw["native"], 30, "show: {}", ep.raw);
    assert_eq!(ep.raw["native_tagged"], true, "show: {}", ep.raw);

    let m = Marker::new();
    wire.send(&q_frame(ep.mac, SWITCH_MAC, 0x601e, &m));
    let f = at_guest(tap, &m, "wire frame on native 30");
    assert_eq!(
        frame::parse(&f).unwrap().tags,
        [(TPID_8021Q, 0x601e)],
        "native-tagged: {f:02x?}"
    );

    // Untagged guest frames are still accepted into the native VLAN.
    let f = sent_to_wire(tap, ep.mac, wire, "untagged guest frame");
    assert_eq!(f.vlan, Some((TPID_8021Q, 30)), "{f:?}");
    assert_inline_untagged(&f, "untagged guest frame");
}

#[test]
fn priority_sets_the_pcp_of_pushed_tags_only() {
    let port = root_port!(
        "t0",
        "trunk",
        &["--trunk", "10", "--native", "30", "--priority", "5"],
    );
    let OnePort { ep, tap, wire, .. } = &port;
    assert_eq!(ep.raw["priority"], 5, "show: {}", ep.raw);

    // Pushed native tag: PCP 5.
    let f = sent_to_wire(tap, ep.mac, wire, "untagged guest frame");
    assert_eq!(f.vlan, Some((TPID_8021Q, 0xa01e)), "pushed tag: {f:?}");
    // A priority-tagged frame (PCP 2) also gets the configured PCP 5.
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 0x4000, &m));
    let f = on_wire(wire, &m, "priority-tagged guest frame");
    assert_eq!(f.vlan, Some((TPID_8021Q, 0xa01e)), "pushed tag: {f:?}");
    assert_inline_untagged(&f, "priority-tagged guest frame");
    // The guest's own tag keeps its PCP 2.
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 0x400a, &m));
    let f = on_wire(wire, &m, "guest frame tagged 10");
    assert_eq!(f.vlan, Some((TPID_8021Q, 0x400a)), "guest tag: {f:?}");
}

#[test]
fn spoofed_source_on_a_trunk_is_dropped_before_any_tag() {
    let OnePort { h, tap, wire, .. } = root_port!("t0", "trunk", &["--trunk", "10"]);
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, test_mac(0x42), 10, &m));
    absent(&wire, &m, "spoofed tagged guest frame");
    assert_drops(&h, "t0", &[("spoofed-source", 1), ("wrong-vlan", 0)]);
}
