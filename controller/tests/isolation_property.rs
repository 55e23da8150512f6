//! Proof of isolation: random and hostile frames across random port
//! policies, through the real TC programs (BPF_PROG_TEST_RUN) and through
//! the pure decision functions in `common/`, each compared with a reference
//! model written from the README's port model (`isolation_property/model.rs`),
//! plus an isolation invariant checked on every output independently of the
//! model.
//!
//! From the guest, the access-port guards (issue 12) follow the VLAN
//! decision, in the programs and on the pure path (`decide::from_guest`,
//! then `guard::check`), and in the model, which has its own guard code.
//! Policies get random guard settings (`--ip` lists through the
//! controller's own parsing, the three allow flags), frames include honest
//! and hostile ARP, IPv4, IPv6 with extension headers, ND, RA, DHCP and
//! DHCPv6 and BPDUs under the port's tags (`generate.rs`), and every frame
//! from the guest that gets through is held to a guard invariant read as a
//! receiver would (`guard_invariant.rs`). Storm control needs a clock: the
//! policies set no `--storm-limit`, it is left to a rate test of its own.
//! The run prints the verdicts per kind of generated frame and per drop
//! reason, and (from 10,000 frames on) fails unless the pure functions and
//! the programs each dropped frames for every guard reason but `storm`.
//!
//! `cargo test` runs a short, seeded run (50,000 frames); `cargo xtask fuzz`
//! runs a million in a release build. Environment:
//! - `MSW_FUZZ_SEED`: the seed (decimal or 0x-hex); printed on every run;
//! - `MSW_FUZZ_FRAMES`: how many frames (each goes through both programs);
//! - `MSW_FUZZ_PER_POLICY`: frames per random policy (default 250).
//!
//! Under BPF_PROG_TEST_RUN a frame's tags are all inline: the case of an
//! outer tag in skb metadata goes through the pure functions only (every
//! frame is also tried that way). Frames shorter than an Ethernet header,
//! which BPF_PROG_TEST_RUN refuses, likewise.
//!
//! Towards the guest, a frame from another local endpoint carries its outer
//! tag in `skb->mark`: every frame is also tried that way, through the pure
//! functions and the real program (the mark set in the test run's context),
//! and must come out as the same frame with that tag in metadata would.

#[path = "isolation_property/check.rs"]
mod check;
#[path = "isolation_property/generate.rs"]
mod generate;
#[path = "isolation_property/guard_invariant.rs"]
mod guard_invariant;
#[path = "isolation_property/kernel.rs"]
mod kernel;
#[path = "isolation_property/model.rs"]
mod model;
#[path = "isolation_property/text.rs"]
mod text;

use check::*;
use kernel::*;
use text::*;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    fmt::Write as _,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{TestRun, TestRunOptions},
};
use macvswitch::kernel::datapath;
use macvswitch_common::{
    Action, Decision, DropReason, EndpointCounters, EndpointPolicy, FrameView, MarkCarriage,
    POLICY_ALLOW_BPDU, POLICY_ALLOW_DHCP_SERVER, POLICY_ALLOW_RA, POLICY_CVLANS_LIMITED,
    POLICY_GUARD_IP, POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, PORT_ACCESS, PORT_TRUNK,
    PORT_TUNNEL, PORT_UNTAGGED, VidSet, VlanKey, decide::VIEW_BYTES, guard, names,
};

use generate::GenPolicy;
use macvswitch_tests::rng::Rng;
use model::{Dir, Outcome, TPID_AD, TPID_Q, Tag, Verdict, is_tpid};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
/// BPF_PROG_TEST_RUN runs TC programs on the loopback device.
const TEST_IFINDEX: u32 = 1;
/// `sizeof(struct __sk_buff)` and `offsetof(struct __sk_buff, cb)` in the
/// kernel UAPI (include/uapi/linux/bpf.h): 12 u32 fields precede `cb[5]`.
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_CB: usize = 48;
/// `offsetof(struct __sk_buff, mark)`: after `len` and `pkt_type`.
const SK_BUFF_MARK: usize = 8;
/// How many kinds of disagreements and violations are printed.
const SHOW_KINDS: usize = 40;
/// The guards' drop reasons a run must show (storm control, which needs a
/// clock, is left to its own rate test: the policies here set no limit).
const GUARD_REASONS: [DropReason; 7] = [
    DropReason::IpSpoofed,
    DropReason::ArpSpoofed,
    DropReason::NdSpoofed,
    DropReason::DhcpServer,
    DropReason::RouterAdvert,
    DropReason::Bpdu,
    DropReason::Unparsable,
];
/// From this many frames on, a run must have hit every guard reason.
const COVERAGE_FRAMES: u64 = 10_000;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text}: not a number")))
}

