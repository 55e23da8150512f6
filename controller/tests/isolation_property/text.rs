//! How the property run shows frames, policies and outcomes in its reports.

use super::*;

pub(super) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for (i, b) in bytes.iter().enumerate() {
        if i == 12 || (i > 12 && i < 24 && (i - 12) % 4 == 0) {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(super) fn tag_text(tag: Option<Tag>) -> String {
    tag.map_or("-".into(), |t| {
        format!("{:04x}/{:04x} (vid {})", t.tpid, t.tci, t.vid())
    })
}

pub(super) fn vid_ranges(policy: &EndpointPolicy) -> String {
    if policy.vids == VidSet::EMPTY {
        "-".into()
    } else {
        policy.vids.to_string()
    }
}

pub(super) fn policy_text(policy: Option<&EndpointPolicy>) -> String {
    let Some(p) = policy else {
        return "no policy entry".into();
    };
    let kind = match p.kind {
        PORT_UNTAGGED => "untagged".to_string(),
        PORT_ACCESS => format!("access vlan {}", p.vlan),
        PORT_TRUNK => format!(
            "trunk {} native {}{}",
            vid_ranges(p),
            p.vlan,
            if p.has(POLICY_NATIVE_TAGGED) {
                " (tagged)"
            } else {
                ""
            }
        ),
        PORT_TUNNEL => format!(
            "tunnel svid {} cvlans {}",
            p.vlan,
            if p.has(POLICY_CVLANS_LIMITED) {
                vid_ranges(p)
            } else {
                "any".into()
            }
        ),
        other => format!("kind {other}?"),
    };
    let mac = p.mac.map(|b| format!("{b:02x}")).join(":");
    format!(
        "{kind}; priority {}; spoofing {}; mac {mac}; {}",
        if p.has(POLICY_PRIORITY_SET) {
            p.priority.to_string()
        } else {
            "-".into()
        },
        if p.allows_mac_spoofing() {
            "allowed"
        } else {
            "no"
        },
        guards_text(p)
    )
}

/// The guards as the policy encodes them for the programs: `--ip` decoded
/// from the prefix table, the allow flags.
pub(super) fn guards_text(p: &EndpointPolicy) -> String {
    let mut words = Vec::new();
    if p.has(POLICY_GUARD_IP) {
        let guard = &p.addresses;
        let v4 = guard.v4.iter().take(guard.v4_count as usize).map(|prefix| {
            let addr = std::net::Ipv4Addr::from(prefix.addr.to_ne_bytes());
            format!("{addr}/{}", prefix.mask.count_ones())
        });
        let v6 = guard.v6.iter().take(guard.v6_count as usize).map(|prefix| {
            let mut octets = [0u8; 16];
            octets[..8].copy_from_slice(&prefix.addr[0].to_ne_bytes());
            octets[8..].copy_from_slice(&prefix.addr[1].to_ne_bytes());
            let len = prefix.mask[0].count_ones() + prefix.mask[1].count_ones();
            format!("{}/{len}", std::net::Ipv6Addr::from(octets))
        });
        words.push(format!("ip {}", v4.chain(v6).collect::<Vec<_>>().join(",")));
    } else {
        words.push("no --ip".into());
    }
    for (flag, name) in [
        (POLICY_ALLOW_DHCP_SERVER, "dhcp-server"),
        (POLICY_ALLOW_RA, "ra"),
        (POLICY_ALLOW_BPDU, "bpdu"),
    ] {
        if p.has(flag) {
            words.push(format!("allow {name}"));
        }
    }
    words.join(", ")
}

pub(super) fn port_kind(policy: Option<&EndpointPolicy>) -> &'static str {
    match policy.map(|p| p.kind) {
        None => "no-policy",
        Some(PORT_UNTAGGED) => "untagged",
        Some(PORT_ACCESS) => "access",
        Some(PORT_TRUNK) => "trunk",
        Some(PORT_TUNNEL) => "tunnel",
        Some(_) => "unknown",
    }
}

pub(super) fn verdict_text(verdict: Verdict) -> String {
    match verdict {
        Verdict::Pass => "pass".into(),
        Verdict::Drop(Some(reason)) => reason.name().into(),
        Verdict::Drop(None) => "drop".into(),
    }
}

/// A short name for a kind of finding, to group them.
pub(super) fn kind_text(
    what: &str,
    dir: Dir,
    policy: Option<&EndpointPolicy>,
    meta: Option<Tag>,
    model: &Outcome,
    got: &str,
) -> String {
    format!(
        "{what} {dir:?} {}{}: model {} got {got}",
        port_kind(policy),
        if meta.is_some() {
            " (metadata tag)"
        } else {
            ""
        },
        verdict_text(model.verdict)
    )
}

pub(super) fn outcome_text(o: &Outcome) -> String {
    format!(
        "{:?}, bytes [{}], meta {}, pushed {}, popped {}, vlan {:?}",
        o.verdict,
        hex(&o.bytes),
        tag_text(o.meta),
        tag_text(o.pushed),
        o.popped,
        o.vlan
    )
}

pub(super) fn case_text(
    what: &str,
    dir: Dir,
    policy: Option<&EndpointPolicy>,
    bytes: &[u8],
    meta: Option<Tag>,
) -> String {
    format!(
        "{what} {dir:?}\n  policy: {}\n  frame ({} bytes): [{}]\n  skb metadata tag: {}",
        policy_text(policy),
        bytes.len(),
        hex(bytes),
        tag_text(meta)
    )
}

/// What the counters went up by, as a verdict.
pub(super) fn counted(before: &EndpointCounters, after: &EndpointCounters) -> String {
    if after.to_guest_packets != before.to_guest_packets
        || after.from_guest_packets != before.from_guest_packets
    {
        return "pass".into();
    }
    let reasons: Vec<&str> = DropReason::ALL
        .iter()
        .filter(|r| after.drops[**r as usize] != before.drops[**r as usize])
        .map(|r| r.name())
        .collect();
    if reasons.is_empty() {
        "nothing counted".into()
    } else {
        reasons.join("+")
    }
}
