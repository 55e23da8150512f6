//! The reference model: what the README's "Port model" says a port does
//! with one frame, written over raw frame bytes and the same
//! `EndpointPolicy` the programs read, then (from the guest, for frames
//! the VLAN policy lets through) what issue 12 and the doc comments of
//! `common/src/guard.rs` say the access-port guards do, from the guard
//! configuration as generated ([`Guards`]), not from the policy's encoding
//! of it. It deliberately calls neither `macvswitch_common::decide` nor
//! `macvswitch_common::guard`.
//!
//! A frame is `bytes` (what starts at the MAC header) plus an optional tag
//! in skb metadata (`meta`), which is the outermost tag when present.
//! Representation of the result, as the kernel helpers leave it:
//! - pop: the metadata tag goes if there is one, else the 4 inline tag
//!   bytes at 12..16;
//! - push: an existing metadata tag is moved inline (to 12..16), and the
//!   pushed tag becomes the metadata tag.

use macvswitch_common::{
    DropReason, EndpointPolicy, POLICY_ALLOW_MAC_SPOOFING, POLICY_CVLANS_LIMITED,
    POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, PORT_ACCESS, PORT_TRUNK, PORT_TUNNEL, PORT_UNTAGGED,
};

pub const TPID_Q: u16 = 0x8100;
pub const TPID_AD: u16 = 0x88a8;
pub const TPID_LEGACY: u16 = 0x9100;

/// Which hook: TC egress of the macvtap (from the guest) or TC ingress
/// (to the guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    FromGuest,
    ToGuest,
}

/// A VLAN tag: TPID and TCI (PCP:3, DEI:1, VID:12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
    pub fn bytes(self) -> [u8; 4] {
        let [a, b] = self.tpid.to_be_bytes();
        let [c, d] = self.tci.to_be_bytes();
        [a, b, c, d]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// `None`: no policy for the device; dropped without counting.
    Drop(Option<DropReason>),
}

/// Everything the model predicts for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Output frame bytes (the input's when dropped).
    pub bytes: Vec<u8>,
    /// The metadata tag after the program ran.
    pub meta: Option<Tag>,
    /// The tag the program pushed, if any.
    pub pushed: Option<Tag>,
    /// Whether the program popped the outer tag.
    pub popped: bool,
    /// The VLAN the frame is counted under (per-VLAN counters).
    pub vlan: Option<u16>,
}

/// Whether an ethertype announces a tag.
pub fn is_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_Q | TPID_AD | TPID_LEGACY)
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The first two tags of a frame.
#[derive(Clone, Copy, Debug)]
struct Stack {
    outer: Option<Tag>,
    /// The tag right under `outer`.
    second: Option<Tag>,
}

/// Reads the first two tags; `Err(Runt)` when a tag that must be read is
/// cut off by the end of the frame. `bytes.len() >= 14` here.
fn parse(bytes: &[u8], meta: Option<Tag>) -> Result<Stack, DropReason> {
    let len = bytes.len();
    let ethertype = be16(bytes, 12);
    // An inline tag announced by the type field at `at`: its TCI and the
    // next type field follow, at+2..at+6 (14..18 for the first, 18..22 for
    // a second under an inline outer tag). Cut short, it is a runt.
    let inline_tag = |at: usize| -> Result<Tag, DropReason> {
        if len < at + 6 {
            return Err(DropReason::Runt);
        }
        Ok(Tag {
            tpid: be16(bytes, at),
            tci: be16(bytes, at + 2),
        })
    };
    match meta {
        Some(outer) => {
            let second = if is_tpid(ethertype) {
                Some(inline_tag(12)?)
            } else {
                None
            };
            Ok(Stack {
                outer: Some(outer),
                second,
            })
        }
        None => {
            if !is_tpid(ethertype) {
                return Ok(Stack {
                    outer: None,
                    second: None,
                });
            }
            let outer = inline_tag(12)?;
            let second = if is_tpid(be16(bytes, 16)) {
                Some(inline_tag(16)?)
            } else {
                None
            };
            Ok(Stack {
                outer: Some(outer),
                second,
            })
        }
    }
}

/// What a port does with a frame, before it is applied to the bytes.
enum Act {
    Pass,
    Push(Tag),
    Pop,
    PopPush(Tag),
}