// ---------------------------------------------------------------------------
// The pure decision functions, fed as ebpf/src/frame.rs feeds them.

/// The view `frame::view` builds: the first `VIEW_BYTES` in place, or for
/// a shorter frame the Ethernet header and a first tag, each copied only
/// whole (zeros where a piece is cut short).
fn view(bytes: &[u8], meta: Option<Tag>) -> FrameView {
    let mut header = [0u8; VIEW_BYTES];
    for (start, end) in [(0, 14), (14, 18), (18, 22)] {
        if bytes.len() >= end {
            header[start..end].copy_from_slice(&bytes[start..end]);
        }
    }
    let meta = meta.map(|t| macvswitch_common::Tag {
        tpid: t.tpid,
        tci: t.tci,
    });
    FrameView::from_header(bytes.len() as u32, &header, meta)
}

/// `decide`'s decision carried out on the frame, in the model's terms:
/// from the guest, a frame the VLAN policy passes then goes through
/// `guard::check` on its bytes, as the programs do (storm control, which
/// needs a clock, is off: the policies have no `--storm-limit`).
fn pure(dir: Dir, policy: &EndpointPolicy, bytes: &[u8], meta: Option<Tag>) -> Outcome {
    let decide = match dir {
        Dir::FromGuest => macvswitch_common::from_guest,
        Dir::ToGuest => macvswitch_common::to_guest,
    };
    let frame = view(bytes, meta);
    let Decision { mut action, vlan } = decide(policy, &frame);
    if dir == Dir::FromGuest
        && !matches!(action, Action::Drop(_))
        && let Err(reason) = guard::check(policy, bytes, guard::Payload::of(&frame))
    {
        action = Action::Drop(reason);
    }
    let mut out = bytes.to_vec();
    let mut meta_out = meta;
    let tag = |t: macvswitch_common::Tag| Tag {
        tpid: t.tpid,
        tci: t.tci,
    };
    let (verdict, pushed, popped) = match action {
        Action::Pass => (Verdict::Pass, None, false),
        Action::Push(t) => (Verdict::Pass, Some(tag(t)), false),
        Action::Pop => (Verdict::Pass, None, true),
        Action::PopPush(t) => (Verdict::Pass, Some(tag(t)), true),
        Action::Drop(reason) => (Verdict::Drop(Some(reason)), None, false),
    };
    if popped {
        if meta_out.is_none() && out.len() < 16 {
            // Nothing to pop: the kernel would fail; the model never pops
            // here, so the comparison reports it.
            return Outcome {
                verdict: Verdict::Drop(Some(DropReason::HelperFailed)),
                bytes: out,
                meta: meta_out,
                pushed: None,
                popped: false,
                vlan,
            };
        }
        model::pop_outer(&mut out, &mut meta_out);
    }
    if let Some(t) = pushed {
        model::push_outer(&mut out, &mut meta_out, t);
    }
    Outcome {
        verdict,
        bytes: out,
        meta: meta_out,
        pushed,
        popped,
        vlan,
    }
}

/// The programs' fast path must decide exactly as the full decision, where
/// it decides at all. Returns a description of a disagreement.
fn fast_disagrees(
    dir: Dir,
    policy: &EndpointPolicy,
    bytes: &[u8],
    meta: Option<Tag>,
    carried: Option<Tag>,
) -> Option<String> {
    if bytes.len() < 14 {
        return None;
    }
    let common = |t: Tag| macvswitch_common::Tag {
        tpid: t.tpid,
        tci: t.tci,
    };
    let glance = macvswitch_common::decide::Glance {
        len: bytes.len() as u32,
        ethertype: u16::from_be_bytes([bytes[12], bytes[13]]),
        src_is_own: bytes[6..12] == policy.mac,
        meta: meta.map(common),
        carried: carried.map(common),
    };
    let fast = macvswitch_common::decide::fast(policy, dir == Dir::ToGuest, &glance)?;
    let frame = view(bytes, meta).with_carried(carried.map(common));
    let full = match dir {
        Dir::FromGuest => macvswitch_common::from_guest(policy, &frame),
        Dir::ToGuest => macvswitch_common::to_guest(policy, &frame),
    };
    (fast != full).then(|| format!("fast path {fast:?}, full decision {full:?}"))
}

