//! Wall time to create and attach endpoints through the CLI, one
//! `macvswitch endpoint add` per endpoint, as an operator or a management
//! layer would run it.

use std::time::{Duration, Instant};

use macvswitch_tests::{Harness, topology::LOWER};

use crate::{mode::Mode, stats::Summary};

pub struct Create {
    /// Endpoints created.
    pub created: usize,
    /// What the run aimed for.
    pub target: usize,
    pub total: Duration,
    /// The first `add` also loads and pins the programs.
    pub first: Duration,
    /// Per `add` after the first, in ms.
    pub per_add_ms: Summary,
    /// `ip netns exec NS true`, in ms: the wrapper each add pays here.
    pub netns_exec_ms: Summary,
    /// Projected time for `target` endpoints when fewer were created.
    pub extrapolated: Option<Duration>,
    /// `endpoint list` afterwards, in ms.
    pub list_ms: f64,
}

pub fn run(mode: &Mode) -> Create {
    let h = Harness::new();
    let exec: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            h.topo.host.exec_ok(&["true"]);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mut target = mode.create_target;
    let mut per_add = Vec::new();
    let start = Instant::now();
    let mut first = Duration::ZERO;
    let mut i = 0;
    while i < target {
        let name = format!("s{i:04}");
        let vlan = (i % 4094 + 1).to_string();
        let t = Instant::now();
        h.ctl
            .ok(&["endpoint", "add", &name, "--lower", LOWER, "--vlan", &vlan]);
        let took = t.elapsed();
        if i == 0 {
            first = took;
        } else {
            per_add.push(took.as_secs_f64() * 1e3);
        }
        i += 1;
        if i == mode.create_probe {
            let projected = start.elapsed().mul_f64(target as f64 / i as f64);
            if projected > mode.create_budget {
                target = mode.create_fallback.max(i);
            }
        }
        if i % 100 == 0 {
            eprintln!("  {i} endpoints in {:.1} s", start.elapsed().as_secs_f64());
        }
    }
    let total = start.elapsed();
    let t = Instant::now();
    let list = h.ctl.json(&["endpoint", "list", "--json"]);
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    let listed = list
        .as_array()
        .or_else(|| list["endpoints"].as_array())
        .map_or(0, Vec::len);
    assert_eq!(
        listed, target,
        "endpoint list after creating {target}: {list}"
    );
    let per_add_ms = Summary::of(if per_add.is_empty() { &[0.0] } else { &per_add });
    // Linear: an `add` that slows down as endpoints accumulate would make
    // this optimistic (the per-add max tells).
    let extrapolated = (target < mode.create_target)
        .then(|| total.mul_f64(mode.create_target as f64 / target as f64));
    Create {
        created: target,
        target: mode.create_target,
        total,
        first,
        per_add_ms,
        netns_exec_ms: Summary::of(&exec),
        extrapolated,
        list_ms,
    }
}
