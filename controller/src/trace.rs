//! `macvswitch trace NAME --from-guest|--to-guest FRAME`: a frame's fate
//! in the endpoint's real program, as Open vSwitch's `ofproto/trace` tells
//! it. The program runs under BPF_PROG_TEST_RUN against the live policy
//! maps with private counters (see `kernel::datapath::trace`); the steps
//! are the same decision read on the host with `macvswitch_common`'s
//! functions, and a trace whose two readings disagree fails.

use macvswitch_common::{Action, Decision, DropReason, Tag, names};
use serde_json::{Value, json};

use crate::{
    cli::TraceArgs,
    error::{Error, Result},
    kernel::datapath::trace::{TestRunResult, test_run},
    model::frame::{EthAddr, Summary, TagPlace, tag_json, tag_text},
    ops::instance::Instance,
};

mod explain;
mod frame;

use explain::{action_text, describe_policy, host_decision};
use frame::frame;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
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
