//! The host port: a managed macvlan on the lower device, under the same
//! VLAN programs as the endpoints and promiscuous in private-VLAN terms, so
//! that the host reaches its guests (which plain macvtap never allows).
//! The guest side is a small ARP + ICMP echo responder on the tap fd.
//! Root-only: each test builds its own namespaces and bpffs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use macvswitch_tests::expect::{absent, assert_drops_at_least, at_guest};
use macvswitch_tests::frame::{Mac, eth, parse};
use macvswitch_tests::harness::{ABSENT, ARRIVE, Endpoint, HOST_PORT_10};
use macvswitch_tests::tap::Tap;
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Harness, root_harness};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const HOST_IP: [u8; 4] = [192, 0, 2, 1];
const GUEST_IP: [u8; 4] = [192, 0, 2, 2];
const ISOLATED_GUEST_IP: [u8; 4] = [192, 0, 2, 3];
/// Upper bound on how long a responder serves.
const SERVE_AT_MOST: Duration = Duration::from_secs(20);

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// If `payload` (after the Ethernet header) is an ARP request for `ip`,
/// the ARP reply from `mac`, as a whole frame.
fn arp_reply(payload: &[u8], mac: Mac, ip: [u8; 4]) -> Option<Vec<u8>> {
    let p = payload.get(..28)?;
    // Ethernet/IPv4, request, for us.
    if p[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || p[24..28] != ip {
        return None;
    }
    let sha: Mac = p[8..14].try_into().unwrap();
    let spa = &p[14..18];
    let mut reply = vec![0, 1, 8, 0, 6, 4, 0, 2];
    reply.extend_from_slice(&mac);
    reply.extend_from_slice(&ip);
    reply.extend_from_slice(&sha);
    reply.extend_from_slice(spa);
    Some(eth(sha, mac, ETHERTYPE_ARP, &reply))
}

/// If `payload` is an IPv4 ICMP echo request to `ip`, the echo reply's IP
/// packet (checksums recomputed).
fn echo_reply(payload: &[u8], ip: [u8; 4]) -> Option<Vec<u8>> {
    let ihl = usize::from(*payload.first()? & 0x0f) * 4;
    if payload[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]));
    let packet = payload.get(..total)?;
    if total < ihl + 8 || packet[9] != 1 || packet[16..20] != ip || packet[ihl] != 8 {
        return None;
    }
    let mut reply = packet.to_vec();
    // IP: swap addresses, fresh TTL, new header checksum.
    reply[12..16].copy_from_slice(&packet[16..20]);
    reply[16..20].copy_from_slice(&packet[12..16]);
    reply[8] = 64;
    reply[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&reply[..ihl]);
    reply[10..12].copy_from_slice(&sum.to_be_bytes());
    // ICMP: echo reply (type 0, code 0), same id/seq/data, new checksum.
    reply[ihl] = 0;
    reply[ihl + 1] = 0;
    reply[ihl + 2..ihl + 4].copy_from_slice(&[0, 0]);
    let sum = checksum(&reply[ihl..]);
    reply[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
    Some(reply)
}

/// What a responder answered.
#[derive(Debug, Default)]
struct Answered {
    arp: AtomicU64,
    echo: AtomicU64,
}