// ---------------------------------------------------------------------------
// The isolation invariant, independent of the model.

/// The frame with its metadata tag written inline, as a guest or the wire
/// finally sees it.
fn full(bytes: &[u8], meta: Option<Tag>) -> Vec<u8> {
    let mut frame = bytes.to_vec();
    if let Some(tag) = meta
        && frame.len() >= 12
    {
        frame.splice(12..12, tag.bytes());
    }
    frame
}

/// The first two tags of a complete frame. A cut-short outer tag is an
/// error; a cut-short second tag shows as `Err` in the second place (the
/// customer's business in a tunnel, a stacked tag anywhere else).
#[allow(clippy::type_complexity)]
fn tags(frame: &[u8]) -> Result<(Option<Tag>, Result<Option<Tag>, ()>), &'static str> {
    let be = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    if frame.len() < 14 {
        return Err("shorter than an Ethernet header");
    }
    let tag_at = |at: usize| -> Result<Option<Tag>, ()> {
        if !is_tpid(be(at)) {
            return Ok(None);
        }
        if frame.len() < at + 6 {
            return Err(());
        }
        Ok(Some(Tag {
            tpid: be(at),
            tci: be(at + 2),
        }))
    };
    let outer = tag_at(12).map_err(|()| "a tag cut short")?;
    let second = match outer {
        Some(_) => tag_at(16),
        None => Ok(None),
    };
    Ok((outer, second))
}

/// Whether a trunk carries `vid` (its list or its native VLAN).
fn trunk_has(p: &EndpointPolicy, vid: u16) -> bool {
    p.vids.contains(vid) || (p.vlan != 0 && vid == p.vlan)
}

/// `Some(why)` when a frame that passed the port leaves it in a VLAN (or
/// with a source MAC) the policy does not allow. `input` and `output` are
/// complete frames (metadata tags written inline).
fn isolation_violation(
    dir: Dir,
    p: &EndpointPolicy,
    input: &[u8],
    output: &[u8],
) -> Option<String> {
    let (out_outer, out_second) = match tags(output) {
        Ok(t) => t,
        Err(why) => return Some(format!("output frame: {why}")),
    };
    let limited = p.has(POLICY_CVLANS_LIMITED);
    let vid_of = |t: Result<Option<Tag>, ()>| t.ok().flatten().map(Tag::vid);
    let none = |t: Result<Option<Tag>, ()>| matches!(t, Ok(None));
    let text = |t: Result<Option<Tag>, ()>| t.map_or("(cut short)".into(), tag_text);
    match dir {
        Dir::FromGuest => {
            if !p.allows_mac_spoofing() && output[6..12] != p.mac {
                return Some("a foreign source MAC left the guest".into());
            }
            let ok = match p.kind {
                PORT_UNTAGGED => out_outer.is_none(),
                PORT_ACCESS => {
                    out_outer.is_some_and(|t| t.tpid == TPID_Q && t.vid() == p.vlan)
                        && none(out_second)
                }
                PORT_TRUNK => {
                    out_outer.is_some_and(|t| t.tpid == TPID_Q && trunk_has(p, t.vid()))
                        && none(out_second)
                }
                PORT_TUNNEL => {
                    out_outer.is_some_and(|t| t.tpid == TPID_AD && t.vid() == p.vlan)
                        && (!limited || vid_of(out_second).is_some_and(|v| p.vids.contains(v)))
                }
                _ => false,
            };
            (!ok).then(|| {
                format!(
                    "left the guest as outer {} / second {}",
                    tag_text(out_outer),
                    text(out_second)
                )
            })
        }
        Dir::ToGuest => {
            let (in_outer, in_second) = match tags(input) {
                Ok(t) => t,
                Err(why) => return Some(format!("input frame passed: {why}")),
            };
            let from_ok = match p.kind {
                PORT_UNTAGGED => {
                    in_outer.is_none()
                        || in_outer.is_some_and(|t| t.tpid == TPID_Q && t.vid() == 0)
                            && none(in_second)
                }
                PORT_ACCESS => in_outer.is_some_and(|t| t.tpid == TPID_Q && t.vid() == p.vlan),
                PORT_TRUNK => in_outer.is_some_and(|t| t.tpid == TPID_Q && trunk_has(p, t.vid())),
                PORT_TUNNEL => {
                    in_outer.is_some_and(|t| t.tpid == TPID_AD && t.vid() == p.vlan)
                        && (!limited || vid_of(in_second).is_some_and(|v| p.vids.contains(v)))
                }
                _ => false,
            };
            let to_ok = match p.kind {
                PORT_UNTAGGED | PORT_ACCESS => out_outer.is_none(),
                PORT_TRUNK => {
                    out_outer.is_none_or(|t| t.tpid == TPID_Q && trunk_has(p, t.vid()))
                        && none(out_second)
                }
                PORT_TUNNEL => !limited || out_outer.is_some_and(|t| p.vids.contains(t.vid())),
                _ => false,
            };
            (!(from_ok && to_ok)).then(|| {
                format!(
                    "reached the guest from outer {} / second {} as outer {} / second {}",
                    tag_text(in_outer),
                    text(in_second),
                    tag_text(out_outer),
                    text(out_second)
                )
            })
        }
    }
}

