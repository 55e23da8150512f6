//! Seeded generation of port policies and random or hostile frames: VLAN
//! tag games, and (for the access-port guards) well-formed and hostile ARP,
//! IPv4, IPv6 with extension-header chains, neighbour advertisements, RA,
//! DHCP and DHCPv6, BPDUs.

use std::net::Ipv6Addr;

use macvswitch::model::guards as controller_guards;
use macvswitch_common::{
    EndpointPolicy, POLICY_ALLOW_MAC_SPOOFING, POLICY_CVLANS_LIMITED, POLICY_ISOLATED,
    POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, POLICY_PROMISCUOUS, PORT_ACCESS, PORT_TRUNK,
    PORT_TUNNEL, PORT_UNTAGGED, VidSet,
};

use macvswitch_tests::rng::Rng;

use crate::model::{Guards, IpList, SLOW_GROUP, STP_GROUP, TPID_AD, TPID_LEGACY, TPID_Q, Tag};

/// A policy, the VIDs it mentions (to bias frame VIDs towards them), and
/// its guard configuration (which the policy encodes, through the
/// controller's own `--ip` parsing and `Guards::apply`).
pub struct GenPolicy {
    pub policy: EndpointPolicy,
    pub members: Vec<u16>,
    pub guards: Guards,
}

fn vid(rng: &mut Rng) -> u16 {
    match rng.below(10) {
        0 => 1,
        1 => 4094,
        2 => rng.range(2, 20) as u16,
        _ => rng.range(1, 4094) as u16,
    }
}

/// A VID list as the controller accepts it: VIDs and ranges in 1..=4094.
fn vid_list(rng: &mut Rng) -> VidSet {
    let mut set = VidSet::EMPTY;
    match rng.below(6) {
        // Everything, or nearly.
        0 => {
            let (lo, hi) = (rng.range(1, 3) as u16, rng.range(4092, 4094) as u16);
            (lo..=hi).for_each(|v| set.insert(v));
        }
        // One large range.
        1 => {
            let lo = rng.range(1, 2000) as u16;
            let hi = rng.range(u64::from(lo), 4094) as u16;
            (lo..=hi).for_each(|v| set.insert(v));
        }
        // A few VIDs and small ranges, Open vSwitch style.
        _ => {
            for _ in 0..rng.range(1, 6) {
                let lo = vid(rng);
                let hi = if rng.chance(30) {
                    (lo + rng.range(1, 100) as u16).min(4094)
                } else {
                    lo
                };
                (lo..=hi).for_each(|v| set.insert(v));
            }
        }
    }
    set
}

pub fn policy(rng: &mut Rng) -> GenPolicy {
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    mac[1..].iter_mut().for_each(|b| *b = rng.byte());
    let mut policy = EndpointPolicy::untagged(mac);
    policy.kind = rng.pick(&[PORT_UNTAGGED, PORT_ACCESS, PORT_TRUNK, PORT_TUNNEL]);
    match policy.kind {
        PORT_ACCESS => policy.vlan = vid(rng),
        PORT_TRUNK => {
            policy.vids = vid_list(rng);
            if rng.chance(60) {
                // The native VLAN may be in the list or not.
                let members: Vec<u16> = policy.vids.iter().collect();
                policy.vlan = if rng.chance(50) {
                    rng.pick(&members)
                } else {
                    vid(rng)
                };
                if rng.chance(50) {
                    policy.flags |= POLICY_NATIVE_TAGGED;
                }
            }
        }
        PORT_TUNNEL => {
            policy.vlan = vid(rng);
            if rng.chance(50) {
                policy.vids = vid_list(rng);
                policy.flags |= POLICY_CVLANS_LIMITED;
            }
        }
        _ => {}
    }
    if rng.chance(40) {
        policy.priority = rng.below(8) as u8;
        policy.flags |= POLICY_PRIORITY_SET;
    }
    if rng.chance(20) {
        policy.flags |= POLICY_ALLOW_MAC_SPOOFING;
    }
    // Private-VLAN settings must not change any VLAN decision (no local
    // sender is registered in SOURCES here, so they never drop).
    match rng.below(4) {
        0 => policy.flags |= POLICY_ISOLATED,
        1 => policy.flags |= POLICY_PROMISCUOUS,
        2 => policy.community = rng.range(1, 5) as u32,
        _ => {}
    }
    policy.lower = rng.range(1, 64) as u32;
    let members = policy.vids.iter().collect();
    let (guards, ip_text) = guards(rng);
    let controller = controller_guards::Guards {
        ip: ip_text.as_ref().map(|text| {
            text.parse()
                .unwrap_or_else(|e| panic!("--ip {text}: the controller refuses it: {e}"))
        }),
        allow_dhcp_server: guards.allow_dhcp_server,
        allow_ra: guards.allow_ra,
        allow_bpdu: guards.allow_bpdu,
        // Storm control needs a clock: its own rate test covers it.
        storm_limit: None,
    };
    controller.apply(&mut policy);
    GenPolicy {
        policy,
        members,
        guards,
    }
}

