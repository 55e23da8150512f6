//! Several endpoints on one lower device in bridge mode: local delivery
//! must respect VLAN membership (the kernel's macvlan bridge knows nothing
//! about VLANs; the eBPF programs enforce them).

use macvswitch_tests::expect::{absent, assert_drops_at_least, at_guest, on_wire};
use macvswitch_tests::frame::{self, BROADCAST, ETHERTYPE_TEST, Marker, marked};
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::SWITCH_MAC;

#[test]
fn guests_in_same_vlan_exchange_unicast_other_vlans_do_not() {
    let h = root_harness!();
    let (a, b, c, ta, tb, tc) = h.trio("a10", "b10", "bridge");
    assert_eq!(a.raw["mode"], "bridge", "{}", a.raw);

    // a -> b (same VLAN): delivered untagged.
    let m = Marker::new();
    ta.write(&marked(b.mac, a.mac, &m));
    let f = at_guest(&tb, &m, "unicast a10 -> b10 not delivered");
    let p = frame::parse(&f).unwrap();
    assert!(p.tags.is_empty(), "b10 got a tagged frame: {f:02x?}");
    assert_eq!((p.dst, p.src, p.ethertype), (b.mac, a.mac, ETHERTYPE_TEST));

    // b -> a as well.
    let m = Marker::new();
    tb.write(&marked(a.mac, b.mac, &m));
    at_guest(&ta, &m, "unicast b10 -> a10 not delivered");

    // a -> c and c -> a (VLAN 10 vs 20): never delivered.
    let ac = Marker::new();
    ta.write(&marked(c.mac, a.mac, &ac));
    let ca = Marker::new();
    tc.write(&marked(a.mac, c.mac, &ca));
    absent(&tc, &ac, "unicast from VLAN 10 delivered to VLAN 20 guest");
    absent(&ta, &ca, "unicast from VLAN 20 delivered to VLAN 10 guest");
    assert_drops_at_least(&h, "c20", &[("wrong-vlan", 1)]);
}

#[test]
fn broadcast_stays_in_its_vlan() {
    let h = root_harness!();
    let (a, _, _, ta, tb, tc) = h.trio("a10", "b10", "bridge");
    let wire = h.topo.wire();

    let m = Marker::new();
    ta.write(&marked(BROADCAST, a.mac, &m));

    let f = at_guest(&tb, &m, "broadcast from a10 not delivered to b10");
    assert_eq!(
        frame::outer_ethertype(&f),
        Some(ETHERTYPE_TEST),
        "b10 got it tagged"
    );
    let w = on_wire(&wire, &m, "broadcast from a10 not on the wire");
    assert_eq!(
        w.vid(),
        Some(10),
        "broadcast left with wrong/no VLAN: {w:?}"
    );
    absent(&tc, &m, "broadcast from VLAN 10 delivered to VLAN 20 guest");
    // The sender does not get its own broadcast back.
    absent(&ta, &m, "broadcast echoed to its sender");

    // And a VLAN 20 broadcast from the wire reaches only c20.
    let m = Marker::new();
    wire.send(&frame::marked_tagged(BROADCAST, SWITCH_MAC, 20, &m));
    at_guest(&tc, &m, "VLAN 20 wire broadcast not delivered to c20");
    absent(&ta, &m, "VLAN 20 broadcast at a10");
    absent(&tb, &m, "VLAN 20 broadcast at b10");
}
