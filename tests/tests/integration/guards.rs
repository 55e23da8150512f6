//! Port security (README "Port security"): each guard drops its attack
//! frame and passes the honest one, written by the guest to its real tap
//! fd and looked for on the wire; the reasons are counted. The parser's
//! corner cases are common/'s unit tests and the property test's.
//! Root-only: each test builds its own namespaces and bpffs.

use std::time::{Duration, Instant};

use macvswitch_tests::expect::{absent, assert_drops, assert_refused, on_wire};
use macvswitch_tests::frame::{BROADCAST, ETHERTYPE_TEST, Mac, Marker, TPID_8021Q, eth, tagged};
use macvswitch_tests::harness::{Endpoint, Harness};
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::SWITCH_MAC;

const OTHER_MAC: Mac = [0x02, 0x00, 0x5e, 0x99, 0x00, 0x66];
const MINE4: [u8; 4] = [192, 0, 2, 10];
const OTHER4: [u8; 4] = [192, 0, 2, 66];
const PEER4: [u8; 4] = [192, 0, 2, 1];
const MINE6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const OTHER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66,
];
const LINK_LOCAL6: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];
const STP_MAC: Mac = [0x01, 0x80, 0xc2, 0, 0, 0];
const SLOW_PROTOCOLS_MAC: Mac = [0x01, 0x80, 0xc2, 0, 0, 2];

const UDP: u8 = 17;
const ICMPV6: u8 = 58;

fn ipv4_packet(src: [u8; 4], protocol: u8, l4: &[u8], m: &Marker) -> Vec<u8> {
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&PEER4);
    packet.extend_from_slice(l4);
    packet.extend_from_slice(&m.0);
    let len = packet.len() as u16;
    packet[2..4].copy_from_slice(&len.to_be_bytes());
    packet
}

fn udp(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut header = src_port.to_be_bytes().to_vec();
    header.extend_from_slice(&dst_port.to_be_bytes());
    header.extend_from_slice(&[0, 8 + 16, 0, 0]);
    header
}

fn ipv4(from: Mac, dst: Mac, src: [u8; 4], protocol: u8, l4: &[u8], m: &Marker) -> Vec<u8> {
    eth(dst, from, 0x0800, &ipv4_packet(src, protocol, l4, m))
}

/// An Ethernet/IPv4 ARP request, the marker as trailing padding.
fn arp(from: Mac, sha: Mac, spa: [u8; 4], m: &Marker) -> Vec<u8> {
    let mut packet = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    packet.extend_from_slice(&sha);
    packet.extend_from_slice(&spa);
    packet.extend_from_slice(&[0; 6]);
    packet.extend_from_slice(&PEER4);
    packet.extend_from_slice(&m.0);
    eth(BROADCAST, from, 0x0806, &packet)
}

/// An IPv6 packet: `chain` holds extension headers (next-header value,
/// bytes) in order, then `protocol` and its bytes.
fn ipv6_packet(
    src: [u8; 16],
    chain: &[(u8, &[u8])],
    protocol: u8,
    l4: &[u8],
    m: &Marker,
) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0, 0, 0];
    packet.push(chain.first().map_or(protocol, |(next, _)| *next));
    packet.push(255);
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&OTHER6);
    for (i, (_, bytes)) in chain.iter().enumerate() {
        let at = packet.len();
        packet.extend_from_slice(bytes);
        packet[at] = chain.get(i + 1).map_or(protocol, |(next, _)| *next);
    }
    packet.extend_from_slice(l4);
    packet.extend_from_slice(&m.0);
    let payload = (packet.len() - 40) as u16;
    packet[4..6].copy_from_slice(&payload.to_be_bytes());
    packet
}

fn ipv6(from: Mac, dst: Mac, src: [u8; 16], protocol: u8, l4: &[u8], m: &Marker) -> Vec<u8> {
    eth(dst, from, 0x86dd, &ipv6_packet(src, &[], protocol, l4, m))
}

fn icmpv6(kind: u8) -> Vec<u8> {
    vec![kind, 0, 0, 0, 0, 0, 0, 0]
}

