//! Access-port guards: what a guest may say at layer 2 to 4, beyond its
//! VLAN and source MAC. Checked on frames from the guest that the VLAN
//! policy lets through, in this order: BPDU guard (destination), then by
//! ethertype ARP (sender), IPv4 (source, DHCP server) or IPv6 (source,
//! extension headers, RA and redirect, neighbour advertisement, DHCPv6
//! server). Storm control, which needs a clock, is the program's.
//!
//! The parser reads only what the enabled guards need, through
//! [`FrameBytes`]: the programs read the packet in place, host tests read
//! a slice; both run this very code.

use crate::{
    DropReason, ETH_HLEN, EndpointPolicy, FrameView, POLICY_ALLOW_BPDU, POLICY_ALLOW_DHCP_SERVER,
    POLICY_ALLOW_RA, POLICY_GUARD_IP, is_tpid,
};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const DHCPV4_SERVER_PORT: u16 = 67;
const DHCPV4_CLIENT_PORT: u16 = 68;
const DHCPV6_SERVER_PORT: u16 = 547;
const ICMPV6_ROUTER_ADVERT: u8 = 134;
const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
const ICMPV6_REDIRECT: u8 = 137;
/// Neighbour discovery option: target link-layer address.
const ND_OPT_TARGET_LLADDR: u8 = 2;

/// IPv6 extension headers followed before giving up on a chain.
pub const MAX_EXTENSION_HEADERS: u32 = 6;
/// Options of a neighbour advertisement looked at for a link-layer address.
pub const MAX_ND_OPTIONS: u32 = 3;
/// Headers starting past this offset are not read: a chain that long is
/// refused (`unparsable-header`) rather than followed.
pub const MAX_HEADER_OFFSET: u32 = 512;

/// IEEE 802.1D reserved group addresses a guest may not send to.
const STP_GROUP: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00];
const SLOW_PROTOCOLS_GROUP: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x02];

/// Allowed source addresses per family and endpoint (`--ip`).
pub const MAX_GUARD_V4: usize = 16;
pub const MAX_GUARD_V6: usize = 16;

/// An IPv4 prefix: address and mask as loaded from the packet's network
/// byte order (`u32::from_ne_bytes` of the four octets), so a match is one
/// AND and one compare whatever the host's byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix4 {
    pub addr: u32,
    pub mask: u32,
}

impl Prefix4 {
    pub fn new(octets: [u8; 4], len: u8) -> Self {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0);
        let mask = mask.to_be_bytes();
        let mask = u32::from_ne_bytes(mask);
        Self {
            addr: u32::from_ne_bytes(octets) & mask,
            mask,
        }
    }

    #[inline(always)]
    pub const fn contains(&self, addr: u32) -> bool {
        addr & self.mask == self.addr
    }
}

/// An IPv6 prefix, in two halves loaded as `u64::from_ne_bytes`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix6 {
    pub addr: [u64; 2],
    pub mask: [u64; 2],
}

impl Prefix6 {
    pub fn new(octets: [u8; 16], len: u8) -> Self {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(len.min(128)))
            .unwrap_or(0)
            .to_be_bytes();
        let half = |bytes: &[u8; 16], at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_ne_bytes(word)
        };
        let mask = [half(&mask, 0), half(&mask, 8)];
        Self {
            addr: [half(&octets, 0) & mask[0], half(&octets, 8) & mask[1]],
            mask,
        }
    }

    #[inline(always)]
    pub const fn contains(&self, addr: [u64; 2]) -> bool {
        addr[0] & self.mask[0] == self.addr[0] && addr[1] & self.mask[1] == self.addr[1]
    }
}

/// The addresses a guest may use (`EndpointPolicy::addresses`); consulted
/// only with `POLICY_GUARD_IP`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressGuard {
    pub v4: [Prefix4; MAX_GUARD_V4],
    pub v6: [Prefix6; MAX_GUARD_V6],
    pub v4_count: u32,
    pub v6_count: u32,
}

