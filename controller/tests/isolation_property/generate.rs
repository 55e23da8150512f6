//! Seeded generation of port policies and random or hostile frames.

use macvswitch_common::{
    EndpointPolicy, POLICY_ALLOW_MAC_SPOOFING, POLICY_CVLANS_LIMITED, POLICY_ISOLATED,
    POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, POLICY_PROMISCUOUS, PORT_ACCESS, PORT_TRUNK,
    PORT_TUNNEL, PORT_UNTAGGED, VidSet,
};

use macvswitch_tests::rng::Rng;

use crate::model::{TPID_AD, TPID_LEGACY, TPID_Q, Tag};

/// A policy and the VIDs it mentions (to bias frame VIDs towards them).
pub struct GenPolicy {
    pub policy: EndpointPolicy,
    pub members: Vec<u16>,
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
    GenPolicy { policy, members }
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

/// A frame as the wire or a guest might send it: dst, src, 0..=3 tags, a
/// type, a payload; sometimes cut anywhere (runts of 0..=24 bytes).
pub fn frame(rng: &mut Rng, port: &GenPolicy) -> Vec<u8> {
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
