//! Trunk and access guests on one lower device in bridge mode: the
//! macvlan bridge delivers locally without looking at VLANs, so the
//! programs on both ends decide, and tags are pushed/popped per port.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{absent, assert_drops_at_least, at_guest, on_wire};
use macvswitch_tests::frame::{self, BROADCAST, ETHERTYPE_TEST, Marker, TPID_8021Q, marked};
use macvswitch_tests::frame::{q_frame, tags};
use macvswitch_tests::root_harness;
use macvswitch_tests::tap::Tap;

#[test]
fn two_trunk_guests_share_only_their_common_vlan() {
    let h = root_harness!();
    let a = h.add("ta", &["--mode", "bridge", "--trunk", "10,20"]);
    let b = h.add("tb", &["--mode", "bridge", "--trunk", "20,30"]);
    let (ta, tb) = (h.tap(&a), h.tap(&b));

    // 20 is on both: tagged both ways, priority bits kept.
    let m = Marker::new();
    ta.write(&q_frame(b.mac, a.mac, 0x6014, &m));
    let f = at_guest(&tb, &m, "ta -> tb on 20");
    assert_eq!(tags(&f), [(TPID_8021Q, 0x6014)], "{f:02x?}");
    let m = Marker::new();
    tb.write(&q_frame(a.mac, b.mac, 20, &m));
    let f = at_guest(&ta, &m, "tb -> ta on 20");
    assert_eq!(tags(&f), [(TPID_8021Q, 20)], "{f:02x?}");

    // 10 is only on ta, 30 only on tb: never delivered to the other.
    let m10 = Marker::new();
    ta.write(&q_frame(b.mac, a.mac, 10, &m10));
    let m30 = Marker::new();
    tb.write(&q_frame(a.mac, b.mac, 30, &m30));
    absent(&tb, &m10, "VLAN 10 delivered to trunk 20,30");
    absent(&ta, &m30, "VLAN 30 delivered to trunk 10,20");
    assert_drops_at_least(&h, "tb", &[("wrong-vlan", 1)]);
    assert_drops_at_least(&h, "ta", &[("wrong-vlan", 1)]);
    assert_eq!(
        h.vlan_packets("tb", 20, "to_guest"),
        1,
        "stats: {}",
        h.stats("tb")
    );
}

#[test]
fn trunk_and_access_guest_talk_on_the_access_vlan() {
    let h = root_harness!();
    let t = h.add("t", &["--mode", "bridge", "--trunk", "10,20"]);
    let a = h.add_pvlan("a10", "bridge", &[]);
    let (tt, ta) = (h.tap(&t), h.tap(&a));

    // trunk -> access: tagged 10 in, untagged out.
    let m = Marker::new();
    tt.write(&q_frame(a.mac, t.mac, 10, &m));
    let f = at_guest(&ta, &m, "trunk -> access-10");
    assert!(tags(&f).is_empty(), "access guest got a tag: {f:02x?}");
    assert_eq!(frame::parse(&f).unwrap().ethertype, ETHERTYPE_TEST);

    // access -> trunk: untagged in, tagged 10 out.
    let m = Marker::new();
    ta.write(&marked(t.mac, a.mac, &m));
    let f = at_guest(&tt, &m, "access-10 -> trunk");
    assert_eq!(tags(&f), [(TPID_8021Q, 10)], "{f:02x?}");

    // The trunk's VLAN 20 does not reach the access-10 guest.
    let m = Marker::new();
    tt.write(&q_frame(a.mac, t.mac, 20, &m));
    absent(&ta, &m, "VLAN 20 from a trunk delivered to access-10");
}

#[test]
fn access_broadcast_reaches_only_ports_carrying_its_vlan() {
    let h = root_harness!();
    let a = h.add_pvlan("a10", "bridge", &[]);
    let t10 = h.add("t10", &["--mode", "bridge", "--trunk", "10,20"]);
    let t20 = h.add("t20", &["--mode", "bridge", "--trunk", "20,30"]);
    let n10 = h.add(
        "n10",
        &["--mode", "bridge", "--trunk", "30", "--native", "10"],
    );
    let a20 = h.add("a20", &["--mode", "bridge", "--vlan", "20"]);
    let taps: Vec<(Tap, &str)> = [
        (&a, "a10"),
        (&t10, "t10"),
        (&t20, "t20"),
        (&n10, "n10"),
        (&a20, "a20"),
    ]
    .into_iter()
    .map(|(e, n)| (h.tap(e), n))
    .collect();
    let wire = h.topo.wire();

    let m = Marker::new();
    taps[0].0.write(&marked(BROADCAST, a.mac, &m));

    let f = at_guest(&taps[1].0, &m, "broadcast a10 -> t10");
    assert_eq!(tags(&f), [(TPID_8021Q, 10)], "trunk got: {f:02x?}");
    let f = at_guest(&taps[3].0, &m, "broadcast a10 -> native-10 trunk");
    assert!(
        tags(&f).is_empty(),
        "native-untagged trunk got a tag: {f:02x?}"
    );
    let w = on_wire(&wire, &m, "broadcast from a10 not on the wire");
    assert_eq!(w.vlan, Some((TPID_8021Q, 10)), "{w:?}");
    for (tap, name) in [&taps[0], &taps[2], &taps[4]] {
        absent(&tap, &m, &format!("VLAN 10 broadcast delivered to {name}"));
    }

    // A tagged-20 broadcast from a trunk: t20 (tagged), a20 (untagged), nobody else.
    let m = Marker::new();
    taps[1].0.write(&q_frame(BROADCAST, t10.mac, 20, &m));
    let f = at_guest(&taps[2].0, &m, "broadcast t10/20 -> t20");
    assert_eq!(tags(&f), [(TPID_8021Q, 20)], "{f:02x?}");
    let f = at_guest(&taps[4].0, &m, "broadcast t10/20 -> a20");
    assert!(tags(&f).is_empty(), "{f:02x?}");
    for (tap, name) in [&taps[0], &taps[1], &taps[3]] {
        absent(&tap, &m, &format!("VLAN 20 broadcast delivered to {name}"));
    }
}
