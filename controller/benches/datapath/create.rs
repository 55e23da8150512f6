//! Wall time to create and attach endpoints through the CLI: one
//! `macvswitch endpoint add` per endpoint, as an operator or a management
//! layer would run it, and all of them with one `macvswitch apply FILE`;
//! and the same kernel work with TCX links and with clsact filters, side by
//! side on this kernel (`--attach tcx|clsact`).

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use macvswitch_tests::{Harness, TempStateDir, topology::LOWER};

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
    /// `reset` with all of them, in s.
    pub reset_s: f64,
    pub apply: Apply,
    /// Per attach mode: kernel cost per endpoint, and one apply of the
    /// same file with that mode forced.
    pub attach: Vec<AttachCost>,
}

/// What one attach mode costs.
pub struct AttachCost {
    /// `tcx` or `clsact`.
    pub mode: &'static str,
    /// Creating the macvtap (down), in ms.
    pub macvtap_ms: Summary,
    /// Attaching both programs to it, in ms.
    pub attach_ms: Summary,
    /// Deleting the macvtap and removing what is left of ours, in ms.
    pub delete_ms: Summary,
    /// One `macvswitch --attach MODE apply FILE` of `apply.endpoints`.
    pub apply: Apply,
}

/// One `macvswitch apply FILE` of `endpoints` endpoints on a fresh host,
/// then the same file again.
pub struct Apply {
    pub endpoints: usize,
    /// Wall time of the first apply; `None`: stopped at `timeout`.
    pub first: Option<Duration>,
    pub timeout: Duration,
    /// Plan lines the first apply printed.
    pub plan_lines: usize,
    /// The second apply of the same file, and what it printed.
    pub second: Option<(Duration, String)>,
    /// Endpoints `endpoint list` shows after the first apply.
    pub listed: usize,
    /// `reset` afterwards, in s.
    pub reset_s: f64,
}

impl Apply {
    /// The second apply printed exactly "no changes".
    pub fn idempotent(&self) -> bool {
        self.second
            .as_ref()
            .is_some_and(|(_, out)| out.trim() == "no changes")
    }
}

/// The file: `n` access ports on lower0, VLANs 1, 2, 3, … (1 + i % 4094).
fn config(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let _ = writeln!(
            s,
            "[[endpoint]]\nname = \"a{i:04}\"\nlower = \"{LOWER}\"\nvlan = {}\n",
            1 + i % 4094
        );
    }
    s
}

