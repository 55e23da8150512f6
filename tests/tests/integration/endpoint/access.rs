//! Access-port behaviour of one endpoint against the wire (sw0):
//! tagging guest frames, untagging wire frames, and the drop rules.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{
    Refused, Way, absent, assert_drops_at_least, at_guest, drops_of, on_wire, refused, sent_to_wire,
};
use macvswitch_tests::frame::{
    self, BROADCAST, ETHERTYPE_TEST, Marker, TPID_8021AD, TPID_8021Q, marked, marked_tagged,
    test_mac,
};
use macvswitch_tests::harness::ABSENT;
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::{OnePort, root_harness, root_port};

#[test]
fn guest_frame_leaves_tagged_with_its_vid() {
    let port = root_port!("ep0", &["--vlan", "10"]);
    let OnePort { ep, tap, wire, .. } = &port;
    assert_eq!(ep.vlan, Some(10), "show: {}", ep.raw);

    for dst in [SWITCH_MAC, BROADCAST] {
        let m = Marker::new();
        tap.write(&marked(dst, ep.mac, &m));
        let f = on_wire(
            wire,
            &m,
            &format!("guest frame to {} not seen on sw0", frame::fmt_mac(&dst)),
        );
        assert_eq!(f.vlan.map(|v| v.0), Some(TPID_8021Q), "tpid: {f:?}");
        assert_eq!(f.vid(), Some(10), "frame left with wrong/no VLAN: {f:?}");
        let p = frame::parse(&f.bytes).unwrap();
        assert_eq!((p.dst, p.src), (dst, ep.mac));
        // The tag lives in metadata; the inline bytes carry the guest's type.
        assert!(p.tags.is_empty(), "unexpected inline tag: {f:?}");
        assert_eq!(p.ethertype, ETHERTYPE_TEST);
    }
}

#[test]
fn wire_frame_tagged_with_vid_reaches_guest_untagged() {
    let OnePort { h, ep, tap, wire } = root_port!("ep0", &["--vlan", "10"]);
    // Open before sending: macvtap drops frames while no fd is open.

    // Plain VID 10, VID 10 with PCP 5 (TCI 0xa00a), and a broadcast.
    for (dst, tci) in [(ep.mac, 10u16), (ep.mac, 0xa00a), (BROADCAST, 10)] {
        let m = Marker::new();
        wire.send(&marked_tagged(dst, SWITCH_MAC, tci, &m));
        let f = at_guest(
            &tap,
            &m,
            &format!(
                "wire frame (dst {}, tci {tci:#x}) not delivered to guest",
                frame::fmt_mac(&dst)
            ),
        );
        assert_eq!(
            frame::outer_ethertype(&f),
            Some(ETHERTYPE_TEST),
            "guest got a tagged frame: {:02x?}",
            &f[..18]
        );
        let p = frame::parse(&f).unwrap();
        assert_eq!((p.dst, p.src), (dst, SWITCH_MAC));
    }
    assert!(
        h.packets("ep0", "to_guest") >= 3,
        "stats: {}",
        h.stats("ep0")
    );
}

/// Wire frames an access port on VLAN 10 must not deliver: another VID,
/// twice, and untagged.
#[rustfmt::skip]
const WRONG_VID_AND_UNTAGGED: &[Refused] = &[
    Refused::new("VID 20 frame to a VLAN 10 guest", "wrong-vlan", &[(TPID_8021Q, 20)]),
    Refused::new("second VID 20 frame to a VLAN 10 guest", "wrong-vlan", &[(TPID_8021Q, 20)]),
    Refused::new("untagged wire frame to a VLAN 10 guest", "untagged", &[]),
];

/// Wire frames with the right VID in the wrong tag: an 802.1ad S-tag (not
/// our TPID), and Q-in-Q (the right outer C-tag, another tag inside).
#[rustfmt::skip]
const FOREIGN_AND_STACKED: &[Refused] = &[
    Refused::new("802.1ad-tagged frame", "foreign-tpid", &[(TPID_8021AD, 10)]),
    Refused::new("double-tagged frame", "stacked-tag", &[(TPID_8021Q, 10), (TPID_8021Q, 30)]),
];