/// A neighbour advertisement from `from` for `target`, with a target
/// link-layer address option naming `lladdr` and the marker in a nonce
/// option (RFC 3971), so that every byte after the header is a
/// well-formed option.
fn neighbour_advert(from: Mac, target: [u8; 16], lladdr: Mac, m: &Marker) -> Vec<u8> {
    let mut message = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    message.extend_from_slice(&target);
    message.extend_from_slice(&[2, 1]);
    message.extend_from_slice(&lladdr);
    message.extend_from_slice(&[14, 3]);
    message.extend_from_slice(&m.0);
    message.extend_from_slice(&[0; 6]);
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(message.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[ICMPV6, 255]);
    packet.extend_from_slice(&MINE6);
    packet.extend_from_slice(&OTHER6);
    packet.extend_from_slice(&message);
    eth(ALL_NODES_MAC, from, 0x86dd, &packet)
}

/// Builds a frame around a marker.
type Build = Box<dyn Fn(&Marker) -> Vec<u8>>;

/// Writes `frame` as `ep`'s guest: it must reach the wire, or (with a
/// reason) must not.
fn expect(h: &Harness, ep: &Endpoint, frame: &[u8], m: &Marker, dropped: Option<&str>, what: &str) {
    let wire = h.topo.wire();
    h.tap(ep).write(frame);
    match dropped {
        None => {
            on_wire(
                &wire,
                m,
                &format!("{}: {what} did not reach the wire", ep.name),
            );
        }
        Some(reason) => absent(
            &wire,
            m,
            &format!(
                "{}: {what} reached the wire past the {reason} guard",
                ep.name
            ),
        ),
    }
}

/// Each guard against its attack frame and the honest one (in the VM
/// kernels' quick subset).
mod frames {
    use super::*;

    #[test]
    fn source_guard_drops_spoofed_ip_arp_and_neighbour_advertisements() {
        let h = root_harness!();
        let g = h.add("g", &["--vlan", "10", "--ip", "192.0.2.10,2001:db8::10"]);
        let mac = g.mac;
        let rows: Vec<(&str, Build, Option<&str>)> = vec![
            (
                "IPv4 from its address",
                Box::new(move |m| ipv4(mac, SWITCH_MAC, MINE4, UDP, &udp(4000, 53), m)),
                None,
            ),
            (
                "IPv4 from another address",
                Box::new(move |m| ipv4(mac, SWITCH_MAC, OTHER4, UDP, &udp(4000, 53), m)),
                Some("ip-spoofed"),
            ),
            (
                "DHCP discover from 0.0.0.0",
                Box::new(move |m| ipv4(mac, BROADCAST, [0; 4], UDP, &udp(68, 67), m)),
                None,
            ),
            (
                "ARP for its address",
                Box::new(move |m| arp(mac, mac, MINE4, m)),
                None,
            ),
            (
                "ARP probe",
                Box::new(move |m| arp(mac, mac, [0; 4], m)),
                None,
            ),
            (
                "ARP claiming another address",
                Box::new(move |m| arp(mac, mac, OTHER4, m)),
                Some("arp-spoofed"),
            ),
            (
                "ARP naming another MAC",
                Box::new(move |m| arp(mac, OTHER_MAC, MINE4, m)),
                Some("arp-spoofed"),
            ),
            (
                "IPv6 from its address",
                Box::new(move |m| ipv6(mac, SWITCH_MAC, MINE6, UDP, &udp(4000, 53), m)),
                None,
            ),
            (
                "IPv6 from link-local",
                Box::new(move |m| ipv6(mac, SWITCH_MAC, LINK_LOCAL6, UDP, &udp(4000, 53), m)),
                None,
            ),
            (
                "IPv6 from another address",
                Box::new(move |m| ipv6(mac, SWITCH_MAC, OTHER6, UDP, &udp(4000, 53), m)),
                Some("ip-spoofed"),
            ),
            (
                "NA for its address",
                Box::new(move |m| neighbour_advert(mac, MINE6, mac, m)),
                None,
            ),
            (
                "NA for another address",
                Box::new(move |m| neighbour_advert(mac, OTHER6, mac, m)),
                Some("nd-spoofed"),
            ),
            (
                "NA naming another MAC",
                Box::new(move |m| neighbour_advert(mac, MINE6, OTHER_MAC, m)),
                Some("nd-spoofed"),
            ),
        ];
        for (what, build, dropped) in &rows {
            let m = Marker::new();
            expect(&h, &g, &build(&m), &m, *dropped, what);
        }
        assert_drops(
            &h,
            "g",
            &[("ip-spoofed", 2), ("arp-spoofed", 2), ("nd-spoofed", 2)],
        );

        // Without --ip, addresses are not checked (MAC checks stay).
        h.ctl.ok(&["endpoint", "set", "g", "--no-ip"]);
        let m = Marker::new();
        expect(
            &h,
            &g,
            &ipv4(mac, SWITCH_MAC, OTHER4, UDP, &udp(4000, 53), &m),
            &m,
            None,
            "IPv4 after --no-ip",
        );
        let m = Marker::new();
        expect(
            &h,
            &g,
            &arp(mac, mac, OTHER4, &m),
            &m,
            None,
            "ARP after --no-ip",
        );
    }

