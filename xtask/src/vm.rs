//! `cargo xtask vm-test`: the namespace integration tests on a matrix of
//! kernels, the way aya tests itself. Debian's kernels (bullseye's 5.10 and
//! bookworm's 6.1, which attach with clsact, and the newest the system's
//! apt sources offer) boot under QEMU with TCG, each with an initramfs built
//! here that mounts the host's root over 9p and runs the integration-test
//! binary, one area module at a time, and the real `macvswitch` binary
//! from it; the host kernel runs them directly,
//! once as the controller chooses (TCX) and once with clsact forced.
//!
//! Everything downloaded or unpacked stays in `target/vm-cache/`; each
//! entry's output, console log and exit statuses in
//! `target/vm-cache/runs/ENTRY/`.

pub(crate) mod guest;
/// The kernel and initramfs kit, shared with `guest_test`.
pub(crate) mod initramfs;
pub(crate) mod kernels;
mod report;
mod select;

use std::fs;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::run::{self, Workspace};
use crate::setup;
use guest::{RunSpec, Timing, Vm};
use kernels::{Apt, Kernel, Pick, Source};
use report::RunResult;
use select::{TestArgs, TestRun};

/// Every entry of the matrix, in the order it runs.
pub const ENTRIES: &[&str] = &["5.10", "6.1", "newest", "host", "host-clsact"];

/// Debian packages the VM entries need on the host.
const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64 boots the kernels"),
    (
        "busybox-static",
        "the guest initramfs's shell, insmod and mount",
    ),
    ("xz-utils", "decompressing kernel modules"),
];

pub struct Options {
    pub kernels: Vec<String>,
    pub quick: bool,
    pub tests: Vec<String>,
    pub smp: u32,
    pub memory_mib: u32,
    pub timeout_min: u64,
    pub test_args: Vec<String>,
}

enum Entry {
    Debian {
        label: &'static str,
        source: Source,
        pick: Pick,
    },
    Host {
        label: &'static str,
        clsact: bool,
    },
}

impl Entry {
    fn parse(name: &str) -> Result<Entry> {
        let debian = |label, source, pick| Entry::Debian {
            label,
            source,
            pick,
        };
        let host = |label, clsact| Entry::Host { label, clsact };
        Ok(match name {
            "5.10" => debian("5.10", Source::Bullseye, Pick::Stock),
            "6.1" => debian("6.1", Source::System, Pick::Stock),
            "newest" => debian("newest", Source::System, Pick::Newest),
            "host" => host("host", false),
            "host-clsact" => host("host-clsact", true),
            other => bail!(
                "--kernel {other}: not an entry of the matrix; one of {}",
                ENTRIES.join(", ")
            ),
        })
    }

    fn label(&self) -> &'static str {
        match self {
            Entry::Debian { label, .. } | Entry::Host { label, .. } => label,
        }
    }
}

/// One entry's outcome, for the summary.
struct Outcome {
    label: &'static str,
    release: String,
    attach: String,
    result: std::result::Result<(Timing, Vec<RunResult>), String>,
}

/// Returns whether every selected test passed.
pub fn vm_test(ws: &Workspace, opts: &Options) -> Result<bool> {
    if !run::is_root() {
        bail!("vm-test runs apt-get and, on the host entries, the root-only tests: run it as root");
    }
    let names: Vec<&str> = if opts.kernels.is_empty() {
        ENTRIES.to_vec()
    } else {
        opts.kernels.iter().map(String::as_str).collect()
    };
    let entries = names
        .iter()
        .map(|n| Entry::parse(n))
        .collect::<Result<Vec<_>>>()?;
    let cache = ws.target_dir.join("vm-cache");
    if entries.iter().any(|e| matches!(e, Entry::Debian { .. })) {
        setup::apt_install(VM_PACKAGES)?;
    }
    let controller = ws.build_controller()?;
    let args = TestArgs::parse(&opts.test_args);
    let runs = select::select(select::test_runs(ws)?, &opts.tests, opts.quick, &args)?;
    println!(
        "==> vm-test: {} tests in {} runs: {}",
        runs.iter().map(|r| r.tests.len()).sum::<usize>(),
        runs.len(),
        runs.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );

    // Kernels first, so that a download problem shows before any long run.
    let mut apt = Apt::new(&cache);
    let mut kernels: Vec<std::result::Result<Option<Kernel>, String>> = Vec::new();
    for e in &entries {
        let Entry::Debian {
            label,
            source,
            pick,
        } = e
        else {
            kernels.push(Ok(None));
            continue;
        };
        if matches!(pick, Pick::Newest) {
            let newest = apt.package(*source, Pick::Newest)?;
            let stock = apt.package(*source, Pick::Stock)?;
            if kernels::same_series(&newest, &stock) {
                kernels.push(Err(format!(
                    "skipped: the {} apt sources offer nothing newer than {stock} \
                     (add bookworm-backports for a newer kernel)",
                    source.name()
                )));
                continue;
            }
        }
        let k = apt.kernel(*source, *pick)?;
        println!("==> vm-test: {label}: {} ({})", k.package, k.release);
        if matches!(pick, Pick::Stock) && k.major_minor() != *label {
            bail!(
                "the {} apt sources' stock kernel is {}, not {label}: the matrix expects Debian 12 (bookworm)",
                source.name(),
                k.release
            );
        }
        kernels.push(Ok(Some(k)));
    }

    let per_run = Duration::from_secs(opts.timeout_min * 60);
    let mut test_args = args.options.clone();
    let mut outcomes = Vec::new();
    for (entry, kernel) in entries.iter().zip(kernels) {
        let label = entry.label();
        let results = cache.join("runs").join(label);
        let outcome = match (entry, kernel) {
            (_, Err(reason)) => Outcome {
                label,
                release: "-".into(),
                attach: "-".into(),
                result: Err(reason),
            },
            (Entry::Debian { .. }, Ok(Some(kernel))) => {
                println!(
                    "==> vm-test: {label}: booting {} under QEMU (TCG)",
                    kernel.release
                );
                let initramfs = cache.join(format!("initramfs-{}.cpio", kernel.release));
                initramfs::build(&kernel, &initramfs)?;
                // One test at a time: two vCPUs under TCG are slow, and
                // the tests' time-outs are made for a real machine.
                if !test_args.iter().any(|a| a.starts_with("--test-threads")) {
                    test_args.push("--test-threads=1".into());
                }
                let spec = RunSpec {
                    label,
                    runs: &runs,
                    controller: &controller,
                    env: &[],
                    test_args: &test_args,
                    results: &results,
                    per_run,
                };
                let vm = Vm {
                    kernel: &kernel,
                    initramfs: &initramfs,
                    smp: opts.smp,
                    memory_mib: opts.memory_mib,
                    limit: per_run * u32::try_from(runs.len()).unwrap_or(u32::MAX)
                        + Duration::from_secs(300),
                    workspace: &ws.root,
                };
                let timing = guest::run_in_vm(&spec, &vm)?;
                test_args.retain(|a| args.options.contains(a));
                Outcome {
                    label,
                    attach: expected_attach(&kernel.release, false),
                    release: kernel.release.clone(),
                    result: Ok((timing, report::read(&results, &runs))),
                }
            }
            (Entry::Host { clsact, .. }, _) => {
                let release = host_release();
                println!("==> vm-test: {label}: the host's kernel {release}, directly");
                let env: &[(&str, &str)] = if *clsact {
                    &[("MACVSWITCH_ATTACH", "clsact")]
                } else {
                    &[]
                };
                let spec = RunSpec {
                    label,
                    runs: &runs,
                    controller: &controller,
                    env,
                    test_args: &args.options,
                    results: &results,
                    per_run,
                };
                let timing = guest::run_on_host(&spec)?;
                Outcome {
                    label,
                    attach: expected_attach(&release, *clsact),
                    release,
                    result: Ok((timing, report::read(&results, &runs))),
                }
            }
            (Entry::Debian { .. }, Ok(None)) => unreachable!("a Debian entry always has a kernel"),
        };
        outcomes.push(outcome);
    }
    Ok(summarize(&outcomes, &cache, &runs, opts.quick))
}

