//! One frame through the real programs and the pure decisions, held
//! against the model and the isolation invariant; the per-VLAN counters.

use super::*;

/// Expected counters, kept alongside the kernel's.
#[derive(Default)]
pub(super) struct Expected {
    endpoint: Option<EndpointCounters>,
    vlans: StdHashMap<u16, EndpointCounters>,
}

impl Expected {
    /// Counts a frame of `len` bytes as the model's `outcome` does: the
    /// endpoint always, its VLAN when the model counts one (a drop counts
    /// no bytes). Returns the endpoint's counters before.
    pub(super) fn count(&mut self, dir: Dir, outcome: &Outcome, len: usize) -> EndpointCounters {
        let len = if outcome.verdict == Verdict::Pass {
            len
        } else {
            0
        };
        let endpoint = self.endpoint.get_or_insert(EndpointCounters::ZERO);
        let before = *endpoint;
        count(endpoint, dir, outcome.verdict, len);
        if let Some(vid) = outcome.vlan {
            let vlan = self.vlans.entry(vid).or_insert(EndpointCounters::ZERO);
            count(vlan, dir, outcome.verdict, len);
        }
        before
    }
}

pub(super) fn count(counters: &mut EndpointCounters, dir: Dir, verdict: Verdict, bytes: usize) {
    match verdict {
        Verdict::Pass => {
            let (packets, total) = match dir {
                Dir::ToGuest => (&mut counters.to_guest_packets, &mut counters.to_guest_bytes),
                Dir::FromGuest => (
                    &mut counters.from_guest_packets,
                    &mut counters.from_guest_bytes,
                ),
            };
            *packets += 1;
            *total += bytes as u64;
        }
        Verdict::Drop(Some(reason)) => counters.drops[reason as usize] += 1,
        Verdict::Drop(None) => {}
    }
}

/// The guard invariant on a frame from the guest that passed `what`.
fn check_guards(
    tally: &mut Tally,
    what: &str,
    port: &GenPolicy,
    policy: &EndpointPolicy,
    bytes: &[u8],
    meta: Option<Tag>,
) {
    let Some((short, why)) = guard_invariant::guard_violation(policy, &port.guards, bytes) else {
        return;
    };
    let tags = guard_invariant::payload(bytes).map_or(0, |(_, _, tags)| tags);
    let kind = format!(
        "guards {what} {}: {short}, payload under {tags} inline tag(s)",
        port_kind(Some(policy)),
    );
    tally.guard_violations += 1;
    tally.violate(kind, || {
        format!(
            "{}\n  {why}",
            case_text(what, Dir::FromGuest, Some(policy), bytes, meta)
        )
    });
}

