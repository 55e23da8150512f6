//! The host's reading of a frame's fate: the policy in words and each
//! decision step, from the functions the programs call.

use macvswitch_common::{
    Action, Decision, EndpointPolicy, FrameView, POLICY_ALLOW_BPDU, POLICY_ALLOW_DHCP_SERVER,
    POLICY_ALLOW_RA, POLICY_CHECK_SENDERS, POLICY_CVLANS_LIMITED, POLICY_GUARD_IP, POLICY_ISOLATED,
    POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, POLICY_PROMISCUOUS, PORT_ACCESS, PORT_TRUNK,
    PORT_TUNNEL, SourceInfo,
    decide::VIEW_BYTES,
    guard::{self, Payload},
    isolation::isolation,
};

use crate::model::frame::{EthAddr, Summary, tag_text};

/// The policy in words, as the live map holds it.
pub(super) fn describe_policy(policy: &EndpointPolicy) -> Vec<String> {
    let mut words = Vec::new();
    words.push(match policy.kind {
        PORT_ACCESS => format!(
            "access port on VLAN {}: untagged at the guest, 802.1Q {} outside",
            policy.vlan, policy.vlan
        ),
        PORT_TRUNK => {
            let mut line = format!("trunk carrying VLANs {}", policy.vids);
            if policy.vlan != 0 {
                let how = if policy.has(POLICY_NATIVE_TAGGED) {
                    "tagged"
                } else {
                    "untagged"
                };
                line += &format!(", native VLAN {} ({how} at the guest)", policy.vlan);
            }
            line
        }
        PORT_TUNNEL => {
            let mut line = format!(
                "dot1q-tunnel into service VLAN {} (802.1ad outside)",
                policy.vlan
            );
            if policy.has(POLICY_CVLANS_LIMITED) {
                line += &format!(", customer VLANs {} only", policy.vids);
            }
            line
        }
        _ => "untagged port: untagged frames only".into(),
    });
    if policy.has(POLICY_PRIORITY_SET) {
        words.push(format!("pushed tags carry PCP {}", policy.priority & 7));
    }
    words.push(if policy.allows_mac_spoofing() {
        "any source MAC from the guest (spoofing allowed)".into()
    } else {
        format!("source MAC from the guest must be {}", EthAddr(policy.mac))
    });
    words.push(if policy.has(POLICY_PROMISCUOUS) {
        "private VLAN: promiscuous".into()
    } else if policy.has(POLICY_ISOLATED) {
        "private VLAN: isolated (the wire only)".into()
    } else if policy.community != 0 {
        format!("private VLAN: community {}", policy.community)
    } else {
        "no private-VLAN restriction".into()
    });
    if policy.has(POLICY_CHECK_SENDERS) {
        words.push("frames to the guest: local senders looked up".into());
    }
    words.push(guards_text(policy));
    words
}

/// The port-security guards in the policy, in words.
fn guards_text(policy: &EndpointPolicy) -> String {
    let on = |allowed_flag: u32, name: &str| {
        if policy.has(allowed_flag) {
            format!("{name} allowed")
        } else {
            format!("{name} dropped")
        }
    };
    let mut line = format!(
        "guards from the guest: {}, {}, {}",
        on(POLICY_ALLOW_DHCP_SERVER, "DHCP server messages"),
        on(POLICY_ALLOW_RA, "router advertisements"),
        on(POLICY_ALLOW_BPDU, "BPDUs"),
    );
    if policy.has(POLICY_GUARD_IP) {
        line += &format!(
            "; sources checked against {} IPv4 and {} IPv6 prefixes (--ip)",
            policy.addresses.v4_count, policy.addresses.v6_count
        );
    }
    if let Some(pps) = 1_000_000_000u32.checked_div(policy.storm_interval_ns) {
        line += &format!("; broadcast and multicast at most {pps}/s");
    }
    line
}

pub(super) fn action_text(action: Action, carried: bool) -> String {
    let place = if carried {
        "carried in skb->mark for the lower device's egress program"
    } else {
        "into skb metadata"
    };
    match action {
        Action::Pass => "pass unchanged".into(),
        Action::Push(tag) => format!("push {} ({place})", tag_text(&tag)),
        Action::Pop => "pop the outer tag".into(),
        Action::PopPush(tag) => format!("replace the priority tag by {} ({place})", tag_text(&tag)),
        Action::Drop(reason) => format!("drop: {} ({})", reason.name(), reason.help()),
    }
}

/// The host's reading of the decision, step by step.
pub(super) fn host_decision(
    policy: &EndpointPolicy,
    ifindex: u32,
    to_guest: bool,
    frame: &[u8],
    summary: Option<&Summary>,
    source: Option<SourceInfo>,
    steps: &mut Vec<String>,
) -> Decision {
    let mut header = [0u8; VIEW_BYTES];
    let n = frame.len().min(VIEW_BYTES);
    header[..n].copy_from_slice(&frame[..n]);
    // Under BPF_PROG_TEST_RUN every tag is in the bytes.
    let view = FrameView::from_header(frame.len() as u32, &header, None);
    match summary {
        None => steps.push("length: shorter than an Ethernet header (a runt)".into()),
        Some(summary) => {
            if !to_guest {
                steps.push(if policy.allows_mac_spoofing() {
                    format!("source MAC {}: any is allowed", summary.src)
                } else if summary.src.0 == policy.mac {
                    format!("source MAC {}: the endpoint's", summary.src)
                } else {
                    format!(
                        "source MAC {}: not the endpoint's {}",
                        summary.src,
                        EthAddr(policy.mac)
                    )
                });
            }
            steps.push(match summary.tags.as_slice() {
                [] => "tags: none".into(),
                tags => format!(
                    "tags, outermost first: {}",
                    tags.iter()
                        .map(|(tag, _)| tag_text(tag))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let mut decision = if to_guest {
        macvswitch_common::to_guest(policy, &view)
    } else {
        macvswitch_common::from_guest(policy, &view)
    };
    let rule = if to_guest {
        "port rule towards the guest"
    } else {
        "port rule from the guest"
    };
    steps.push(format!("{rule}: {}", action_text(decision.action, false)));
    if !to_guest && !matches!(decision.action, Action::Drop(_)) {
        // The private copy's storm buckets are fresh and full: a trace
        // never meets the limit, so only the frame's own guards apply.
        match guard::check(policy, frame, Payload::of(&view)) {
            Ok(_) => steps.push("port-security guards: passed".into()),
            Err(reason) => {
                steps.push(format!(
                    "port-security guards: drop: {} ({})",
                    reason.name(),
                    reason.help()
                ));
                decision.action = Action::Drop(reason);
            }
        }
    }
    if to_guest && policy.has(POLICY_CHECK_SENDERS) && !matches!(decision.action, Action::Drop(_)) {
        let src = EthAddr(view.src);
        match source {
            None => steps.push(format!(
                "sender {src}: no local endpoint (from the wire): allowed"
            )),
            Some(source) => match isolation(policy, ifindex, &source) {
                None => steps.push(format!(
                    "sender {src}: local endpoint ifindex {}: allowed",
                    source.ifindex
                )),
                Some(reason) => {
                    steps.push(format!(
                        "sender {src}: local endpoint ifindex {}: drop: {} ({})",
                        source.ifindex,
                        reason.name(),
                        reason.help()
                    ));
                    decision.action = Action::Drop(reason);
                }
            },
        }
    }
    if let Some(vlan) = decision.vlan {
        steps.push(format!("counted under VLAN {vlan}"));
    }
    decision
}
