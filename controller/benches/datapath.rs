//! Benchmarks of the data path (issues 6 and 9): per-program cost,
//! throughput against bare macvtap and the Linux bridge, scale, in-situ
//! cost; and of the access-port guards (issue 12): per-program rows of
//! honest IPv4 and IPv6 with and without `--ip`, throughput with all guards
//! on and off against bare macvtap.
//!
//! `cargo bench -p macvswitch --bench datapath` (or `cargo xtask bench`)
//! runs everything and writes BENCHMARKS.md and its chart, BENCHMARKS.svg,
//! at the workspace root. Without `--bench`, as `cargo test --all-targets`
//! runs it, a smoke mode of a few seconds goes through every code path with
//! tiny counts, asserts that the plumbing works and writes nothing (the
//! chart goes to a temporary directory); `--smoke` forces it.
//!
//! Needs root (network namespaces, eBPF); all traffic stays in throw-away
//! namespaces, cleaned up by guards even on panic.

/// The parts, in `benches/datapath/`.
mod datapath {
    pub mod attached;
    pub mod chart;
    pub mod create;
    pub mod entries;
    pub mod guards;
    pub mod loadgen;
    pub mod machine;
    pub mod mode;
    pub mod object;
    pub mod progs;
    pub mod report;
    pub mod rows;
    pub mod setup;
    pub mod stats;
    pub mod throughput;
}

use datapath::{
    attached, chart, create, entries, guards, loadgen, machine, mode, object, progs, report, rows,
    setup, stats, throughput,
};

use std::{path::PathBuf, process::ExitCode, time::Instant};

use mode::Mode;
use report::Results;

/// The command BENCHMARKS.md names; `cargo xtask bench` says it ran it.
const DEFAULT_COMMAND: &str = "cargo bench -p macvswitch --bench datapath";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mode = Mode::from_args(&args);
    if !macvswitch_tests::is_root() {
        eprintln!("datapath bench: {}", macvswitch_tests::NEEDS_ROOT);
        // Skipping is fine for a smoke run under `cargo test`, not for a
        // benchmark that was asked for.
        return if mode.full {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    if macvswitch::EBPF_OBJECT.is_empty() {
        eprintln!("datapath bench: skipped, built with AYA_BUILD_SKIP=1 (no eBPF object)");
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("MACVSWITCH_BIN").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("MACVSWITCH_BIN", env!("CARGO_BIN_EXE_macvswitch")) };
    }
    let start = Instant::now();
    eprintln!("datapath bench, {} mode", mode.name());
    let results = run(&mode, start);
    print!("{}", results.markdown());
    if mode.full {
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let path = root.join("BENCHMARKS.md");
        std::fs::write(&path, results.markdown())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        let svg = root.join(report::CHART);
        chart::write(&svg, &results.tput.cases);
        eprintln!("wrote {}", svg.display());
    } else {
        smoke_checks(&results);
        smoke_chart(&results);
        eprintln!(
            "datapath bench smoke: ok in {:.1} s (nothing written; `cargo xtask bench` measures)",
            start.elapsed().as_secs_f64()
        );
    }
    ExitCode::SUCCESS
}

fn run(mode: &Mode, start: Instant) -> Results {
    let machine = machine::Machine::probe();
    // BPF_PROG_TEST_RUN runs on the loopback device of the caller's network
    // namespace, and the relay broadcast row really clones frames into it:
    // a throw-away namespace of the bench's own, with lo up.
    let ns = macvswitch_tests::NetNs::new("prog");
    ns.ip_ok(&["link", "set", "lo", "up"]);
    let (progs, scale) = ns.enter_and(|| {
        eprintln!("per-program cost (BPF_PROG_TEST_RUN)…");
        let progs = progs::run(mode);
        eprintln!("per-frame cost with many endpoints, map memory…");
        let scale = entries::run(mode);
        (progs, scale)
    });
    drop(ns);
    eprintln!("throughput, bare macvtap vs macvswitch…");
    let tput = throughput::run(mode);
    eprintln!("creating endpoints through the CLI…");
    let create = create::run(mode);
    Results {
        machine,
        command: std::env::var("MACVSWITCH_BENCH_COMMAND")
            .unwrap_or_else(|_| DEFAULT_COMMAND.into()),
        progs,
        scale,
        tput,
        create,
        wall_s: start.elapsed().as_secs_f64(),
        load_after: machine::load_average(),
    }
}