/// The model. `policy` is `None` when the device has no policy entry;
/// `guards` is the endpoint's guard configuration (the policy's `flags`
/// and `addresses` encode it for the programs).
pub fn model(
    dir: Dir,
    policy: Option<&EndpointPolicy>,
    guards: &Guards,
    bytes: &[u8],
    meta: Option<Tag>,
) -> Outcome {
    let decision = match policy {
        None => Err((None, None)),
        Some(policy) => match dir {
            // The guards look at what passes the VLAN policy; their drops
            // are counted under the decision's VLAN.
            Dir::FromGuest => from_guest(policy, bytes, meta).and_then(|(act, vlan)| {
                match guard(policy, guards, bytes) {
                    Ok(()) => Ok((act, vlan)),
                    Err(reason) => Err((reason, vlan)),
                }
            }),
            Dir::ToGuest => to_guest(policy, bytes, meta),
        }
        .map_err(|(reason, vlan)| (Some(reason), vlan)),
    };
    match decision {
        Err((reason, vlan)) => Outcome {
            verdict: Verdict::Drop(reason),
            bytes: bytes.to_vec(),
            meta,
            pushed: None,
            popped: false,
            vlan,
        },
        Ok((act, vlan)) => {
            let (out, meta_out, pushed, popped) = apply(bytes, meta, &act);
            Outcome {
                verdict: Verdict::Pass,
                bytes: out,
                meta: meta_out,
                pushed,
                popped,
                vlan,
            }
        }
    }
}

/// Pop and push as the kernel helpers do them (see the module docs).
fn apply(bytes: &[u8], meta: Option<Tag>, act: &Act) -> (Vec<u8>, Option<Tag>, Option<Tag>, bool) {
    let mut out = bytes.to_vec();
    let mut meta = meta;
    let (pop, push) = match *act {
        Act::Pass => (false, None),
        Act::Push(tag) => (false, Some(tag)),
        Act::Pop => (true, None),
        Act::PopPush(tag) => (true, Some(tag)),
    };
    if pop {
        pop_outer(&mut out, &mut meta);
    }
    if let Some(tag) = push {
        push_outer(&mut out, &mut meta, tag);
    }
    (out, meta, push, pop)
}

pub fn pop_outer(bytes: &mut Vec<u8>, meta: &mut Option<Tag>) {
    if meta.take().is_none() {
        bytes.drain(12..16);
    }
}

pub fn push_outer(bytes: &mut Vec<u8>, meta: &mut Option<Tag>, tag: Tag) {
    if let Some(old) = meta.replace(tag) {
        bytes.splice(12..12, old.bytes());
    }
}

type Decided = Result<(Act, Option<u16>), (DropReason, Option<u16>)>;

fn drop<T>(reason: DropReason) -> Result<T, (DropReason, Option<u16>)> {
    Err((reason, None))
}

/// TCI of a tag macvswitch pushes: `--priority` if set, else the priority
/// bits (PCP and DEI) of the guest's own priority or customer tag.
fn pushed_tci(policy: &EndpointPolicy, vid: u16, guest_bits: u16) -> u16 {
    let bits = if policy.flags & POLICY_PRIORITY_SET != 0 {
        u16::from(policy.priority & 7) << 13
    } else {
        guest_bits & 0xf000
    };
    bits | (vid & 0x0fff)
}

/// A priority tag: 802.1Q, VID 0, nothing under it.
fn is_priority_tag(stack: &Stack) -> bool {
    matches!(stack.outer, Some(tag) if tag.tpid == TPID_Q && tag.vid() == 0)
        && stack.second.is_none()
}

/// VLANs a trunk carries: its list and its native VLAN.
fn trunk_carries(policy: &EndpointPolicy, vid: u16) -> bool {
    policy.vids.contains(vid) || (policy.vlan != 0 && vid == policy.vlan)
}