#[derive(Default)]
struct Tally {
    frames: u64,
    test_runs: u64,
    /// Frames (per direction) BPF_PROG_TEST_RUN does not take.
    test_run_refused: u64,
    pure_runs: u64,
    disagreements: u64,
    /// Those of the programs' verdicts and output bytes.
    program_disagreements: u64,
    violations: u64,
    /// Those of the guard invariant.
    guard_violations: u64,
    /// From the guest, per path ("pure": decide + guard, "program": what
    /// the program counted): how often each verdict.
    reasons: BTreeMap<(&'static str, String), u64>,
    /// Per kind of generated frame, the model's verdicts from the guest
    /// (inline tags only).
    classes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per kind of finding: how many, and the first one in full.
    kinds: BTreeMap<String, (u64, String)>,
    /// What the model said, per direction and port kind: the coverage.
    coverage: BTreeMap<(String, String), u64>,
}

impl Tally {
    fn note(&mut self, kind: String, detail: impl FnOnce() -> String) {
        let entry = self.kinds.entry(kind).or_insert_with(|| (0, String::new()));
        if entry.0 == 0 {
            entry.1 = detail();
        }
        entry.0 += 1;
    }

    fn disagree(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.disagreements += 1;
        self.note(format!("DISAGREEMENT {kind}"), detail);
    }

    fn violate(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.violations += 1;
        self.note(format!("VIOLATION {kind}"), detail);
    }

    fn reason(&mut self, path: &'static str, verdict: &str) {
        *self.reasons.entry((path, verdict.to_string())).or_default() += 1;
    }

    fn class(&mut self, class: &str, verdict: &str) {
        *self
            .classes
            .entry(class.to_string())
            .or_default()
            .entry(verdict.to_string())
            .or_default() += 1;
    }

    fn print_guards(&self) {
        println!("from the guest, per kind of generated frame (model verdicts, inline tags):");
        for (class, verdicts) in &self.classes {
            let mut line = format!("  {class:<36}");
            for (verdict, count) in verdicts {
                let _ = write!(line, " {verdict} {count},");
            }
            println!("{line}");
        }
        for path in ["pure", "program"] {
            let mut line = format!("from the guest, verdicts ({path}):");
            for ((_, verdict), count) in self.reasons.iter().filter(|((p, _), _)| *p == path) {
                let _ = write!(line, " {verdict} {count},");
            }
            println!("{line}");
        }
    }