/// One frame, both directions: the model, the pure functions (with and
/// without a metadata tag) and, when `kernel` is there, the programs.
/// `class` is what the generator made the frame to be.
pub(super) fn check_frame(
    tally: &mut Tally,
    rng: &mut Rng,
    port: &GenPolicy,
    policy: Option<&EndpointPolicy>,
    (frame, class): (&[u8], &str),
    kernel: Option<(&mut Kernel, &mut Expected)>,
) {
    tally.frames += 1;
    let meta_variant = generate::with_meta(rng, port, frame);
    let mut kernel = kernel;
    for dir in [Dir::FromGuest, Dir::ToGuest] {
        // The pure functions, inline tags only, then with a metadata tag.
        if let Some(p) = policy {
            for (bytes, meta) in [
                (frame, None),
                (meta_variant.0.as_slice(), Some(meta_variant.1)),
            ] {
                tally.pure_runs += 1;
                if let Some(why) = fast_disagrees(dir, p, bytes, meta, None) {
                    let kind = format!("fast path {dir:?} {}", port_kind(policy));
                    tally.disagree(kind, || {
                        format!(
                            "{}\n  {why}",
                            case_text("fast path", dir, policy, bytes, meta)
                        )
                    });
                }
                let expected = model::model(dir, policy, &port.guards, bytes, meta);
                tally.cover(dir, policy, expected.verdict);
                let got = pure(dir, p, bytes, meta);
                if dir == Dir::FromGuest {
                    tally.reason("pure", &verdict_text(got.verdict));
                    if meta.is_none() {
                        tally.class(class, &verdict_text(expected.verdict));
                    }
                    if got.verdict == Verdict::Pass {
                        check_guards(tally, "decide+guard", port, p, bytes, meta);
                    }
                }
                if got != expected {
                    let what = if got.verdict == expected.verdict {
                        "decide (output)"
                    } else {
                        "decide"
                    };
                    let kind = kind_text(
                        what,
                        dir,
                        policy,
                        meta,
                        &expected,
                        &verdict_text(got.verdict),
                    );
                    tally.disagree(kind, || {
                        format!(
                            "{}\n  model: {}\n  decide: {}",
                            case_text("decide vs model", dir, policy, bytes, meta),
                            outcome_text(&expected),
                            outcome_text(&got)
                        )
                    });
                }
                if got.verdict == Verdict::Pass
                    && let Some(why) =
                        isolation_violation(dir, p, &full(bytes, meta), &full(&got.bytes, got.meta))
                {
                    let kind = format!("decide {dir:?} {}", port_kind(policy));
                    tally.violate(kind, || {
                        format!(
                            "{}\n  decide: {}\n  {why}",
                            case_text("decide", dir, policy, bytes, meta),
                            outcome_text(&got)
                        )
                    });
                }
            }
        }
        // Towards the guest: the outer tag carried in the mark.
        if dir == Dir::ToGuest
            && let Some(p) = policy
        {
            let (bytes, carried) = (meta_variant.0.as_slice(), meta_variant.1);
            let expected = model::model(dir, policy, &port.guards, bytes, Some(carried));
            let want = (
                expected.verdict,
                expected.vlan,
                full(&expected.bytes, expected.meta),
            );
            tally.pure_runs += 1;
            if let Some(why) = fast_disagrees(dir, p, bytes, None, Some(carried)) {
                let kind = format!("fast path (mark) {dir:?} {}", port_kind(policy));
                tally.disagree(kind, || {
                    format!(
                        "{}\n  {why}",
                        case_text("fast path (mark)", dir, policy, bytes, Some(carried))
                    )
                });
            }
            let got = pure_carried(p, bytes, carried);
            let same =
                got.0 == want.0 && got.1 == want.1 && (got.0 != Verdict::Pass || got.2 == want.2);
            if !same {
                let kind = kind_text(
                    "decide (mark)",
                    dir,
                    policy,
                    Some(carried),
                    &expected,
                    &verdict_text(got.0),
                );
                tally.disagree(kind, || {
                    format!(
                        "{}\n  model: {}\n  decide with the tag in the mark: {:?}, VLAN {:?}, [{}]",
                        case_text("decide (mark) vs model", dir, policy, bytes, Some(carried)),
                        outcome_text(&expected),
                        got.0,
                        got.1,
                        hex(&got.2)
                    )
                });
            }
            if let Some((kernel, expected_counters)) = kernel.as_mut()
                && test_run_accepts(bytes)
            {
                tally.test_runs += 1;
                let mark = test_carriage().carry(
                    0,
                    macvswitch_common::Tag {
                        tpid: carried.tpid,
                        tci: carried.tci,
                    },
                );
                let observed = kernel.run_marked(dir, bytes, mark);
                let pass = observed.retval == TC_ACT_OK;
                let pushed = (observed.cb0 != 0).then_some(Tag {
                    tpid: (observed.cb0 >> 16) as u16,
                    tci: observed.cb0 as u16,
                });
                let seen = full(&observed.bytes, pushed);
                let ok = pass == (expected.verdict == Verdict::Pass)
                    && (!pass || (seen == want.2 && observed.mark == 0));
                if !ok {
                    tally.program_disagreements += 1;
                    let kind = kind_text(
                        "program (mark)",
                        dir,
                        policy,
                        Some(carried),
                        &expected,
                        if pass { "pass" } else { "drop" },
                    );
                    tally.disagree(kind, || {
                        format!(
                            "{}\n  model: {}\n  program: verdict {}, guest sees [{}], mark after {:08x}",
                            case_text("program (mark) vs model", dir, policy, bytes, Some(carried)),
                            outcome_text(&expected),
                            observed.retval,
                            hex(&seen),
                            observed.mark
                        )
                    });
                }
                if pass
                    && let Some(why) =
                        isolation_violation(dir, p, &full(bytes, Some(carried)), &seen)
                {
                    let kind = format!("program (mark) {dir:?} {}", port_kind(policy));
                    tally.violate(kind, || {
                        format!(
                            "{}\n  {why}",
                            case_text("program (mark)", dir, policy, bytes, Some(carried))
                        )
                    });
                }
                // The counters move as for any frame to the guest.
                expected_counters.count(dir, &expected, bytes.len());
            }
        }
        // The real program.
        let Some((kernel, expected_counters)) = kernel.as_mut() else {
            continue;
        };
        if !test_run_accepts(frame) {
            tally.test_run_refused += 1;
            continue;
        }
        tally.test_runs += 1;
        let expected = model::model(dir, policy, &port.guards, frame, None);
        let (retval, bytes, cb0) = as_test_run(&expected);
        let observed = kernel.run(dir, frame);
        let verdict_ok = observed.retval == retval;
        let pass = observed.retval == TC_ACT_OK;
        let output_ok = !pass || (observed.bytes == bytes && observed.cb0 == cb0);
        let run_ok = verdict_ok && output_ok;
        if !run_ok {
            tally.program_disagreements += 1;
            let what = if verdict_ok {
                "program (output)"
            } else {
                "program"
            };
            let got = if pass { "pass" } else { "drop" };
            let kind = kind_text(what, dir, policy, None, &expected, got);
            tally.disagree(kind, || {
                format!(
                    "{}\n  model: {}\n    as test-run: verdict {retval}, bytes [{}], cb[0] {cb0:08x}\n  \
                     program: verdict {}, bytes [{}], cb[0] {:08x}",
                    case_text("program vs model", dir, policy, frame, None),
                    outcome_text(&expected),
                    hex(&bytes),
                    observed.retval,
                    hex(&observed.bytes),
                    observed.cb0
                )
            });
        }
        if pass {
            if dir == Dir::FromGuest
                && let Some(p) = policy
            {
                check_guards(tally, "program", port, p, frame, None);
            }
            match policy {
                Some(p) => {
                    if let Some(why) =
                        isolation_violation(dir, p, frame, &observed_full(frame, &observed))
                    {
                        let kind = format!("program {dir:?} {}", port_kind(policy));
                        tally.violate(kind, || {
                            format!(
                                "{}\n  program: bytes [{}], cb[0] {:08x}\n  {why}",
                                case_text("program", dir, policy, frame, None),
                                hex(&observed.bytes),
                                observed.cb0
                            )
                        });
                    }
                }
                None => tally.violate("program passed without policy".into(), || {
                    case_text(
                        "program passed a frame without policy",
                        dir,
                        policy,
                        frame,
                        None,
                    )
                }),
            }
        }
        // Counters: the endpoint's after every run; the VLAN's when the
        // model counts one (all of them at the end of the policy).
        let before = expected_counters.count(dir, &expected, bytes.len());
        {
            let got = kernel.endpoint_counters();
            if dir == Dir::FromGuest {
                tally.reason("program", &counted(&before, &got));
            }
            let want = expected_counters.endpoint.expect("set above");
            if got != want && run_ok {
                let kind = kind_text(
                    "counters",
                    dir,
                    policy,
                    None,
                    &expected,
                    &counted(&before, &got),
                );
                tally.disagree(kind, || {
                    format!(
                        "{}\n  model: {}\n  endpoint counters: want {want:?}\n  got {got:?}",
                        case_text("counters vs model", dir, policy, frame, None),
                        outcome_text(&expected)
                    )
                });
            }
            if got != want {
                // Resynchronise so one miscount is reported once.
                expected_counters.endpoint = Some(got);
            }
        }
    }
}

/// The VLAN counters of a policy's run against the model's.
pub(super) fn check_vlan_counters(
    tally: &mut Tally,
    kernel: &Kernel,
    policy: Option<&EndpointPolicy>,
    expected: &Expected,
) {
    let got = kernel.vlan_counter_map();
    let mut vids: Vec<u16> = got.keys().chain(expected.vlans.keys()).copied().collect();
    vids.sort_unstable();
    vids.dedup();
    for vid in vids {
        let (want, have) = (expected.vlans.get(&vid), got.get(&vid));
        if want != have {
            let kind = format!("VLAN counters {}", port_kind(policy));
            tally.disagree(kind, || {
                format!(
                    "VLAN counters of VID {vid} after a policy's frames\n  policy: {}\n  \
                     model: {want:?}\n  program: {have:?}",
                    policy_text(policy)
                )
            });
        }
    }
}