impl AddressGuard {
    pub const EMPTY: Self = Self {
        v4: [Prefix4 { addr: 0, mask: 0 }; MAX_GUARD_V4],
        v6: [Prefix6 {
            addr: [0; 2],
            mask: [0; 2],
        }; MAX_GUARD_V6],
        v4_count: 0,
        v6_count: 0,
    };

    #[inline(always)]
    pub fn allows_v4(&self, addr: [u8; 4]) -> bool {
        let addr = u32::from_ne_bytes(addr);
        let mut i = 0;
        while i < MAX_GUARD_V4 {
            if i as u32 >= self.v4_count {
                return false;
            }
            if self.v4[i].contains(addr) {
                return true;
            }
            i += 1;
        }
        false
    }

    #[inline(always)]
    pub fn allows_v6(&self, addr: [u8; 16]) -> bool {
        let addr = v6_halves(addr);
        let mut i = 0;
        while i < MAX_GUARD_V6 {
            if i as u32 >= self.v6_count {
                return false;
            }
            if self.v6[i].contains(addr) {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Allowed as an IPv6 source or ND target: listed, or link-local
    /// (`fe80::/64`), which every interface has and the list cannot know.
    #[inline(always)]
    fn allows_v6_or_link_local(&self, addr: [u8; 16]) -> bool {
        let link_local = addr[0] == 0xfe && addr[1] == 0x80 && addr[2..8] == [0; 6];
        link_local || self.allows_v6(addr)
    }
}

#[inline(always)]
fn v6_halves(addr: [u8; 16]) -> [u64; 2] {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = addr;
    [
        u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
        u64::from_ne_bytes([i, j, k, l, m, n, o, p]),
    ]
}

/// A frame's bytes, read at an offset. Reads are of two bytes or more:
/// LLVM turns the bounds check of a one-byte read into a compare the
/// verifier does not learn a packet range from.
pub trait FrameBytes {
    /// `N` bytes from `offset`; `None` past the end of the frame.
    fn read<const N: usize>(&self, offset: u32) -> Option<[u8; N]>;

    /// The same, for an offset that depends on a chain of headers (IPv6
    /// extension headers, ND options): the programs copy these bytes with
    /// a helper, so that the verifier does not track each path's offset
    /// and walk every combination of header lengths.
    fn read_far<const N: usize>(&self, offset: u32) -> Option<[u8; N]> {
        self.read(offset)
    }
}

impl FrameBytes for [u8] {
    fn read<const N: usize>(&self, offset: u32) -> Option<[u8; N]> {
        let start = offset as usize;
        let bytes = self.get(start..start.checked_add(N)?)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

/// Where the guest's payload starts: past the Ethernet header and the VLAN
/// tags in the bytes (a guest writes its tags inline; two at most matter to
/// a port), with its ethertype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub offset: u32,
    pub ethertype: u16,
}

impl Payload {
    /// The payload of an untagged frame with `ethertype`.
    pub const fn untagged(ethertype: u16) -> Self {
        Self {
            offset: ETH_HLEN,
            ethertype,
        }
    }

    pub const fn of(view: &FrameView) -> Self {
        if !is_tpid(view.ethertype) {
            Self::untagged(view.ethertype)
        } else if !is_tpid(view.inline_inner) {
            Self {
                offset: ETH_HLEN + 4,
                ethertype: view.inline_inner,
            }
        } else {
            Self {
                offset: ETH_HLEN + 8,
                ethertype: view.inline2_inner,
            }
        }
    }
}

/// What the guards concluded about a frame they let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Passed {
    /// Sent to a group (broadcast or multicast) address: storm control
    /// counts it.
    pub to_group: bool,
}

/// Whether a frame from the guest that its VLAN policy passed may go.
#[inline(always)]
pub fn check<F: FrameBytes + ?Sized>(
    policy: &EndpointPolicy,
    frame: &F,
    payload: Payload,
) -> Result<Passed, DropReason> {
    let dst: [u8; 6] = frame.read(0).ok_or(DropReason::Runt)?;
    let to_group = dst[0] & 1 != 0;
    if to_group
        && !policy.has(POLICY_ALLOW_BPDU)
        && (dst == STP_GROUP || dst == SLOW_PROTOCOLS_GROUP)
    {
        return Err(DropReason::Bpdu);
    }
    match payload.ethertype {
        ETHERTYPE_ARP if policy.has(POLICY_GUARD_IP) => arp(policy, frame, payload.offset)?,
        ETHERTYPE_IPV4 => ipv4(policy, frame, payload.offset)?,
        ETHERTYPE_IPV6 => ipv6(policy, frame, payload.offset)?,
        // Under more tags than the guards follow (a tunnel carries a
        // customer's stacks): what it holds could be anything a guard
        // looks for, so it does not go while one would look.
        ethertype
            if is_tpid(ethertype)
                && (policy.has(POLICY_GUARD_IP)
                    || !policy.has(POLICY_ALLOW_DHCP_SERVER)
                    || !policy.has(POLICY_ALLOW_RA)) =>
        {
            return Err(DropReason::Unparsable);
        }
        _ => {}
    }
    Ok(Passed { to_group })
}

/// ARP from a guest with `--ip`: an Ethernet/IPv4 ARP whose sender is the
/// endpoint (its MAC, one of its addresses, or 0.0.0.0 for an RFC 5227
/// probe, which no receiver learns from).
#[inline(always)]
fn arp<F: FrameBytes + ?Sized>(
    policy: &EndpointPolicy,
    frame: &F,
    at: u32,
) -> Result<(), DropReason> {
    // htype, ptype, hlen, plen, oper, sha, spa.
    let header: [u8; 18] = frame.read(at).ok_or(DropReason::ArpSpoofed)?;
    let ethernet_ipv4 = header[..6] == [0x00, 0x01, 0x08, 0x00, 6, 4];
    let sha = [
        header[8], header[9], header[10], header[11], header[12], header[13],
    ];
    let spa = [header[14], header[15], header[16], header[17]];
    let sha_ok = policy.allows_mac_spoofing() || sha == policy.mac;
    let spa_ok = spa == [0; 4] || policy.addresses.allows_v4(spa);
    if ethernet_ipv4 && sha_ok && spa_ok {
        Ok(())
    } else {
        Err(DropReason::ArpSpoofed)
    }
}

#[inline(always)]
fn ipv4<F: FrameBytes + ?Sized>(
    policy: &EndpointPolicy,
    frame: &F,
    at: u32,
) -> Result<(), DropReason> {
    let guard_ip = policy.has(POLICY_GUARD_IP);
    let guard_dhcp = !policy.has(POLICY_ALLOW_DHCP_SERVER);
    if !guard_ip && !guard_dhcp {
        return Ok(());
    }
    // Version/IHL .. source address.
    let header: [u8; 16] = frame.read(at).ok_or(DropReason::Unparsable)?;
    let header_len = u32::from(header[0] & 0x0f) * 4;
    if header[0] >> 4 != 4 || header_len < 20 {
        return Err(DropReason::Unparsable);
    }
    let first_fragment = u16::from_be_bytes([header[6], header[7]]) & 0x1fff == 0;
    let udp = header[9] == IPPROTO_UDP && first_fragment;
    let ports = |frame: &F| -> Result<(u16, u16), DropReason> {
        let ports: [u8; 4] = frame.read(at + header_len).ok_or(DropReason::Unparsable)?;
        Ok((
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        ))
    };
    let source = [header[12], header[13], header[14], header[15]];
    if guard_ip && !policy.addresses.allows_v4(source) {
        // A client without an address yet: DHCP discover and request.
        let dhcp_client =
            source == [0; 4] && udp && ports(frame)? == (DHCPV4_CLIENT_PORT, DHCPV4_SERVER_PORT);
        if !dhcp_client {
            return Err(DropReason::IpSpoofed);
        }
    }
    if guard_dhcp && udp && ports(frame)?.0 == DHCPV4_SERVER_PORT {
        return Err(DropReason::DhcpServer);
    }
    Ok(())
}

/// Whether an IPv6 next-header value is an extension header this parser
/// follows, and how to measure it: `Some(true)` for the 4-octet units of
/// an authentication header, `Some(false)` for the 8-octet units of the
/// others (the fragment header's field is reserved, zero, so 8 octets).
#[inline(always)]
const fn extension(next: u8) -> Option<bool> {
    match next {
        // Hop-by-hop, routing, fragment, destination options, mobility,
        // HIP, shim6, and two reserved for experiments.
        0 | 43 | 44 | 60 | 135 | 139 | 140 | 253 | 254 => Some(false),
        51 => Some(true),
        _ => None,
    }
}

/// Where a walk along IPv6 extension headers is.
#[derive(Clone, Copy)]
struct Chain {
    /// The next-header value of the last header read.
    next: u8,
    /// Where the header it names starts.
    offset: u32,
    /// A fragment header of a later fragment was met: nothing follows.
    later_fragment: bool,
}

/// One step along the chain: past the extension header `chain.next`
/// names, if it names one; the chain as it was otherwise.
#[inline(always)]
fn follow<F: FrameBytes + ?Sized>(frame: &F, chain: Chain) -> Result<Chain, DropReason> {
    if chain.later_fragment {
        return Ok(chain);
    }
    let Some(auth) = extension(chain.next) else {
        return Ok(chain);
    };
    if chain.offset > MAX_HEADER_OFFSET {
        return Err(DropReason::Unparsable);
    }
    let ext: [u8; 4] = frame.read_far(chain.offset).ok_or(DropReason::Unparsable)?;
    let fragment = chain.next == 44;
    if fragment && u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
        return Ok(Chain {
            later_fragment: true,
            ..chain
        });
    }
    let len = if auth {
        (u32::from(ext[1]) + 2) * 4
    } else if fragment {
        8
    } else {
        (u32::from(ext[1]) + 1) * 8
    };
    Ok(Chain {
        next: ext[0],
        offset: chain.offset + len,
        later_fragment: false,
    })
}

#[inline(always)]
fn ipv6<F: FrameBytes + ?Sized>(
    policy: &EndpointPolicy,
    frame: &F,
    at: u32,
) -> Result<(), DropReason> {
    let guard_ip = policy.has(POLICY_GUARD_IP);
    let guard_ra = !policy.has(POLICY_ALLOW_RA);
    let guard_dhcp = !policy.has(POLICY_ALLOW_DHCP_SERVER);
    if !guard_ip && !guard_ra && !guard_dhcp {
        return Ok(());
    }
    // Version .. source address.
    let header: [u8; 24] = frame.read(at).ok_or(DropReason::Unparsable)?;
    if header[0] >> 4 != 6 {
        return Err(DropReason::Unparsable);
    }
    if guard_ip {
        let mut source = [0u8; 16];
        source.copy_from_slice(&header[8..24]);
        if source != [0; 16] && !policy.addresses.allows_v6_or_link_local(source) {
            return Err(DropReason::IpSpoofed);
        }
    }
    // The upper-layer header, past a bounded chain of extension headers.
    // Unrolled by hand, here and for ND options: kernels before 5.13
    // refuse a loop whose back edge lands right after a helper call (the
    // programs' `read_far`), as "back-edge from insn N to N+1".
    const _: () = assert!(MAX_EXTENSION_HEADERS == 6);
    let chain = Chain {
        next: header[6],
        offset: at + 40,
        later_fragment: false,
    };
    let chain = follow(frame, chain)?;
    let chain = follow(frame, chain)?;
    let chain = follow(frame, chain)?;
    let chain = follow(frame, chain)?;
    let chain = follow(frame, chain)?;
    let chain = follow(frame, chain)?;
    if chain.later_fragment {
        // No upper-layer header here to check; the first fragment, which
        // has it, went through this check.
        return Ok(());
    }
    if extension(chain.next).is_some() {
        return Err(DropReason::Unparsable);
    }
    let Chain { next, offset, .. } = chain;
    if offset > MAX_HEADER_OFFSET {
        return Err(DropReason::Unparsable);
    }
    match next {
        IPPROTO_ICMPV6 if guard_ra || guard_ip => {
            // Type and code: two bytes, as the programs read no single
            // byte of the packet (a verifier limit, see `FrameBytes`).
            let kind: [u8; 2] = upper(frame, offset)?;
            match kind[0] {
                ICMPV6_ROUTER_ADVERT | ICMPV6_REDIRECT if guard_ra => Err(DropReason::RouterAdvert),
                ICMPV6_NEIGHBOUR_ADVERT if guard_ip => neighbour_advert(policy, frame, offset),
                _ => Ok(()),
            }
        }
        IPPROTO_UDP if guard_dhcp => {
            let port: [u8; 2] = upper(frame, offset)?;
            if u16::from_be_bytes(port) == DHCPV6_SERVER_PORT {
                Err(DropReason::DhcpServer)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// The first bytes of the upper-layer header at `offset`. Copied, never
/// read in place, even right under the IPv6 header: an offset that only
/// ever reaches a helper stays imprecise for the verifier, so the paths
/// through the extension headers merge instead of multiplying.
#[inline(always)]
fn upper<F: FrameBytes + ?Sized, const N: usize>(
    frame: &F,
    offset: u32,
) -> Result<[u8; N], DropReason> {
    frame.read_far(offset).ok_or(DropReason::Unparsable)
}

/// A neighbour advertisement from a guest with `--ip`: for one of its
/// addresses (or a link-local one), and any target link-layer address
/// option naming the endpoint's MAC.
#[inline(always)]
fn neighbour_advert<F: FrameBytes + ?Sized>(
    policy: &EndpointPolicy,
    frame: &F,
    at: u32,
) -> Result<(), DropReason> {
    // Type, code, checksum, flags, then the target.
    let target: [u8; 16] = frame.read_far(at + 8).ok_or(DropReason::NdSpoofed)?;
    if !policy.addresses.allows_v6_or_link_local(target) {
        return Err(DropReason::NdSpoofed);
    }
    if policy.allows_mac_spoofing() {
        return Ok(());
    }
    // Unrolled by hand (see `ipv6`).
    const _: () = assert!(MAX_ND_OPTIONS == 3);
    let option = at + 24;
    let Some(option) = nd_option(policy, frame, option)? else {
        return Ok(());
    };
    let Some(option) = nd_option(policy, frame, option)? else {
        return Ok(());
    };
    let Some(option) = nd_option(policy, frame, option)? else {
        return Ok(());
    };
    // More options than are followed: one of them could name another MAC.
    match frame.read_far::<2>(option) {
        Some(_) => Err(DropReason::NdSpoofed),
        None => Ok(()),
    }
}

/// Checks the ND option at `option`; where the next one starts, or `None`
/// at the end of the frame.
#[inline(always)]
fn nd_option<F: FrameBytes + ?Sized>(
    policy: &EndpointPolicy,
    frame: &F,
    option: u32,
) -> Result<Option<u32>, DropReason> {
    if option > MAX_HEADER_OFFSET {
        return Err(DropReason::NdSpoofed);
    }
    let Some(head) = frame.read_far::<8>(option) else {
        return Ok(None);
    };
    if head[1] == 0 {
        // A zero length is invalid (RFC 4861 4.6): receivers discard it.
        return Err(DropReason::NdSpoofed);
    }
    if head[0] == ND_OPT_TARGET_LLADDR && head[2..8] != policy.mac {
        return Err(DropReason::NdSpoofed);
    }
    Ok(Some(option + u32::from(head[1]) * 8))
}

#[cfg(test)]
mod tests;
