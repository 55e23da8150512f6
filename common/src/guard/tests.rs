use super::*;
use crate::{POLICY_ALLOW_MAC_SPOOFING, TPID_8021Q};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
const MINE4: [u8; 4] = [192, 0, 2, 10];
const OTHER4: [u8; 4] = [192, 0, 2, 66];
const MINE6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const OTHER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66,
];
const LINK_LOCAL6: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

fn open_port() -> EndpointPolicy {
    EndpointPolicy::untagged(MAC)
}

fn guarded_port() -> EndpointPolicy {
    let mut policy = open_port();
    policy.flags |= POLICY_GUARD_IP;
    policy.addresses.v4[0] = Prefix4::new(MINE4, 32);
    policy.addresses.v4_count = 1;
    policy.addresses.v6[0] = Prefix6::new(MINE6, 128);
    policy.addresses.v6_count = 1;
    policy
}

fn ethernet(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> [u8; 256] {
    let mut frame = [0u8; 256];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&MAC);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    frame[14..14 + payload.len()].copy_from_slice(payload);
    frame
}

struct Frame {
    bytes: [u8; 256],
    len: usize,
}

impl Frame {
    fn new(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Self {
        Self {
            bytes: ethernet(dst, ethertype, payload),
            len: 14 + payload.len(),
        }
    }

    fn check(&self, policy: &EndpointPolicy) -> Result<Passed, DropReason> {
        let bytes = &self.bytes[..self.len];
        let ethertype = u16::from_be_bytes([bytes[12], bytes[13]]);
        check(policy, bytes, Payload::untagged(ethertype))
    }
}

const UNICAST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
const BROADCAST: [u8; 6] = [0xff; 6];

fn ipv4(src: [u8; 4], protocol: u8, l4: &[u8]) -> Frame {
    let mut payload = [0u8; 128];
    payload[0] = 0x45;
    payload[9] = protocol;
    payload[12..16].copy_from_slice(&src);
    payload[16..20].copy_from_slice(&[192, 0, 2, 1]);
    payload[20..20 + l4.len()].copy_from_slice(l4);
    Frame::new(UNICAST, ETHERTYPE_IPV4, &payload[..20 + l4.len()])
}

fn udp(src_port: u16, dst_port: u16) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[..2].copy_from_slice(&src_port.to_be_bytes());
    header[2..4].copy_from_slice(&dst_port.to_be_bytes());
    header
}

/// An IPv6 frame: `chain` is (next header, extension bytes) pairs, then
/// the upper-layer `protocol` and its bytes.
fn ipv6(src: [u8; 16], chain: &[(u8, &[u8])], protocol: u8, l4: &[u8]) -> Frame {
    let mut payload = [0u8; 240];
    payload[0] = 0x60;
    payload[6] = chain.first().map_or(protocol, |(next, _)| *next);
    payload[7] = 255;
    payload[8..24].copy_from_slice(&src);
    payload[24..40].copy_from_slice(&OTHER6);
    let mut at = 40;
    for (i, (_, bytes)) in chain.iter().enumerate() {
        payload[at..at + bytes.len()].copy_from_slice(bytes);
        payload[at] = chain.get(i + 1).map_or(protocol, |(next, _)| *next);
        at += bytes.len();
    }
    payload[at..at + l4.len()].copy_from_slice(l4);
    Frame::new(UNICAST, ETHERTYPE_IPV6, &payload[..at + l4.len()])
}

fn icmpv6(kind: u8) -> [u8; 8] {
    [kind, 0, 0, 0, 0, 0, 0, 0]
}

fn neighbour_advert(target: [u8; 16], lladdr: Option<[u8; 6]>) -> ([u8; 32], usize) {
    let mut message = [0u8; 32];
    message[0] = ICMPV6_NEIGHBOUR_ADVERT;
    message[8..24].copy_from_slice(&target);
    match lladdr {
        Some(mac) => {
            message[24] = ND_OPT_TARGET_LLADDR;
            message[25] = 1;
            message[26..32].copy_from_slice(&mac);
            (message, 32)
        }
        None => (message, 24),
    }
}