/// Serves ARP for `ip` and ICMP echo to `ip` on `tap` as the guest `mac`,
/// until `stop` is set or `SERVE_AT_MOST` has passed.
fn respond(tap: &Tap, mac: Mac, ip: [u8; 4], stop: &AtomicBool, answered: &Answered) {
    let deadline = Instant::now() + SERVE_AT_MOST;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Some(f) = tap.read_timeout(Duration::from_millis(20)) else {
            continue;
        };
        let Some(p) = parse(&f) else { continue };
        if !p.tags.is_empty() {
            continue;
        }
        match p.ethertype {
            ETHERTYPE_ARP => {
                if let Some(reply) = arp_reply(p.payload, mac, ip) {
                    tap.write(&reply);
                    answered.arp.fetch_add(1, Ordering::Relaxed);
                }
            }
            ETHERTYPE_IPV4 if p.dst == mac => {
                if let Some(reply) = echo_reply(p.payload, ip) {
                    tap.write(&eth(p.src, mac, ETHERTYPE_IPV4, &reply));
                    answered.echo.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// Pings `ip` from the host namespace while a responder serves it on
/// `tap`; returns ping's output and what the responder answered.
fn ping_guest(h: &Harness, tap: &Tap, mac: Mac, ip: [u8; 4]) -> (std::process::Output, Answered) {
    let stop = AtomicBool::new(false);
    let answered = Answered::default();
    let dotted = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    let out = std::thread::scope(|s| {
        s.spawn(|| respond(tap, mac, ip, &stop, &answered));
        let out = h
            .topo
            .host
            .exec(&["ping", "-c", "3", "-W", "1", dotted.as_str()]);
        stop.store(true, Ordering::Relaxed);
        out
    });
    (out, answered)
}

fn assert_pinged(what: &str, out: &std::process::Output, answered: &Answered) {
    macvswitch_tests::netns::check(
        out,
        &format!("{what}: ping (the responder answered {answered:?})"),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 received"),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        answered.echo.load(Ordering::Relaxed) >= 3,
        "{what}: {answered:?}"
    );
}

/// Whether `f` is an ARP frame about `ip` (as sender or target).
fn is_arp_about(f: &[u8], ip: [u8; 4]) -> bool {
    parse(f).is_some_and(|p| {
        p.ethertype == ETHERTYPE_ARP
            && p.payload.len() >= 28
            && (p.payload[14..18] == ip || p.payload[24..28] == ip)
    })
}

/// A guest `g10` on VLAN 10 and `g20` on VLAN 20, and their taps.
fn guests_on_10_and_20(h: &Harness) -> (Endpoint, Endpoint, Tap, Tap) {
    let g10 = h.add_pvlan("g10", "bridge", &[]);
    let g20 = h.add("g20", &["--mode", "bridge", "--vlan", "20"]);
    let (t10, t20) = (h.tap(&g10), h.tap(&g20));
    (g10, g20, t10, t20)
}

#[test]
fn host_reaches_guests_through_the_host_port() {
    let h = root_harness!();
    let (g10, _, t10, t20) = guests_on_10_and_20(&h);
    let wire = h.topo.wire();

    h.uplink_set(&HOST_PORT_10);
    let u = h.uplink();
    assert_eq!(u["host_port"]["name"], "host0", "{u}");
    assert_eq!(u["host_port"]["vlan"], 10, "{u}");
    assert!(
        u["host_port"]["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a == "192.0.2.1/24")),
        "{u}"
    );
    assert!(h.topo.host.link_names().iter().any(|n| n == "host0"));
    let addr = h
        .topo
        .host
        .ip_ok(&["-o", "-4", "addr", "show", "dev", "host0"]);
    assert!(addr.contains("192.0.2.1/24"), "{addr}");

    // The host pings the VLAN 10 guest and gets the answers.
    let (out, answered) = ping_guest(&h, &t10, g10.mac, GUEST_IP);
    assert_pinged("host -> g10", &out, &answered);
    assert!(answered.arp.load(Ordering::Relaxed) >= 1, "{answered:?}");

    // The host's ARP request stayed on VLAN 10: on the wire tagged 10, and
    // never at the VLAN 20 guest.
    let arps: Vec<Option<u16>> = wire
        .recv_all(ABSENT)
        .iter()
        .filter(|f| is_arp_about(&f.bytes, GUEST_IP))
        .map(|f| f.vid())
        .collect();
    assert!(
        !arps.is_empty() && arps.iter().all(|v| *v == Some(10)),
        "host ARP on the wire as {arps:?}"
    );
    let at20: Vec<Vec<u8>> = t20
        .read_all(Duration::ZERO)
        .into_iter()
        .filter(|f| is_arp_about(f, GUEST_IP) || is_arp_about(f, HOST_IP))
        .collect();
    assert!(
        at20.is_empty(),
        "VLAN 20 guest saw the host's ARP: {at20:02x?}"
    );
    assert_drops_at_least(&h, "g20", &[("wrong-vlan", 1)]);

    // An isolated guest on VLAN 10 still reaches the host port
    // (promiscuous), and the host reaches it.
    let iso = h.add_pvlan("iso", "bridge", &["--isolated"]);
    let tiso = h.tap(&iso);
    let (out, answered) = ping_guest(&h, &tiso, iso.mac, ISOLATED_GUEST_IP);
    assert_pinged("host -> isolated guest", &out, &answered);
    // ... while the isolation against the other guest holds.
    let m = macvswitch_tests::frame::Marker::new();
    tiso.write(&macvswitch_tests::frame::marked(g10.mac, iso.mac, &m));
    absent(&t10, &m, "isolated guest reached g10");
}

#[test]
fn host_port_removal_and_reset() {
    let h = root_harness!();
    let g = h.add_pvlan("g10", "bridge", &[]);
    let tg = h.tap(&g);
    let host_port = [&["uplink", "set", LOWER][..], &HOST_PORT_10].concat();
    h.ctl.ok(&host_port);
    let (out, answered) = ping_guest(&h, &tg, g.mac, GUEST_IP);
    assert_pinged("host -> g10", &out, &answered);

    h.uplink_set(&["--no-host-port"]);
    assert_eq!(h.topo.host.link_names(), ["lo", LOWER, "g10"]);
    let u = h.uplink();
    assert!(u["host_port"].is_null(), "{u}");
    // The guest is unaffected.
    let m = macvswitch_tests::frame::Marker::new();
    let sw = macvswitch_tests::topology::SWITCH_MAC;
    wire_send(
        &h,
        &macvswitch_tests::frame::marked_tagged(g.mac, sw, 10, &m),
    );
    at_guest(
        &tg,
        &m,
        "guest lost its wire traffic when the host port went",
    );

    // Again, with relay on too, then reset removes all of it.
    h.ctl.ok(&host_port);
    h.uplink_set(&["--reflective-relay", "on"]);
    assert_eq!(h.topo.host.link_names(), ["lo", LOWER, "g10", "host0"]);
    h.ctl.ok(&["reset", "--force"]); // the guest still holds its tap
    assert_eq!(h.topo.host.link_names(), ["lo", LOWER]);
    let pins = h.bpffs.pinned_files();
    assert!(pins.is_empty(), "pins left after reset: {pins:?}");
    let list = h.ctl.json(&["uplink", "list", "--json"]);
    assert_eq!(list, serde_json::json!([]), "uplink list after reset");
}

fn wire_send(h: &Harness, f: &[u8]) {
    h.topo.wire().send(f);
}

#[test]
fn checksums_are_rfc1071() {
    // Example header from RFC 1071 / common references.
    let hdr = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(checksum(&hdr), 0xb861);
    // A correct header sums to 0.
    let mut ok = hdr;
    ok[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
    assert_eq!(checksum(&ok), 0);
    assert_eq!(checksum(&[0xff]), !0xff00u16);
}

#[test]
fn untagged_host_port_reaches_untagged_guests_only() {
    let h = root_harness!();
    let plain = h.add("plain", &["--mode", "bridge"]);
    let g10 = h.add_pvlan("g10", "bridge", &[]);
    let (tp, t10) = (h.tap(&plain), h.tap(&g10));
    h.uplink_set(&["--host-port", "host0", "--address", "192.0.2.1/24"]);
    let u = h.uplink();
    assert!(u["host_port"]["vlan"].is_null(), "{u}");
    let (out, answered) = ping_guest(&h, &tp, plain.mac, GUEST_IP);
    assert_pinged("untagged host port -> untagged guest", &out, &answered);
    let seen: Vec<Vec<u8>> = t10
        .read_all(Duration::ZERO)
        .into_iter()
        .filter(|f| is_arp_about(f, GUEST_IP))
        .collect();
    assert!(
        seen.is_empty(),
        "VLAN 10 guest saw untagged ARP: {seen:02x?}"
    );
}

#[test]
fn host_port_reaches_vepa_guests_with_relay() {
    let h = root_harness!();
    let v = h.add_pvlan("v10", "vepa", &[]);
    let tv = h.tap(&v);
    h.uplink_set(&[&HOST_PORT_10[..], &["--reflective-relay", "on"]].concat());
    let u = h.uplink();
    assert_eq!(u["reflective_relay"], true, "{u}");
    let (out, answered) = ping_guest(&h, &tv, v.mac, GUEST_IP);
    assert_pinged("host port -> VEPA guest, relay on", &out, &answered);
    let u = h.uplink();
    assert!(
        u["relayed"]["unicast"].as_u64() >= Some(3),
        "echo replies not counted as relayed: {u}"
    );
}

fn arp_request(mac: Mac, ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&mac);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target);
    eth(macvswitch_tests::frame::BROADCAST, mac, ETHERTYPE_ARP, &p)
}

fn echo_request(dst: Mac, src: Mac, from: [u8; 4], to: [u8; 4], seq: u16) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    ip[12..16].copy_from_slice(&from);
    ip[16..20].copy_from_slice(&to);
    let mut icmp = vec![8, 0, 0, 0, 0x4d, 0x53];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"macvswitch host port");
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let total = (ip.len() + icmp.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&icmp);
    eth(dst, src, ETHERTYPE_IPV4, &ip)
}

/// The sender MAC of an ARP reply from `ip` in `f`, if it is one.
fn arp_reply_from(f: &[u8], ip: [u8; 4]) -> Option<Mac> {
    let p = parse(f)?;
    let a = p.payload;
    (p.ethertype == ETHERTYPE_ARP && a.len() >= 28 && a[6..8] == [0, 2] && a[14..18] == ip)
        .then(|| a[8..14].try_into().unwrap())
}

fn is_echo_reply(f: &[u8], from: [u8; 4], seq: u16) -> bool {
    parse(f).is_some_and(|p| {
        let ip = p.payload;
        p.ethertype == ETHERTYPE_IPV4
            && ip.len() >= 28
            && ip[9] == 1
            && ip[12..16] == from
            && ip[20] == 0
            && ip[26..28] == seq.to_be_bytes()
            && checksum(&ip[..20]) == 0
    })
}

#[test]
fn guests_reach_the_host_port_only_on_its_vlan() {
    let h = root_harness!();
    let (g10, g20, t10, t20) = guests_on_10_and_20(&h);
    h.uplink_set(&HOST_PORT_10);

    // The VLAN 10 guest resolves the host and pings it.
    t10.write(&arp_request(g10.mac, GUEST_IP, HOST_IP));
    let f = t10
        .read_matching(ARRIVE, |f| arp_reply_from(f, HOST_IP).is_some())
        .expect("host port did not answer the VLAN 10 guest's ARP");
    let host_mac = arp_reply_from(&f, HOST_IP).unwrap();
    for seq in 1..=3 {
        t10.write(&echo_request(host_mac, g10.mac, GUEST_IP, HOST_IP, seq));
        assert!(
            t10.read_matching(ARRIVE, |f| is_echo_reply(f, HOST_IP, seq))
                .is_some(),
            "no echo reply {seq} from the host to the VLAN 10 guest"
        );
    }

    // The VLAN 20 guest (same subnet, wrong VLAN) gets nothing, even
    // addressing the host port's MAC directly.
    t20.write(&arp_request(g20.mac, ISOLATED_GUEST_IP, HOST_IP));
    t20.write(&echo_request(
        host_mac,
        g20.mac,
        ISOLATED_GUEST_IP,
        HOST_IP,
        9,
    ));
    let got: Vec<Vec<u8>> = t20
        .read_all(ABSENT)
        .into_iter()
        .filter(|f| arp_reply_from(f, HOST_IP).is_some() || is_echo_reply(f, HOST_IP, 9))
        .collect();
    assert!(
        got.is_empty(),
        "host answered the VLAN 20 guest: {got:02x?}"
    );
}