fn from_guest(policy: &EndpointPolicy, bytes: &[u8], meta: Option<Tag>) -> Decided {
    if bytes.len() < 14 {
        return drop(DropReason::Runt);
    }
    if policy.flags & POLICY_ALLOW_MAC_SPOOFING == 0 && bytes[6..12] != policy.mac {
        return drop(DropReason::SpoofedSource);
    }
    let stack = parse(bytes, meta).map_err(|reason| (reason, None))?;
    let priority_tag = is_priority_tag(&stack);
    let untagged = stack.outer.is_none() || priority_tag;
    let guest_bits = match stack.outer {
        Some(tag) if priority_tag => tag.tci,
        _ => 0,
    };
    // Untagged frames get `tag`: pushed, or replacing the priority tag.
    let tag_untagged = |tag: Tag| {
        if priority_tag {
            Act::PopPush(tag)
        } else {
            Act::Push(tag)
        }
    };
    match policy.kind {
        PORT_UNTAGGED => match stack.outer {
            None => Ok((Act::Pass, None)),
            Some(_) if priority_tag => Ok((Act::Pop, None)),
            Some(_) => drop(DropReason::GuestTagged),
        },
        PORT_ACCESS => {
            if !untagged {
                return drop(DropReason::GuestTagged);
            }
            let tci = pushed_tci(policy, policy.vlan, guest_bits);
            Ok((tag_untagged(Tag { tpid: TPID_Q, tci }), None))
        }
        PORT_TRUNK => {
            if untagged {
                if policy.vlan == 0 {
                    return drop(DropReason::Untagged);
                }
                let tci = pushed_tci(policy, policy.vlan, guest_bits);
                return Ok((tag_untagged(Tag { tpid: TPID_Q, tci }), Some(policy.vlan)));
            }
            let outer = stack.outer.expect("tagged");
            if outer.tpid != TPID_Q {
                return drop(DropReason::ForeignTpid);
            }
            let vid = outer.vid();
            if !trunk_carries(policy, vid) {
                return drop(DropReason::WrongVlan);
            }
            if stack.second.is_some() {
                return Err((DropReason::StackedTag, Some(vid)));
            }
            Ok((Act::Pass, Some(vid)))
        }
        PORT_TUNNEL => {
            // Only 802.1Q customer tags go into a tunnel: an 802.1ad (or
            // 0x9100) outer tag from the guest is a service tag, not the
            // customer's. (The README names foreign-tpid for "802.1ad tags
            // from non-tunnel guests"; for tunnel guests it says "customer
            // tags kept", and customer tags are 802.1Q.)
            let (cvid, bits) = match stack.outer {
                None => (0, 0),
                Some(tag) if tag.tpid == TPID_Q => (tag.vid(), tag.tci),
                Some(_) => return drop(DropReason::ForeignTpid),
            };
            // A customer frame with VID 0 (priority-tagged, or a VID-0 tag
            // with more under it) is an untagged customer frame, counted
            // under 0; its tag is kept under the S-tag like any customer
            // tag (QinQ is transparent to the customer's frame), and its
            // PCP and DEI go into the S-tag.
            if policy.flags & POLICY_CVLANS_LIMITED != 0 && !policy.vids.contains(cvid) {
                return drop(if cvid == 0 {
                    DropReason::Untagged
                } else {
                    DropReason::CvlanNotAllowed
                });
            }
            let tag = Tag {
                tpid: TPID_AD,
                tci: pushed_tci(policy, policy.vlan, bits),
            };
            Ok((Act::Push(tag), Some(cvid)))
        }
        _ => panic!("model: unknown port kind {}", policy.kind),
    }
}

fn to_guest(policy: &EndpointPolicy, bytes: &[u8], meta: Option<Tag>) -> Decided {
    if bytes.len() < 14 {
        return drop(DropReason::Runt);
    }
    let stack = parse(bytes, meta).map_err(|reason| (reason, None))?;
    let priority_tag = is_priority_tag(&stack);
    let untagged = stack.outer.is_none() || priority_tag;
    match policy.kind {
        PORT_UNTAGGED => match stack.outer {
            None => Ok((Act::Pass, None)),
            Some(_) if priority_tag => Ok((Act::Pop, None)),
            Some(_) => drop(DropReason::TaggedOnUntaggedPort),
        },
        PORT_ACCESS | PORT_TRUNK => {
            if untagged {
                return drop(DropReason::Untagged);
            }
            let outer = stack.outer.expect("tagged");
            if outer.tpid != TPID_Q {
                return drop(DropReason::ForeignTpid);
            }
            let vid = outer.vid();
            let trunk = policy.kind == PORT_TRUNK;
            let carried = if trunk {
                trunk_carries(policy, vid)
            } else {
                vid == policy.vlan
            };
            if !carried {
                return drop(DropReason::WrongVlan);
            }
            let counted = trunk.then_some(vid);
            if stack.second.is_some() {
                return Err((DropReason::StackedTag, counted));
            }
            let native_untagged =
                policy.vlan != 0 && vid == policy.vlan && policy.flags & POLICY_NATIVE_TAGGED == 0;
            if !trunk || native_untagged {
                Ok((Act::Pop, counted))
            } else {
                Ok((Act::Pass, counted))
            }
        }
        PORT_TUNNEL => {
            if untagged {
                return drop(DropReason::Untagged);
            }
            let outer = stack.outer.expect("tagged");
            if outer.tpid != TPID_AD {
                return drop(DropReason::ForeignTpid);
            }
            if outer.vid() != policy.vlan {
                return drop(DropReason::WrongVlan);
            }
            // The customer's tag, if any, must be 802.1Q: a second
            // service tag under S is a stacked tag.
            let cvid = match stack.second {
                None => 0,
                Some(tag) if tag.tpid == TPID_Q => tag.vid(),
                Some(_) => return drop(DropReason::StackedTag),
            };
            if policy.flags & POLICY_CVLANS_LIMITED != 0 && !policy.vids.contains(cvid) {
                return drop(if cvid == 0 {
                    DropReason::Untagged
                } else {
                    DropReason::CvlanNotAllowed
                });
            }
            Ok((Act::Pop, Some(cvid)))
        }
        _ => panic!("model: unknown port kind {}", policy.kind),
    }
}

