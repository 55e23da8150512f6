//! Per-program cost through BPF_PROG_TEST_RUN, next to the empty program.
//!
//! Two ways of timing each row, both interleaved over rounds:
//! - **loop**: one call with `repeat` (>= 100,000 in the full run); the
//!   kernel runs the program that many times on the same skb and reports
//!   the average. A program that changes the skb (push or pop of a tag)
//!   sees its own output from the 2nd repeat on and takes another path
//!   (the pushed tag reads as guest-tagged, the popped frame as untagged):
//!   the counters tell, and such rows are marked invalid in loop mode.
//! - **fresh**: many calls with `repeat = 1`, each on a freshly built skb;
//!   the kernel's per-call duration (integer ns, same timer overhead in the
//!   baseline) summed as a trimmed mean. Valid for every row.

use macvswitch_common::{
    SourceInfo,
    isolation::{SOURCE_MODE_VEPA, UPLINK_REFLECTIVE_RELAY},
};

use crate::{
    mode::Mode,
    object::{Object, TEST_IFINDEX},
    rows::{self, GUEST_MAC, PEER_MAC, Row},
    stats::{Summary, trimmed_mean},
};

/// A row with its own loaded object and frame.
pub struct Bench {
    pub row: Row,
    object: Object,
    frame: Vec<u8>,
}

impl Bench {
    pub fn new(row: Row) -> Bench {
        let mut object = Object::load();
        if let Some(port) = row.port {
            object.set_endpoint(TEST_IFINDEX, &rows::row_policy(GUEST_MAC, port, row.guards));
        }
        if let Some(uplink) = row.uplink {
            // The guest and the peer: VEPA endpoints on the test device.
            let local = if uplink.local {
                &[(100, GUEST_MAC), (101, PEER_MAC)][..]
            } else {
                &[]
            };
            for &(ifindex, mac) in local {
                let info = SourceInfo {
                    ifindex,
                    community: 0,
                    flags: 0,
                    mode: SOURCE_MODE_VEPA,
                };
                object.set_source(TEST_IFINDEX, mac, &info);
            }
            if uplink.relay {
                object.set_uplink(TEST_IFINDEX, UPLINK_REFLECTIVE_RELAY);
            }
        }
        Bench::with_object(row, object)
    }

    pub fn with_object(row: Row, object: Object) -> Bench {
        Bench {
            row,
            frame: row.frame.bytes(),
            object,
        }
    }

    pub fn object(&self) -> &Object {
        &self.object
    }

    fn on_path(&self) -> Option<u64> {
        self.row.expect.count(
            &self.object.counters(0),
            &self.object.uplink_counters(TEST_IFINDEX),
        )
    }

    /// One run: asserts the verdict and that the expected counter moved
    /// (for uplink_egress: exactly the expected relay counter, or none).
    pub fn check(&mut self) {
        let before = self.on_path();
        let uplink_before = self.object.uplink_counters(TEST_IFINDEX);
        let (verdict, _) = self.object.run(self.row.program, &self.frame, 1);
        let mut expected = uplink_before;
        expected.accumulate(&self.row.expect.uplink_delta());
        assert_eq!(
            self.object.uplink_counters(TEST_IFINDEX),
            expected,
            "{}: relay counters",
            self.row.name
        );
        assert_eq!(
            verdict,
            self.row.expect.verdict(),
            "{}: verdict {verdict}",
            self.row.name
        );
        if let (Some(b), Some(a)) = (before, self.on_path()) {
            assert_eq!(
                a,
                b + 1,
                "{}: the expected counter did not move",
                self.row.name
            );
        }
    }

    /// One in-kernel loop of `repeat`: ns per repeat, and how many of the
    /// repeats took the row's path.
    pub fn loop_sample(&mut self, repeat: u32) -> (f64, u64) {
        let before = self.on_path();
        let (verdict, ns) = self.object.run(self.row.program, &self.frame, repeat);
        let on_path = match (before, self.on_path()) {
            (Some(b), Some(a)) => a - b,
            _ if verdict == self.row.expect.verdict() => u64::from(repeat),
            _ => 0,
        };
        (ns as f64, on_path)
    }