/// Guest frames that carry a tag of their own.
#[rustfmt::skip]
const GUEST_TAGGED: &[Refused] = &[
    Refused::new("guest 802.1Q-tagged frame", "guest-tagged", &[(TPID_8021Q, 10)]),
    Refused::new("guest 802.1ad-tagged frame", "guest-tagged", &[(TPID_8021AD, 20)]),
];

macvswitch_tests::cases! { refused_and_counted:
    wrong_vid_and_untagged_wire_frames_are_dropped_and_counted =>
        (Way::WireToGuest, WRONG_VID_AND_UNTAGGED),
    foreign_tpid_and_stacked_wire_tags_are_dropped_and_counted =>
        (Way::WireToGuest, FOREIGN_AND_STACKED),
    guest_tagged_frames_are_dropped_and_counted => (Way::GuestToWire, GUEST_TAGGED),
}

/// An access port on VLAN 10 refuses each frame of `table` coming `way`,
/// and counts it under its reason (at least: the kernel's own frames may
/// add to a count).
fn refused_and_counted((way, table): (Way, &[Refused])) {
    let OnePort { h, ep, tap, wire } = root_port!("ep0", &["--vlan", "10"]);
    refused(&tap, ep.mac, &wire, way, table);
    assert_drops_at_least(&h, "ep0", &drops_of(table));
}

#[test]
fn spoofed_source_is_dropped_unless_allowed() {
    let h = root_harness!();
    let strict = h.add("ep0", &["--vlan", "10"]);
    let lax = h.add("ep1", &["--vlan", "10", "--allow-mac-spoofing"]);
    assert_eq!(strict.raw["allow_mac_spoofing"], false, "{}", strict.raw);
    assert_eq!(lax.raw["allow_mac_spoofing"], true, "{}", lax.raw);
    let tap0 = h.tap(&strict);
    let tap1 = h.tap(&lax);
    let wire = h.topo.wire();

    let spoof0 = Marker::new();
    tap0.write(&marked(SWITCH_MAC, test_mac(0x77), &spoof0));
    for f in wire.recv_all(ABSENT) {
        assert!(
            !spoof0.is_in(&f.bytes),
            "spoofed frame from ep0 reached the wire: {f:?}"
        );
    }
    assert_drops_at_least(&h, "ep0", &[("spoofed-source", 1)]);

    let spoof1 = Marker::new();
    tap1.write(&marked(SWITCH_MAC, test_mac(0x78), &spoof1));
    let f = on_wire(
        &wire,
        &spoof1,
        "spoofed frame from ep1 (--allow-mac-spoofing) not on the wire",
    );
    assert_eq!(f.vid(), Some(10));
    assert_eq!(&f.bytes[6..12], &test_mac(0x78));
    assert_eq!(h.drops("ep1", "spoofed-source"), 0);
}

#[test]
fn untagged_port_passes_only_untagged_frames() {
    let OnePort { h, ep, tap, wire } = root_port!("ep0", &[]);
    assert!(ep.raw["vlan"].is_null(), "vlan should be null: {}", ep.raw);

    // guest -> wire: untagged stays untagged.
    let f = sent_to_wire(
        &tap,
        ep.mac,
        &wire,
        "guest frame from untagged port not on the wire",
    );
    assert_eq!(f.vlan, None, "untagged port tagged a frame: {f:?}");
    assert_eq!(frame::outer_ethertype(&f.bytes), Some(ETHERTYPE_TEST));

    // wire -> guest: untagged is delivered as is.
    let m = Marker::new();
    wire.send(&marked(ep.mac, SWITCH_MAC, &m));
    let f = at_guest(
        &tap,
        &m,
        "untagged wire frame not delivered to untagged port",
    );
    assert_eq!(frame::outer_ethertype(&f), Some(ETHERTYPE_TEST));

    // wire -> guest: tagged is dropped.
    let m = Marker::new();
    wire.send(&marked_tagged(ep.mac, SWITCH_MAC, 10, &m));
    absent(&tap, &m, "tagged wire frame delivered to an untagged port");
    assert_drops_at_least(&h, "ep0", &[("tagged-on-untagged-port", 1)]);

    // guest -> wire: a guest-tagged frame is dropped here too.
    let m = Marker::new();
    tap.write(&marked_tagged(SWITCH_MAC, ep.mac, 10, &m));
    absent(
        &wire,
        &m,
        "guest-tagged frame from untagged port reached the wire",
    );
    assert_drops_at_least(&h, "ep0", &[("guest-tagged", 1)]);
}
