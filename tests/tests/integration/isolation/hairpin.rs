//! Behind a switch port with reflective relay (a hairpin, emulated on the
//! switch side): VEPA works without relay emulation, and the private-VLAN
//! policy still holds for frames the switch sends back, in VEPA and in
//! private mode (where the kernel alone delivers a reflected unicast).
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{absent, assert_drops_at_least, at_guest, copies, on_wire};
use macvswitch_tests::frame::{BROADCAST, Marker, marked};
use macvswitch_tests::hairpin::Hairpin;
use macvswitch_tests::harness::ARRIVE;
use macvswitch_tests::root_harness;

#[test]
fn vepa_through_a_hairpin_switch() {
    let h = root_harness!();
    let (a, b, _, ta, tb, tc) = h.trio("a", "b", "vepa");
    let wire = h.topo.wire();
    let hairpin = Hairpin::start(&h.topo);

    // Unicast a -> b: out on the wire (tagged 10), back from the switch,
    // delivered to b exactly once.
    let m = Marker::new();
    ta.write(&marked(b.mac, a.mac, &m));
    let w = on_wire(&wire, &m, "unicast a -> b not on the wire");
    assert_eq!(w.vid(), Some(10), "{w:?}");
    at_guest(&tb, &m, "unicast a -> b not delivered through the hairpin");
    absent(&tb, &m, "b got a second copy");
    absent(&ta, &m, "a got its unicast back");

    // Broadcast from a: b once, not a, not c (VLAN 20).
    let m = Marker::new();
    ta.write(&marked(BROADCAST, a.mac, &m));
    at_guest(
        &tb,
        &m,
        "broadcast a -> b not delivered through the hairpin",
    );
    absent(&tb, &m, "b got the broadcast twice");
    absent(&ta, &m, "a got its own broadcast back");
    absent(&tc, &m, "VLAN 10 broadcast at VLAN 20");
    assert!(hairpin.stop() >= 2);
}

#[test]
fn isolation_holds_for_reflected_frames() {
    let h = root_harness!();
    let iso = h.add_pvlan("iso", "vepa", &["--isolated"]);
    let open = h.add_pvlan("open", "vepa", &[]);
    let blue1 = h.add_pvlan("blue1", "vepa", &["--community", "blue"]);
    let blue2 = h.add_pvlan("blue2", "vepa", &["--community", "blue"]);
    let red = h.add_pvlan("red", "vepa", &["--community", "red"]);
    let (ti, to, tb1, tb2, tr) = (
        h.tap(&iso),
        h.tap(&open),
        h.tap(&blue1),
        h.tap(&blue2),
        h.tap(&red),
    );
    let wire = h.topo.wire();
    let _hairpin = Hairpin::start(&h.topo);

    // Isolated -> open, and open -> isolated: reflected, then dropped.
    let m = Marker::new();
    ti.write(&marked(open.mac, iso.mac, &m));
    on_wire(&wire, &m, "isolated endpoint's unicast not on the wire");
    absent(&to, &m, "reflected isolated -> open delivered");
    let m = Marker::new();
    to.write(&marked(iso.mac, open.mac, &m));
    absent(&ti, &m, "reflected open -> isolated delivered");
    assert_drops_at_least(&h, "open", &[("isolation", 1)]);
    assert_drops_at_least(&h, "iso", &[("isolation", 1)]);

    // Community members still talk through the hairpin.
    let m = Marker::new();
    tb1.write(&marked(blue2.mac, blue1.mac, &m));
    at_guest(&tb2, &m, "reflected blue1 -> blue2 not delivered");
    let m = Marker::new();
    tb2.write(&marked(BROADCAST, blue2.mac, &m));
    assert_eq!(
        copies(&tb1, &m, ARRIVE),
        1,
        "reflected blue broadcast at blue1"
    );
    for (tap, name) in [(&tb2, "blue2"), (&tr, "red"), (&to, "open"), (&ti, "iso")] {
        absent(tap, &m, &format!("reflected blue broadcast at {name}"));
    }
    // Different communities do not.
    let m = Marker::new();
    tb1.write(&marked(red.mac, blue1.mac, &m));
    absent(&tr, &m, "reflected blue -> red delivered");
    let m = Marker::new();
    tr.write(&marked(blue1.mac, red.mac, &m));
    absent(&tb1, &m, "reflected red -> blue delivered");
    assert_drops_at_least(&h, "red", &[("isolation", 1)]);
    assert_drops_at_least(&h, "blue1", &[("isolation", 1)]);

    // Isolated broadcast: no local endpoint gets it back.
    let m = Marker::new();
    ti.write(&marked(BROADCAST, iso.mac, &m));
    for (tap, name) in [(&ti, "iso"), (&to, "open"), (&tb1, "blue1"), (&tr, "red")] {
        absent(tap, &m, &format!("isolated broadcast at {name}"));
    }
}

#[test]
fn sender_never_gets_its_own_frame_back() {
    let h = root_harness!();
    // In private mode the kernel hands a broadcast that comes back from
    // the wire to its sender only; in VEPA mode a unicast the guest sent to
    // its own address comes back to it. The programs drop both.
    let p = h.add_pvlan("p", "private", &[]);
    let v = h.add_pvlan("v", "vepa", &[]);
    let (tp, tv) = (h.tap(&p), h.tap(&v));
    let hairpin = Hairpin::start(&h.topo);

    let m = Marker::new();
    tp.write(&marked(BROADCAST, p.mac, &m));
    assert_eq!(
        copies(&tp, &m, ARRIVE),
        0,
        "private-mode sender got its broadcast back"
    );
    assert_drops_at_least(&h, "p", &[("own-frame", 1)]);

    let m = Marker::new();
    tv.write(&marked(v.mac, v.mac, &m));
    assert_eq!(
        copies(&tv, &m, ARRIVE),
        0,
        "VEPA sender got its own unicast back"
    );
    assert_drops_at_least(&h, "v", &[("own-frame", 1)]);
    assert!(hairpin.stop() >= 2);
}

#[test]
fn private_mode_behind_a_hairpin() {
    let h = root_harness!();
    let a = h.add_pvlan("a", "private", &[]);
    let b = h.add_pvlan("b", "private", &[]);
    let (ta, tb) = (h.tap(&a), h.tap(&b));
    let _hairpin = Hairpin::start(&h.topo);

    // Without isolation flags: the kernel delivers the reflected unicast
    // (private mode alone does not isolate behind a hairpin).
    let m = Marker::new();
    ta.write(&marked(b.mac, a.mac, &m));
    at_guest(
        &tb,
        &m,
        "private mode, no flags: reflected unicast a -> b not delivered (kernel fact changed?)",
    );

    // --isolated (live): the programs drop it.
    h.ctl.ok(&["endpoint", "set", "a", "--isolated"]);
    assert_eq!(h.show("a").raw["isolated"], true, "{}", h.show("a").raw);
    let m = Marker::new();
    ta.write(&marked(b.mac, a.mac, &m));
    assert_eq!(
        copies(&tb, &m, ARRIVE),
        0,
        "private mode, --isolated: reflected unicast delivered"
    );
    assert_drops_at_least(&h, "b", &[("isolation", 1)]);
    let m = Marker::new();
    tb.write(&marked(a.mac, b.mac, &m));
    absent(
        &ta,
        &m,
        "private mode: reflected unicast to the isolated endpoint delivered",
    );
}
