//! The guard invariant, independent of the model and of the guards'
//! limits: what a frame from the guest that got through must not be, read
//! as a receiver would read it (every extension header followed, every
//! ND option looked at, to the end of the frame).
//!
//! - BPDU guard on: not to 01:80:c2:00:00:00 or 01:80:c2:00:00:02;
//! - `--ip`: an IPv4 source is listed (or 0.0.0.0 in a DHCP client's
//!   UDP 68 to 67); an ARP is Ethernet/IPv4, its sender MAC the
//!   endpoint's (unless it may spoof) and its sender IP listed or 0.0.0.0;
//!   an IPv6 source is listed, link-local or `::`; a neighbour
//!   advertisement's target is listed or link-local and no target
//!   link-layer option names another MAC (unless it may spoof);
//! - DHCP-server guard on: no UDP from port 67 in an IPv4 first fragment,
//!   none from port 547 in IPv6;
//! - RA guard on: no ICMPv6 router advertisement or redirect.
//!
//! The payload is looked for under every inline tag the guest wrote, not
//! just two: what the guards leave unchecked under a deeper stack is
//! reported as such (see `deep_stack`).

use crate::model::{Guards, SLOW_GROUP, STP_GROUP, is_link_local, is_tpid};
use macvswitch_common::{EndpointPolicy, POLICY_ALLOW_MAC_SPOOFING};

fn at<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

fn be16(bytes: &[u8], offset: usize) -> Option<u16> {
    at::<2>(bytes, offset).map(u16::from_be_bytes)
}

/// The payload under all inline tags: its type, its offset, and how many
/// tags were above it.
pub(super) fn payload(frame: &[u8]) -> Option<(u16, usize, usize)> {
    let mut offset = 12;
    let mut tags = 0;
    loop {
        let ethertype = be16(frame, offset)?;
        if !is_tpid(ethertype) {
            return Some((ethertype, offset + 2, tags));
        }
        offset += 4;
        tags += 1;
    }
}

/// What a violation is: a short kind (to group them) and the details.
pub(super) type Violation = (&'static str, String);

/// `Some` when `frame`, which the guest sent and the port passed, is
/// something its guards forbid.
pub(super) fn guard_violation(
    policy: &EndpointPolicy,
    guards: &Guards,
    frame: &[u8],
) -> Option<Violation> {
    let mac_checked = policy.flags & POLICY_ALLOW_MAC_SPOOFING == 0;
    if !guards.allow_bpdu
        && frame.len() >= 6
        && (frame[..6] == STP_GROUP || frame[..6] == SLOW_GROUP)
    {
        return Some((
            "bpdu",
            "a BPDU / slow-protocols frame passed the BPDU guard".into(),
        ));
    }
    let (ethertype, start, _) = payload(frame)?;
    let l3 = &frame[start..];
    match ethertype {
        0x0806 => {
            let ips = guards.ip.as_ref()?;
            let arp = at::<18>(l3, 0);
            let Some(arp) = arp.filter(|a| a[..6] == [0, 1, 8, 0, 6, 4]) else {
                return Some((
                    "arp not ethernet/ipv4",
                    "an ARP that is not Ethernet/IPv4 (or cut short) passed --ip".into(),
                ));
            };
            if mac_checked && arp[8..14] != policy.mac {
                return Some((
                    "arp sender mac",
                    "an ARP from another sender MAC passed --ip".into(),
                ));
            }
            let spa: [u8; 4] = arp[14..18].try_into().ok()?;
            (spa != [0; 4] && !ips.has_v4(spa)).then(|| {
                (
                    "arp sender ip",
                    format!("an ARP from sender IP {spa:?}, not listed, passed --ip"),
                )
            })
        }
        0x0800 => {
            let ip = at::<20>(l3, 0)?;
            if ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
                return None;
            }
            let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
            let udp_ports = (ip[9] == 17 && first_fragment)
                .then(|| {
                    let l4 = usize::from(ip[0] & 0x0f) * 4;
                    Some((be16(l3, l4)?, be16(l3, l4 + 2)?))
                })
                .flatten();
            let src: [u8; 4] = ip[12..16].try_into().ok()?;
            if let Some(ips) = &guards.ip
                && !ips.has_v4(src)
                && !(src == [0; 4] && udp_ports == Some((68, 67)))
            {
                return Some((
                    "ipv4 source",
                    format!("IPv4 from {src:?}, not listed, passed --ip"),
                ));
            }
            (!guards.allow_dhcp_server && udp_ports.is_some_and(|(src, _)| src == 67)).then(|| {
                (
                    "dhcpv4 server",
                    "a DHCPv4 server message passed the DHCP-server guard".into(),
                )
            })
        }
        0x86dd => ipv6_violation(policy, guards, mac_checked, l3),
        _ => None,
    }
}

fn ipv6_violation(
    policy: &EndpointPolicy,
    guards: &Guards,
    mac_checked: bool,
    ip: &[u8],
) -> Option<Violation> {
    let header = at::<40>(ip, 0)?;
    if header[0] >> 4 != 6 {
        return None;
    }
    let src: [u8; 16] = header[8..24].try_into().ok()?;
    if let Some(ips) = &guards.ip
        && src != [0; 16]
        && !is_link_local(&src)
        && !ips.has_v6(src)
    {
        return Some((
            "ipv6 source",
            format!(
                "IPv6 from {}, not listed, passed --ip",
                std::net::Ipv6Addr::from(src)
            ),
        ));
    }
    // Every extension header, as far as the frame goes.
    let mut next = header[6];
    let mut offset = 40;
    loop {
        let ext = at::<4>(ip, offset)?;
        let len = match next {
            0 | 43 | 60 | 135 | 139 | 140 | 253 | 254 => (usize::from(ext[1]) + 1) * 8,
            51 => (usize::from(ext[1]) + 2) * 4,
            44 if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 => return None,
            44 => 8,
            _ => break,
        };
        next = ext[0];
        offset += len;
    }
    match next {
        58 => {
            let kind = *ip.get(offset)?;
            if !guards.allow_ra && (kind == 134 || kind == 137) {
                return Some((
                    "ra or redirect",
                    format!(
                        "ICMPv6 type {kind} after {offset} bytes of IPv6 headers passed the RA \
                         guard"
                    ),
                ));
            }
            let ips = guards.ip.as_ref()?;
            if kind != 136 {
                return None;
            }
            let target: [u8; 16] = at(ip, offset + 8)?;
            if !is_link_local(&target) && !ips.has_v6(target) {
                return Some((
                    "na target",
                    format!(
                        "a neighbour advertisement for {}, not listed, passed --ip",
                        std::net::Ipv6Addr::from(target)
                    ),
                ));
            }
            let mut option = offset + 24;
            while mac_checked && let Some([kind, units]) = at::<2>(ip, option) {
                if units == 0 {
                    break;
                }
                if kind == 2
                    && let Some(mac) = at::<6>(ip, option + 2)
                    && mac != policy.mac
                {
                    return Some((
                        "na lladdr",
                        format!("a neighbour advertisement naming MAC {mac:02x?} passed --ip"),
                    ));
                }
                option += usize::from(units) * 8;
            }
            None
        }
        17 => (!guards.allow_dhcp_server && be16(ip, offset) == Some(547)).then(|| {
            (
                "dhcpv6 server",
                "a DHCPv6 server message passed the DHCP-server guard".into(),
            )
        }),
        _ => None,
    }
}
