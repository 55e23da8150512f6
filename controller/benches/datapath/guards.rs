//! The access-port guards under test (issue 12): the endpoint settings
//! compared, and honest IP frames from the guest for the guard rows and the
//! guards throughput case: real IPv4 and IPv6 headers (BPF_PROG_TEST_RUN
//! refuses an IPv4 or IPv6 frame shorter than its network header) with
//! correct lengths and checksums, sent from the addresses `--ip` lists.

use macvswitch::model::guards::Guards;
use macvswitch_common::{
    DropReason, POLICY_ALLOW_BPDU, POLICY_ALLOW_DHCP_SERVER, POLICY_ALLOW_RA, POLICY_GUARD_IP,
    guard::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Payload},
};
use macvswitch_tests::frame::{Mac, eth};

use crate::rows::{GUEST_MAC, PEER_MAC, Port, row_policy};

/// An endpoint's guards, built by the controller's own `Guards` (its
/// `apply` writes the policy bits the per-program rows load; its flags are
/// what the throughput endpoints are created with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarding {
    /// A new endpoint's: DHCP-server, RA and BPDU guards on, no `--ip`.
    Default,
    /// The defaults and `--ip 192.0.2.10,2001:db8::10`.
    Ip,
    /// Every guard on: the defaults, `--ip 192.0.2.10,2001:db8::10` and
    /// `--storm-limit 1000000` (the most allowed; the bench sends no
    /// broadcast or multicast, so the bucket is never consulted).
    All,
    /// Every guard off: `--allow-dhcp-server --allow-ra --allow-bpdu`, no
    /// `--ip`, no storm limit.
    Off,
}

/// `--storm-limit` of [`Guarding::All`].
pub const STORM_LIMIT: &str = "1000000";

impl Guarding {
    pub fn guards(self) -> Guards {
        let ip = || Some(GUEST_IPS.parse().expect("GUEST_IPS"));
        match self {
            Guarding::Default => Guards::default(),
            Guarding::Ip => Guards {
                ip: ip(),
                ..Guards::default()
            },
            Guarding::All => Guards {
                ip: ip(),
                storm_limit: Some(STORM_LIMIT.parse().expect("STORM_LIMIT")),
                ..Guards::default()
            },
            Guarding::Off => Guards {
                allow_dhcp_server: true,
                allow_ra: true,
                allow_bpdu: true,
                ..Guards::default()
            },
        }
    }

    /// The `endpoint add` flags that give an endpoint these guards.
    pub fn args(self) -> Vec<String> {
        let g = self.guards();
        let mut args = Vec::new();
        if let Some(ip) = &g.ip {
            args.extend(["--ip".to_string(), ip.to_string()]);
        }
        if let Some(limit) = g.storm_limit {
            args.extend(["--storm-limit".to_string(), limit.to_string()]);
        }
        for (allowed, flag) in [
            (g.allow_dhcp_server, "--allow-dhcp-server"),
            (g.allow_ra, "--allow-ra"),
            (g.allow_bpdu, "--allow-bpdu"),
        ] {
            if allowed {
                args.push(flag.to_string());
            }
        }
        args
    }

    /// The flags as the report shows them.
    pub fn shown(self) -> String {
        match self.args() {
            args if args.is_empty() => "no guard flags".into(),
            args => format!("`{}`", args.join(" ")),
        }
    }
}

/// The guest's addresses, as `--ip` lists them.
pub const GUEST_V4: [u8; 4] = [192, 0, 2, 10];
pub const GUEST_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
/// `--ip` of a guest with the source guard on: exactly its two addresses.
pub const GUEST_IPS: &str = "192.0.2.10,2001:db8::10";
/// A source address the guest does not own.
pub const SPOOFED_V4: [u8; 4] = [192, 0, 2, 66];
/// The other end of the guest's conversation.
const PEER_V4: [u8; 4] = [192, 0, 2, 1];
const PEER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];
/// The guest's link-local address, as a router sends its advertisements.
const GUEST_LINK_LOCAL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
/// ff02::1 and its MAC.
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
pub const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];

