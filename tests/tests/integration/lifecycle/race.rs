//! Two or three CLI processes racing on one state dir: the state lock
//! serializes them, so nothing is lost or torn, and state and kernel never
//! disagree.

use std::process::Output;

use macvswitch_tests::lifecycle::{assert_consistent, assert_reset_clean, command, recorded};
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Harness, root_harness};

fn run(h: &Harness, args: &[&str]) -> Output {
    command(h, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("macvswitch {}: {e}", args.join(" ")))
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`{}` -> {:?}: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Runs the workers in parallel, each its commands in turn; returns every
/// command whose outcome `bad` finds wrong.
fn race(
    h: &Harness,
    workers: &[Vec<Vec<String>>],
    bad: impl Fn(&Output) -> bool + Sync,
) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .map(|commands| {
                let bad = &bad;
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for args in commands {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let out = run(h, &args);
                        if bad(&out) {
                            failures.push(describe(&args, &out));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    })
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `args`, `n` times over: one worker's commands.
fn repeat(args: &[&str], n: usize) -> Vec<Vec<String>> {
    vec![owned(args); n]
}

#[test]
fn parallel_adds_of_distinct_names_are_all_recorded() {
    let h = root_harness!();
    // From a fresh state dir and bpffs: the first adds also race to load
    // the data path.
    let workers: Vec<Vec<Vec<String>>> = ["a", "b"]
        .into_iter()
        .enumerate()
        .map(|(w, prefix)| {
            (0..10)
                .map(|i| {
                    let name = format!("r{prefix}{i}");
                    let vlan = (100 * (w + 1) + i).to_string();
                    owned(&["endpoint", "add", &name, "--lower", LOWER, "--vlan", &vlan])
                })
                .collect()
        })
        .collect();
    let failures = race(&h, &workers, |out| !out.status.success());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let records = recorded(&h);
    assert_eq!(records.len(), 20, "recorded: {:?}", records.keys());
    for (w, prefix) in ["a", "b"].into_iter().enumerate() {
        for i in 0..10 {
            let name = format!("r{prefix}{i}");
            let r = records
                .get(&name)
                .unwrap_or_else(|| panic!("{name} not recorded"));
            assert_eq!(
                r["vlans"]["vlan"].as_u64(),
                Some((100 * (w + 1) + i) as u64),
                "{name}: {r}"
            );
        }
    }
    assert_consistent(&h, "after 2 x 10 parallel adds");
    assert_eq!(h.list().as_array().map(Vec::len), Some(20));
    assert_reset_clean(&h);
}

#[test]
fn concurrent_add_set_del_of_one_name_keep_state_and_kernel_in_step() {
    let h = root_harness!();
    h.add("anchor0", &["--vlan", "99"]);
    let ops: [&[&str]; 3] = [
        &["endpoint", "add", "x0", "--lower", LOWER, "--vlan", "10"],
        &["endpoint", "del", "x0"],
        &["endpoint", "set", "x0", "--vlan", "20"],
    ];
    let workers: Vec<_> = ops.iter().map(|args| repeat(args, 10)).collect();
    let failures = race(&h, &workers, |out| {
        assert!(
            recorded(&h).len() <= 2,
            "state has more than anchor0 and x0"
        );
        // 0, or 2 for "exists" / "no such endpoint" in one line: never a
        // system error from the race itself.
        match out.status.code() {
            Some(0) => false,
            Some(2) => String::from_utf8_lossy(&out.stderr).lines().count() != 1,
            _ => true,
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_consistent(&h, "after racing add/set/del of x0");
    // Whatever is left works as a whole.
    if recorded(&h).contains_key("x0") {
        h.ctl.ok(&["endpoint", "set", "x0", "--vlan", "30"]);
        h.ctl.ok(&["endpoint", "del", "x0"]);
    } else {
        h.add("x0", &["--vlan", "30"]);
    }
    assert_consistent(&h, "after using x0 once more");
    assert_reset_clean(&h);
}

#[test]
fn racing_applies_of_two_files_converge() {
    let h = root_harness!();
    let files: Vec<String> = [
        (1, "vlan = 10", "trunk = \"10,20\"\nnative = 10"),
        (2, "vlan = 11\nmode = \"vepa\"", "tunnel = 100"),
    ]
    .into_iter()
    .map(|(n, e1, e2)| {
        let text = format!(
            "[[endpoint]]\nname = \"c1\"\nlower = \"{LOWER}\"\n{e1}\n\n[[endpoint]]\nname = \"c{}\"\nlower = \"{LOWER}\"\n{e2}\n\n[[endpoint]]\nname = \"c9\"\nlower = \"{LOWER}\"\n",
            n + 1
        );
        let path = h.state.path().join(format!("race-{n}.toml"));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    })
    .collect();
    let workers: Vec<_> = files.iter().map(|f| repeat(&["apply", f], 4)).collect();
    let failures = race(&h, &workers, |out| !out.status.success());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_consistent(&h, "after racing applies");
    for file in &files {
        h.ctl.ok(&["apply", file]);
        assert_consistent(&h, file);
        assert_eq!(h.ctl.ok(&["apply", file]).trim(), "no changes", "{file}");
    }
    assert_reset_clean(&h);
}
