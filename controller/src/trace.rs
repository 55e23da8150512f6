//! `macvswitch trace NAME --from-guest|--to-guest FRAME`: a frame's fate
//! in the endpoint's real program, as Open vSwitch's `ofproto/trace` tells
//! it. The program runs under BPF_PROG_TEST_RUN against the live policy
//! maps with private counters (see `kernel::datapath::trace`); the steps
//! are the same decision read on the host with `macvswitch_common`'s
//! functions, and a trace whose two readings disagree fails.

use std::net::IpAddr;

use macvswitch_common::{
    Action, Decision, DropReason, EndpointPolicy, FrameView, POLICY_CHECK_SENDERS,
    POLICY_CVLANS_LIMITED, POLICY_ISOLATED, POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET,
    POLICY_PROMISCUOUS, PORT_ACCESS, PORT_TRUNK, PORT_TUNNEL, TPID_8021Q, Tag, decide::VIEW_BYTES,
    isolation::isolation, names,
};
use serde_json::{Value, json};

use crate::{
    cli::TraceArgs,
    error::{Error, Result},
    kernel::datapath::trace::{TestRunResult, test_run},
    model::frame::{
        ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthAddr, FrameSpec, Summary, TagPlace,
        default_ips, tag_json, tag_text,
    },
    ops::instance::Instance,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
/// The documentation MAC range (RFC 7042): the default sender of a frame
/// towards the guest.
const DOC_MAC: EthAddr = EthAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);