const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const ICMPV6_ROUTER_ADVERT: u8 = 134;
/// UDP from an ephemeral port to discard (9): no guard's port.
pub const UDP_PORTS: (u16, u16) = (40000, 9);
/// A DHCPv4 server's reply to a client: what the DHCP-server guard drops.
pub const DHCP_SERVER_PORTS: (u16, u16) = (67, 68);

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
/// A frame shorter than this is padded, as a NIC pads it on the wire.
const MIN_FRAME: usize = 60;

/// The ones' complement sum of `bytes` as 16-bit words, folded.
fn sum16(bytes: &[u8], mut sum: u32) -> u32 {
    for word in bytes.chunks(2) {
        let hi = u32::from(word[0]) << 8;
        sum += hi | word.get(1).map_or(0, |&lo| u32::from(lo));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn checksum(sum: u32) -> [u8; 2] {
    (!(sum as u16)).to_be_bytes()
}

/// A UDP datagram of `len` bytes, checksum 0 (to be set by the caller, or
/// none for IPv4), its payload filler bytes ending with `tail`.
fn udp((source, dest): (u16, u16), len: usize, tail: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(len);
    udp.extend_from_slice(&source.to_be_bytes());
    udp.extend_from_slice(&dest.to_be_bytes());
    udp.extend_from_slice(&(len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.resize(len - tail.len(), 0x5a);
    udp.extend_from_slice(tail);
    udp
}

/// An Ethernet frame of `size` bytes (without FCS, at least 60) holding an
/// IPv4 UDP datagram from [`GUEST_V4`] to discard (IPv4 header checksum
/// set, UDP checksum 0: none, which IPv4 allows).
pub fn udp4(dst: Mac, src: Mac, size: usize) -> Vec<u8> {
    udp4_with(dst, src, GUEST_V4, UDP_PORTS, &[], size)
}

/// The same from `source` between `ports`, the payload ending with `tail`
/// (a marker to find the frame by).
pub fn udp4_with(
    dst: Mac,
    src: Mac,
    source: [u8; 4],
    ports: (u16, u16),
    tail: &[u8],
    size: usize,
) -> Vec<u8> {
    assert!(size >= MIN_FRAME, "an Ethernet frame has at least 60 bytes");
    let total = size - ETH_HLEN;
    let mut packet = vec![
        0x45, // version 4, 20-byte header
        0,
        0,
        0, // total length, below
        0,
        0,
        0x40, // don't fragment
        0,
        64, // TTL
        IPPROTO_UDP,
        0,
        0, // header checksum, below
    ];
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    packet.extend_from_slice(&source);
    packet.extend_from_slice(&PEER_V4);
    let header_checksum = checksum(sum16(&packet, 0));
    packet[10..12].copy_from_slice(&header_checksum);
    packet.extend_from_slice(&udp(ports, total - IPV4_HLEN, tail));
    eth(dst, src, ETHERTYPE_IPV4, &packet)
}

/// An IPv6 packet from `source` to `dest` carrying `upper` (protocol
/// `next`), its checksum (at `checksum_at` in `upper`) computed over the
/// pseudo-header, padded to 60 bytes if shorter.
fn ipv6(
    dst: Mac,
    src: Mac,
    (source, dest): ([u8; 16], [u8; 16]),
    next: u8,
    mut upper: Vec<u8>,
    checksum_at: usize,
) -> Vec<u8> {
    let len = upper.len() as u16;
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&source);
    pseudo.extend_from_slice(&dest);
    pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next]);
    let sum = checksum(sum16(&upper, sum16(&pseudo, 0)));
    upper[checksum_at..checksum_at + 2].copy_from_slice(&sum);
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[next, 255]);
    packet.extend_from_slice(&source);
    packet.extend_from_slice(&dest);
    packet.extend_from_slice(&upper);
    let mut frame = eth(dst, src, ETHERTYPE_IPV6, &packet);
    if frame.len() < MIN_FRAME {
        frame.resize(MIN_FRAME, 0);
    }
    frame
}

/// An Ethernet frame of `size` bytes (without FCS, at least 62) holding an
/// IPv6 UDP datagram from [`GUEST_V6`], UDP checksum set.
pub fn udp6(dst: Mac, src: Mac, size: usize) -> Vec<u8> {
    assert!(
        size >= ETH_HLEN + IPV6_HLEN + UDP_HLEN,
        "too short for IPv6 UDP"
    );
    let upper = udp(UDP_PORTS, size - ETH_HLEN - IPV6_HLEN, &[]);
    ipv6(dst, src, (GUEST_V6, PEER_V6), IPPROTO_UDP, upper, 6)
}

