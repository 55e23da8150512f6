//! Two or three CLI processes racing on one state dir: the state lock
//! serializes them, so nothing is lost or torn, and state and kernel never
//! disagree.

use std::process::Output;

use macvswitch_tests::lifecycle::{assert_consistent, assert_reset_clean, command, recorded};
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Harness, require_root};

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

#[test]
fn parallel_adds_of_distinct_names_are_all_recorded() {
    require_root!();
    let h = Harness::new();
    // From a fresh state dir and bpffs: the first adds also race to load
    // the data path.
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = ["a", "b"]
            .into_iter()
            .enumerate()
            .map(|(w, prefix)| {
                let h = &h;
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for i in 0..10 {
                        let name = format!("r{prefix}{i}");
                        let vlan = (100 * (w + 1) + i).to_string();
                        let args = ["endpoint", "add", &name, "--lower", LOWER, "--vlan", &vlan];
                        let out = run(h, &args);
                        if !out.status.success() {
                            failures.push(describe(&args, &out));
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    });
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
    require_root!();
    let h = Harness::new();
    h.add("anchor0", &["--vlan", "99"]);
    let ops: [&[&str]; 3] = [
        &["endpoint", "add", "x0", "--lower", LOWER, "--vlan", "10"],
        &["endpoint", "del", "x0"],
        &["endpoint", "set", "x0", "--vlan", "20"],
    ];
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = ops
            .iter()
            .map(|args| {
                let h = &h;
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for _ in 0..10 {
                        let out = run(h, args);
                        // 0, or 2 for "exists" / "no such endpoint":
                        // never a system error from the race itself.
                        if !matches!(out.status.code(), Some(0 | 2)) {
                            failures.push(describe(args, &out));
                        }
                        if out.status.code() == Some(2)
                            && String::from_utf8_lossy(&out.stderr).lines().count() != 1
                        {
                            failures.push(describe(args, &out));
                        }
                        assert!(recorded(h).len() <= 2, "state has more than anchor0 and x0");
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
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
    require_root!();
    let h = Harness::new();
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
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = files
            .iter()
            .map(|file| {
                let h = &h;
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for _ in 0..4 {
                        let args = ["apply", file.as_str()];
                        let out = run(h, &args);
                        if !out.status.success() {
                            failures.push(describe(&args, &out));
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_consistent(&h, "after racing applies");
    for file in &files {
        h.ctl.ok(&["apply", file]);
        assert_consistent(&h, file);
        assert_eq!(h.ctl.ok(&["apply", file]).trim(), "no changes", "{file}");
    }
    assert_reset_clean(&h);
}