/// The plumbing works: every part measured something, every figure is
/// finite, every ratio defined. (The figures of a smoke run mean nothing.)
fn smoke_checks(r: &Results) {
    assert!(
        r.progs.baseline_fresh.median > 0.0,
        "baseline timed at 0 ns"
    );
    assert!(!r.progs.rows.is_empty());
    for row in &r.progs.rows {
        assert!(row.fresh_ns.median > 0.0, "{}: 0 ns", row.row.name);
        assert!(row.fresh_diff.median.is_finite());
    }
    // Rows that change the skb cannot loop; rows that do not, must.
    let valid = |name: &str| {
        r.progs
            .rows
            .iter()
            .find(|row| row.row.name == name)
            .map(|row| row.loop_valid)
    };
    assert_eq!(valid(rows::UNTAGGED_FROM.name), Some(true));
    assert_eq!(valid(rows::WRONG_VLAN.name), Some(true));
    // The relay program changes nothing in the skb: its rows loop, and
    // every repeat relayed (the counters say so).
    assert_eq!(valid(rows::RELAY_UNICAST.name), Some(true));
    assert_eq!(valid(rows::RELAY_BROADCAST.name), Some(true));
    // The guard rows ran (their verdicts and counters were checked), and
    // the RA drop, which leaves the skb as it was, loops.
    for row in &rows::GUARD_ROWS {
        assert!(valid(row.name).is_some(), "{}: not measured", row.name);
    }
    assert_eq!(valid(rows::DROP_RA.name), Some(true));
    guards::self_check();
    assert_eq!(r.scale.rows.len(), 3);
    assert!(
        r.scale
            .rows
            .iter()
            .all(|row| row.diff.len() == entries::ENTRIES.len())
    );
    assert!(!r.scale.maps.is_empty() && r.scale.maps.iter().all(|m| m.empty.memlock > 0));
    assert_eq!(r.tput.cases.len(), throughput::CASES.len());
    assert_eq!(r.tput.guards.len(), throughput::GUARD_CASES.len());
    assert!(r.tput.guards.iter().all(|c| c.scenario.guards()));
    assert!(!r.tput.cases.iter().any(|c| c.scenario.guards()));
    assert_eq!(r.tput.guard_drops, 0);
    for c in r.tput.cases.iter().chain(&r.tput.guards) {
        for &kind in c.kinds() {
            assert_eq!(c.runs(kind).len(), r.tput.rounds, "{}", kind.name());
            let ratio = c.paired(kind).median;
            assert!(ratio.is_finite() && ratio > 0.0, "{}", c.scenario.name());
        }
        if c.scenario.guards() {
            let on_off = c.ratio(throughput::Kind::GuardsOn, throughput::Kind::GuardsOff);
            assert!(on_off.median.is_finite() && on_off.median > 0.0);
        }
        for &kind in c.kinds().iter().filter(|k| k.macvswitch()) {
            for program in c.scenario.programs() {
                assert!(
                    c.insitu_of(kind, program).is_some(),
                    "{} {}: no in-situ figure for {program}",
                    c.scenario.name(),
                    kind.name()
                );
            }
        }
        assert!(
            c.insitu
                .iter()
                .all(|p| p.samples.len() == r.tput.insitu_rounds && p.runs > 0)
        );
        assert!(
            c.baseline
                .as_ref()
                .is_some_and(|b| b.ns_per_run().median > 0.0)
        );
    }
    assert_eq!(r.create.created, r.create.target);
    let apply = &r.create.apply;
    assert!(apply.first.is_some(), "apply did not finish");
    assert_eq!(apply.listed, apply.endpoints, "endpoints after apply");
    assert!(
        apply.idempotent(),
        "the second apply printed {:?}",
        apply.second
    );
}

/// The chart renders: written to a private temporary directory, every row
/// labelled, the 100 % line and the legend there.
fn smoke_chart(r: &Results) {
    let dir = macvswitch_tests::TempStateDir::new();
    let path = dir.path().join(report::CHART);
    chart::write(&path, &r.tput.cases);
    let svg = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "not an SVG"
    );
    for c in &r.tput.cases {
        let label = chart::row_label(c);
        assert!(svg.contains(&label), "the chart lacks row {label:?}");
    }
    for kind in [throughput::Kind::Msw, throughput::Kind::Bridge] {
        assert!(svg.contains(kind.name()), "legend: {}", kind.name());
    }
    assert!(svg.contains("100 % = bare macvtap"), "legend: 100 % line");
}