/// The IPv4 documentation ranges (RFC 5737).
const DOC_V4: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];

/// An address from the documentation ranges, with a random prefix length
/// (mostly a host or a range's own /24, sometimes shorter, now and then /0).
fn v4_prefix(rng: &mut Rng) -> ([u8; 4], u8) {
    let [a, b, c] = rng.pick(&DOC_V4);
    let addr = [a, b, c, rng.byte()];
    let len = match rng.below(50) {
        0 => 0,
        1..=20 => 32,
        21..=35 => rng.range(24, 31) as u8,
        36..=42 => rng.range(16, 23) as u8,
        _ => rng.range(1, 32) as u8,
    };
    (addr, len)
}

/// An address in 2001:db8::/32 (RFC 3849), structured so that neighbours
/// are likely: 2001:db8:s::h with small s and h, or random bits.
fn v6_doc(rng: &mut Rng) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    if rng.chance(70) {
        addr[5] = rng.below(4) as u8;
        addr[15] = rng.byte();
        if rng.chance(20) {
            addr[8] = rng.byte();
        }
    } else {
        addr[4..].iter_mut().for_each(|b| *b = rng.byte());
    }
    addr
}

fn v6_prefix(rng: &mut Rng) -> ([u8; 16], u8) {
    let len = match rng.below(50) {
        0 => 0,
        1..=18 => 128,
        19..=30 => 64,
        31..=35 => rng.pick(&[32, 48, 56, 120, 127]),
        _ => rng.range(32, 128) as u8,
    };
    (v6_doc(rng), len)
}

/// Random guard settings: each allow flag on or off, and half the time
/// `--ip` with 1..=16 prefixes (of one or both families).
fn guards(rng: &mut Rng) -> (Guards, Option<String>) {
    let mut guards = Guards {
        ip: None,
        allow_dhcp_server: rng.chance(25),
        allow_ra: rng.chance(25),
        allow_bpdu: rng.chance(25),
    };
    if !rng.chance(50) {
        return (guards, None);
    }
    let count = |rng: &mut Rng| match rng.below(10) {
        0..=2 => 0,
        3..=6 => rng.range(1, 3),
        _ => rng.range(1, 16),
    };
    let mut list = IpList {
        v4: (0..count(rng)).map(|_| v4_prefix(rng)).collect(),
        v6: (0..count(rng)).map(|_| v6_prefix(rng)).collect(),
    };
    if list.v4.is_empty() && list.v6.is_empty() {
        list.v4.push(v4_prefix(rng));
    }
    let mut items: Vec<String> = list
        .v4
        .iter()
        .map(|([a, b, c, d], len)| format!("{a}.{b}.{c}.{d}/{len}"))
        .chain(
            list.v6
                .iter()
                .map(|(addr, len)| format!("{}/{len}", Ipv6Addr::from(*addr))),
        )
        .collect();
    // The families interleaved as an operator might write them.
    if rng.chance(50) {
        items.reverse();
    }
    guards.ip = Some(list);
    (guards, Some(items.join(",")))
}

/// A VID biased towards the policy's VIDs, their neighbours, 0, 4095 and
/// the edges.
fn frame_vid(rng: &mut Rng, port: &GenPolicy) -> u16 {
    let vlan = port.policy.vlan;
    match rng.below(16) {
        0..=3 if vlan != 0 => vlan,
        0..=6 if !port.members.is_empty() => rng.pick(&port.members),
        7 if !port.members.is_empty() => {
            let near = rng.pick(&port.members);
            if rng.chance(50) {
                near.wrapping_sub(1) & 0x0fff
            } else {
                (near + 1) & 0x0fff
            }
        }
        8 if vlan != 0 => {
            if rng.chance(50) {
                vlan - 1
            } else {
                (vlan + 1) & 0x0fff
            }
        }
        9 => 0,
        10 => 4095,
        11 => rng.pick(&[1, 4094]),
        _ => rng.below(4096) as u16,
    }
}

fn tpid(rng: &mut Rng) -> u16 {
    match rng.below(20) {
        0..=9 => TPID_Q,
        10..=14 => TPID_AD,
        15..=16 => TPID_LEGACY,
        _ => rng.u16(),
    }
}

pub fn tag(rng: &mut Rng, port: &GenPolicy) -> Tag {
    let bits = if rng.chance(50) {
        0
    } else {
        rng.u16() & 0xf000
    };
    Tag {
        tpid: tpid(rng),
        tci: bits | frame_vid(rng, port),
    }
}

