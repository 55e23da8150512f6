//! Full-size frames through access, trunk and tunnel ports, and `--mtu`.
//! A pushed tag lives in skb metadata and does not count against the MTU of
//! the macvtap or of a veth. Frames the wire sends carry their tags inline:
//! the veth accepts one 802.1Q tag beyond its MTU, so the switch side raises
//! sw0's MTU for S-tagged frames, and a C-tag under an S-tag needs the
//! lower device's MTU raised by 8, as the README says for QinQ.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{at_guest, on_wire};
use macvswitch_tests::frame::{self, ETHERTYPE_TEST, Marker, TPID_8021AD, TPID_8021Q};
use macvswitch_tests::topology::{LOWER, SWITCH_MAC, SWITCH_PORT};
use macvswitch_tests::{Harness, root_harness};

/// A 1500-byte payload starting with the marker.
fn payload(m: &Marker) -> Vec<u8> {
    let mut p: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
    p[..16].copy_from_slice(&m.0);
    p
}

fn set_mtu(h: &Harness, lower: u32, switch: u32) {
    h.topo
        .host
        .ip_ok(&["link", "set", LOWER, "mtu", &lower.to_string()]);
    h.topo
        .switch
        .ip_ok(&["link", "set", SWITCH_PORT, "mtu", &switch.to_string()]);
}

#[test]
fn full_size_frames_through_access_and_trunk_ports() {
    let h = root_harness!();
    let a = h.add("a10", &["--vlan", "10"]);
    let t = h.add("t", &["--trunk", "20"]);
    assert_eq!(a.raw["mtu"], 1500, "{}", a.raw);
    let (ta, tt) = (h.tap(&a), h.tap(&t));
    let wire = h.topo.wire();

    // access: 1514 out (+ metadata tag), 1518 in with the tag -> 1514 untagged.
    let m = Marker::new();
    let out = frame::eth(SWITCH_MAC, a.mac, ETHERTYPE_TEST, &payload(&m));
    assert_eq!(out.len(), 1514);
    ta.write(&out);
    let f = on_wire(&wire, &m, "1514-byte access frame");
    assert_eq!(f.vid(), Some(10), "{:?}", f.vlan);
    assert_eq!(f.bytes, out, "access frame changed or cut");

    let m = Marker::new();
    let inner = frame::eth(a.mac, SWITCH_MAC, ETHERTYPE_TEST, &payload(&m));
    let tagged = frame::tagged(
        a.mac,
        SWITCH_MAC,
        TPID_8021Q,
        10,
        ETHERTYPE_TEST,
        &payload(&m),
    );
    assert_eq!(tagged.len(), 1518);
    wire.send(&tagged);
    let f = at_guest(&ta, &m, "1518-byte wire frame on 10");
    assert_eq!(f, inner, "access guest got it changed or cut");

    // trunk: 1518 with the guest's own tag, both ways.
    let m = Marker::new();
    let out = frame::tagged(
        SWITCH_MAC,
        t.mac,
        TPID_8021Q,
        20,
        ETHERTYPE_TEST,
        &payload(&m),
    );
    tt.write(&out);
    let f = on_wire(&wire, &m, "1518-byte trunk frame");
    assert_eq!(f.vid(), Some(20), "{:?}", f.vlan);
    assert_eq!(
        f.bytes,
        frame::eth(SWITCH_MAC, t.mac, ETHERTYPE_TEST, &payload(&m)),
        "trunk frame changed or cut"
    );

    let m = Marker::new();
    let inbound = frame::tagged(
        t.mac,
        SWITCH_MAC,
        TPID_8021Q,
        20,
        ETHERTYPE_TEST,
        &payload(&m),
    );
    wire.send(&inbound);
    let f = at_guest(&tt, &m, "1518-byte wire frame on 20");
    assert_eq!(f, inbound, "trunk guest got it changed or cut");
}

