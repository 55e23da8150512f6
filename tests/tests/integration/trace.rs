//! `macvswitch trace`: for several port kinds and both directions, the
//! traced fate of a frame (verdict, reason, tag pushed or popped) is what
//! the same bytes really meet when sent, and a trace changes no counter.

use macvswitch_tests::Harness;
use macvswitch_tests::expect::{absent, at_guest, on_wire};
use macvswitch_tests::frame::{self, Mac, Marker, TPID_8021AD, TPID_8021Q, test_mac, with_tags};
use macvswitch_tests::harness::Endpoint;
use macvswitch_tests::root_harness;
use macvswitch_tests::tap::Tap;
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::wire::WireSocket;
use serde_json::Value;

/// One frame to trace and then send: from or to the guest of `endpoint`,
/// with inline `tags`, and what must become of it.
struct Case {
    endpoint: &'static str,
    to_guest: bool,
    tags: &'static [(u16, u16)],
    /// `Some(src)` sends from another source than the endpoint's MAC.
    spoof: Option<Mac>,
    /// "pass", or the drop reason.
    fate: &'static str,
    /// The tag the program pushes (from the guest) or pops (to it).
    tag: Option<(u16, u16)>,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { endpoint: "acc", to_guest: false, tags: &[], spoof: None, fate: "pass", tag: Some((TPID_8021Q, 10)) },
    Case { endpoint: "acc", to_guest: false, tags: &[(TPID_8021Q, 20)], spoof: None, fate: "guest-tagged", tag: None },
    Case { endpoint: "acc", to_guest: false, tags: &[], spoof: Some(test_mac(0x99)), fate: "spoofed-source", tag: None },
    Case { endpoint: "acc", to_guest: true, tags: &[(TPID_8021Q, 10)], spoof: None, fate: "pass", tag: Some((TPID_8021Q, 10)) },
    Case { endpoint: "acc", to_guest: true, tags: &[(TPID_8021Q, 20)], spoof: None, fate: "wrong-vlan", tag: None },
    Case { endpoint: "trk", to_guest: false, tags: &[(TPID_8021Q, 20)], spoof: None, fate: "pass", tag: None },
    Case { endpoint: "trk", to_guest: false, tags: &[(TPID_8021Q, 40)], spoof: None, fate: "wrong-vlan", tag: None },
    Case { endpoint: "trk", to_guest: true, tags: &[(TPID_8021Q, 30)], spoof: None, fate: "pass", tag: Some((TPID_8021Q, 30)) },
    Case { endpoint: "trk", to_guest: true, tags: &[], spoof: None, fate: "untagged", tag: None },
    Case { endpoint: "tun", to_guest: false, tags: &[(TPID_8021Q, 10)], spoof: None, fate: "pass", tag: Some((TPID_8021AD, 300)) },
    Case { endpoint: "tun", to_guest: false, tags: &[(TPID_8021AD, 10)], spoof: None, fate: "foreign-tpid", tag: None },
    Case { endpoint: "tun", to_guest: true, tags: &[(TPID_8021AD, 300), (TPID_8021Q, 10)], spoof: None, fate: "pass", tag: Some((TPID_8021AD, 300)) },
    Case { endpoint: "unt", to_guest: false, tags: &[], spoof: None, fate: "pass", tag: None },
    Case { endpoint: "unt", to_guest: true, tags: &[(TPID_8021Q, 10)], spoof: None, fate: "tagged-on-untagged-port", tag: None },
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tag_of(value: &Value) -> Option<(u16, u16)> {
    if value.is_null() {
        return None;
    }
    let tpid = u16::from_str_radix(value["tpid"].as_str()?.trim_start_matches("0x"), 16).ok()?;
    let vid = value["vid"].as_u64()? as u16;
    Some((tpid, vid))
}

/// Every endpoint's counters, to compare before and after a trace.
fn all_stats(h: &Harness) -> Value {
    h.ctl.json(&["stats", "--json"])
}

fn trace_json(h: &Harness, args: &[&str]) -> Value {
    let v = h.ctl.json(args);
    assert_eq!(v["agrees"], true, "trace {args:?}: {v}");
    v
}

#[test]
fn trace_agrees_with_real_sends_and_counts_nothing() {
    let h = root_harness!();
    let eps: Vec<(Endpoint, Tap)> = [
        ("acc", &["--vlan", "10"][..]),
        ("trk", &["--trunk", "10,20", "--native", "30"][..]),
        ("tun", &["--tunnel", "300"][..]),
        ("unt", &[][..]),
    ]
    .into_iter()
    .map(|(name, args)| {
        let ep = h.add(name, args);
        let tap = h.tap(&ep);
        (ep, tap)
    })
    .collect();
    let wire: WireSocket = h.topo.wire();

    for case in CASES {
        let (ep, tap) = eps
            .iter()
            .find(|(ep, _)| ep.name == case.endpoint)
            .expect("endpoint of the case");
        let m = Marker::new();
        let (dst, src) = if case.to_guest {
            (ep.mac, SWITCH_MAC)
        } else {
            (SWITCH_MAC, case.spoof.unwrap_or(ep.mac))
        };
        let bytes = with_tags(dst, src, case.tags, &m);
        let way = if case.to_guest {
            "--to-guest"
        } else {
            "--from-guest"
        };
        let what = format!(
            "{} {way} tags {:x?} spoof {:?}",
            case.endpoint, case.tags, case.spoof
        );

        let before = all_stats(&h);
        let trace = trace_json(
            &h,
            &["trace", case.endpoint, way, "--hex", &hex(&bytes), "--json"],
        );
        assert_eq!(all_stats(&h), before, "{what}: trace changed counters");

        let expected_verdict = if case.fate == "pass" { "pass" } else { "drop" };
        assert_eq!(trace["verdict"], expected_verdict, "{what}: {trace}");
        if case.fate != "pass" {
            assert_eq!(trace["reason"], case.fate, "{what}: {trace}");
        } else {
            assert!(trace["reason"].is_null(), "{what}: {trace}");
        }
        let (pushed, popped) = (
            tag_of(&trace["tags"]["pushed"]),
            tag_of(&trace["tags"]["popped"]),
        );
        if case.to_guest {
            assert_eq!(popped, case.tag, "{what}: popped: {trace}");
            assert_eq!(pushed, None, "{what}: {trace}");
        } else {
            assert_eq!(pushed, case.tag, "{what}: pushed: {trace}");
            assert_eq!(popped, None, "{what}: {trace}");
        }
        assert!(
            trace["steps"].as_array().is_some_and(|s| s.len() >= 3),
            "{what}: {trace}"
        );

        // The same bytes for real.
        let drops_before = if case.fate == "pass" {
            0
        } else {
            h.drops(case.endpoint, case.fate)
        };
        if case.to_guest {
            wire.send(&bytes);
        } else {
            tap.write(&bytes);
        }
        match (case.fate, case.to_guest) {
            ("pass", true) => {
                let got = at_guest(tap, &m, &what);
                // What the trace popped is gone; the rest is as sent.
                let expected: Vec<(u16, u16)> = match case.tag {
                    Some(_) => case.tags[1..].to_vec(),
                    None => case.tags.to_vec(),
                };
                assert_eq!(frame::tags(&got), expected, "{what}");
            }
            ("pass", false) => {
                let got = on_wire(&wire, &m, &what);
                match case.tag {
                    // Pushed into metadata: the wire sees it as the outer tag.
                    Some(tag) => assert_eq!(
                        got.vlan.map(|(tpid, tci)| (tpid, tci & 0x0fff)),
                        Some(tag),
                        "{what}: {got:?}"
                    ),
                    None => {
                        let outer = got.vlan.map(|(tpid, tci)| (tpid, tci & 0x0fff));
                        let mut all: Vec<(u16, u16)> = outer.into_iter().collect();
                        all.extend(frame::tags(&got.bytes));
                        assert_eq!(all, case.tags, "{what}: {got:?}");
                    }
                }
            }
            (reason, to_guest) => {
                if to_guest {
                    absent(tap, &m, &what);
                } else {
                    absent(&wire, &m, &what);
                }
                assert_eq!(
                    h.drops(case.endpoint, reason),
                    drops_before + 1,
                    "{what}: the real send counted no {reason} drop"
                );
            }
        }
    }
}

#[test]
fn trace_builds_frames_from_options_and_refuses_bad_ones() {
    let h = root_harness!();
    h.add("acc", &["--vlan", "10"]);
    h.add("trk", &["--trunk", "10,20", "--native", "30"]);

    let v = trace_json(&h, &["trace", "acc", "--from-guest", "--json"]);
    assert_eq!(v["verdict"], "pass", "{v}");
    assert_eq!(v["frame"]["src_ip"], "192.0.2.1", "{v}");
    assert_eq!(tag_of(&v["tags"]["pushed"]), Some((TPID_8021Q, 10)), "{v}");

    let v = trace_json(
        &h,
        &["trace", "acc", "--from-guest", "--vlan", "20", "--json"],
    );
    assert_eq!(
        (v["verdict"].as_str(), v["reason"].as_str()),
        (Some("drop"), Some("guest-tagged")),
        "{v}"
    );

    let v = trace_json(
        &h,
        &[
            "trace",
            "acc",
            "--from-guest",
            "--src",
            "02:00:5e:99:00:99",
            "--json",
        ],
    );
    assert_eq!(v["reason"], "spoofed-source", "{v}");

    let v = trace_json(
        &h,
        &[
            "trace",
            "trk",
            "--to-guest",
            "--vlan",
            "30",
            "--ethertype",
            "ipv6",
            "--json",
        ],
    );
    assert_eq!(v["verdict"], "pass", "{v}");
    assert_eq!(v["frame"]["dst_ip"], "2001:db8::2", "{v}");
    assert_eq!(tag_of(&v["tags"]["popped"]), Some((TPID_8021Q, 30)), "{v}");

    let v = trace_json(
        &h,
        &[
            "trace",
            "trk",
            "--to-guest",
            "--vlan",
            "300,10",
            "--tpid",
            "802.1ad",
            "--json",
        ],
    );
    assert_eq!(v["reason"], "foreign-tpid", "{v}");

    let text = h.ctl.ok(&["trace", "trk", "--to-guest", "--vlan", "40"]);
    assert!(text.contains("verdict: drop (wrong-vlan)"), "{text}");
    assert!(
        text.contains("trunk carrying VLANs 10,20, native VLAN 30"),
        "{text}"
    );

    for (args, needle) in [
        (
            &["trace", "acc", "--from-guest", "--vlan", "5000"][..],
            "--vlan",
        ),
        (
            &["trace", "acc", "--from-guest", "--vlan", "1,2,3"][..],
            "--vlan",
        ),
        (
            &["trace", "acc", "--from-guest", "--ethertype", "0x8100"][..],
            "--ethertype",
        ),
        (
            &["trace", "acc", "--from-guest", "--src", "nonsense"][..],
            "--src",
        ),
        (
            &["trace", "acc", "--from-guest", "--hex", "zz"][..],
            "--hex",
        ),
        (
            &[
                "trace",
                "acc",
                "--from-guest",
                "--ethertype",
                "arp",
                "--src-ip",
                "2001:db8::1",
            ][..],
            "--src-ip",
        ),
        (&["trace", "acc"][..], "--from-guest"),
    ] {
        let out = h.ctl.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle} not in {stderr}"
        );
    }
    let out = h.ctl.run(&["trace", "nosuch", "--from-guest"]);
    assert_ne!(out.status.code(), Some(0));
}

