//! Private VLANs (RFC 5517) between local endpoints: isolated endpoints
//! reach no other local endpoint, community members reach their own
//! community, endpoints in no community reach each other; everyone reaches
//! the wire and the wire reaches everyone. The same matrix holds whichever
//! path a frame takes: bridge-mode local delivery, VEPA with relay
//! emulation, VEPA behind a hairpin switch. `endpoint set` changes it live.
//! Root-only: each test builds its own namespaces and bpffs.

use std::time::{Duration, Instant};

use macvswitch_tests::expect::{assert_drops_at_least, vids_of};
use macvswitch_tests::frame::{BROADCAST, Marker, marked, marked_tagged};
use macvswitch_tests::hairpin::Hairpin;
use macvswitch_tests::harness::{ABSENT, ARRIVE, Endpoint};
use macvswitch_tests::tap::Tap;
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::{Harness, root_harness};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Isolated,
    Community(&'static str),
    Open,
}

fn allowed(a: Group, b: Group) -> bool {
    match (a, b) {
        (Group::Isolated, _) | (_, Group::Isolated) => false,
        (a, b) => a == b,
    }
}

struct Port {
    name: &'static str,
    group: Group,
    ep: Endpoint,
    tap: Tap,
}

fn port(h: &Harness, name: &'static str, mode: &str, group: Group) -> Port {
    let mut args = vec!["--mode", mode, "--vlan", "10"];
    match group {
        Group::Isolated => args.push("--isolated"),
        Group::Community(c) => args.extend(["--community", c]),
        Group::Open => {}
    }
    let ep = h.add(name, &args);
    let tap = h.tap(&ep);
    Port {
        name,
        group,
        ep,
        tap,
    }
}

fn ports(h: &Harness, mode: &str) -> Vec<Port> {
    [
        ("iso", Group::Isolated),
        ("blue1", Group::Community("blue")),
        ("blue2", Group::Community("blue")),
        ("red", Group::Community("red")),
        ("open1", Group::Open),
        ("open2", Group::Open),
    ]
    .into_iter()
    .map(|(name, group)| port(h, name, mode, group))
    .collect()
}

/// A frame sent in a round: its marker and who must get exactly one copy.
struct Sent {
    what: String,
    marker: Marker,
    to: Vec<usize>,
}