/// How the controller attaches on a kernel: TCX from 6.6 on, clsact
/// before, or clsact when forced (`MACVSWITCH_ATTACH=clsact`).
fn expected_attach(release: &str, forced_clsact: bool) -> String {
    if forced_clsact {
        return "clsact (forced)".into();
    }
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    match (v.next(), v.next()) {
        (Some(major), Some(minor)) if (major, minor) >= (6, 6) => "TCX".into(),
        (Some(_), Some(_)) => "clsact".into(),
        _ => "?".into(),
    }
}

fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Prints the per-kernel table and every failure; true when all passed.
fn summarize(outcomes: &[Outcome], cache: &std::path::Path, runs: &[TestRun], quick: bool) -> bool {
    let what = if quick { "quick subset, " } else { "" };
    println!();
    println!(
        "==> vm-test summary ({what}{} tests in {} runs)",
        runs.iter().map(|r| r.tests.len()).sum::<usize>(),
        runs.len()
    );
    println!(
        "{:<12} {:<24} {:<16} {:>7} {:>8} {:>5} {:>6} {:>6} {:>7}",
        "entry", "kernel", "attach", "boot", "total", "ran", "passed", "failed", "ignored"
    );
    let mut ok = true;
    let mut problems = Vec::new();
    let (mut all_passed, mut all_failed) = (0, 0);
    for o in outcomes {
        match &o.result {
            Err(reason) => {
                println!("{:<12} {reason}", o.label);
            }
            Ok((timing, results)) => {
                let sum = |f: fn(&RunResult) -> usize| results.iter().map(f).sum::<usize>();
                let failed = sum(|b| b.failed.len());
                all_passed += sum(|b| b.passed);
                all_failed += failed;
                println!(
                    "{:<12} {:<24} {:<16} {:>7} {:>8} {:>5} {:>6} {:>6} {:>7}",
                    o.label,
                    o.release,
                    o.attach,
                    timing
                        .boot
                        .map_or("-".into(), |b| format!("{:.1} s", b.as_secs_f64())),
                    format!("{:.0} s", timing.total.as_secs_f64()),
                    sum(RunResult::ran),
                    sum(|b| b.passed),
                    failed,
                    sum(|b| b.ignored),
                );
                if timing.timed_out {
                    problems.push(format!(
                        "{}: the guest was cut off at its time limit",
                        o.label
                    ));
                }
                for b in results {
                    if let Some(why) = b.broken() {
                        problems.push(format!("{} {}: {why}", o.label, b.name));
                    }
                    for (test, why) in &b.failed {
                        problems.push(format!("{} {test}: {why}", o.label));
                    }
                }
                ok &= failed == 0
                    && results.iter().all(|b| b.broken().is_none())
                    && !timing.timed_out;
            }
        }
    }
    if !problems.is_empty() {
        println!("\nfailures:");
        for p in &problems {
            println!("  {p}");
        }
    }
    println!(
        "\nper-entry output and console logs: {}/ENTRY/",
        cache.join("runs").display()
    );
    println!("vm-test: {}", if ok { "all passed" } else { "FAILED" });
    // The plain closing line CI reads.
    println!("vm-test: {all_passed} passed, {all_failed} failed");
    ok
}