#[test]
fn full_size_frames_through_a_tunnel_port() {
    let h = root_harness!();
    // The switch sends the S-tag inline: allow it on sw0 (lower0 stays 1500).
    set_mtu(&h, 1500, 1504);
    let q = h.add("q", &["--tunnel", "100"]);
    assert_eq!(q.raw["mtu"], 1500, "{}", q.raw);
    let tq = h.tap(&q);
    let wire = h.topo.wire();

    // Untagged customer: 1514 out under a metadata S-tag.
    let m = Marker::new();
    let out = frame::eth(SWITCH_MAC, q.mac, ETHERTYPE_TEST, &payload(&m));
    tq.write(&out);
    let f = on_wire(&wire, &m, "1514-byte tunnel frame");
    assert_eq!(f.vlan, Some((TPID_8021AD, 100)));
    assert_eq!(f.bytes, out, "tunnel frame changed or cut");

    // C-tagged customer: 1518 out, C-tag inline.
    let m = Marker::new();
    let out = frame::tagged(
        SWITCH_MAC,
        q.mac,
        TPID_8021Q,
        7,
        ETHERTYPE_TEST,
        &payload(&m),
    );
    tq.write(&out);
    let f = on_wire(&wire, &m, "1518-byte C-tagged tunnel frame");
    assert_eq!(f.vlan, Some((TPID_8021AD, 100)));
    assert_eq!(f.bytes, out, "C-tagged tunnel frame changed or cut");

    // S 100 over an untagged 1514-byte customer frame.
    let m = Marker::new();
    let inner = frame::eth(q.mac, SWITCH_MAC, ETHERTYPE_TEST, &payload(&m));
    wire.send(&frame::tagged(
        q.mac,
        SWITCH_MAC,
        TPID_8021AD,
        100,
        ETHERTYPE_TEST,
        &payload(&m),
    ));
    let f = at_guest(&tq, &m, "S-tagged 1518-byte wire frame");
    assert_eq!(f, inner, "tunnel guest got it changed or cut");
}

#[test]
fn qinq_customer_tagged_full_size_frames_with_lower_mtu_plus_8() {
    let h = root_harness!();
    set_mtu(&h, 1508, 1508);
    let q = h.add("q", &["--tunnel", "100", "--mtu", "1500"]);
    assert_eq!(q.raw["mtu"], 1500, "{}", q.raw);
    let tq = h.tap(&q);
    let wire = h.topo.wire();

    let m = Marker::new();
    let inner = frame::tagged(
        q.mac,
        SWITCH_MAC,
        TPID_8021Q,
        7,
        ETHERTYPE_TEST,
        &payload(&m),
    );
    let outer = frame::double_tagged(
        q.mac,
        SWITCH_MAC,
        (TPID_8021AD, 100),
        (TPID_8021Q, 7),
        ETHERTYPE_TEST,
        &payload(&m),
    );
    assert_eq!(outer.len(), 1522);
    wire.send(&outer);
    let f = at_guest(&tq, &m, "1522-byte S+C wire frame");
    assert_eq!(f, inner, "tunnel guest got it changed or cut");
}

#[test]
fn mtu_option_sets_the_endpoint_mtu() {
    let h = root_harness!();
    let e = h.add("e", &["--vlan", "10", "--mtu", "1400"]);
    assert_eq!(e.raw["mtu"], 1400, "show: {}", e.raw);
    let link = h.topo.host.ip_ok(&["link", "show", "e"]);
    assert!(link.contains(" mtu 1400 "), "ip link: {link}");
    let t = h.add("t", &["--trunk", "10", "--mtu", "1280"]);
    assert_eq!(t.raw["mtu"], 1280, "show: {}", t.raw);
    let link = h.topo.host.ip_ok(&["link", "show", "t"]);
    assert!(link.contains(" mtu 1280 "), "ip link: {link}");

    // Above the lower device's MTU: refused, nothing created.
    let out = h.ctl.run(&[
        "endpoint", "add", "big", "--lower", LOWER, "--vlan", "10", "--mtu", "9000",
    ]);
    assert!(
        !out.status.success(),
        "--mtu 9000 on a 1500 lower device accepted"
    );
    assert!(
        !h.topo.host.link_names().contains(&"big".to_string()),
        "a refused endpoint left its link"
    );
}