/// What happened to the frame, and why.
#[derive(Debug)]
pub struct Trace {
    pub endpoint: String,
    pub to_guest: bool,
    pub frame: Vec<u8>,
    pub summary: Option<Summary>,
    pub policy: Vec<String>,
    pub steps: Vec<String>,
    pub pass: bool,
    pub reason: Option<DropReason>,
    /// The tag pushed, and where it went (skb metadata, or the mark).
    pub pushed: Option<(Tag, &'static str)>,
    pub popped: Option<Tag>,
    pub return_code: u32,
    /// Why the program's verdict differs from the host's reading, if it does.
    pub disagreement: Option<String>,
}

/// The frame the options describe, validated.
fn frame(args: &TraceArgs, endpoint_mac: EthAddr) -> Result<Vec<u8>> {
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
                    crate::model::frame::ethertype_name(ethertype)
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

/// The policy in words, as the live map holds it.
fn describe_policy(policy: &EndpointPolicy) -> Vec<String> {
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
    words
}

fn action_text(action: Action, carried: bool) -> String {
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
fn host_decision(
    policy: &EndpointPolicy,
    ifindex: u32,
    to_guest: bool,
    frame: &[u8],
    summary: Option<&Summary>,
    source: Option<macvswitch_common::SourceInfo>,
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

/// Runs the trace.
pub fn run(instance: &Instance, args: &TraceArgs) -> Result<Trace> {
    let record = instance.get(&args.name)?;
    let frame = frame(args, EthAddr(record.mac.octets()))?;
    let maps = instance.maps()?.ok_or_else(|| {
        Error::Refused(format!(
            "no data path is loaded under {}",
            instance.pins.root().display()
        ))
    })?;
    let policy = maps.policy(record.ifindex)?.ok_or_else(|| {
        Error::Refused(format!(
            "endpoint {} (ifindex {}) has no policy in the live map; `macvswitch restore` puts it back",
            record.name, record.ifindex
        ))
    })?;
    let carriage = maps.carriage()?;
    let carried_by_mark =
        !args.to_guest && carriage.is_some() && maps.tags_from_mark(policy.lower)?;
    let summary = Summary::read(frame.len() as u32, &frame, &[]);
    let source = match &summary {
        Some(summary) => maps.source(policy.lower, summary.src.0)?,
        None => None,
    };
    let mut steps = Vec::new();
    let decision = host_decision(
        &policy,
        record.ifindex,
        args.to_guest,
        &frame,
        summary.as_ref(),
        source,
        &mut steps,
    );
    if carried_by_mark && matches!(decision.action, Action::Push(_) | Action::PopPush(_)) {
        steps.push(format!(
            "the lower device {}'s egress program puts the tag on (its program is attached)",
            record.lower
        ));
    }
    let program = if args.to_guest {
        names::PROG_TO_GUEST
    } else {
        names::PROG_FROM_GUEST
    };
    let kernel = test_run(&instance.pins, program, record.ifindex, policy.slot, &frame)?;
    let outcome = kernel_outcome(&kernel, carriage.as_ref(), &frame)?;
    steps.push(format!(
        "program {program} run by the kernel (BPF_PROG_TEST_RUN on ifindex {}): returned {} ({}), counted {} in a private copy of the counters",
        record.ifindex,
        kernel.return_code,
        match kernel.return_code {
            TC_ACT_OK => "TC_ACT_OK",
            TC_ACT_SHOT => "TC_ACT_SHOT",
            _ => "unexpected",
        },
        match outcome.reason {
            Some(reason) => format!("a drop ({})", reason.name()),
            None => "a pass".into(),
        }
    ));
    let disagreement = disagreement(&decision, &outcome);
    steps.push(match &disagreement {
        None => "the program's verdict agrees with the host's reading of the policy".into(),
        Some(why) => format!("DISAGREEMENT: {why}"),
    });
    Ok(Trace {
        endpoint: record.name.to_string(),
        to_guest: args.to_guest,
        frame,
        summary,
        policy: describe_policy(&policy),
        steps,
        pass: outcome.pass,
        reason: outcome.reason,
        pushed: outcome.pushed,
        popped: outcome.popped,
        return_code: kernel.return_code,
        disagreement,
    })
}

struct Outcome {
    pass: bool,
    reason: Option<DropReason>,
    pushed: Option<(Tag, &'static str)>,
    popped: Option<Tag>,
}

fn kernel_outcome(
    kernel: &TestRunResult,
    carriage: Option<&macvswitch_common::MarkCarriage>,
    frame: &[u8],
) -> Result<Outcome> {
    let counters = &kernel.counters;
    let passed = counters.from_guest_packets + counters.to_guest_packets;
    let reason = DropReason::ALL
        .iter()
        .copied()
        .find(|reason| counters.drops[*reason as usize] > 0);
    if passed == 0 && reason.is_none() {
        // The program found no policy: it ran on another device.
        return Err(Error::Refused(
            "the program counted nothing: this kernel ran BPF_PROG_TEST_RUN on another device than the endpoint (it ignores __sk_buff.ifindex), so trace cannot run here".into(),
        ));
    }
    let pushed = if kernel.pushed != 0 {
        Some((
            Tag {
                tpid: (kernel.pushed >> 16) as u16,
                tci: kernel.pushed as u16,
            },
            "metadata",
        ))
    } else {
        carriage
            .and_then(|c| c.carried(kernel.mark))
            .map(|tag| (tag, "mark"))
    };
    // Tags are inline under a test run: a pop shortens the bytes, by 8
    // when the kernel also moves the next tag into metadata (the guest's
    // tap read puts that one back).
    let shorter = frame.len().saturating_sub(kernel.data_out.len());
    let popped = (matches!(shorter, 4 | 8) && frame.len() >= 18).then(|| Tag {
        tpid: u16::from_be_bytes([frame[12], frame[13]]),
        tci: u16::from_be_bytes([frame[14], frame[15]]),
    });
    Ok(Outcome {
        pass: kernel.return_code == TC_ACT_OK,
        reason: if kernel.return_code == TC_ACT_OK {
            None
        } else {
            reason
        },
        pushed: if kernel.return_code == TC_ACT_OK {
            pushed
        } else {
            None
        },
        popped: if kernel.return_code == TC_ACT_OK {
            popped
        } else {
            None
        },
    })
}

/// Where the program and the host's reading differ, if they do.
fn disagreement(decision: &Decision, outcome: &Outcome) -> Option<String> {
    let expected_pushed = match decision.action {
        Action::Push(tag) | Action::PopPush(tag) => Some(tag),
        _ => None,
    };
    let expected_pop = matches!(decision.action, Action::Pop | Action::PopPush(_));
    let host = action_text(decision.action, false);
    match decision.action {
        Action::Drop(reason) if outcome.pass || outcome.reason != Some(reason) => Some(format!(
            "the host expects {host}, the program {}",
            outcome_text(outcome)
        )),
        Action::Drop(_) => None,
        _ if !outcome.pass => Some(format!(
            "the host expects {host}, the program {}",
            outcome_text(outcome)
        )),
        _ if outcome.pushed.map(|(tag, _)| tag) != expected_pushed
            || outcome.popped.is_some() != expected_pop =>
        {
            Some(format!(
                "the host expects {host}, the program {}",
                outcome_text(outcome)
            ))
        }
        _ => None,
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    if !outcome.pass {
        return format!(
            "dropped it ({})",
            outcome.reason.map_or("no reason counted", DropReason::name)
        );
    }
    let mut text = "passed it".to_string();
    if let Some(tag) = outcome.popped {
        text += &format!(", popping {}", tag_text(&tag));
    }
    if let Some((tag, place)) = outcome.pushed {
        text += &format!(", pushing {} ({place})", tag_text(&tag));
    }
    text
}

impl Trace {
    fn direction(&self) -> &'static str {
        if self.to_guest {
            "to-guest"
        } else {
            "from-guest"
        }
    }

    fn frame_text(&self) -> String {
        match &self.summary {
            Some(summary) => summary.to_string(),
            None => format!("{} bytes (a runt)", self.frame.len()),
        }
    }

    pub fn text(&self) -> String {
        let mut out = format!("trace {} {}\n", self.endpoint, self.direction());
        out += &format!("frame: {}\n", self.frame_text());
        out += "policy:\n";
        for line in &self.policy {
            out += &format!("    {line}\n");
        }
        out += "steps:\n";
        for (i, step) in self.steps.iter().enumerate() {
            out += &format!("  {}. {step}\n", i + 1);
        }
        out += &match (self.pass, self.reason) {
            (true, _) => "verdict: pass\n".to_string(),
            (false, Some(reason)) => format!("verdict: drop ({})\n", reason.name()),
            (false, None) => "verdict: drop\n".to_string(),
        };
        let mut tags = Vec::new();
        if let Some(tag) = self.popped {
            tags.push(format!("popped {}", tag_text(&tag)));
        }
        if let Some((tag, place)) = self.pushed {
            tags.push(format!("pushed {} ({place})", tag_text(&tag)));
        }
        out += &format!(
            "tags: {}\n",
            if tags.is_empty() {
                "unchanged".to_string()
            } else {
                tags.join(", ")
            }
        );
        out
    }

    pub fn json(&self) -> Value {
        let hex: String = self.frame.iter().map(|b| format!("{b:02x}")).collect();
        let mut frame = self.summary.as_ref().map_or(json!({}), Summary::json);
        frame["len"] = json!(self.frame.len());
        frame["hex"] = json!(hex);
        json!({
            "endpoint": self.endpoint,
            "direction": self.direction().replace('-', "_"),
            "frame": frame,
            "policy": self.policy,
            "steps": self.steps,
            "verdict": if self.pass { "pass" } else { "drop" },
            "reason": self.reason.map(DropReason::name),
            "tags": {
                "pushed": self.pushed.map(|(tag, place)| {
                    let mut value = tag_json(&tag, None);
                    value["where"] = json!(place);
                    value
                }),
                "popped": self.popped.map(|tag| tag_json(&tag, Some(TagPlace::Inline))),
            },
            "return_code": self.return_code,
            "agrees": self.disagreement.is_none(),
        })
    }
}