    #[test]
    fn addresses_on_a_trunk_hold_on_every_vlan() {
        let h = root_harness!();
        let t = h.add("t", &["--trunk", "20,30", "--ip", "198.51.100.0/24"]);
        let wire = h.topo.wire();
        let tap = h.tap(&t);
        for vid in [20u16, 30] {
            let honest = Marker::new();
            let packet = ipv4_packet([198, 51, 100, 7], UDP, &udp(4000, 53), &honest);
            tap.write(&tagged(SWITCH_MAC, t.mac, TPID_8021Q, vid, 0x0800, &packet));
            let f = on_wire(&wire, &honest, &format!("honest IPv4 on VLAN {vid}"));
            assert_eq!(f.vid(), Some(vid));
            let spoofed = Marker::new();
            let packet = ipv4_packet(OTHER4, UDP, &udp(4000, 53), &spoofed);
            tap.write(&tagged(SWITCH_MAC, t.mac, TPID_8021Q, vid, 0x0800, &packet));
            absent(&wire, &spoofed, &format!("spoofed IPv4 on VLAN {vid}"));
        }
        assert_drops(&h, "t", &[("ip-spoofed", 2)]);
        let per_vlan =
            |vid| h.vlan_stats("t", vid).expect("a VLAN row")["drops"]["ip-spoofed"].as_u64();
        assert_eq!((per_vlan(20), per_vlan(30)), (Some(1), Some(1)));
    }

    #[test]
    fn dhcp_server_ra_and_bpdu_guards_are_on_by_default_and_can_be_lifted() {
        let h = root_harness!();
        let r = h.add("r", &["--vlan", "10"]);
        let mac = r.mac;
        let hop_by_hop: &[u8] = &[0, 0, 5, 2, 0, 0, 1, 0];
        let destination: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];
        let rows: Vec<(&str, Build, &str)> = vec![
            (
                "DHCP offer",
                Box::new(move |m| ipv4(mac, BROADCAST, MINE4, UDP, &udp(67, 68), m)),
                "dhcp-server",
            ),
            (
                "DHCPv6 advertise",
                Box::new(move |m| ipv6(mac, SWITCH_MAC, LINK_LOCAL6, UDP, &udp(547, 546), m)),
                "dhcp-server",
            ),
            (
                "router advertisement",
                Box::new(move |m| ipv6(mac, ALL_NODES_MAC, LINK_LOCAL6, ICMPV6, &icmpv6(134), m)),
                "router-advert",
            ),
            (
                "RA under extension headers",
                Box::new(move |m| {
                    let packet = ipv6_packet(
                        LINK_LOCAL6,
                        &[(0, hop_by_hop), (60, destination)],
                        ICMPV6,
                        &icmpv6(134),
                        m,
                    );
                    eth(ALL_NODES_MAC, mac, 0x86dd, &packet)
                }),
                "router-advert",
            ),
            (
                "redirect",
                Box::new(move |m| ipv6(mac, SWITCH_MAC, LINK_LOCAL6, ICMPV6, &icmpv6(137), m)),
                "router-advert",
            ),
            (
                "STP BPDU",
                Box::new(move |m| eth(STP_MAC, mac, 0x0026, &m.0)),
                "bpdu",
            ),
            (
                "LACPDU",
                Box::new(move |m| eth(SLOW_PROTOCOLS_MAC, mac, 0x8809, &m.0)),
                "bpdu",
            ),
        ];
        for (what, build, reason) in &rows {
            let m = Marker::new();
            expect(&h, &r, &build(&m), &m, Some(reason), what);
        }
        assert_drops(
            &h,
            "r",
            &[("dhcp-server", 2), ("router-advert", 3), ("bpdu", 2)],
        );
        // Honest neighbours of those pass: a DHCP request, a router solicitation.
        let m = Marker::new();
        expect(
            &h,
            &r,
            &ipv4(mac, BROADCAST, MINE4, UDP, &udp(68, 67), &m),
            &m,
            None,
            "DHCP request",
        );
        let m = Marker::new();
        expect(
            &h,
            &r,
            &ipv6(mac, ALL_NODES_MAC, LINK_LOCAL6, ICMPV6, &icmpv6(133), &m),
            &m,
            None,
            "router solicitation",
        );