// ---------------------------------------------------------------------------
// The access-port guards (issue 12), from the guest only.

/// An endpoint's guard configuration, as `endpoint add --ip ...
/// --allow-...` states it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guards {
    /// `--ip`: `None` without it (no source checks).
    pub ip: Option<IpList>,
    pub allow_dhcp_server: bool,
    pub allow_ra: bool,
    pub allow_bpdu: bool,
}

/// The prefixes of `--ip`, as (address, prefix length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpList {
    pub v4: Vec<([u8; 4], u8)>,
    pub v6: Vec<([u8; 16], u8)>,
}

/// Whether `a` and `b` agree in their first `bits` bits (bit by bit, most
/// significant first: no masks to get wrong the same way twice).
pub fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    (0..usize::from(bits)).all(|i| {
        let bit = |x: &[u8]| (x[i / 8] >> (7 - i % 8)) & 1;
        bit(a) == bit(b)
    })
}

impl IpList {
    pub fn has_v4(&self, addr: [u8; 4]) -> bool {
        self.v4
            .iter()
            .any(|(net, len)| same_prefix(net, &addr, *len))
    }

    pub fn has_v6(&self, addr: [u8; 16]) -> bool {
        self.v6
            .iter()
            .any(|(net, len)| same_prefix(net, &addr, *len))
    }
}

/// `fe80::/64`: allowed as an IPv6 source and ND target whatever `--ip`
/// says.
pub fn is_link_local(addr: &[u8; 16]) -> bool {
    addr[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0]
}

/// IEEE 802.1D reserved groups the BPDU guard stops: STP, and slow
/// protocols (LACP).
pub const STP_GROUP: [u8; 6] = [0x01, 0x80, 0xc2, 0, 0, 0];
pub const SLOW_GROUP: [u8; 6] = [0x01, 0x80, 0xc2, 0, 0, 2];

/// Limits the guard documents (common/src/guard.rs): extension headers
/// followed, the furthest header start read (from the frame's first
/// byte), neighbour-discovery options looked at.
const EXTENSIONS_FOLLOWED: usize = 6;
const HEADER_LIMIT: usize = 512;
const ND_OPTIONS_LOOKED_AT: usize = 3;

/// `N` bytes at `at`, if the frame has them.
fn get<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The guest's payload: its type and where it starts, past up to two
/// inline tags (a third TPID is a payload type no guard knows). `None`
/// when the type field is past the end.
pub fn payload_of(bytes: &[u8]) -> Option<(u16, usize)> {
    let mut at = 12;
    for _ in 0..2 {
        let ethertype = u16::from_be_bytes(get(bytes, at)?);
        if !is_tpid(ethertype) {
            return Some((ethertype, at + 2));
        }
        at += 4;
    }
    Some((u16::from_be_bytes(get(bytes, at)?), at + 2))
}