/// 0..=3 tags: random ones, or (a third of the time) the tags the port
/// expects in one direction or the other, sometimes with one more.
fn tag_stack(rng: &mut Rng, port: &GenPolicy) -> Vec<Tag> {
    let p = &port.policy;
    let bits = |rng: &mut Rng| {
        if rng.chance(50) {
            0
        } else {
            rng.u16() & 0xf000
        }
    };
    let member = |rng: &mut Rng| {
        if port.members.is_empty() || rng.chance(10) {
            frame_vid(rng, port)
        } else {
            rng.pick(&port.members)
        }
    };
    if rng.chance(33) {
        let mut tags = Vec::new();
        let q = |rng: &mut Rng, vid: u16| Tag {
            tpid: TPID_Q,
            tci: bits(rng) | vid,
        };
        match p.kind {
            PORT_ACCESS => tags.push(q(rng, p.vlan)),
            PORT_TRUNK => {
                let vid = if p.vlan != 0 && rng.chance(30) {
                    p.vlan
                } else {
                    member(rng)
                };
                tags.push(q(rng, vid));
            }
            PORT_TUNNEL => {
                if rng.chance(60) {
                    tags.push(Tag {
                        tpid: TPID_AD,
                        tci: bits(rng) | p.vlan,
                    });
                }
                if rng.chance(70) {
                    let vid = member(rng);
                    tags.push(q(rng, vid));
                }
            }
            _ => {
                if rng.chance(30) {
                    tags.push(q(rng, 0));
                }
            }
        }
        if rng.chance(15) {
            tags.push(tag(rng, port));
        }
        return tags;
    }
    let count = match rng.below(20) {
        0..=4 => 0,
        5..=12 => 1,
        13..=17 => 2,
        _ => 3,
    };
    (0..count).map(|_| tag(rng, port)).collect()
}

/// A frame and what kind of frame it was made to be (for the coverage
/// report): half the time a random one, else one for the guards.
pub fn frame(rng: &mut Rng, port: &GenPolicy) -> (Vec<u8>, String) {
    if rng.chance(50) {
        (random_frame(rng, port), "random".into())
    } else {
        guard_frame(rng, port)
    }
}

/// A frame as the wire or a guest might send it: dst, src, 0..=3 tags, a
/// type, a payload; sometimes cut anywhere (runts of 0..=24 bytes).
fn random_frame(rng: &mut Rng, port: &GenPolicy) -> Vec<u8> {
    let mac = port.policy.mac;
    let mut bytes = Vec::with_capacity(128);
    let dst: [u8; 6] = match rng.below(4) {
        0 => [0xff; 6],
        1 => [0x33, 0x33, 0xff, rng.byte(), rng.byte(), rng.byte()],
        2 => mac,
        _ => [rng.byte() & 0xfe, rng.byte(), rng.byte(), 1, 2, 3],
    };
    bytes.extend_from_slice(&dst);
    let src = match rng.below(20) {
        0 | 1 => [
            rng.byte(),
            rng.byte(),
            rng.byte(),
            rng.byte(),
            rng.byte(),
            rng.byte(),
        ],
        2 => {
            let mut near = mac;
            near[rng.below(6) as usize] ^= 1 << rng.below(8);
            near
        }
        _ => mac,
    };
    bytes.extend_from_slice(&src);
    for tag in tag_stack(rng, port) {
        bytes.extend_from_slice(&tag.bytes());
    }
    let ethertype = match rng.below(10) {
        0..=3 => 0x0800,
        4 => 0x86dd,
        5 => 0x0806,
        // A type that announces a tag that never comes.
        6 => tpid(rng),
        _ => rng.u16(),
    };
    bytes.extend_from_slice(&ethertype.to_be_bytes());
    let payload = match rng.below(10) {
        0..=2 => rng.below(8),
        3..=7 => rng.range(28, 100),
        8 => 46,
        _ => rng.range(100, 1500),
    };
    for _ in 0..payload {
        bytes.push(rng.byte());
    }
    match rng.below(20) {
        // Runts and cut tags.
        0 | 1 => bytes.truncate(rng.range(0, 24) as usize),
        2 => bytes.truncate(rng.range(14, 26) as usize),
        _ => {}
    }
    bytes
}

/// The same frame as the kernel might hand it over with its outer tag in
/// skb metadata: the inline outer tag moved there (when it is one the
/// kernel offloads), or a fresh metadata tag over the frame.
pub fn with_meta(rng: &mut Rng, port: &GenPolicy, bytes: &[u8]) -> (Vec<u8>, Tag) {
    let offloadable =
        bytes.len() >= 18 && matches!(u16::from_be_bytes([bytes[12], bytes[13]]), TPID_Q | TPID_AD);
    if offloadable && rng.chance(70) {
        let tag = Tag {
            tpid: u16::from_be_bytes([bytes[12], bytes[13]]),
            tci: u16::from_be_bytes([bytes[14], bytes[15]]),
        };
        let mut rest = bytes.to_vec();
        rest.drain(12..16);
        return (rest, tag);
    }
    let mut tag = tag(rng, port);
    tag.tpid = if rng.chance(60) { TPID_Q } else { TPID_AD };
    (bytes.to_vec(), tag)
}

// ---------------------------------------------------------------------------
// Frames for the access-port guards.