fn arp(sha: [u8; 6], spa: [u8; 4]) -> Frame {
    let mut payload = [0u8; 28];
    payload[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    payload[8..14].copy_from_slice(&sha);
    payload[14..18].copy_from_slice(&spa);
    payload[24..28].copy_from_slice(&[192, 0, 2, 1]);
    Frame::new(BROADCAST, ETHERTYPE_ARP, &payload)
}

#[test]
fn bpdu_guard_is_on_unless_allowed() {
    let stp = Frame::new(STP_GROUP, 0x0026, &[0x42, 0x42, 0x03]);
    let lacp = Frame::new(SLOW_PROTOCOLS_GROUP, 0x8809, &[1, 1]);
    let lldp = Frame::new([0x01, 0x80, 0xc2, 0, 0, 0x0e], 0x88cc, &[0; 8]);
    assert_eq!(stp.check(&open_port()), Err(DropReason::Bpdu));
    assert_eq!(lacp.check(&open_port()), Err(DropReason::Bpdu));
    assert_eq!(lldp.check(&open_port()), Ok(Passed { to_group: true }));
    let mut allowed = open_port();
    allowed.flags |= POLICY_ALLOW_BPDU;
    assert_eq!(stp.check(&allowed), Ok(Passed { to_group: true }));
}

#[test]
fn group_destinations_are_reported_for_storm_control() {
    let frame = |dst| Frame::new(dst, 0x88b5, &[0; 4]);
    assert_eq!(
        frame(BROADCAST).check(&open_port()),
        Ok(Passed { to_group: true })
    );
    let multicast = [0x01, 0x00, 0x5e, 0, 0, 1];
    assert_eq!(
        frame(multicast).check(&open_port()),
        Ok(Passed { to_group: true })
    );
    assert_eq!(
        frame(UNICAST).check(&open_port()),
        Ok(Passed { to_group: false })
    );
}

#[test]
fn ipv4_source_guard() {
    let port = guarded_port();
    assert!(ipv4(MINE4, 6, &[0; 20]).check(&port).is_ok());
    assert_eq!(
        ipv4(OTHER4, 6, &[0; 20]).check(&port),
        Err(DropReason::IpSpoofed)
    );
    // Without --ip, any source.
    assert!(ipv4(OTHER4, 6, &[0; 20]).check(&open_port()).is_ok());
    // A DHCP client without an address, and nothing else from 0.0.0.0.
    assert!(ipv4([0; 4], IPPROTO_UDP, &udp(68, 67)).check(&port).is_ok());
    assert_eq!(
        ipv4([0; 4], IPPROTO_UDP, &udp(68, 53)).check(&port),
        Err(DropReason::IpSpoofed)
    );
    assert_eq!(
        ipv4([0; 4], 6, &[0; 20]).check(&port),
        Err(DropReason::IpSpoofed)
    );
}

#[test]
fn prefixes_match_whole_networks() {
    let mut port = guarded_port();
    port.addresses.v4[0] = Prefix4::new([198, 51, 100, 77], 24);
    port.addresses.v6[0] = Prefix6::new(MINE6, 64);
    assert!(ipv4([198, 51, 100, 1], 6, &[0; 20]).check(&port).is_ok());
    assert!(ipv4([198, 51, 101, 1], 6, &[0; 20]).check(&port).is_err());
    assert!(ipv6(OTHER6, &[], 6, &[0; 20]).check(&port).is_ok());
    let mut outside = OTHER6;
    outside[7] = 1;
    assert_eq!(
        ipv6(outside, &[], 6, &[0; 20]).check(&port),
        Err(DropReason::IpSpoofed)
    );
    assert_eq!(Prefix4::new([10, 1, 2, 3], 0), Prefix4 { addr: 0, mask: 0 });
}

#[test]
fn dhcp_server_guard() {
    let offer = ipv4(MINE4, IPPROTO_UDP, &udp(67, 68));
    assert_eq!(offer.check(&open_port()), Err(DropReason::DhcpServer));
    let mut allowed = open_port();
    allowed.flags |= POLICY_ALLOW_DHCP_SERVER;
    assert!(offer.check(&allowed).is_ok());
    let advertise = ipv6(MINE6, &[], IPPROTO_UDP, &udp(547, 546));
    assert_eq!(advertise.check(&open_port()), Err(DropReason::DhcpServer));
    assert!(advertise.check(&allowed).is_ok());
    // A client's solicit passes.
    assert!(
        ipv6(MINE6, &[], IPPROTO_UDP, &udp(546, 547))
            .check(&open_port())
            .is_ok()
    );
}

#[test]
fn later_ipv4_fragments_carry_no_ports() {
    let mut fragment = ipv4(MINE4, IPPROTO_UDP, &udp(67, 68));
    fragment.bytes[14 + 6] = 0x00;
    fragment.bytes[14 + 7] = 0x10;
    assert!(fragment.check(&open_port()).is_ok());
}

#[test]
fn ra_guard_and_redirects() {
    let ra = ipv6(
        LINK_LOCAL6,
        &[],
        IPPROTO_ICMPV6,
        &icmpv6(ICMPV6_ROUTER_ADVERT),
    );
    let redirect = ipv6(LINK_LOCAL6, &[], IPPROTO_ICMPV6, &icmpv6(ICMPV6_REDIRECT));
    let solicit = ipv6(LINK_LOCAL6, &[], IPPROTO_ICMPV6, &icmpv6(133));
    assert_eq!(ra.check(&open_port()), Err(DropReason::RouterAdvert));
    assert_eq!(redirect.check(&open_port()), Err(DropReason::RouterAdvert));
    assert!(solicit.check(&open_port()).is_ok());
    let mut allowed = open_port();
    allowed.flags |= POLICY_ALLOW_RA;
    assert!(ra.check(&allowed).is_ok());
}

#[test]
fn extension_headers_do_not_hide_an_ra() {
    let hop_by_hop: &[u8] = &[0, 0, 5, 2, 0, 0, 1, 0];
    let destination: &[u8] = &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let fragment: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 1];
    let auth: &[u8] = &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let ra = icmpv6(ICMPV6_ROUTER_ADVERT);
    for chain in [
        &[(0, hop_by_hop)][..],
        &[(0, hop_by_hop), (60, destination)],
        &[(60, destination), (44, fragment)],
        &[(51, auth), (60, destination)],
    ] {
        let frame = ipv6(LINK_LOCAL6, chain, IPPROTO_ICMPV6, &ra);
        assert_eq!(
            frame.check(&open_port()),
            Err(DropReason::RouterAdvert),
            "{chain:?}"
        );
    }
    // Longer than the parser follows: refused, not waved through.
    let long = [(60, destination); MAX_EXTENSION_HEADERS as usize + 1];
    let frame = ipv6(LINK_LOCAL6, &long, IPPROTO_ICMPV6, &ra);
    assert_eq!(frame.check(&open_port()), Err(DropReason::Unparsable));
    // Cut short inside the chain.
    let mut cut = ipv6(LINK_LOCAL6, &[(0, hop_by_hop)], IPPROTO_ICMPV6, &ra);
    cut.len = 14 + 40 + 4;
    assert_eq!(cut.check(&open_port()), Err(DropReason::Unparsable));
    // A later fragment has no upper-layer header to check.
    let later: &[u8] = &[0, 0, 0, 0x08, 0, 0, 0, 1];
    let frame = ipv6(LINK_LOCAL6, &[(44, later)], IPPROTO_ICMPV6, &[0x55; 8]);
    assert!(frame.check(&open_port()).is_ok());
}

