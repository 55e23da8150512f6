//! The frame `trace` runs, from its options (or `--hex`), validated.

use std::net::IpAddr;

use macvswitch_common::{TPID_8021Q, Tag};

use crate::{
    cli::TraceArgs,
    error::{Error, Result},
    model::frame::{
        ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthAddr, FrameSpec, default_ips,
        ethertype_name,
    },
};

/// The documentation MAC range (RFC 7042): the default sender of a frame
/// towards the guest.
const DOC_MAC: EthAddr = EthAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);

/// The frame the options describe, validated.
pub(super) fn frame(args: &TraceArgs, endpoint_mac: EthAddr) -> Result<Vec<u8>> {
    if let Some(hex) = &args.hex {
        return Ok(hex.0.clone());
    }
    if args.vlan.len() > 2 {
        let value = args
            .vlan
            .iter()
            .map(|v| v.0.to_string())
            .collect::<Vec<_>>();
        return Err(Error::invalid(
            "--vlan",
            value.join(","),
            "at most two VLAN ids, outermost first",
        ));
    }
    if args.tpid.len() > args.vlan.len() {
        return Err(Error::invalid(
            "--tpid",
            args.tpid.len(),
            "one TPID per --vlan id at the most",
        ));
    }
    let ips = match (args.src_ip, args.dst_ip) {
        (None, None) => None,
        (Some(src), Some(dst)) if src.is_ipv4() == dst.is_ipv4() => Some((src, dst)),
        (Some(src), Some(dst)) => {
            return Err(Error::invalid(
                "--dst-ip",
                dst,
                format!("must be of the same family as --src-ip {src}"),
            ));
        }
        // One address given: the other from the documentation range.
        (Some(src), None) => Some((src, other_ip(src))),
        (None, Some(dst)) => Some((other_ip(dst), dst)),
    };
    let ethertype = match (args.ethertype, ips) {
        (Some(ethertype), _) => ethertype.0,
        (None, Some((IpAddr::V6(_), _))) => ETHERTYPE_IPV6,
        (None, _) => ETHERTYPE_IPV4,
    };
    let ips = match (ethertype, ips) {
        (_, None) => default_ips(ethertype),
        (ETHERTYPE_IPV4 | ETHERTYPE_ARP, Some((IpAddr::V4(_), _)))
        | (ETHERTYPE_IPV6, Some((IpAddr::V6(_), _))) => ips,
        (_, Some((src, _))) => {
            return Err(Error::invalid(
                "--src-ip",
                src,
                format!(
                    "does not fit --ethertype {}: addresses go with ipv4 and arp (IPv4) or ipv6 (IPv6)",
                    ethertype_name(ethertype)
                ),
            ));
        }
    };
    let tags = args
        .vlan
        .iter()
        .enumerate()
        .map(|(i, vid)| Tag {
            tpid: args.tpid.get(i).map_or(TPID_8021Q, |t| t.0),
            tci: vid.0,
        })
        .collect();
    let (src, dst) = if args.to_guest {
        (
            args.src.unwrap_or(DOC_MAC),
            args.dst.unwrap_or(endpoint_mac),
        )
    } else {
        (
            args.src.unwrap_or(endpoint_mac),
            args.dst.unwrap_or(EthAddr::BROADCAST),
        )
    };
    Ok(FrameSpec {
        dst,
        src,
        tags,
        ethertype,
        ips,
    }
    .bytes())
}

/// The documentation address after (or before) `ip`.
fn other_ip(ip: IpAddr) -> IpAddr {
    let (a, b) = default_ips(if ip.is_ipv4() {
        ETHERTYPE_IPV4
    } else {
        ETHERTYPE_IPV6
    })
    .expect("IP ethertypes have defaults");
    if ip == b { a } else { b }
}
