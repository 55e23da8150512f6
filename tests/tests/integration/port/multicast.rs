//! Multicast, IPv6 neighbour discovery and ARP through macvswitch ports.
//! A macvtap only receives the multicast groups in its filter list, which a
//! guest cannot extend; macvswitch sets allmulticast on every endpoint and
//! the programs confine multicast and broadcast to the port's VLANs.
//! Root-only: each test builds its own namespaces and bpffs.

use std::net::{Ipv6Addr, UdpSocket};
use std::time::{Duration, Instant};

use macvswitch_tests::expect::{absent, at_guest, on_wire};
use macvswitch_tests::frame::{self, BROADCAST, Mac, Marker, TPID_8021Q};
use macvswitch_tests::harness::ARRIVE;
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::{SWITCH_MAC, SWITCH_PORT};

const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Solicited-node multicast group of `target` (ff02::1:ffXX:XXXX).
fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    let mut g = ip6("ff02::1:ff00:0").octets();
    g[13..].copy_from_slice(&t[13..]);
    Ipv6Addr::from(g)
}

/// 33:33 + the low 32 bits of an IPv6 multicast group.
fn multicast_mac(group: Ipv6Addr) -> Mac {
    let g = group.octets();
    [0x33, 0x33, g[12], g[13], g[14], g[15]]
}

/// ICMPv6 checksum over the IPv6 pseudo-header and `icmp`.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + icmp.len());
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(icmp);
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv6 + ICMPv6 ND message (NS or NA) with a link-layer
/// address option (source for NS, target for NA) and a valid checksum.
/// `trailer` goes after the IPv6 payload (Ethernet padding the stack ignores).
#[allow(clippy::too_many_arguments)]
fn nd_frame(
    kind: u8,
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    flags: u8,
    trailer: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0, flags, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    let option = if kind == ICMPV6_NS { 1 } else { 2 };
    icmp.extend_from_slice(&[option, 1]);
    icmp.extend_from_slice(&src_mac);
    let sum = icmpv6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[58, 255]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&icmp);
    ip.extend_from_slice(trailer);
    frame::eth(dst_mac, src_mac, ETHERTYPE_IPV6, &ip)
}

/// A neighbour solicitation from `src_mac`/2001:db8::1 for `target`,
/// marked in its trailer.
fn ns_for(src_mac: Mac, target: Ipv6Addr, m: &Marker) -> Vec<u8> {
    let group = solicited_node(target);
    nd_frame(
        ICMPV6_NS,
        multicast_mac(group),
        src_mac,
        ip6("2001:db8::1"),
        group,
        target,
        0,
        &m.0,
    )
}

/// The same frame with an inline 802.1Q tag after the MACs.
fn with_tag(f: &[u8], tci: u16) -> Vec<u8> {
    let mut out = f[..12].to_vec();
    out.extend_from_slice(&TPID_8021Q.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&f[12..]);
    out
}

/// ARP request (who-has 192.0.2.2 tell 192.0.2.1) from `src`, marked.
fn arp_request(src: Mac, m: &Marker) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    p.extend_from_slice(&src);
    p.extend_from_slice(&[192, 0, 2, 1]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[192, 0, 2, 2]);
    p.extend_from_slice(&m.0);
    frame::eth(BROADCAST, src, ETHERTYPE_ARP, &p)
}

/// ICMPv6 type of an untagged IPv6 frame, if it is one.
fn icmpv6_type(f: &[u8]) -> Option<u8> {
    let p = frame::parse(f)?;
    if !p.tags.is_empty() || p.ethertype != ETHERTYPE_IPV6 || p.payload.get(6) != Some(&58) {
        return None;
    }
    p.payload.get(40).copied()
}

#[test]
fn endpoints_are_allmulticast() {
    let h = root_harness!();
    for (name, args) in [
        ("a", &["--vlan", "10"][..]),
        ("t", &["--trunk", "10"]),
        ("q", &["--tunnel", "100"]),
        ("u", &[]),
    ] {
        h.add(name, args);
        let out = h.topo.host.ip_ok(&["link", "show", name]);
        assert!(
            out.contains("ALLMULTI"),
            "{name} is not allmulticast: {out}"
        );
    }
}