/// One of `items`, or (as often as each of them) a random value.
fn pick_with<T: Copy>(rng: &mut Rng, items: &[T], random: fn(&mut Rng) -> T) -> T {
    let i = rng.below(items.len() as u64 + 1) as usize;
    items.get(i).copied().unwrap_or_else(|| random(rng))
}

/// `lo..=hi` random bytes.
fn random_len(rng: &mut Rng, lo: u64, hi: u64) -> Vec<u8> {
    let len = rng.range(lo, hi) as usize;
    random_bytes(rng, len)
}

/// Bytes of a given length, random.
fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.byte()).collect()
}

/// `net`'s first `len` bits, then random ones: an address in the prefix.
fn within<const N: usize>(rng: &mut Rng, net: &[u8; N], len: u8) -> [u8; N] {
    let mut addr = [0u8; N];
    addr.iter_mut().for_each(|b| *b = rng.byte());
    for i in 0..usize::from(len) {
        let mask = 0x80 >> (i % 8);
        addr[i / 8] = (addr[i / 8] & !mask) | (net[i / 8] & mask);
    }
    addr
}

/// An address just outside the prefix (its last fixed bit flipped), or
/// inside it when it is /0.
fn near_miss<const N: usize>(rng: &mut Rng, net: &[u8; N], len: u8) -> [u8; N] {
    let mut addr = within(rng, net, len);
    if len > 0 {
        let i = usize::from(len) - 1;
        addr[i / 8] ^= 0x80 >> (i % 8);
    }
    addr
}

/// A source (or ARP sender) address: listed, just outside a listed
/// prefix, 0.0.0.0, elsewhere in the documentation ranges, or anything.
fn v4_addr(rng: &mut Rng, port: &GenPolicy) -> [u8; 4] {
    let listed = port.guards.ip.as_ref().map_or(&[][..], |ips| &ips.v4[..]);
    match rng.below(10) {
        0..=4 if !listed.is_empty() => {
            let (net, len) = rng.pick(listed);
            within(rng, &net, len)
        }
        5 if !listed.is_empty() => {
            let (net, len) = rng.pick(listed);
            near_miss(rng, &net, len)
        }
        6 => [0; 4],
        7 | 8 => {
            let [a, b, c] = rng.pick(&DOC_V4);
            [a, b, c, rng.byte()]
        }
        _ => [rng.byte(), rng.byte(), rng.byte(), rng.byte()],
    }
}

/// An IPv6 source or ND target: listed, just outside, link-local
/// (`fe80::/64`), almost link-local (`fe80:0:0:1::/64`, `fe81::`),
/// unspecified, multicast, elsewhere in 2001:db8::/32.
fn v6_addr(rng: &mut Rng, port: &GenPolicy) -> [u8; 16] {
    let listed = port.guards.ip.as_ref().map_or(&[][..], |ips| &ips.v6[..]);
    let mut random = [0u8; 16];
    random.iter_mut().for_each(|b| *b = rng.byte());
    match rng.below(14) {
        0..=4 if !listed.is_empty() => {
            let (net, len) = rng.pick(listed);
            within(rng, &net, len)
        }
        5 if !listed.is_empty() => {
            let (net, len) = rng.pick(listed);
            near_miss(rng, &net, len)
        }
        6 | 7 => {
            let mut addr = random;
            addr[..8].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0]);
            addr
        }
        8 => {
            let mut addr = random;
            addr[..8].copy_from_slice(&rng.pick(&[
                [0xfe, 0x80, 0, 0, 0, 1, 0, 0],
                [0xfe, 0x81, 0, 0, 0, 0, 0, 0],
                [0xfe, 0xc0, 0, 0, 0, 0, 0, 0],
                [0xfe, 0x80, 0x80, 0, 0, 0, 0, 0],
            ]));
            addr
        }
        9 => [0; 16],
        10 => {
            let mut addr = random;
            addr[..2].copy_from_slice(&[0xff, 0x02]);
            addr
        }
        11 | 12 => v6_doc(rng),
        _ => random,
    }
}

/// A MAC for an ARP sender or an ND link-layer option: mostly the
/// endpoint's, else another (or one bit off).
fn some_mac(rng: &mut Rng, own: [u8; 6]) -> [u8; 6] {
    match rng.below(10) {
        0..=5 => own,
        6 | 7 => {
            let mut near = own;
            near[rng.below(6) as usize] ^= 1 << rng.below(8);
            near
        }
        _ => [
            rng.byte() & 0xfe,
            rng.byte(),
            rng.byte(),
            rng.byte(),
            rng.byte(),
            rng.byte(),
        ],
    }
}