/// A router advertisement from the guest's link-local address to all
/// nodes (no options), ICMPv6 checksum set: what the RA guard drops.
pub fn router_advert(src: Mac) -> Vec<u8> {
    // Type, code, checksum, hop limit, flags, router lifetime 1800 s,
    // reachable time, retransmission timer.
    let mut message = vec![ICMPV6_ROUTER_ADVERT, 0, 0, 0, 64, 0, 0x07, 0x08];
    message.extend_from_slice(&[0; 8]);
    ipv6(
        ALL_NODES_MAC,
        src,
        (GUEST_LINK_LOCAL, ALL_NODES),
        IPPROTO_ICMPV6,
        message,
        2,
    )
}

/// The smoke run's check of these settings and builders: the policies
/// carry the bits each setting names, and the guards' own parser (common/,
/// the programs' code) passes the honest frames under `--ip` and drops a
/// spoofed source and the RA; the checksums verify as a receiver verifies
/// them (the sum over the covered bytes, pseudo-header included, folds to
/// 0xffff) and the lengths match the frame.
pub fn self_check() {
    let policy = |guarding| row_policy(GUEST_MAC, Port::Access(10), guarding);
    let allow_all = POLICY_ALLOW_DHCP_SERVER | POLICY_ALLOW_RA | POLICY_ALLOW_BPDU;
    assert_eq!(
        policy(Guarding::Default).flags & (allow_all | POLICY_GUARD_IP),
        0
    );
    assert_eq!(policy(Guarding::Off).flags & allow_all, allow_all);
    for guarding in [Guarding::Ip, Guarding::All] {
        let p = policy(guarding);
        assert!(
            p.has(POLICY_GUARD_IP) && p.flags & allow_all == 0,
            "{guarding:?}"
        );
        assert_eq!((p.addresses.v4_count, p.addresses.v6_count), (1, 1));
    }
    assert_eq!(policy(Guarding::All).storm_interval_ns, 1000);
    let on = policy(Guarding::All);
    let verdict = |frame: Vec<u8>, ethertype| {
        guard::check(&on, frame.as_slice(), Payload::untagged(ethertype)).map(|_| ())
    };
    let honest4 = udp4(PEER_MAC, GUEST_MAC, 60);
    let spoofed4 = udp4_with(PEER_MAC, GUEST_MAC, SPOOFED_V4, UDP_PORTS, &[], 60);
    let dhcp4 = udp4_with(PEER_MAC, GUEST_MAC, GUEST_V4, DHCP_SERVER_PORTS, &[], 60);
    assert_eq!(verdict(honest4, ETHERTYPE_IPV4), Ok(()));
    assert_eq!(
        verdict(spoofed4, ETHERTYPE_IPV4),
        Err(DropReason::IpSpoofed)
    );
    assert_eq!(verdict(dhcp4, ETHERTYPE_IPV4), Err(DropReason::DhcpServer));
    assert_eq!(
        verdict(udp6(PEER_MAC, GUEST_MAC, 78), ETHERTYPE_IPV6),
        Ok(())
    );
    assert_eq!(
        verdict(router_advert(GUEST_MAC), ETHERTYPE_IPV6),
        Err(DropReason::RouterAdvert)
    );

    let (dst, src) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    for size in [60, 1514] {
        let f = udp4(dst, src, size);
        assert_eq!(f.len(), size);
        let ip = &f[ETH_HLEN..];
        assert_eq!(sum16(&ip[..IPV4_HLEN], 0), 0xffff, "IPv4 header checksum");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            size - ETH_HLEN
        );
    }
    for f in [udp6(dst, src, 78), udp6(dst, src, 1514), router_advert(src)] {
        let ip = &f[ETH_HLEN..];
        let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let upper = &ip[IPV6_HLEN..IPV6_HLEN + len];
        let mut pseudo = ip[8..40].to_vec();
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, ip[6]]);
        assert_eq!(
            sum16(upper, sum16(&pseudo, 0)),
            0xffff,
            "IPv6 upper-layer checksum"
        );
        assert!(f.len() >= MIN_FRAME);
    }
}