#[test]
fn ipv6_source_guard_allows_link_local_and_unspecified() {
    let port = guarded_port();
    for ok in [MINE6, LINK_LOCAL6, [0; 16]] {
        assert!(ipv6(ok, &[], 6, &[0; 20]).check(&port).is_ok(), "{ok:?}");
    }
    assert_eq!(
        ipv6(OTHER6, &[], 6, &[0; 20]).check(&port),
        Err(DropReason::IpSpoofed)
    );
}

#[test]
fn neighbour_advertisements_name_only_the_endpoint() {
    let port = guarded_port();
    let send = |target, lladdr| {
        let (message, len) = neighbour_advert(target, lladdr);
        ipv6(LINK_LOCAL6, &[], IPPROTO_ICMPV6, &message[..len]).check(&port)
    };
    assert!(send(MINE6, Some(MAC)).is_ok());
    assert!(send(MINE6, None).is_ok());
    assert!(send(LINK_LOCAL6, Some(MAC)).is_ok());
    assert_eq!(send(OTHER6, Some(MAC)), Err(DropReason::NdSpoofed));
    assert_eq!(send(MINE6, Some(OTHER_MAC)), Err(DropReason::NdSpoofed));
    let mut spoofing = port;
    spoofing.flags |= POLICY_ALLOW_MAC_SPOOFING;
    let (message, len) = neighbour_advert(MINE6, Some(OTHER_MAC));
    let frame = ipv6(LINK_LOCAL6, &[], IPPROTO_ICMPV6, &message[..len]);
    assert!(frame.check(&spoofing).is_ok());
    // Without --ip, advertisements are not checked.
    assert!(frame.check(&open_port()).is_ok());
}

