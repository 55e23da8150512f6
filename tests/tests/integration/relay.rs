//! VEPA endpoints with and without reflective-relay emulation on the lower
//! device. Without it, VEPA sends all inter-guest traffic to the wire (the
//! switch here does not hairpin); with it, the program on the lower
//! device's egress sends frames for local endpoints back in.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{absent, assert_drops_at_least, at_guest, copies, on_wire, vids_of};
use macvswitch_tests::frame::{BROADCAST, Marker, marked};
use macvswitch_tests::harness::{ABSENT, ARRIVE};
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::wire::WireSocket;
use macvswitch_tests::{Harness, root_harness};

fn relayed(h: &Harness, kind: &str) -> u64 {
    let u = h.uplink();
    u["relayed"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("uplink show --json lacks relayed.{kind}: {u}"))
}

fn wire_copies(wire: &WireSocket, m: &Marker) -> Vec<Option<u16>> {
    vids_of(&wire.recv_all(ABSENT), m)
}

#[test]
fn vepa_relay_off_on_off() {
    let h = root_harness!();
    let (a, b, c, ta, tb, tc) = h.trio("a", "b", "vepa");
    assert_eq!(a.raw["mode"], "vepa", "{}", a.raw);
    let wire = h.topo.wire();

    // Relay off (the default): unicast a -> b goes to the wire, tagged 10,
    // and not to b.
    let m = Marker::new();
    ta.write(&marked(b.mac, a.mac, &m));
    let w = on_wire(&wire, &m, "relay off: VEPA unicast a -> b not on the wire");
    assert_eq!(w.vid(), Some(10), "{w:?}");
    absent(
        &tb,
        &m,
        "relay off: VEPA unicast delivered to b without a hairpin",
    );

    // Relay on.
    h.uplink_set(&["--reflective-relay", "on"]);
    let u = h.uplink();
    assert_eq!(u["reflective_relay"], true, "{u}");
    let list = h.ctl.json(&["uplink", "list", "--json"]);
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|u| u["name"] == LOWER)),
        "uplink list --json: {list}"
    );
    let (uni0, multi0) = (relayed(&h, "unicast"), relayed(&h, "multicast"));

    // Unicast a -> b: exactly once at b, not on the wire.
    wire.drain();
    let m = Marker::new();
    ta.write(&marked(b.mac, a.mac, &m));
    at_guest(&tb, &m, "relay on: unicast a -> b not delivered");
    absent(&tb, &m, "relay on: b got a second copy");
    assert_eq!(
        wire_copies(&wire, &m),
        Vec::<Option<u16>>::new(),
        "relay on: relayed unicast also on the wire"
    );
    absent(&ta, &m, "relay on: a got its unicast");
    assert_eq!(relayed(&h, "unicast"), uni0 + 1, "{}", h.uplink());

    // Broadcast from a: b once, the wire once (tagged 10), not a, not c
    // (VLAN 20).
    let m = Marker::new();
    ta.write(&marked(BROADCAST, a.mac, &m));
    at_guest(&tb, &m, "relay on: broadcast from a not delivered to b");
    absent(&tb, &m, "relay on: b got the broadcast twice");
    assert_eq!(
        wire_copies(&wire, &m),
        [Some(10)],
        "relay on: broadcast from a not on the wire exactly once, tagged 10"
    );
    absent(&ta, &m, "relay on: a got its own broadcast");
    absent(
        &tc,
        &m,
        "relay on: VLAN 10 broadcast relayed to the VLAN 20 endpoint",
    );
    assert!(
        relayed(&h, "multicast") > multi0,
        "broadcast not counted as relayed: {}",
        h.uplink()
    );
    assert_drops_at_least(&h, "c20", &[("wrong-vlan", 1)]);
    // Unicast a -> c (VLAN 10 to 20) is relayed, and dropped at c.
    let m = Marker::new();
    ta.write(&marked(c.mac, a.mac, &m));
    absent(&tc, &m, "relay on: VLAN 10 unicast delivered to VLAN 20");

    // Relay off again: back to kernel behaviour.
    h.uplink_set(&["--reflective-relay", "off"]);
    assert_eq!(h.uplink()["reflective_relay"], false);
    wire.drain();
    let uni1 = relayed(&h, "unicast");
    let m = Marker::new();
    ta.write(&marked(b.mac, a.mac, &m));
    let w = on_wire(&wire, &m, "relay off again: unicast a -> b not on the wire");
    assert_eq!(w.vid(), Some(10), "{w:?}");
    absent(&tb, &m, "relay off again: unicast still relayed to b");
    let m = Marker::new();
    ta.write(&marked(BROADCAST, a.mac, &m));
    assert_eq!(wire_copies(&wire, &m), [Some(10)]);
    absent(&tb, &m, "relay off again: broadcast still relayed to b");
    assert_eq!(relayed(&h, "unicast"), uni1, "{}", h.uplink());
}