#[test]
fn neighbour_solicitations_and_arp_stay_in_their_vlan() {
    let h = root_harness!();
    let a = h.add("a10", &["--vlan", "10"]);
    let b = h.add("b10", &["--vlan", "10"]);
    let c = h.add("c20", &["--vlan", "20"]);
    let (ta, tb, tc) = (h.tap(&a), h.tap(&b), h.tap(&c));
    let wire = h.topo.wire();
    let target = ip6("2001:db8::2");

    // NS from guest a: reaches b untagged and the wire tagged 10, not c.
    let m = Marker::new();
    let ns = ns_for(a.mac, target, &m);
    assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0x00, 0x00, 0x02]);
    ta.write(&ns);
    let f = at_guest(&tb, &m, "NS a10 -> b10");
    assert_eq!(icmpv6_type(&f), Some(ICMPV6_NS), "{f:02x?}");
    assert_eq!(f, ns, "NS changed on the way");
    let w = on_wire(&wire, &m, "NS from a10 not on the wire");
    assert_eq!(w.vlan, Some((TPID_8021Q, 10)), "{w:?}");
    absent(&tc, &m, "NS from VLAN 10 delivered to VLAN 20");

    // NS from the wire on VLAN 10: both VLAN 10 guests get it untagged
    // (a group no guest joined: only allmulticast lets it in), c does not.
    let m = Marker::new();
    let ns = ns_for(SWITCH_MAC, target, &m);
    wire.send(&with_tag(&ns, 10));
    for (tap, name) in [(&ta, "a10"), (&tb, "b10")] {
        let f = at_guest(tap, &m, &format!("wire NS -> {name}"));
        assert_eq!(f, ns, "{name} got the NS altered");
    }
    absent(&tc, &m, "wire NS on VLAN 10 delivered to VLAN 20");

    // ARP request from a: b and the wire (tagged 10), not c.
    let m = Marker::new();
    ta.write(&arp_request(a.mac, &m));
    let f = at_guest(&tb, &m, "ARP a10 -> b10");
    assert_eq!(frame::outer_ethertype(&f), Some(ETHERTYPE_ARP));
    let w = on_wire(&wire, &m, "ARP from a10 not on the wire");
    assert_eq!(w.vid(), Some(10), "{w:?}");
    absent(&tc, &m, "ARP from VLAN 10 delivered to VLAN 20");

    // ARP request from the wire on VLAN 20: only c.
    let m = Marker::new();
    wire.send(&with_tag(&arp_request(SWITCH_MAC, &m), 20));
    at_guest(&tc, &m, "wire ARP on 20 -> c20");
    for (tap, name) in [(&ta, "a10"), (&tb, "b10")] {
        absent(
            &tap,
            &m,
            &format!("wire ARP on VLAN 20 delivered to {name}"),
        );
    }
}

#[test]
fn multicast_to_trunk_and_tunnel_ports_keeps_their_tags() {
    let h = root_harness!();
    let t = h.add("t", &["--trunk", "10,20"]);
    let q = h.add("q", &["--tunnel", "100"]);
    let (tt, tq) = (h.tap(&t), h.tap(&q));
    let wire = h.topo.wire();
    let target = ip6("2001:db8::2");

    let m = Marker::new();
    let ns = ns_for(SWITCH_MAC, target, &m);
    wire.send(&with_tag(&ns, 20));
    let f = at_guest(&tt, &m, "wire NS on 20 -> trunk");
    assert_eq!(f, with_tag(&ns, 20), "trunk got: {f:02x?}");

    // S-tag 100 over a customer NS on C-VID 7.
    let m = Marker::new();
    let ns = with_tag(&ns_for(SWITCH_MAC, target, &m), 7);
    let mut sframe = ns[..12].to_vec();
    sframe.extend_from_slice(&frame::TPID_8021AD.to_be_bytes());
    sframe.extend_from_slice(&100u16.to_be_bytes());
    sframe.extend_from_slice(&ns[12..]);
    wire.send(&sframe);
    let f = at_guest(&tq, &m, "wire S100 NS -> tunnel");
    assert_eq!(f, ns, "tunnel got: {f:02x?}");
    absent(&tt, &m, "S-tagged NS delivered to the trunk");
}