#[test]
fn arp_guard() {
    let port = guarded_port();
    assert!(arp(MAC, MINE4).check(&port).is_ok());
    assert!(arp(MAC, [0; 4]).check(&port).is_ok(), "RFC 5227 probe");
    assert_eq!(arp(MAC, OTHER4).check(&port), Err(DropReason::ArpSpoofed));
    assert_eq!(
        arp(OTHER_MAC, MINE4).check(&port),
        Err(DropReason::ArpSpoofed)
    );
    assert!(arp(OTHER_MAC, OTHER4).check(&open_port()).is_ok());
    let mut short = arp(MAC, MINE4);
    short.len = 14 + 10;
    assert_eq!(short.check(&port), Err(DropReason::ArpSpoofed));
}

#[test]
fn a_third_tag_is_not_a_way_around_the_guards() {
    // A tunnel passes a customer tag with anything under it.
    let mut bytes = [0u8; 64];
    bytes[..6].copy_from_slice(&BROADCAST);
    bytes[6..12].copy_from_slice(&MAC);
    for (i, at) in [12, 16, 20].into_iter().enumerate() {
        bytes[at..at + 2].copy_from_slice(&TPID_8021Q.to_be_bytes());
        bytes[at + 2..at + 4].copy_from_slice(&(10 + i as u16).to_be_bytes());
    }
    bytes[24..26].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let mut header = [0u8; crate::decide::VIEW_BYTES];
    header.copy_from_slice(&bytes[..crate::decide::VIEW_BYTES]);
    let payload = Payload::of(&FrameView::from_header(64, &header, None));
    assert_eq!(
        check(&open_port(), &bytes[..], payload),
        Err(DropReason::Unparsable)
    );
    let mut unguarded = open_port();
    unguarded.flags |= POLICY_ALLOW_DHCP_SERVER | POLICY_ALLOW_RA;
    assert!(check(&unguarded, &bytes[..], payload).is_ok());
}

#[test]
fn payload_sits_under_inline_tags() {
    let mut header = [0u8; crate::decide::VIEW_BYTES];
    header[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
    header[14..16].copy_from_slice(&10u16.to_be_bytes());
    header[16..18].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let view = FrameView::from_header(64, &header, None);
    assert_eq!(
        Payload::of(&view),
        Payload {
            offset: 18,
            ethertype: ETHERTYPE_IPV6
        }
    );
}