/// Whether a frame from the guest that passed the VLAN policy may go.
fn guard(policy: &EndpointPolicy, guards: &Guards, bytes: &[u8]) -> Result<(), DropReason> {
    let dst = &bytes[..6];
    if !guards.allow_bpdu && (dst == STP_GROUP || dst == SLOW_GROUP) {
        return Err(DropReason::Bpdu);
    }
    let Some((ethertype, at)) = payload_of(bytes) else {
        return Ok(());
    };
    let spoofing = policy.flags & POLICY_ALLOW_MAC_SPOOFING != 0;
    let own_mac = (!spoofing).then_some(policy.mac);
    match ethertype {
        0x0806 => match &guards.ip {
            Some(ips) => guard_arp(ips, own_mac, bytes, at),
            None => Ok(()),
        },
        0x0800 => guard_ipv4(guards, bytes, at),
        0x86dd => guard_ipv6(guards, own_mac, bytes, at),
        // Under a third tag (a tunnel carries them): what it holds is not
        // looked at, so it does not go while a guard would look.
        t if is_tpid(t)
            && (guards.ip.is_some() || !guards.allow_dhcp_server || !guards.allow_ra) =>
        {
            Err(DropReason::Unparsable)
        }
        _ => Ok(()),
    }
}

/// ARP under `--ip`: Ethernet/IPv4, sent by the endpoint's MAC (unless it
/// may spoof), from a listed address or 0.0.0.0 (an RFC 5227 probe). Too
/// short to tell is refused too.
fn guard_arp(
    ips: &IpList,
    own_mac: Option<[u8; 6]>,
    bytes: &[u8],
    at: usize,
) -> Result<(), DropReason> {
    let Some(arp) = get::<18>(bytes, at) else {
        return Err(DropReason::ArpSpoofed);
    };
    let ethernet_ipv4 = arp[0..2] == [0, 1] && arp[2..4] == [8, 0] && arp[4] == 6 && arp[5] == 4;
    let sender_mac_ok = own_mac.is_none_or(|mac| arp[8..14] == mac);
    let spa: [u8; 4] = arp[14..18].try_into().expect("4 bytes");
    let sender_ip_ok = spa == [0; 4] || ips.has_v4(spa);
    if ethernet_ipv4 && sender_mac_ok && sender_ip_ok {
        Ok(())
    } else {
        Err(DropReason::ArpSpoofed)
    }
}

