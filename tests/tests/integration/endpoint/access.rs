//! Access-port behaviour of one endpoint against the wire (sw0):
//! tagging guest frames, untagging wire frames, and the drop rules.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{absent, assert_drops_at_least, at_guest, on_wire};
use macvswitch_tests::frame::{
    self, BROADCAST, ETHERTYPE_TEST, Marker, TPID_8021AD, TPID_8021Q, marked, marked_tagged,
    test_mac,
};
use macvswitch_tests::harness::{ABSENT, ARRIVE};
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::{Harness, require_root};

#[test]
fn guest_frame_leaves_tagged_with_its_vid() {
    require_root!();
    let h = Harness::new();
    let ep = h.add("ep0", &["--vlan", "10"]);
    assert_eq!(ep.vlan, Some(10), "show: {}", ep.raw);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();

    for dst in [SWITCH_MAC, BROADCAST] {
        let m = Marker::new();
        tap.write(&marked(dst, ep.mac, &m));
        let f = wire
            .recv_matching(ARRIVE, |f| m.is_in(&f.bytes))
            .unwrap_or_else(|| panic!("guest frame to {} not seen on sw0", frame::fmt_mac(&dst)));
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
    require_root!();
    let h = Harness::new();
    let ep = h.add("ep0", &["--vlan", "10"]);
    // Open before sending: macvtap drops frames while no fd is open.
    let tap = h.tap(&ep);
    let wire = h.topo.wire();

    // Plain VID 10, VID 10 with PCP 5 (TCI 0xa00a), and a broadcast.
    for (dst, tci) in [(ep.mac, 10u16), (ep.mac, 0xa00a), (BROADCAST, 10)] {
        let m = Marker::new();
        wire.send(&marked_tagged(dst, SWITCH_MAC, tci, &m));
        let f = tap
            .read_matching(ARRIVE, |f| m.is_in(f))
            .unwrap_or_else(|| {
                panic!(
                    "wire frame (dst {}, tci {tci:#x}) not delivered to guest",
                    frame::fmt_mac(&dst)
                )
            });
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

#[test]
fn wrong_vid_and_untagged_wire_frames_are_dropped_and_counted() {
    require_root!();
    let h = Harness::new();
    let ep = h.add("ep0", &["--vlan", "10"]);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();

    let wrong: Vec<Marker> = (0..2).map(|_| Marker::new()).collect();
    for m in &wrong {
        wire.send(&marked_tagged(ep.mac, SWITCH_MAC, 20, m));
    }
    let untagged = Marker::new();
    wire.send(&marked(ep.mac, SWITCH_MAC, &untagged));

    let got = tap.read_all(ABSENT);
    for f in &got {
        assert!(
            !wrong.iter().any(|m| m.is_in(f)),
            "VID 20 frame was delivered to a VLAN 10 guest: {f:02x?}"
        );
        assert!(
            !untagged.is_in(f),
            "untagged wire frame was delivered to a VLAN 10 guest: {f:02x?}"
        );
    }
    let s = h.stats("ep0");
    assert!(
        s["drops"]["wrong-vlan"].as_u64().unwrap_or(0) >= 2,
        "stats: {s}"
    );
    assert!(
        s["drops"]["untagged"].as_u64().unwrap_or(0) >= 1,
        "stats: {s}"
    );
}

#[test]
fn foreign_tpid_and_stacked_wire_tags_are_dropped_and_counted() {
    require_root!();
    let h = Harness::new();
    let ep = h.add("ep0", &["--vlan", "10"]);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();

    // 802.1ad S-tag with the right VID: not our TPID.
    let sa = Marker::new();
    wire.send(&frame::tagged(
        ep.mac,
        SWITCH_MAC,
        TPID_8021AD,
        10,
        ETHERTYPE_TEST,
        &sa.0,
    ));
    // Q-in-Q: correct outer C-tag, but another tag inside.
    let qq = Marker::new();
    wire.send(&frame::double_tagged(
        ep.mac,
        SWITCH_MAC,
        (TPID_8021Q, 10),
        (TPID_8021Q, 30),
        ETHERTYPE_TEST,
        &qq.0,
    ));
    for f in tap.read_all(ABSENT) {
        assert!(!sa.is_in(&f), "802.1ad-tagged frame delivered: {f:02x?}");
        assert!(!qq.is_in(&f), "double-tagged frame delivered: {f:02x?}");
    }
    let s = h.stats("ep0");
    assert!(
        s["drops"]["foreign-tpid"].as_u64().unwrap_or(0) >= 1,
        "stats: {s}"
    );
    assert!(
        s["drops"]["stacked-tag"].as_u64().unwrap_or(0) >= 1,
        "stats: {s}"
    );
}

#[test]
fn guest_tagged_frames_are_dropped_and_counted() {
    require_root!();
    let h = Harness::new();
    let ep = h.add("ep0", &["--vlan", "10"]);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();

    let q = Marker::new();
    tap.write(&marked_tagged(SWITCH_MAC, ep.mac, 10, &q));
    let ad = Marker::new();
    tap.write(&frame::tagged(
        SWITCH_MAC,
        ep.mac,
        TPID_8021AD,
        20,
        ETHERTYPE_TEST,
        &ad.0,
    ));
    for f in wire.recv_all(ABSENT) {
        assert!(
            !q.is_in(&f.bytes),
            "guest 802.1Q-tagged frame reached the wire: {f:?}"
        );
        assert!(
            !ad.is_in(&f.bytes),
            "guest 802.1ad-tagged frame reached the wire: {f:?}"
        );
    }
    assert_drops_at_least(&h, "ep0", &[("guest-tagged", 2)]);
}

#[test]
fn spoofed_source_is_dropped_unless_allowed() {
    require_root!();
    let h = Harness::new();
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
    require_root!();
    let h = Harness::new();
    let ep = h.add("ep0", &[]);
    assert!(ep.raw["vlan"].is_null(), "vlan should be null: {}", ep.raw);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();

    // guest -> wire: untagged stays untagged.
    let m = Marker::new();
    tap.write(&marked(SWITCH_MAC, ep.mac, &m));
    let f = on_wire(&wire, &m, "guest frame from untagged port not on the wire");
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
    absent(
        &tap,
        &[(&m, "tagged wire frame delivered to an untagged port")],
    );
    assert_drops_at_least(&h, "ep0", &[("tagged-on-untagged-port", 1)]);

    // guest -> wire: a guest-tagged frame is dropped here too.
    let m = Marker::new();
    tap.write(&marked_tagged(SWITCH_MAC, ep.mac, 10, &m));
    absent(
        &wire,
        &[(&m, "guest-tagged frame from untagged port reached the wire")],
    );
    assert_drops_at_least(&h, "ep0", &[("guest-tagged", 1)]);
}