/// Tags as a guest on this port would write them, mostly ones the VLAN
/// policy lets through, so that the guards see the frame: none or a
/// priority tag on access and untagged ports, a carried VLAN on a trunk,
/// nothing, a customer tag, or a customer tag with one or two more under
/// it in a tunnel; now and then the random stacks.
fn guest_tags(rng: &mut Rng, port: &GenPolicy) -> Vec<Tag> {
    let p = &port.policy;
    if rng.chance(8) {
        return tag_stack(rng, port);
    }
    let bits = |rng: &mut Rng| {
        if rng.chance(60) {
            0
        } else {
            rng.u16() & 0xf000
        }
    };
    let q = |rng: &mut Rng, vid: u16| Tag {
        tpid: TPID_Q,
        tci: bits(rng) | vid,
    };
    let member = |rng: &mut Rng| {
        if port.members.is_empty() || rng.chance(10) {
            frame_vid(rng, port)
        } else {
            rng.pick(&port.members)
        }
    };
    match p.kind {
        PORT_TRUNK => {
            if p.vlan != 0 && rng.chance(30) {
                if rng.chance(20) {
                    vec![q(rng, 0)]
                } else {
                    Vec::new()
                }
            } else {
                let vid = member(rng);
                vec![q(rng, vid)]
            }
        }
        PORT_TUNNEL => {
            let mut tags = Vec::new();
            if rng.chance(65) {
                let vid = member(rng);
                tags.push(q(rng, vid));
                let under = match rng.below(10) {
                    0 | 1 => 1,
                    2 => 2,
                    _ => 0,
                };
                for _ in 0..under {
                    let tpid = rng.pick(&[TPID_Q, TPID_Q, TPID_AD, TPID_LEGACY]);
                    tags.push(Tag {
                        tpid,
                        tci: bits(rng) | frame_vid(rng, port),
                    });
                }
            }
            tags
        }
        _ => {
            if rng.chance(12) {
                vec![q(rng, 0)]
            } else {
                Vec::new()
            }
        }
    }
}

fn be(value: u16) -> [u8; 2] {
    value.to_be_bytes()
}

fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + payload.len());
    bytes.extend_from_slice(&be(src));
    bytes.extend_from_slice(&be(dst));
    bytes.extend_from_slice(&be(8 + payload.len() as u16));
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(payload);
    bytes
}

/// ARP: honest, spoofed sender IP, spoofed sender MAC, an RFC 5227 probe,
/// malformed hardware or protocol fields, or cut short.
fn arp(rng: &mut Rng, port: &GenPolicy) -> (Vec<u8>, &'static str) {
    let own = port.policy.mac;
    let mut sha = own;
    let mut spa = match port.guards.ip.as_ref().map(|ips| &ips.v4[..]) {
        Some(listed) if !listed.is_empty() => {
            let (net, len) = rng.pick(listed);
            within(rng, &net, len)
        }
        _ => v4_addr(rng, port),
    };
    let mut head = [0x00, 0x01, 0x08, 0x00, 6, 4];
    let class = match rng.below(12) {
        0..=2 => "arp honest",
        3 | 4 => {
            spa = v4_addr(rng, port);
            "arp sender-ip"
        }
        5 | 6 => {
            sha = some_mac(rng, own);
            "arp sender-mac"
        }
        7 => {
            spa = [0; 4];
            "arp probe"
        }
        8 | 9 => {
            let field = rng.below(6) as usize;
            head[field] = pick_with(rng, &[0, 1, 4, 6, 8, 16, 0xff], Rng::byte);
            "arp malformed"
        }
        _ => {
            sha = some_mac(rng, own);
            spa = v4_addr(rng, port);
            "arp any"
        }
    };
    let mut bytes = head.to_vec();
    bytes.extend_from_slice(&be(pick_with(rng, &[1, 2, 1, 2, 3], Rng::u16)));
    bytes.extend_from_slice(&sha);
    bytes.extend_from_slice(&spa);
    bytes.extend_from_slice(&[0; 6]);
    let tpa = v4_addr(rng, port);
    bytes.extend_from_slice(&tpa);
    if rng.chance(15) {
        bytes.truncate(rng.below(28) as usize);
        return (bytes, "arp cut");
    }
    (bytes, class)
}

/// An IPv4 header (with `options_words` 32-bit words of options) over
/// `upper`.
struct V4 {
    version_ihl: u8,
    flags_fragment: u16,
    protocol: u8,
    src: [u8; 4],
    dst: [u8; 4],
}

fn ipv4_bytes(rng: &mut Rng, header: &V4, upper: &[u8]) -> Vec<u8> {
    let words = usize::from(header.version_ihl & 0x0f).max(5);
    let total = 4 * words + upper.len();
    let mut bytes = vec![header.version_ihl, 0];
    bytes.extend_from_slice(&be(total as u16));
    bytes.extend_from_slice(&be(rng.u16()));
    bytes.extend_from_slice(&be(header.flags_fragment));
    bytes.extend_from_slice(&[64, header.protocol, 0, 0]);
    bytes.extend_from_slice(&header.src);
    bytes.extend_from_slice(&header.dst);
    // Options (or, with a bad IHL under 5, simply more bytes): NOPs and an
    // end of list, or random.
    for _ in 5..words {
        if rng.chance(50) {
            bytes.extend_from_slice(&[1, 1, 1, 0]);
        } else {
            bytes.extend(random_bytes(rng, 4));
        }
    }
    bytes.extend_from_slice(upper);
    bytes
}