        // A router and DHCP-server VM, bridging in its guest.
        h.ctl.ok(&[
            "endpoint",
            "set",
            "r",
            "--allow-dhcp-server",
            "--allow-ra",
            "--allow-bpdu",
        ]);
        for (what, build, _) in &rows {
            let m = Marker::new();
            expect(
                &h,
                &r,
                &build(&m),
                &m,
                None,
                &format!("{what} once allowed"),
            );
        }
        let shown = h.ctl.json(&["endpoint", "show", "r", "--json"]);
        let guards = &shown["guards"];
        assert_eq!(
            (
                &guards["allow_dhcp_server"],
                &guards["allow_ra"],
                &guards["allow_bpdu"]
            ),
            (&true.into(), &true.into(), &true.into()),
            "{shown}"
        );
    }
}

/// Storm control's rate, from two CPUs at once (host only: emulated
/// guests cannot offer enough frames to test a limit).
mod storm {
    use super::*;

    /// Sends broadcasts (and one unicast per ten) from two threads on two
    /// CPUs for `window`; returns (broadcasts written, unicasts written,
    /// seconds from the first write to the last).
    fn flood(h: &Harness, ep: &Endpoint, window: Duration) -> (u64, u64, f64) {
        let tap = h.tap(ep);
        let broadcast = eth(BROADCAST, ep.mac, ETHERTYPE_TEST, &Marker::new().0);
        let unicast = eth(SWITCH_MAC, ep.mac, ETHERTYPE_TEST, &Marker::new().0);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let start = Instant::now();
        let counts: Vec<(u64, u64)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|worker| {
                    let (tap, broadcast, unicast) = (&tap, &broadcast, &unicast);
                    scope.spawn(move || {
                        pin_to_cpu(worker % cpus);
                        let (mut sent, mut unicasts) = (0u64, 0u64);
                        // Bounded in count and time.
                        while start.elapsed() < window && sent < 2_000_000 {
                            if tap.try_write(broadcast) {
                                sent += 1;
                            }
                            if sent % 10 == 0 && tap.try_write(unicast) {
                                unicasts += 1;
                            }
                        }
                        (sent, unicasts)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("sender"))
                .collect()
        });
        let elapsed = start.elapsed().as_secs_f64();
        let total = counts
            .iter()
            .fold((0, 0), |(b, u), (sb, su)| (b + sb, u + su));
        (total.0, total.1, elapsed)
    }

    fn pin_to_cpu(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; 0 is this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    /// A limit of `pps`: what passes is the limit times the time plus one
    /// second of burst, within 15 %, from two CPUs at once; unicast untouched.
    fn storm_limit_holds(pps: u64) {
        let h = root_harness!();
        let s = h.add("s", &["--vlan", "10", "--storm-limit", &pps.to_string()]);
        let (broadcasts, unicasts, seconds) = flood(&h, &s, Duration::from_millis(1500));
        assert!(
            broadcasts as f64 > 3.0 * pps as f64 * seconds,
            "the senders offered {broadcasts} broadcasts in {seconds:.2} s, too few to test a limit of {pps}/s"
        );
        let stormed = h.drops("s", "storm");
        let passed = h.packets("s", "from_guest");
        let broadcasts_passed = broadcasts - stormed;
        let expected = pps as f64 * (seconds + 1.0);
        let ratio = broadcasts_passed as f64 / expected;
        assert!(
            (0.85..=1.15).contains(&ratio),
            "limit {pps}/s over {seconds:.2} s: {broadcasts_passed} broadcasts passed of {broadcasts}, \
             expected {expected:.0} (ratio {ratio:.3})"
        );
        assert_eq!(
            passed - broadcasts_passed,
            unicasts,
            "every unicast frame passes the storm limit"
        );
    }

    #[test]
    fn storm_limit_of_200_pps() {
        storm_limit_holds(200);
    }

    #[test]
    fn storm_limit_of_2000_pps() {
        storm_limit_holds(2000);
    }

    #[test]
    fn storm_limit_of_10000_pps() {
        storm_limit_holds(10_000);
    }
}

/// The options: bad input, export and apply.
mod options {
    use super::*;