#[test]
fn relay_keeps_isolation_and_communities() {
    let h = root_harness!();
    h.uplink_set(&["--reflective-relay", "on"]);
    let iso = h.add_pvlan("iso", "vepa", &["--isolated"]);
    let blue1 = h.add_pvlan("blue1", "vepa", &["--community", "blue"]);
    let blue2 = h.add_pvlan("blue2", "vepa", &["--community", "blue"]);
    let red = h.add_pvlan("red", "vepa", &["--community", "red"]);
    let (ti, tb1, tb2, tr) = (h.tap(&iso), h.tap(&blue1), h.tap(&blue2), h.tap(&red));
    let wire = h.topo.wire();

    // Community members reach each other through the relay.
    let m = Marker::new();
    tb1.write(&marked(blue2.mac, blue1.mac, &m));
    at_guest(&tb2, &m, "relayed unicast blue1 -> blue2 not delivered");
    // Not another community, not an isolated endpoint.
    let m = Marker::new();
    tb1.write(&marked(red.mac, blue1.mac, &m));
    absent(&tr, &m, "relayed blue -> red delivered");
    let m = Marker::new();
    ti.write(&marked(blue1.mac, iso.mac, &m));
    absent(&tb1, &m, "relayed isolated -> blue delivered");
    assert_drops_at_least(&h, "red", &[("isolation", 1)]);
    assert_drops_at_least(&h, "blue1", &[("isolation", 1)]);

    // A broadcast from the isolated endpoint reaches the wire only.
    wire.drain();
    let m = Marker::new();
    ti.write(&marked(BROADCAST, iso.mac, &m));
    assert_eq!(wire_copies(&wire, &m), [Some(10)]);
    for (tap, name) in [(&tb1, "blue1"), (&tb2, "blue2"), (&tr, "red"), (&ti, "iso")] {
        absent(
            tap,
            &m,
            &format!("relayed broadcast from the isolated endpoint at {name}"),
        );
    }
    // A broadcast from blue1 reaches blue2 once, and the wire.
    let m = Marker::new();
    tb1.write(&marked(BROADCAST, blue1.mac, &m));
    assert_eq!(wire_copies(&wire, &m), [Some(10)]);
    assert_eq!(copies(&tb2, &m, ARRIVE), 1, "blue broadcast at blue2");
    for (tap, name) in [(&tb1, "blue1"), (&tr, "red"), (&ti, "iso")] {
        absent(tap, &m, &format!("blue broadcast at {name}"));
    }
}

#[test]
fn relay_with_mixed_modes_delivers_each_copy_once() {
    let h = root_harness!();
    h.uplink_set(&["--reflective-relay", "on"]);
    let eps: Vec<_> = [
        ("b1", "bridge"),
        ("b2", "bridge"),
        ("v1", "vepa"),
        ("v2", "vepa"),
    ]
    .into_iter()
    .map(|(name, mode)| {
        let e = h.add(name, &["--mode", mode, "--vlan", "10"]);
        let t = h.tap(&e);
        (e, t)
    })
    .collect();
    let wire = h.topo.wire();
    for (s, (from, tap)) in eps.iter().enumerate() {
        let m = Marker::new();
        tap.write(&marked(BROADCAST, from.mac, &m));
        assert_eq!(
            wire_copies(&wire, &m),
            [Some(10)],
            "broadcast from {} on the wire",
            from.name
        );
        for (d, (to, tap)) in eps.iter().enumerate() {
            let want = usize::from(s != d);
            assert_eq!(
                copies(tap, &m, ABSENT),
                want,
                "broadcast {} -> {}: copies",
                from.name,
                to.name
            );
        }
        // Unicast to every other endpoint: exactly once, never on the wire
        // (bridge -> bridge is local; anything involving VEPA is relayed).
        for (d, (to, tap)) in eps.iter().enumerate() {
            if s == d {
                continue;
            }
            let m = Marker::new();
            eps[s].1.write(&marked(to.mac, from.mac, &m));
            assert_eq!(
                copies(tap, &m, ABSENT),
                1,
                "unicast {} -> {}: copies",
                from.name,
                to.name
            );
            assert_eq!(
                wire_copies(&wire, &m),
                Vec::<Option<u16>>::new(),
                "unicast {} -> {} on the wire",
                from.name,
                to.name
            );
        }
    }
}

#[test]
fn relay_forgets_deleted_endpoints_and_host_ports() {
    let h = root_harness!();
    h.uplink_set(&["--reflective-relay", "on"]);
    let a = h.add_pvlan("a", "vepa", &[]);
    let b = h.add_pvlan("b", "vepa", &[]);
    let ta = h.tap(&a);
    h.uplink_set(&["--host-port", "host0", "--vlan", "10"]);
    let host_mac = macvswitch_tests::frame::parse_mac(
        h.uplink()["host_port"]["mac"]
            .as_str()
            .expect("host_port.mac"),
    )
    .expect("host_port.mac parses");
    h.ctl.ok(&["endpoint", "del", "b"]);
    h.uplink_set(&["--no-host-port"]);
    let wire = h.topo.wire();
    // Those MACs are not local any more: a frame to them goes to the wire
    // (where they may live now), it is not reflected into nowhere.
    for (mac, what) in [(b.mac, "deleted endpoint"), (host_mac, "removed host port")] {
        let before = relayed(&h, "unicast");
        let m = Marker::new();
        ta.write(&marked(mac, a.mac, &m));
        assert_eq!(
            wire_copies(&wire, &m),
            [Some(10)],
            "unicast to the {what}'s MAC not on the wire"
        );
        assert_eq!(relayed(&h, "unicast"), before, "{what}: {}", h.uplink());
    }
}