/// The guards are part of a frame's fate: a DHCP offer from a guest is
/// traced as the `dhcp-server` drop it really is, and a DHCP request as
/// passing.
#[test]
fn trace_follows_the_port_security_guards() {
    let h = root_harness!();
    let ep = h.add("g", &["--vlan", "10"]);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();
    let dhcp = |src_port: u16, dst_port: u16, m: &Marker| {
        let mut packet = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 10, 255, 255, 255, 255,
        ];
        packet.extend_from_slice(&src_port.to_be_bytes());
        packet.extend_from_slice(&dst_port.to_be_bytes());
        packet.extend_from_slice(&[0, 24, 0, 0]);
        packet.extend_from_slice(&m.0);
        let len = packet.len() as u16;
        packet[2..4].copy_from_slice(&len.to_be_bytes());
        frame::eth(frame::BROADCAST, ep.mac, 0x0800, &packet)
    };
    for (src_port, dst_port, fate) in [(67, 68, "dhcp-server"), (68, 67, "pass")] {
        let m = Marker::new();
        let bytes = dhcp(src_port, dst_port, &m);
        let before = all_stats(&h);
        let trace = trace_json(
            &h,
            &[
                "trace",
                "g",
                "--from-guest",
                "--hex",
                &hex(&bytes),
                "--json",
            ],
        );
        assert_eq!(all_stats(&h), before, "trace changed counters");
        let what = format!("UDP {src_port} -> {dst_port}");
        if fate == "pass" {
            assert_eq!(trace["verdict"], "pass", "{what}: {trace}");
            tap.write(&bytes);
            on_wire(
                &wire,
                &m,
                &format!("{what}: traced as passing, not on the wire"),
            );
        } else {
            assert_eq!(
                (&trace["verdict"], &trace["reason"]),
                (&"drop".into(), &fate.into()),
                "{what}: {trace}"
            );
            tap.write(&bytes);
            absent(&wire, &m, &format!("{what}: traced as {fate}, on the wire"));
            assert_eq!(h.drops("g", fate), 1);
        }
    }
}
