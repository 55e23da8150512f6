//! `cargo xtask <task>`: the project's developer and CI tasks.
//!
//! The alias lives in `.cargo/config.toml`; every task finds the workspace
//! from this crate's manifest directory and runs the same `cargo` that ran it.

mod bench;
mod check;
mod demo;
mod fuzz;
mod guest_test;
mod previous;
mod run;
mod scratch;
mod setup;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "macvswitch developer tasks", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (apt packages, rust-src, bpf-linker),
    /// build `macvswitch` and run the demo. Quick when everything is there.
    Setup,
    /// Run the tool in throw-away network namespaces and clean up after.
    ///
    /// Builds `macvswitch` first (a no-op when it is up to date).
    Demo {
        /// Use target/debug/macvswitch as it is, without `cargo build`.
        #[arg(long)]
        no_build: bool,
    },
    /// Build `macvswitch` (and, once, the previous release's for the upgrade
    /// test), then `cargo test --workspace --all-targets` with MACVSWITCH_BIN
    /// and MACVSWITCH_PREVIOUS_BIN set (all targets: the benchmark's smoke
    /// mode runs too).
    ///
    /// Arguments before `--` go to `cargo test`, those after it to the test
    /// binaries: `cargo xtask test -p macvswitch-tests -- --test-threads=2`.
    Test {
        /// Extra arguments for `cargo test` (e.g. `-p NAME`, `--release`).
        #[arg(allow_hyphen_values = true)]
        cargo_args: Vec<String>,
        /// Arguments for the test binaries, after `--`.
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Run the data-path benchmarks and write BENCHMARKS.md (root, ~10 min):
    /// `cargo bench -p macvswitch --bench datapath`.
    Bench {
        /// Only the seconds-long smoke mode; writes nothing.
        #[arg(long)]
        smoke: bool,
    },
    /// The proof of isolation (root): a million random and hostile frames
    /// through the real programs, compared with the reference model
    /// (`cargo test --release -p macvswitch --test isolation_property`).
    Fuzz {
        /// How many frames (each goes through both programs).
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Seed of the run (default: from the clock; printed either way).
        #[arg(long)]
        seed: Option<u64>,
        /// Frames per random port policy (default 250).
        #[arg(long)]
        per_policy: Option<u64>,
    },
    /// The namespace integration tests on a matrix of kernels (root):
    /// bullseye's 5.10 and bookworm's 6.1 (clsact) and the newest Debian
    /// kernel the apt sources offer, each booted under QEMU (TCG) with the
    /// host's root over 9p; then the host's kernel directly, once with TCX
    /// and once with clsact forced. Prints per kernel what ran, passed and
    /// failed; exits non-zero if anything failed.
    ///
    /// `cargo xtask vm-test --kernel 6.1 --kernel 5.10 --quick`;
    /// arguments after `--` filter by test name (`--skip` too) or go to
    /// libtest as options.
    VmTest {
        /// An entry of the matrix, repeatable: 5.10, 6.1, newest, host,
        /// host-clsact (default: all, in that order).
        #[arg(long = "kernel", value_name = "ENTRY")]
        kernels: Vec<String>,
        /// Only the CI subset: access, trunk, tunnel, relay, host-port,
        /// upgrade/reload and del/reset tests.
        #[arg(long)]
        quick: bool,
        /// Only these areas of the integration tests (comma-separated
        /// module paths, e.g. port::trunk,host_port; `port` is every port
        /// module); adds to --quick.
        #[arg(long, value_delimiter = ',')]
        tests: Vec<String>,
        /// vCPUs per guest.
        #[arg(long, default_value_t = 2)]
        smp: u32,
        /// Memory per guest, in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Time limit for one area's run, in minutes.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
        /// Test-name filters and libtest options, after `--`.
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Real guests on endpoints (root): Debian's cloud kernel under QEMU
    /// (TCG) with a busybox initramfs, each started with `macvswitch exec`.
    /// Two guests on one access VLAN ping each other (IPv4, IPv6); a guest
    /// on another VLAN in the same subnet cannot; a guest reaches an 802.1Q
    /// peer across the trunk; a multiqueue guest (`--queues 2`) works; an
    /// isolated guest reaches the wire but not its neighbour; the host port
    /// reaches a guest. One PASS/FAIL line per case, then a summary.
    GuestTest {
        /// Only the first case: two guests on one VLAN ping each other.
        #[arg(long)]
        quick: bool,
        /// Memory per guest, in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u32,
        /// Time limit for a guest's boot, in seconds.
        #[arg(long, default_value_t = 300)]
        boot_timeout: u64,
        /// Print the guests' console lines as they come.
        #[arg(long)]
        verbose: bool,
    },
    /// `cargo fmt --all --check` and `cargo clippy --workspace --all-targets -- -D warnings`.
    Lint,
    /// Build `macvswitch` and write its man pages (the command and every
    /// subcommand) into target/man.
    Man,
}

fn main() -> ExitCode {
    match run_task(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without the
            // backtrace anyhow adds when RUST_BACKTRACE is set.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_task(cli: Cli) -> Result<ExitCode> {
    let ws = run::Workspace::discover()?;
    match cli.task {
        Task::Setup => setup::setup(&ws)?,
        Task::Man => {
            let bin = ws.build_controller()?;
            let dir = ws.target_dir.join("man");
            run::check(std::process::Command::new(bin).arg("man").arg(&dir))?;
        }
        Task::Demo { no_build } => {
            if !no_build {
                ws.build_controller()?;
            }
            demo::demo(&ws)?
        }
        Task::Test {
            cargo_args,
            test_args,
        } => {
            let code = check::test(&ws, &cargo_args, &test_args)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Task::Bench { smoke } => bench::bench(&ws, smoke)?,
        Task::Fuzz {
            frames,
            seed,
            per_policy,
        } => fuzz::fuzz(
            &ws,
            &fuzz::Options {
                frames,
                seed,
                per_policy,
            },
        )?,
        Task::Lint => check::lint(&ws)?,
        Task::GuestTest {
            quick,
            memory,
            boot_timeout,
            verbose,
        } => {
            let passed = guest_test::guest_test(
                &ws,
                &guest_test::Options {
                    quick,
                    memory_mib: memory,
                    boot_timeout: std::time::Duration::from_secs(boot_timeout),
                    echo: verbose,
                },
            )?;
            if !passed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Task::VmTest {
            kernels,
            quick,
            tests,
            smp,
            memory,
            timeout,
            test_args,
        } => {
            let passed = vm::vm_test(
                &ws,
                &vm::Options {
                    kernels,
                    quick,
                    tests,
                    smp,
                    memory_mib: memory,
                    timeout_min: timeout,
                    test_args,
                },
            )?;
            if !passed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
