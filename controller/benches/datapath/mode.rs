//! Full benchmark or smoke run, and the counts and durations of each.

use std::time::Duration;

/// How much work each part does.
#[derive(Clone, Debug)]
pub struct Mode {
    /// `cargo bench`: measure for real and write BENCHMARKS.md.
    pub full: bool,
    /// Interleaved rounds of the per-program measurements.
    pub prog_rounds: usize,
    /// `repeat` of one in-kernel BPF_PROG_TEST_RUN loop.
    pub loop_repeat: u32,
    /// Single-shot BPF_PROG_TEST_RUN calls (fresh skb each) per round.
    pub fresh_runs: usize,
    /// Interleaved bare/macvswitch rounds of each throughput row.
    pub tput_rounds: usize,
    /// Statistics runs per row for the in-situ figures.
    pub insitu_rounds: usize,
    /// Length of one throughput run.
    pub run_time: Duration,
    /// Upper bound of frames one generator thread sends in one run.
    pub max_frames: u64,
    /// Endpoints to create through the CLI.
    pub create_target: usize,
    /// Created endpoints after which the pace is judged.
    pub create_probe: usize,
    /// When creating `create_target` would take longer than this, stop at
    /// `create_fallback` and extrapolate.
    pub create_budget: Duration,
    pub create_fallback: usize,
    /// Endpoints in the file of the one `macvswitch apply FILE`.
    pub apply_target: usize,
    /// An apply that takes longer is stopped (and reported as such).
    pub apply_timeout: Duration,
}

impl Mode {
    /// criterion's convention: cargo passes `--bench` to a bench target
    /// under `cargo bench` and nothing under `cargo test`. `--smoke` forces
    /// the smoke mode. Other arguments (test filters, `--test-threads`) are
    /// ignored.
    pub fn from_args(args: &[String]) -> Mode {
        let bench = args.iter().any(|a| a == "--bench");
        let smoke = args.iter().any(|a| a == "--smoke");
        if bench && !smoke {
            Mode::full()
        } else {
            Mode::smoke()
        }
    }

    pub fn full() -> Mode {
        Mode {
            full: true,
            prog_rounds: 7,
            loop_repeat: 100_000,
            fresh_runs: 20_000,
            tput_rounds: 11,
            insitu_rounds: 3,
            run_time: Duration::from_millis(700),
            max_frames: 50_000_000,
            create_target: 1000,
            create_probe: 50,
            create_budget: Duration::from_secs(180),
            create_fallback: 200,
            apply_target: 1000,
            apply_timeout: Duration::from_secs(180),
        }
    }

    pub fn smoke() -> Mode {
        Mode {
            full: false,
            prog_rounds: 2,
            loop_repeat: 1000,
            fresh_runs: 200,
            tput_rounds: 1,
            insitu_rounds: 1,
            run_time: Duration::from_millis(120),
            max_frames: 3000,
            create_target: 3,
            create_probe: 2,
            create_budget: Duration::from_secs(30),
            create_fallback: 3,
            apply_target: 5,
            apply_timeout: Duration::from_secs(30),
        }
    }

    pub fn name(&self) -> &'static str {
        if self.full { "full" } else { "smoke" }
    }
}