    #[test]
    fn bad_guard_options_are_refused_in_one_line_with_nothing_changed() {
        let h = root_harness!();
        h.add("b", &["--vlan", "10"]);
        let before = h.list();
        let sixteen_plus_one: Vec<String> = (1..=17).map(|i| format!("192.0.2.{i}")).collect();
        let many = sixteen_plus_one.join(",");
        for (args, needle) in [
            (
                vec![
                    "endpoint",
                    "add",
                    "c",
                    "--lower",
                    "lower0",
                    "--ip",
                    "192.0.2.300",
                ],
                "--ip",
            ),
            (
                vec![
                    "endpoint",
                    "add",
                    "c",
                    "--lower",
                    "lower0",
                    "--ip",
                    "192.0.2.0/33",
                ],
                "prefix at most 32",
            ),
            (
                vec![
                    "endpoint",
                    "add",
                    "c",
                    "--lower",
                    "lower0",
                    "--ip",
                    "2001:db8::/129",
                ],
                "128 for IPv6",
            ),
            (
                vec!["endpoint", "add", "c", "--lower", "lower0", "--ip", &many],
                "at most 16 IPv4",
            ),
            (
                vec![
                    "endpoint",
                    "add",
                    "c",
                    "--lower",
                    "lower0",
                    "--storm-limit",
                    "0",
                ],
                "1..=1000000",
            ),
            (
                vec!["endpoint", "set", "b", "--storm-limit", "1000001"],
                "--storm-limit",
            ),
            (
                vec!["endpoint", "set", "b", "--ip", "ff02::1"],
                "not multicast",
            ),
        ] {
            assert_refused(&h.ctl.run(&args), needle);
        }
        assert_eq!(h.list(), before, "a refused command changed the state");
    }

    #[test]
    fn guards_round_trip_through_export_and_apply_in_place() {
        let h = root_harness!();
        h.add(
            "p",
            &[
                "--vlan",
                "10",
                "--ip",
                "192.0.2.10",
                "--storm-limit",
                "500",
                "--allow-ra",
            ],
        );
        let ifindex = h.show("p").ifindex;
        let exported = h.ctl.ok(&["export"]);
        for line in [
            "ip = \"192.0.2.10\"",
            "storm_limit = 500",
            "allow_ra = true",
        ] {
            assert!(exported.contains(line), "{line:?} not in:\n{exported}");
        }
        let changed = exported
            .replace("ip = \"192.0.2.10\"", "ip = \"192.0.2.10,2001:db8::10\"")
            .replace("allow_ra = true\n", "");
        let file = h.state.path().join("guards.toml");
        std::fs::write(&file, changed).expect("writing the file");
        let plan = h.ctl.ok(&["apply", file.to_str().unwrap()]);
        assert!(
            plan.contains("~ endpoint p:") && plan.contains("guards"),
            "{plan}"
        );
        assert_eq!(
            h.show("p").ifindex,
            ifindex,
            "a guard change recreated the endpoint"
        );
        let guards = &h.ctl.json(&["endpoint", "show", "p", "--json"])["guards"];
        assert_eq!(
            guards["ip"],
            serde_json::json!(["192.0.2.10", "2001:db8::10"])
        );
        assert_eq!(guards["allow_ra"], false);
        // Honest IPv6 now passes, another address does not.
        let p = h.show("p");
        let m = Marker::new();
        expect(
            &h,
            &p,
            &ipv6(p.mac, SWITCH_MAC, MINE6, UDP, &udp(4000, 53), &m),
            &m,
            None,
            "IPv6 from a listed address",
        );
        let m = Marker::new();
        expect(
            &h,
            &p,
            &ipv6(p.mac, SWITCH_MAC, OTHER6, UDP, &udp(4000, 53), &m),
            &m,
            Some("ip-spoofed"),
            "IPv6 from another",
        );
    }
}