/// IPv4: honest and spoofed sources, DHCP clients (from 0.0.0.0, 68 to
/// 67) and servers (67 to 68), fragments, options, bad versions and IHLs.
fn ipv4(rng: &mut Rng, port: &GenPolicy) -> (Vec<u8>, &'static str, [u8; 6]) {
    let unicast = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let mut dst_mac = unicast;
    let mut header = V4 {
        version_ihl: 0x45,
        flags_fragment: if rng.chance(50) { 0x4000 } else { 0 },
        protocol: 17,
        src: v4_addr(rng, port),
        dst: [198, 51, 100, rng.byte()],
    };
    let dhcp_body = |rng: &mut Rng| random_len(rng, 0, 40);
    let (upper, class) = match rng.below(14) {
        0 | 1 => {
            header.protocol = pick_with(rng, &[6, 1, 17, 47], Rng::byte);
            let upper = random_len(rng, 0, 40);
            (upper, "ipv4 any")
        }
        2 | 3 => {
            header.src = [0; 4];
            header.dst = [255; 4];
            dst_mac = [0xff; 6];
            let body = dhcp_body(rng);
            (udp(68, 67, &body), "ipv4 dhcp-client")
        }
        4 => {
            header.src = [0; 4];
            header.protocol = rng.pick(&[17, 17, 6]);
            let ports = pick_with(rng, &[(68, 53), (67, 68), (68, 68), (67, 67)], |rng| {
                (rng.u16(), 67)
            });
            (
                udp(ports.0, ports.1, &dhcp_body(rng)),
                "ipv4 from-0 not-dhcp-client",
            )
        }
        5..=7 => {
            if rng.chance(30) {
                header.dst = [255; 4];
                dst_mac = [0xff; 6];
            }
            let dst_port = pick_with(rng, &[68, 68, 67], Rng::u16);
            (udp(67, dst_port, &dhcp_body(rng)), "ipv4 dhcp-server")
        }
        8 | 9 => {
            // A fragment: the first (offset 0, more to come) or a later
            // one, of a DHCP server message or a client's.
            header.flags_fragment = if rng.chance(40) {
                0x2000
            } else {
                (rng.u16() & 0x3fff).max(1)
            };
            let ports = rng.pick(&[(67, 68), (68, 67)]);
            if ports.0 == 68 && rng.chance(50) {
                header.src = [0; 4];
            }
            (udp(ports.0, ports.1, &dhcp_body(rng)), "ipv4 fragment")
        }
        10 | 11 => {
            header.version_ihl = 0x40 | rng.range(6, 15) as u8;
            let ports = rng.pick(&[(67, 68), (68, 67), (1234, 53)]);
            if ports.0 == 68 && rng.chance(50) {
                header.src = [0; 4];
            }
            (udp(ports.0, ports.1, &dhcp_body(rng)), "ipv4 options")
        }
        _ => {
            header.version_ihl = if rng.chance(50) {
                0x40 | rng.below(5) as u8
            } else {
                (rng.pick(&[0u8, 5, 6, 15]) << 4) | 5
            };
            (udp(67, 68, &dhcp_body(rng)), "ipv4 bad-header")
        }
    };
    (ipv4_bytes(rng, &header, &upper), class, dst_mac)
}

/// An IPv6 extension header of kind `kind` (its next-header byte is filled
/// in later): hop-by-hop, routing, destination options, mobility and the
/// other 8-octet kinds with a random length (rarely long, past the guard's
/// horizon), a first or later fragment, an authentication header.
fn extension(rng: &mut Rng, kind: u8) -> Vec<u8> {
    match kind {
        44 => {
            let offset_flags = if rng.chance(60) {
                // The first fragment; more may follow.
                u16::from(rng.chance(70))
            } else {
                (rng.u16() & 0xfff8).max(8) | u16::from(rng.chance(50))
            };
            let mut bytes = vec![0, 0];
            bytes.extend_from_slice(&be(offset_flags));
            bytes.extend(random_bytes(rng, 4));
            bytes
        }
        51 => {
            let units = pick_with(rng, &[4, 4, 1, 2, 3, 5, 6], Rng::byte);
            let mut bytes = vec![0, units];
            bytes.extend(random_bytes(rng, (usize::from(units) + 2) * 4 - 2));
            bytes
        }
        _ => {
            let units = match rng.below(20) {
                0..=13 => 0,
                14..=17 => rng.range(1, 3) as u8,
                18 => rng.range(20, 70) as u8,
                _ => rng.range(70, 150) as u8,
            };
            let mut bytes = vec![0, units];
            // PadN over the rest, or random options.
            let rest = (usize::from(units) + 1) * 8 - 2;
            if rng.chance(70) {
                bytes.extend_from_slice(&[1, (rest - 2) as u8]);
                bytes.extend(std::iter::repeat_n(0, rest - 2));
            } else {
                bytes.extend(random_bytes(rng, rest));
            }
            bytes
        }
    }
}