/// `macvswitch apply FILE` as `Controller::run` runs commands, stopped
/// (the child we started, by its pid) after `timeout`: the wall time and
/// stdout, or `None`.
fn timed_apply(
    h: &Harness,
    file: &std::path::Path,
    timeout: Duration,
    attach: Option<&str>,
) -> Option<(Duration, String)> {
    let ctl = &h.ctl;
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ctl.netns])
        .arg(&ctl.bin)
        .arg("--state-dir")
        .arg(&ctl.state_dir)
        .arg("--bpffs")
        .arg(&ctl.bpffs)
        .args(attach.map(|mode| ["--attach", mode]).into_iter().flatten())
        .arg("apply")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running macvswitch apply");
    // Bounded: polls every 10 ms until the deadline.
    loop {
        if child.try_wait().expect("waiting for apply").is_some() {
            let took = start.elapsed();
            let out = child.wait_with_output().expect("apply's output");
            assert!(
                out.status.success(),
                "macvswitch apply {} failed ({}):\nstderr: {}",
                file.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            return Some((took, String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn apply(mode: &Mode, attach: Option<&str>) -> Apply {
    let h = Harness::new();
    let dir = TempStateDir::new();
    let file = dir.path().join("endpoints.toml");
    std::fs::write(&file, config(mode.apply_target)).expect("writing the config file");
    let first = timed_apply(&h, &file, mode.apply_timeout, attach);
    let plan_lines = first.as_ref().map_or(0, |(_, out)| out.lines().count());
    if let Some((took, _)) = &first {
        eprintln!(
            "  apply of {} endpoints ({}): {:.1} s",
            mode.apply_target,
            attach.unwrap_or("auto"),
            took.as_secs_f64()
        );
    }
    let second = first
        .is_some()
        .then(|| timed_apply(&h, &file, mode.apply_timeout, attach))
        .flatten();
    let listed = count(&h.ctl.json(&["endpoint", "list", "--json"]));
    Apply {
        endpoints: mode.apply_target,
        first: first.map(|(took, _)| took),
        timeout: mode.apply_timeout,
        plan_lines,
        second,
        listed,
        reset_s: reset(h),
    }
}

/// `macvswitch reset`, then the namespaces go: the links are removed
/// synchronously here, so that the kernel's asynchronous clean-up of a
/// namespace full of macvtaps does not overlap whatever is timed next.
/// Seconds the reset took.
fn reset(h: Harness) -> f64 {
    let t = Instant::now();
    h.ctl.ok(&["reset"]);
    let took = t.elapsed().as_secs_f64();
    drop(h);
    took
}

fn count(list: &serde_json::Value) -> usize {
    list.as_array()
        .or_else(|| list["endpoints"].as_array())
        .map_or(0, Vec::len)
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
    let listed = count(&list);
    assert_eq!(
        listed, target,
        "endpoint list after creating {target}: {list}"
    );
    let per_add_ms = Summary::of(if per_add.is_empty() { &[0.0] } else { &per_add });
    // Linear: an `add` that slows down as endpoints accumulate would make
    // this optimistic (the per-add max tells).
    let extrapolated = (target < mode.create_target)
        .then(|| total.mul_f64(mode.create_target as f64 / target as f64));
    let reset_s = reset(h);
    eprintln!(
        "one `macvswitch apply FILE` of {} endpoints…",
        mode.apply_target
    );
    let apply = apply(mode, None);
    let attach = ["tcx", "clsact"]
        .into_iter()
        .map(|attach| attach_cost(mode, attach))
        .collect();
    Create {
        created: target,
        target: mode.create_target,
        total,
        first,
        per_add_ms,
        netns_exec_ms: Summary::of(&exec),
        extrapolated,
        list_ms,
        reset_s,
        apply,
        attach,
    }
}

/// The kernel work of one endpoint in attach mode `attach`, in process (no
/// CLI, no state file): create a macvtap, attach both programs, and later
/// delete it as `endpoint del` does (the link, then our pins or filters).
/// Endpoints are made one after another, then deleted one after another,
/// as `apply` and `reset` do; then one apply of the usual file with the
/// mode forced.
fn attach_cost(mode: &Mode, attach: &'static str) -> AttachCost {
    use macvswitch::{
        kernel::datapath::{Datapath, PinLayout, set_attach_choice},
        kernel::netlink::{Netlink, Stacked},
        model::types::{AttachChoice, Mac, Mode as MacvtapMode},
    };
    let n = if mode.full { 200 } else { 3 };
    eprintln!("attach cost, {attach}: {n} endpoints in process…");
    let h = Harness::new();
    let pins = PinLayout::new(h.bpffs.path());
    let (macvtap_ms, attach_ms, delete_ms) = h.topo.host.enter_and(|| {
        set_attach_choice(match attach {
            "tcx" => AttachChoice::Tcx,
            _ => AttachChoice::Clsact,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let netlink = Netlink::connect().expect("netlink");
            let lower = netlink
                .link_by_name(LOWER)
                .await
                .expect("lower0")
                .expect("lower0 exists");
            let mut datapath = Datapath::load(pins.clone()).expect("loading the data path");
            let (mut made, mut attached, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
            let mut links = Vec::new();
            for i in 0..n {
                let name = format!("c{i:04}");
                let t = Instant::now();
                let link = netlink
                    .create_stacked(
                        Stacked::Macvtap,
                        &name,
                        lower.index,
                        MacvtapMode::Bridge,
                        Mac::derived_from(&name),
                        1500,
                    )
                    .await
                    .expect("creating a macvtap");
                made.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let used = datapath.attach(&name, None).expect("attaching");
                attached.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(used.as_str(), attach, "{name} got the wrong mode");
                links.push((name, link.index));
            }
            for (name, index) in &links {
                let t = Instant::now();
                netlink.delete(*index).await.expect("deleting a macvtap");
                Datapath::detach(&pins, name).expect("detaching");
                deleted.push(t.elapsed().as_secs_f64() * 1e3);
            }
            set_attach_choice(AttachChoice::Auto);
            (
                Summary::of(&made),
                Summary::of(&attached),
                Summary::of(&deleted),
            )
        })
    });
    drop(h);
    eprintln!(
        "  {attach}: macvtap {:.2} ms, attach {:.2} ms, delete {:.2} ms (medians)",
        macvtap_ms.median, attach_ms.median, delete_ms.median
    );
    AttachCost {
        mode: attach,
        macvtap_ms,
        attach_ms,
        delete_ms,
        apply: apply(mode, Some(attach)),
    }
}