/// Reads every tap until each expected copy has arrived (or `ARRIVE` has
/// passed), then for `ABSENT` more; returns the marked frames per tap.
fn collect(ports: &[Port], sent: &[Sent]) -> Vec<Vec<Vec<u8>>> {
    let mut got: Vec<Vec<Vec<u8>>> = ports.iter().map(|_| Vec::new()).collect();
    let complete = |got: &Vec<Vec<Vec<u8>>>| {
        sent.iter().all(|s| {
            s.to.iter()
                .all(|&i| got[i].iter().any(|f| s.marker.is_in(f)))
        })
    };
    let deadline = Instant::now() + ARRIVE;
    let drain = |got: &mut Vec<Vec<Vec<u8>>>| {
        for (i, p) in ports.iter().enumerate() {
            got[i].extend(p.tap.read_all(Duration::ZERO));
        }
    };
    while Instant::now() < deadline {
        drain(&mut got);
        if complete(&got) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(ABSENT);
    drain(&mut got);
    got
}

/// Every mismatch between what arrived and what `sent` expects.
fn check(ports: &[Port], sent: &[Sent], got: &[Vec<Vec<u8>>]) -> Vec<String> {
    let mut errors = Vec::new();
    for s in sent {
        for (i, p) in ports.iter().enumerate() {
            let n = got[i].iter().filter(|f| s.marker.is_in(f)).count();
            let want = usize::from(s.to.contains(&i));
            if n != want {
                errors.push(format!(
                    "{}: {n} copies at {} (want {want})",
                    s.what, p.name
                ));
            }
        }
    }
    errors
}

/// Unicast between every ordered pair and a broadcast from each port;
/// checks local delivery against the private-VLAN rules and that each
/// broadcast reaches the wire once, tagged 10.
fn matrix(h: &Harness, ports: &[Port], label: &str) {
    let wire = h.topo.wire();
    let mut sent = Vec::new();
    for (s, from) in ports.iter().enumerate() {
        for (d, to) in ports.iter().enumerate() {
            if s == d {
                continue;
            }
            let marker = Marker::new();
            from.tap.write(&marked(to.ep.mac, from.ep.mac, &marker));
            sent.push(Sent {
                what: format!("unicast {} -> {}", from.name, to.name),
                marker,
                to: if allowed(from.group, to.group) {
                    vec![d]
                } else {
                    vec![]
                },
            });
        }
    }
    let mut broadcasts = Vec::new();
    for (s, from) in ports.iter().enumerate() {
        let marker = Marker::new();
        from.tap.write(&marked(BROADCAST, from.ep.mac, &marker));
        broadcasts.push(marker);
        sent.push(Sent {
            what: format!("broadcast from {}", from.name),
            marker,
            to: ports
                .iter()
                .enumerate()
                .filter(|&(d, to)| d != s && allowed(from.group, to.group))
                .map(|(d, _)| d)
                .collect(),
        });
    }
    let got = collect(ports, &sent);
    let mut errors = check(ports, &sent, &got);
    let on_wire = wire.recv_all(ABSENT);
    for (from, marker) in ports.iter().zip(&broadcasts) {
        let vids = vids_of(&on_wire, marker);
        if vids != [Some(10)] {
            errors.push(format!(
                "broadcast from {}: on the wire as {vids:?}",
                from.name
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "{label}: private-VLAN matrix violated:\n  {}",
        errors.join("\n  ")
    );
}

/// The wire reaches every port (broadcast and unicast), and every port
/// reaches the wire.
fn wire_both_ways(h: &Harness, ports: &[Port], label: &str) {
    let wire = h.topo.wire();
    let mut sent = Vec::new();
    let marker = Marker::new();
    wire.send(&marked_tagged(BROADCAST, SWITCH_MAC, 10, &marker));
    sent.push(Sent {
        what: "broadcast from the wire".into(),
        marker,
        to: (0..ports.len()).collect(),
    });
    for (d, to) in ports.iter().enumerate() {
        let marker = Marker::new();
        wire.send(&marked_tagged(to.ep.mac, SWITCH_MAC, 10, &marker));
        sent.push(Sent {
            what: format!("unicast wire -> {}", to.name),
            marker,
            to: vec![d],
        });
    }
    let got = collect(ports, &sent);
    let mut errors = check(ports, &sent, &got);
    let markers: Vec<Marker> = ports
        .iter()
        .map(|from| {
            let m = Marker::new();
            from.tap.write(&marked(SWITCH_MAC, from.ep.mac, &m));
            m
        })
        .collect();
    let on_wire = wire.recv_all(ARRIVE.min(ABSENT * 3));
    for (from, m) in ports.iter().zip(&markers) {
        let vids = vids_of(&on_wire, m);
        if vids != [Some(10)] {
            errors.push(format!("unicast {} -> wire: seen as {vids:?}", from.name));
        }
    }
    assert!(
        errors.is_empty(),
        "{label}: wire reachability violated:\n  {}",
        errors.join("\n  ")
    );
}

/// The ways a frame between two local endpoints can take, which the
/// matrix must hold for alike.
struct Path {
    label: &'static str,
    mode: &'static str,
    relay: bool,
    hairpin: bool,
    /// Whether the isolation drops are counted at the receivers' ports (in
    /// bridge mode the frame reaches them without the wire in between).
    counts_isolation_drops: bool,
}

macvswitch_tests::cases! { private_vlans:
    bridge_mode_private_vlans => Path {
        label: "bridge mode",
        mode: "bridge",
        relay: false,
        hairpin: false,
        counts_isolation_drops: true,
    },
    vepa_with_relay_private_vlans => Path {
        label: "VEPA with relay emulation",
        mode: "vepa",
        relay: true,
        hairpin: false,
        counts_isolation_drops: false,
    },
    vepa_behind_hairpin_private_vlans => Path {
        label: "VEPA behind a hairpin switch",
        mode: "vepa",
        relay: false,
        hairpin: true,
        counts_isolation_drops: false,
    },
}

fn private_vlans(path: Path) {
    let h = root_harness!();
    if path.relay {
        h.uplink_set(&["--reflective-relay", "on"]);
    }
    let ports = ports(&h, path.mode);
    assert_eq!(ports[0].ep.raw["isolated"], true, "{}", ports[0].ep.raw);
    assert_eq!(ports[1].ep.raw["community"], "blue", "{}", ports[1].ep.raw);
    let hairpin = path.hairpin.then(|| Hairpin::start(&h.topo));
    matrix(&h, &ports, path.label);
    wire_both_ways(&h, &ports, path.label);
    if path.counts_isolation_drops {
        for p in ["iso", "red", "open1"] {
            assert_drops_at_least(&h, p, &[("isolation", 1)]);
        }
    }
    if let Some(hairpin) = hairpin {
        assert!(hairpin.stop() > 0);
    }
}

/// Endpoints with their tap open for the whole test, as QEMU would keep
/// it (a second open of a macvtap node would add a queue and split the
/// traffic between the two fds).
struct Guests {
    eps: Vec<(Endpoint, Tap)>,
}

impl Guests {
    fn get(&self, name: &str) -> &(Endpoint, Tap) {
        self.eps
            .iter()
            .find(|(e, _)| e.name == name)
            .unwrap_or_else(|| panic!("no endpoint {name}"))
    }

    /// Unicast `a -> b` and `b -> a`; panics unless both arrive
    /// (`expect`) or neither does.
    fn talk(&self, a: &str, b: &str, expect: bool, what: &str) {
        let ((ea, ta), (eb, tb)) = (self.get(a), self.get(b));
        let (m1, m2) = (Marker::new(), Marker::new());
        ta.write(&marked(eb.mac, ea.mac, &m1));
        tb.write(&marked(ea.mac, eb.mac, &m2));
        let window = if expect { ARRIVE } else { ABSENT };
        let ab = tb.read_matching(window, |f| m1.is_in(f)).is_some();
        let ba = ta.read_matching(window, |f| m2.is_in(f)).is_some();
        assert_eq!(
            (ab, ba),
            (expect, expect),
            "{what}: ({a} -> {b}, {b} -> {a})"
        );
    }
}

#[test]
fn isolation_changes_live() {
    let h = root_harness!();
    let eps = [
        h.add("x", &["--mode", "bridge", "--vlan", "10", "--isolated"]),
        h.add("y", &["--mode", "bridge", "--vlan", "10"]),
        h.add(
            "z",
            &["--mode", "bridge", "--vlan", "10", "--community", "blue"],
        ),
    ];
    let g = Guests {
        eps: eps
            .into_iter()
            .map(|e| {
                let t = h.tap(&e);
                (e, t)
            })
            .collect(),
    };

    g.talk("x", "y", false, "isolated x <-> open y");
    h.ctl.ok(&["endpoint", "set", "x", "--open"]);
    let x = h.show("x");
    assert_eq!(x.raw["isolated"], false, "{}", x.raw);
    assert_eq!(x.vlan, Some(10), "--open changed the VLAN: {}", x.raw);
    g.talk("x", "y", true, "x after --open <-> open y");

    h.ctl.ok(&["endpoint", "set", "y", "--isolated"]);
    g.talk("x", "y", false, "open x <-> y after --isolated");
    h.ctl.ok(&["endpoint", "set", "y", "--community", "blue"]);
    g.talk("y", "z", true, "blue y <-> blue z");
    g.talk("x", "y", false, "open x <-> blue y");
    h.ctl.ok(&["endpoint", "set", "z", "--community", "red"]);
    g.talk("y", "z", false, "blue y <-> red z");
    h.ctl.ok(&["endpoint", "set", "z", "--open"]);
    g.talk("x", "z", true, "open x <-> z after --open");
}