/// A real neighbour discovery between the kernel on the wire side (sw0 with
/// 2001:db8::1) and a guest answering as 2001:db8::2 through its tap, on an
/// untagged port (the switch namespace has no 802.1Q devices to tag with).
#[test]
fn real_nd_exchange_with_a_kernel_on_the_wire() {
    let h = root_harness!();
    let g = h.add("g", &[]);
    let tap = h.tap(&g);
    let sw = &h.topo.switch;
    sw.exec_ok(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{SWITCH_PORT}.disable_ipv6=0"),
    ]);
    sw.ip_ok(&[
        "-6",
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        SWITCH_PORT,
        "nodad",
    ]);
    let (me, peer) = (ip6("2001:db8::2"), ip6("2001:db8::1"));

    // The kernel resolves 2001:db8::2 before sending a datagram to it.
    let m = Marker::new();
    let payload = m.0;
    sw.enter_and(move || {
        let s = UdpSocket::bind("[2001:db8::1]:0").expect("bind 2001:db8::1");
        s.send_to(&payload, "[2001:db8::2]:9").expect("send_to");
    });
    let deadline = Instant::now() + ARRIVE;
    let ns = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = tap
            .read_timeout(left)
            .expect("the kernel's NS for 2001:db8::2 did not reach the guest");
        if icmpv6_type(&f) == Some(ICMPV6_NS) && f[62..78] == me.octets() {
            break f;
        }
    };
    assert_eq!(
        &ns[..6],
        &multicast_mac(solicited_node(me)),
        "NS to {ns:02x?}"
    );
    let ns_src_mac: Mac = ns[6..12].try_into().unwrap();

    // Answer: solicited + override NA with our MAC.
    tap.write(&nd_frame(
        ICMPV6_NA,
        ns_src_mac,
        g.mac,
        me,
        peer,
        me,
        0x60,
        &[],
    ));
    let mut others = Vec::new();
    let udp = tap
        .read_matching(ARRIVE, |f| {
            others.push(f.to_vec());
            m.is_in(f)
        })
        .unwrap_or_else(|| {
            let neigh = sw.ip_ok(&["-6", "neigh", "show", "dev", SWITCH_PORT]);
            let addr = sw.ip_ok(&["-6", "addr", "show", "dev", SWITCH_PORT]);
            panic!(
                "datagram not delivered after the NA: ND failed; NS {ns:02x?}; \
                 frames at the guest {others:02x?}; neigh {neigh}; addr {addr}"
            )
        });
    assert_eq!(&udp[..6], &g.mac, "datagram not unicast to the guest");
    let neigh = sw.ip_ok(&["-6", "neigh", "show", "2001:db8::2", "dev", SWITCH_PORT]);
    assert!(
        neigh.contains(&frame::fmt_mac(&g.mac)),
        "no neighbour entry for the guest: {neigh:?}"
    );

    // The other way: the guest solicits 2001:db8::1, the kernel answers.
    let m = Marker::new();
    let group = solicited_node(peer);
    tap.write(&nd_frame(
        ICMPV6_NS,
        multicast_mac(group),
        g.mac,
        me,
        group,
        peer,
        0,
        &m.0,
    ));
    let na = tap
        .read_matching(Duration::from_secs(3), |f| {
            icmpv6_type(f) == Some(ICMPV6_NA) && f[62..78] == peer.octets()
        })
        .expect("no NA from the kernel for 2001:db8::1");
    assert_eq!(&na[..6], &g.mac, "NA not addressed to the guest");
    assert_eq!(&na[6..12], &SWITCH_MAC);
}