    /// The guard reasons (all but storm, whose policies are off here) that
    /// `path` never showed.
    fn guard_reasons_missing(&self, path: &'static str) -> Vec<&'static str> {
        GUARD_REASONS
            .iter()
            .map(|reason| reason.name())
            .filter(|name| !self.reasons.contains_key(&(path, name.to_string())))
            .collect()
    }

    fn cover(&mut self, dir: Dir, policy: Option<&EndpointPolicy>, verdict: Verdict) {
        let key = (
            format!("{dir:?} {}", port_kind(policy)),
            verdict_text(verdict),
        );
        *self.coverage.entry(key).or_default() += 1;
    }

    fn print_coverage(&self) {
        let mut line = String::new();
        let mut current = None;
        for ((port, verdict), count) in &self.coverage {
            if current != Some(port) {
                if !line.is_empty() {
                    println!("{line}");
                }
                line = format!("  {port:<19}");
                current = Some(port);
            }
            let _ = write!(line, " {verdict} {count},");
        }
        println!("{line}");
    }

    fn print(&self) {
        for (shown, (kind, (count, first))) in self.kinds.iter().enumerate() {
            if shown == SHOW_KINDS {
                println!("... and {} more kinds", self.kinds.len() - SHOW_KINDS);
                break;
            }
            println!("{kind}: {count} times; the first:\n{first}\n");
        }
    }
}

#[test]
fn no_frame_leaves_its_vlan() {
    let seed = env_u64("MSW_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let frames = env_u64("MSW_FUZZ_FRAMES").unwrap_or(50_000);
    let per_policy = env_u64("MSW_FUZZ_PER_POLICY").unwrap_or(250).max(1);
    println!(
        "isolation property: seed {seed:#x} (MSW_FUZZ_SEED), {frames} frames (MSW_FUZZ_FRAMES), \
         {per_policy} per policy"
    );
    let mut kernel = if macvswitch_tests::is_root() {
        Some(Kernel::load())
    } else {
        eprintln!(
            "isolation property: not root, so only the pure decision functions are checked; \
             BPF_PROG_TEST_RUN of the real programs needs root"
        );
        None
    };
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut policies = 0u64;
    let start = Instant::now();
    while tally.frames < frames {
        let port = generate::policy(&mut rng);
        // Now and then the device has no policy at all: fail closed.
        let policy = (!rng.chance(1)).then_some(&port.policy);
        policies += 1;
        let mut expected = Expected::default();
        if let Some(kernel) = kernel.as_mut() {
            kernel.set_policy(policy);
        }
        let batch = per_policy.min(frames - tally.frames);
        let disagreements_before = tally.program_disagreements;
        for _ in 0..batch {
            let (frame, class) = generate::frame(&mut rng, &port);
            check_frame(
                &mut tally,
                &mut rng,
                &port,
                policy,
                (&frame, &class),
                kernel.as_mut().map(|k| (k, &mut expected)),
            );
        }
        // After a program disagreed on a frame the VLAN counters are off
        // too; that is reported already.
        if let Some(kernel) = kernel.as_ref()
            && tally.program_disagreements == disagreements_before
        {
            check_vlan_counters(&mut tally, kernel, policy, &expected);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("model verdicts over the frames (pure decisions, with and without a metadata tag):");
    tally.print_coverage();
    tally.print_guards();
    tally.print();
    println!(
        "isolation property: {} frames in {secs:.1} s ({:.0} frames/s), {policies} policies, \
         {} BPF_PROG_TEST_RUN runs ({} refused by it: pure only), {} pure decisions; \
         disagreements {}, violations {} (of which guard violations {}) (seed {seed:#x})",
        tally.frames,
        tally.frames as f64 / secs,
        tally.test_runs,
        tally.test_run_refused,
        tally.pure_runs,
        tally.disagreements,
        tally.violations,
        tally.guard_violations,
    );
    // Every guard reason shown, by the pure functions and the programs.
    let mut uncovered = Vec::new();
    if tally.frames >= COVERAGE_FRAMES {
        let mut paths = vec!["pure"];
        if kernel.is_some() {
            paths.push("program");
        }
        for path in paths {
            let missing = tally.guard_reasons_missing(path);
            if !missing.is_empty() {
                println!(
                    "COVERAGE {path}: no frame was dropped as {missing:?}: the generator no \
                     longer covers that guard"
                );
                uncovered.push(path);
            }
        }
    }
    assert!(
        tally.disagreements == 0 && tally.violations == 0 && uncovered.is_empty(),
        "{} disagreements, {} violations ({} of the guards), guard reasons not covered by {:?} \
         (seed {seed:#x}; details above)",
        tally.disagreements,
        tally.violations,
        tally.guard_violations,
        uncovered
    );
}