/// IPv4: the source against `--ip` (a DHCP client's discover or request
/// from 0.0.0.0, UDP 68 to 67, excepted), then the DHCP-server guard (UDP
/// source port 67, in a first fragment only: later ones carry no ports).
/// A header that is not IPv4, or whose length field is under 20 bytes, or
/// that ends before a field a check needs, is unparsable; nothing is read
/// when neither check is on.
fn guard_ipv4(guards: &Guards, bytes: &[u8], at: usize) -> Result<(), DropReason> {
    if guards.ip.is_none() && guards.allow_dhcp_server {
        return Ok(());
    }
    // Up to and including the source address.
    let Some(ip) = get::<16>(bytes, at) else {
        return Err(DropReason::Unparsable);
    };
    let (version, ihl) = (ip[0] >> 4, usize::from(ip[0] & 0x0f));
    if version != 4 || ihl < 5 {
        return Err(DropReason::Unparsable);
    }
    let fragment_offset = u16::from_be_bytes([ip[6] & 0x1f, ip[7]]);
    let udp = ip[9] == 17 && fragment_offset == 0;
    // The UDP ports are read as a pair (source, destination).
    let ports = || -> Result<(u16, u16), DropReason> {
        let p = get::<4>(bytes, at + ihl * 4).ok_or(DropReason::Unparsable)?;
        Ok((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    };
    let source: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
    if let Some(ips) = &guards.ip
        && !ips.has_v4(source)
    {
        let dhcp_client = source == [0; 4] && udp && ports()? == (68, 67);
        if !dhcp_client {
            return Err(DropReason::IpSpoofed);
        }
    }
    if !guards.allow_dhcp_server && udp && ports()?.0 == 67 {
        return Err(DropReason::DhcpServer);
    }
    Ok(())
}

/// How an IPv6 next-header value is followed: the IANA extension headers
/// (RFC 8200 4, RFC 7045), in 8-octet units past the first 8, the
/// authentication header in 4-octet units past the first 8 (RFC 4302),
/// the fragment header 8 octets always. ESP (50) cannot be looked into: it
/// is an upper layer here.
enum Next {
    Extension,
    Auth,
    Fragment,
    Upper,
}

fn next_kind(next: u8) -> Next {
    match next {
        0 | 43 | 60 | 135 | 139 | 140 | 253 | 254 => Next::Extension,
        44 => Next::Fragment,
        51 => Next::Auth,
        _ => Next::Upper,
    }
}

/// IPv6: the source against `--ip` (`::` and `fe80::/64` always allowed),
/// then the upper-layer header past at most six extension headers, each
/// starting at most 512 bytes into the frame (else unparsable; a later
/// fragment ends the check, its first fragment was checked): RA (134) and
/// redirect (137) under the RA guard, a neighbour advertisement (136) under
/// `--ip`, UDP source port 547 under the DHCP-server guard. The ICMPv6
/// type is read with its code (two bytes), the UDP source port alone.
fn guard_ipv6(
    guards: &Guards,
    own_mac: Option<[u8; 6]>,
    bytes: &[u8],
    at: usize,
) -> Result<(), DropReason> {
    let ra_guard = !guards.allow_ra;
    let dhcp_guard = !guards.allow_dhcp_server;
    if guards.ip.is_none() && !ra_guard && !dhcp_guard {
        return Ok(());
    }
    // Up to and including the source address.
    let Some(ip) = get::<24>(bytes, at) else {
        return Err(DropReason::Unparsable);
    };
    if ip[0] >> 4 != 6 {
        return Err(DropReason::Unparsable);
    }
    if let Some(ips) = &guards.ip {
        let source: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
        if source != [0; 16] && !is_link_local(&source) && !ips.has_v6(source) {
            return Err(DropReason::IpSpoofed);
        }
    }
    let mut next = ip[6];
    let mut header = at + 40;
    let mut followed = 0;
    loop {
        let kind = next_kind(next);
        if matches!(kind, Next::Upper) {
            break;
        }
        if followed == EXTENSIONS_FOLLOWED || header > HEADER_LIMIT {
            return Err(DropReason::Unparsable);
        }
        let Some(ext) = get::<4>(bytes, header) else {
            return Err(DropReason::Unparsable);
        };
        let len = match kind {
            Next::Fragment => {
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return Ok(());
                }
                8
            }
            Next::Auth => (usize::from(ext[1]) + 2) * 4,
            _ => (usize::from(ext[1]) + 1) * 8,
        };
        next = ext[0];
        header += len;
        followed += 1;
    }
    if header > HEADER_LIMIT {
        return Err(DropReason::Unparsable);
    }
    match next {
        58 if ra_guard || guards.ip.is_some() => {
            let Some([kind, _code]) = get::<2>(bytes, header) else {
                return Err(DropReason::Unparsable);
            };
            match (kind, &guards.ip) {
                (134 | 137, _) if ra_guard => Err(DropReason::RouterAdvert),
                (136, Some(ips)) => guard_neighbour_advert(ips, own_mac, bytes, header),
                _ => Ok(()),
            }
        }
        17 if dhcp_guard => match get::<2>(bytes, header) {
            None => Err(DropReason::Unparsable),
            Some(port) if u16::from_be_bytes(port) == 547 => Err(DropReason::DhcpServer),
            Some(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A neighbour advertisement under `--ip`, its ICMPv6 header at `at`: the
/// target (cut short: refused) listed or link-local; unless the endpoint
/// may spoof its MAC, each of the first three options (an option is 8
/// bytes at least; fewer left ends them) must have a length and, if it is a
/// target link-layer address (type 2), name the endpoint's MAC; an option
/// starting past byte 512, or a fourth one (two bytes or more left), is
/// refused.
fn guard_neighbour_advert(
    ips: &IpList,
    own_mac: Option<[u8; 6]>,
    bytes: &[u8],
    at: usize,
) -> Result<(), DropReason> {
    let Some(target) = get::<16>(bytes, at + 8) else {
        return Err(DropReason::NdSpoofed);
    };
    if !is_link_local(&target) && !ips.has_v6(target) {
        return Err(DropReason::NdSpoofed);
    }
    let Some(mac) = own_mac else {
        return Ok(());
    };
    let mut option = at + 24;
    for _ in 0..ND_OPTIONS_LOOKED_AT {
        if option > HEADER_LIMIT {
            return Err(DropReason::NdSpoofed);
        }
        let Some(head) = get::<8>(bytes, option) else {
            return Ok(());
        };
        let (kind, units) = (head[0], head[1]);
        if units == 0 || (kind == 2 && head[2..8] != mac) {
            return Err(DropReason::NdSpoofed);
        }
        option += usize::from(units) * 8;
    }
    if bytes.len() >= option + 2 {
        return Err(DropReason::NdSpoofed);
    }
    Ok(())
}