    /// `runs` single-shot calls: trimmed mean ns per call.
    pub fn fresh_sample(&mut self, runs: usize) -> f64 {
        let before = self.on_path();
        let mut durations = Vec::with_capacity(runs);
        for _ in 0..runs {
            let (verdict, ns) = self.object.run(self.row.program, &self.frame, 1);
            assert_eq!(verdict, self.row.expect.verdict(), "{}", self.row.name);
            durations.push(ns);
        }
        if let (Some(b), Some(a)) = (before, self.on_path()) {
            assert_eq!(a - b, runs as u64, "{}: off path", self.row.name);
        }
        trimmed_mean(&mut durations)
    }
}

/// Samples of one row over the rounds.
#[derive(Default)]
pub struct Samples {
    pub loop_ns: Vec<f64>,
    /// Fewest repeats on the row's path in any loop call.
    pub loop_on_path: Option<u64>,
    pub fresh_ns: Vec<f64>,
}

impl Samples {
    fn add(&mut self, bench: &mut Bench, mode: &Mode) {
        let (ns, on_path) = bench.loop_sample(mode.loop_repeat);
        self.loop_ns.push(ns);
        self.loop_on_path = Some(self.loop_on_path.map_or(on_path, |m| m.min(on_path)));
        self.fresh_ns.push(bench.fresh_sample(mode.fresh_runs));
    }
}

/// Result of one measured row.
pub struct RowCost {
    pub row: Row,
    pub loop_ns: Summary,
    /// Per round: row minus baseline.
    pub loop_diff: Summary,
    /// Every repeat of every loop call took the row's path.
    pub loop_valid: bool,
    pub loop_on_path: u64,
    pub fresh_ns: Summary,
    pub fresh_diff: Summary,
}

pub struct ProgCost {
    pub repeat: u32,
    pub fresh_runs: usize,
    pub rounds: usize,
    pub baseline_loop: Summary,
    pub baseline_fresh: Summary,
    pub rows: Vec<RowCost>,
}

fn diffs(row: &[f64], base: &[f64]) -> Summary {
    let d: Vec<f64> = row.iter().zip(base).map(|(r, b)| r - b).collect();
    Summary::of(&d)
}

/// Measures `benches` (the first is the baseline) interleaved over rounds.
pub fn measure(benches: &mut [Bench], mode: &Mode) -> Vec<Samples> {
    for bench in benches.iter_mut() {
        bench.check();
    }
    let mut samples: Vec<Samples> = benches.iter().map(|_| Samples::default()).collect();
    for _ in 0..mode.prog_rounds {
        for (bench, s) in benches.iter_mut().zip(samples.iter_mut()) {
            s.add(bench, mode);
        }
    }
    samples
}

pub fn run(mode: &Mode) -> ProgCost {
    let mut benches = vec![Bench::new(rows::BASELINE)];
    benches.extend(rows::TABLE.iter().map(|row| Bench::new(*row)));
    let samples = measure(&mut benches, mode);
    let base = &samples[0];
    let rows = benches
        .iter()
        .zip(samples.iter())
        .skip(1)
        .map(|(bench, s)| {
            let on_path = s.loop_on_path.unwrap_or(0);
            RowCost {
                row: bench.row,
                loop_ns: Summary::of(&s.loop_ns),
                loop_diff: diffs(&s.loop_ns, &base.loop_ns),
                loop_valid: on_path == u64::from(mode.loop_repeat),
                loop_on_path: on_path,
                fresh_ns: Summary::of(&s.fresh_ns),
                fresh_diff: diffs(&s.fresh_ns, &base.fresh_ns),
            }
        })
        .collect();
    ProgCost {
        repeat: mode.loop_repeat,
        fresh_runs: mode.fresh_runs,
        rounds: mode.prog_rounds,
        baseline_loop: Summary::of(&base.loop_ns),
        baseline_fresh: Summary::of(&base.fresh_ns),
        rows,
    }
}