/// A chain of 0..=8 extension headers (kinds as `extension` makes them).
fn chain(rng: &mut Rng) -> Vec<(u8, Vec<u8>)> {
    let count = match rng.below(20) {
        0..=8 => 0,
        9..=13 => rng.range(1, 2),
        14..=17 => rng.range(3, 6),
        _ => rng.range(7, 8),
    };
    (0..count)
        .map(|_| {
            let kind = rng.pick(&[0, 0, 43, 60, 60, 44, 44, 51, 135, 139, 140, 253, 254]);
            (kind, extension(rng, kind))
        })
        .collect()
}

/// Neighbour-discovery options for an advertisement: target and source
/// link-layer addresses (the endpoint's MAC or another), a nonce, unknown
/// ones, longer ones, zero-length ones.
fn nd_options(rng: &mut Rng, own: [u8; 6]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let count = match rng.below(20) {
        0..=3 => 0,
        4..=8 => 1,
        9..=11 => 2,
        12..=14 => 3,
        15..=17 => 4,
        _ => 5,
    };
    for _ in 0..count {
        match rng.below(20) {
            0..=7 => {
                bytes.extend_from_slice(&[2, 1]);
                bytes.extend_from_slice(&if rng.chance(75) {
                    own
                } else {
                    some_mac(rng, own)
                });
            }
            8..=10 => {
                bytes.extend_from_slice(&[1, 1]);
                bytes.extend_from_slice(&some_mac(rng, own));
            }
            11 | 12 => {
                bytes.extend_from_slice(&[14, 1]);
                bytes.extend(random_bytes(rng, 6));
            }
            13..=15 => {
                let units = rng.range(1, 3) as u8;
                bytes.extend_from_slice(&[pick_with(rng, &[2, 3, 5], Rng::byte), units]);
                bytes.extend(random_bytes(rng, usize::from(units) * 8 - 2));
            }
            _ => {
                bytes.extend_from_slice(&[pick_with(rng, &[2, 1], Rng::byte), 0]);
                bytes.extend(random_bytes(rng, 6));
            }
        }
    }
    // Now and then a piece of an option, shorter than any option.
    if rng.chance(15) {
        bytes.extend(random_len(rng, 1, 7));
    }
    bytes
}

/// IPv6: sources honest, spoofed, link-local, unspecified; extension
/// chains; neighbour advertisements, RAs, redirects, other ICMPv6, DHCPv6
/// servers and clients, TCP, ESP, no next header.
fn ipv6(rng: &mut Rng, port: &GenPolicy) -> (Vec<u8>, String, [u8; 6]) {
    let own = port.policy.mac;
    let src = v6_addr(rng, port);
    let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let (mut dst, mut dst_mac) = if rng.chance(50) {
        (all_nodes, [0x33, 0x33, 0, 0, 0, 1])
    } else {
        (v6_doc(rng), [0x02, 0x11, 0x22, 0x33, 0x44, 0x55])
    };
    let icmp = |kind: u8, body: usize, rng: &mut Rng| {
        let mut bytes = vec![kind, 0, 0, 0];
        bytes.extend(random_bytes(rng, body));
        bytes
    };
    let (protocol, upper, class) = match rng.below(20) {
        0..=4 => {
            // A neighbour advertisement: target listed or not, options.
            let mut bytes = vec![136, 0, 0, 0, rng.pick(&[0x60, 0x20, 0xe0, 0]), 0, 0, 0];
            bytes.extend_from_slice(&v6_addr(rng, port));
            bytes.extend(nd_options(rng, own));
            if rng.chance(40) {
                dst = src;
                dst_mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
            }
            (58, bytes, "na")
        }
        5 | 6 => (58, icmp(134, rng.range(12, 40) as usize, rng), "ra"),
        7 => (58, icmp(137, 36, rng), "redirect"),
        8 | 9 => {
            let kind = pick_with(rng, &[133, 135, 128, 129, 1, 143], Rng::byte);
            (
                58,
                icmp(kind, rng.range(4, 40) as usize, rng),
                "icmpv6 other",
            )
        }
        10..=12 => {
            let dst_port = pick_with(rng, &[546, 546, 547], Rng::u16);
            let body = random_len(rng, 4, 40);
            (17, udp(547, dst_port, &body), "dhcpv6 server")
        }
        13 | 14 => {
            dst[..2].copy_from_slice(&[0xff, 0x02]);
            dst[13..].copy_from_slice(&[1, 0, 2]);
            let body = random_len(rng, 4, 40);
            (17, udp(546, 547, &body), "dhcpv6 client")
        }
        15 | 16 => {
            let body = random_len(rng, 0, 40);
            (17, udp(rng.u16(), rng.u16(), &body), "udp6 other")
        }
        _ => {
            let protocol = pick_with(rng, &[6, 50, 59, 17, 58], Rng::byte);
            (protocol, random_len(rng, 0, 40), "ipv6 any")
        }
    };
    let chain = chain(rng);
    let mut bytes = vec![
        if rng.chance(95) {
            0x60
        } else {
            rng.pick(&[0x40, 0x00, 0x70, 0xf0])
        },
        0,
        0,
        0,
    ];
    let payload_len: usize = chain.iter().map(|(_, e)| e.len()).sum::<usize>() + upper.len();
    bytes.extend_from_slice(&be(payload_len as u16));
    bytes.push(chain.first().map_or(protocol, |(kind, _)| *kind));
    bytes.push(255);
    bytes.extend_from_slice(&src);
    bytes.extend_from_slice(&dst);
    for (i, (_, ext)) in chain.iter().enumerate() {
        let start = bytes.len();
        bytes.extend_from_slice(ext);
        bytes[start] = chain.get(i + 1).map_or(protocol, |(kind, _)| *kind);
    }
    bytes.extend_from_slice(&upper);
    let class = match chain.len() {
        0 => class.to_string(),
        n if n <= 6 => format!("{class} +1-6 ext"),
        _ => format!("{class} +7-8 ext"),
    };
    (bytes, class, dst_mac)
}

/// A spanning-tree BPDU (802.3 length, LLC 42 42 03) or a slow-protocols
/// frame (LACP), to the reserved groups the BPDU guard is about or to
/// their neighbours (LLDP, pause, 802.1X, and look-alikes).
fn bridge_protocol(rng: &mut Rng) -> ([u8; 6], u16, Vec<u8>, &'static str) {
    let (dst, class) = match rng.below(10) {
        0..=3 => (STP_GROUP, "bpdu stp"),
        4..=6 => (SLOW_GROUP, "bpdu slow-protocols"),
        _ => {
            let mut dst = STP_GROUP;
            match rng.below(3) {
                0 => dst[5] = pick_with(rng, &[1, 3, 0x0e, 0x0f, 0x10, 0x20, 0x21], Rng::byte),
                1 => dst[rng.below(5) as usize] ^= 1 << rng.range(1, 7),
                _ => dst = [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc],
            }
            (dst, "group other")
        }
    };
    if rng.chance(50) {
        let mut bytes = vec![0x42, 0x42, 0x03, 0, 0, rng.pick(&[0, 2]), 0];
        bytes.extend(random_bytes(rng, 32));
        (dst, 3 + 36, bytes, class)
    } else {
        let mut bytes = vec![1, 1];
        bytes.extend(random_bytes(rng, 40));
        (dst, 0x8809, bytes, class)
    }
}

/// The longest frame made for the guards: an Ethernet frame's payload
/// with room for the port's tags.
const MAX_FRAME: usize = 1530;

/// A frame for the guards: from the endpoint's MAC (mostly), under the
/// tags the port carries, with an ARP, IPv4, IPv6 or bridge-protocol
/// payload; sometimes padded to the Ethernet minimum, given a trailer, or
/// cut short anywhere past the Ethernet header.
fn guard_frame(rng: &mut Rng, port: &GenPolicy) -> (Vec<u8>, String) {
    let own = port.policy.mac;
    let (dst, ethertype, payload, class) = match rng.below(20) {
        0..=3 => {
            let (payload, class) = arp(rng, port);
            let dst = if rng.chance(70) {
                [0xff; 6]
            } else {
                [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
            };
            (dst, 0x0806, payload, class.to_string())
        }
        4..=9 => {
            let (payload, class, dst) = ipv4(rng, port);
            (dst, 0x0800, payload, class.to_string())
        }
        10..=17 => {
            let (payload, class, dst) = ipv6(rng, port);
            (dst, 0x86dd, payload, class)
        }
        _ => {
            let (dst, ethertype, payload, class) = bridge_protocol(rng);
            (dst, ethertype, payload, class.to_string())
        }
    };
    let mut bytes = Vec::with_capacity(64 + payload.len());
    bytes.extend_from_slice(&dst);
    bytes.extend_from_slice(&if rng.chance(92) {
        own
    } else {
        some_mac(rng, own)
    });
    for tag in guest_tags(rng, port) {
        bytes.extend_from_slice(&tag.bytes());
    }
    bytes.extend_from_slice(&ethertype.to_be_bytes());
    bytes.extend_from_slice(&payload);
    let mut class = class;
    // BPF_PROG_TEST_RUN takes a page at most.
    let mut cut = bytes.len() > MAX_FRAME;
    bytes.truncate(MAX_FRAME);
    match rng.below(20) {
        0 | 1 => {
            let len = rng.range(14, bytes.len().max(15) as u64 - 1) as usize;
            bytes.truncate(len);
            cut = true;
        }
        2 => bytes.resize(bytes.len().max(60), 0),
        3 => bytes.extend(random_len(rng, 1, 16)),
        _ => {}
    }
    if cut && !class.ends_with(" cut") {
        class.push_str(" cut");
    }
    (bytes, class)
}
