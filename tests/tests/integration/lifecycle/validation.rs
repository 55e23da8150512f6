//! Input validation, table-driven: every bad input exits with status 2 and
//! exactly one line on stderr naming the field or option and the bad value,
//! and changes nothing: the state file (byte for byte, or its absence), the
//! host namespace's links and the pins under the bpffs stay as they were.

use std::path::PathBuf;

use macvswitch_tests::frame::fmt_mac;
use macvswitch_tests::lifecycle::state_bytes;
use macvswitch_tests::topology::{LOWER, LOWER_MAC};
use macvswitch_tests::{Harness, require_root, root_harness};

/// One bad command: its arguments, the strings stderr must contain, and
/// for `apply` the line the error must point at.
struct Case {
    args: Vec<String>,
    needles: Vec<String>,
    line: Option<usize>,
}

fn case(args: &[&str], needles: &[&str]) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        needles: needles.iter().map(|s| s.to_string()).collect(),
        line: None,
    }
}

/// Everything a bad command must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    state: Option<Vec<u8>>,
    links: Vec<String>,
    pins: Vec<PathBuf>,
}

fn snapshot(h: &Harness) -> Snapshot {
    let mut pins = h.bpffs.pinned_files();
    pins.sort();
    Snapshot {
        state: state_bytes(h),
        links: h.topo.host.link_names(),
        pins,
    }
}

/// Runs every case; returns one sentence per violated expectation.
fn run_cases(h: &Harness, cases: &[Case]) -> Vec<String> {
    let before = snapshot(h);
    let mut failures = Vec::new();
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let cmd = args.join(" ");
        let out = h.ctl.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        if out.status.code() != Some(2) {
            failures.push(format!(
                "`{cmd}`: exit status {:?}, want 2 (stderr {stderr:?})",
                out.status.code()
            ));
        }
        if lines.len() != 1 {
            failures.push(format!(
                "`{cmd}`: stderr has {} lines, want 1: {stderr:?}",
                lines.len()
            ));
        }
        for needle in &c.needles {
            if !stderr.contains(needle.as_str()) {
                failures.push(format!(
                    "`{cmd}`: stderr does not name {needle:?}: {stderr:?}"
                ));
            }
        }
        if let Some(line) = c.line
            && !stderr.contains(&format!("line {line} column "))
        {
            failures.push(format!(
                "`{cmd}`: stderr does not point at \"line {line} column M\": {stderr:?}"
            ));
        }
        let after = snapshot(h);
        if after != before {
            failures.push(format!(
                "`{cmd}` changed something:\n    state before {:?}\n    state after  {:?}\n    links {:?} -> {:?}\n    pins {:?} -> {:?}",
                before.state.as_deref().map(String::from_utf8_lossy),
                after.state.as_deref().map(String::from_utf8_lossy),
                before.links,
                after.links,
                before.pins,
                after.pins
            ));
            // Later cases would only repeat the same complaint.
            break;
        }
    }
    failures
}

/// Writes `text` as a config file in the test's state dir; returns its path.
fn config_file(h: &Harness, n: usize, text: &str) -> String {
    let path = h.state.path().join(format!("bad-{n}.toml"));
    std::fs::write(&path, text).expect("writing config");
    path.to_string_lossy().into_owned()
}

/// `apply` cases: (file text, line the error points at, needles).
fn apply_cases(h: &Harness, table: &[(&str, Option<usize>, &[&str])]) -> Vec<Case> {
    table
        .iter()
        .enumerate()
        .map(|(n, (text, line, needles))| {
            let path = config_file(h, n, text);
            let mut needles: Vec<String> = needles.iter().map(|s| s.to_string()).collect();
            if line.is_some() {
                needles.push(path.clone());
            }
            Case {
                args: vec!["apply".into(), path],
                needles,
                line: *line,
            }
        })
        .collect()
}

#[test]
fn bad_input_exits_2_with_one_line_and_changes_nothing() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    // Links macvswitch does not manage: a veth pair and a macvlan.
    h.topo.host.ip_ok(&[
        "link", "add", "xveth0", "type", "veth", "peer", "name", "xveth1",
    ]);
    h.topo.host.ip_ok(&[
        "link", "add", "mvl0", "link", LOWER, "type", "macvlan", "mode", "bridge",
    ]);
    let lower_mac = fmt_mac(&LOWER_MAC);
    let ep_mac = fmt_mac(&ep.mac);
    let add = |rest: &[&str], needles: &[&str]| {
        let mut args = vec!["endpoint", "add"];
        args.extend_from_slice(rest);
        case(&args, needles)
    };

    #[rustfmt::skip]
    let mut cases = vec![
        // VIDs outside 1..=4094 or not numbers.
        add(&["bad0", "--lower", LOWER, "--vlan", "0"], &["--vlan", "0"]),
        add(&["bad0", "--lower", LOWER, "--vlan", "4095"], &["--vlan", "4095"]),
        add(&["bad0", "--lower", LOWER, "--vlan", "abc"], &["--vlan", "abc"]),
        add(&["bad0", "--lower", LOWER, "--vlan=-1"], &["--vlan", "-1"]),
        add(&["bad0", "--lower", LOWER, "--tunnel", "4095"], &["--tunnel", "4095"]),
        add(&["bad0", "--lower", LOWER, "--trunk", "10", "--native", "0"], &["--native", "0"]),
        // Malformed VID lists and ranges.
        add(&["bad0", "--lower", LOWER, "--trunk", "10,"], &["--trunk", "10,"]),
        add(&["bad0", "--lower", LOWER, "--trunk", "20-10"], &["--trunk", "20-10"]),
        add(&["bad0", "--lower", LOWER, "--trunk", "1-4095"], &["--trunk", "1-4095"]),
        add(&["bad0", "--lower", LOWER, "--trunk", "a"], &["--trunk", "a"]),
        add(&["bad0", "--lower", LOWER, "--tunnel", "100", "--tunnel-cvlans", "5-"], &["--tunnel-cvlans", "5-"]),
        // MACs: multicast, all-zero, already used on the lower device.
        add(&["bad0", "--lower", LOWER, "--mac", "01:00:5e:00:00:01"], &["--mac", "01:00:5e:00:00:01"]),
        add(&["bad0", "--lower", LOWER, "--mac", "00:00:00:00:00:00"], &["--mac", "00:00:00:00:00:00"]),
        add(&["bad0", "--lower", LOWER, "--mac", &lower_mac], &["--mac", &lower_mac]),
        add(&["bad0", "--lower", LOWER, "--mac", &ep_mac], &["--mac", &ep_mac]),
        // Names: too long, taken by an endpoint, taken by another link.
        add(&["name-of-16-bytes", "--lower", LOWER], &["name-of-16-bytes"]),
        add(&["ep0", "--lower", LOWER], &["ep0"]),
        add(&["xveth0", "--lower", LOWER], &["xveth0"]),
        add(&["mvl0", "--lower", LOWER], &["mvl0"]),
        // Lower devices: missing, a macvtap, a macvlan.
        add(&["bad0", "--lower", "nosuch0"], &["--lower", "nosuch0"]),
        add(&["bad0", "--lower", "ep0"], &["--lower", "ep0"]),
        add(&["bad0", "--lower", "mvl0"], &["--lower", "mvl0"]),
        // Conflicting options.
        add(&["bad0", "--lower", LOWER, "--vlan", "10", "--trunk", "20"], &["--vlan", "--trunk"]),
        add(&["bad0", "--lower", LOWER, "--vlan", "10", "--tunnel", "20"], &["--vlan", "--tunnel"]),
        add(&["bad0", "--lower", LOWER, "--native", "10"], &["--native"]),
        add(&["bad0", "--lower", LOWER, "--tunnel-cvlans", "10"], &["--tunnel-cvlans"]),
        add(&["bad0", "--lower", LOWER, "--isolated", "--community", "web"], &["--isolated", "--community"]),
        add(&["bad0", "--lower", LOWER, "--priority", "3"], &["--priority", "3"]),
        add(&["bad0", "--lower", LOWER, "--vlan", "10", "--priority", "8"], &["--priority", "8"]),
        add(&["bad0", "--lower", LOWER, "--mtu", "9000"], &["--mtu", "9000"]),
        // `set` on an existing endpoint.
        case(&["endpoint", "set", "ep0", "--vlan", "4095"], &["--vlan", "4095"]),
        case(&["endpoint", "set", "ep0", "--native", "10"], &["--native"]),
        case(&["endpoint", "set", "ep0", "--untagged", "--vlan", "20"], &["--untagged", "--vlan"]),
        case(&["endpoint", "set", "ep0", "--untagged", "--priority", "3"], &["--priority", "3"]),
        case(&["endpoint", "set", "ep0", "--isolated", "--community", "x"], &["--isolated", "--community"]),
        // Unknown endpoints.
        case(&["endpoint", "show", "nosuch0", "--json"], &["nosuch0"]),
        case(&["endpoint", "set", "nosuch0", "--vlan", "10"], &["nosuch0"]),
        case(&["endpoint", "del", "nosuch0"], &["nosuch0"]),
        case(&["stats", "nosuch0", "--json"], &["nosuch0"]),
        // Uplinks.
        case(&["uplink", "set", "nosuch0", "--reflective-relay", "on"], &["nosuch0"]),
        case(&["uplink", "set", LOWER, "--vlan", "10"], &["--host-port"]),
    ];

    let ep0_record = |mac: &str| {
        format!("[[endpoint]]\nname = \"ep0\"\nlower = \"{LOWER}\"\nmac = \"{mac}\"\nvlan = 10\n")
    };
    let keep_ep0 = ep0_record(&ep_mac);
    #[rustfmt::skip]
    let files: Vec<(String, Option<usize>, &[&str])> = vec![
        // TOML syntax errors.
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = {LOWER}\n"), Some(9), &[]),
        (format!("{keep_ep0}[[endpoint\nname = \"vm1\"\n"), Some(6), &[]),
        // Schema errors: unknown field, bad VID, wrong type, bad list, bad
        // MAC, too long a name, missing field.
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\ncolour = 1\n"), Some(10), &["colour"]),
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\nvlan = 4095\n"), Some(10), &[]),
        (format!( "{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\nvlan = \"ten\"\n" ), Some(10), &["ten"]),
        (format!( "{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\ntrunk = \"20-10\"\n" ), Some(10), &[]),
        (format!( "{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\nmac = \"01:00:5e:00:00:01\"\n" ), Some(10), &[]),
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"name-of-16-bytes\"\nlower = \"{LOWER}\"\n"), Some(8), &[]),
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\n"), Some(7), &["lower"]),
        (format!("{keep_ep0}\n[[uplink]]\nname = \"{LOWER}\"\nreflective_relay = \"yes\"\n"), Some(9), &[]),
        // Conflicts inside the file.
        (format!( "{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\nvlan = 10\ntrunk = \"20\"\n" ), None, &["vm1", "vlan", "trunk"]),
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\nnative = 10\n"), None, &["vm1", "native"]),
        (format!("{keep_ep0}{keep_ep0}"), None, &["ep0", "twice"]),
        // Against the host: a missing lower, a macvtap as lower, a name a
        // link macvswitch does not manage holds.
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"nosuch0\"\n"), None, &["vm1", "nosuch0"]),
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"ep0\"\n"), None, &["vm1", "ep0"]),
        (format!("{keep_ep0}\n[[endpoint]]\nname = \"xveth0\"\nlower = \"{LOWER}\"\n"), None, &["xveth0"]),
        (format!("{keep_ep0}\n[[uplink]]\nname = \"nosuch0\"\n"), None, &["nosuch0"]),
    ];
    let table: Vec<(&str, Option<usize>, &[&str])> = files
        .iter()
        .map(|(text, line, needles)| (text.as_str(), *line, *needles))
        .collect();
    cases.extend(apply_cases(&h, &table));
    // A dry run of a bad file fails the same way.
    let dry = config_file(
        &h,
        1000,
        &format!("{keep_ep0}\n[[endpoint]]\nname = \"vm1\"\nlower = \"nosuch0\"\n"),
    );
    cases.push(case(&["apply", &dry, "--dry-run"], &["vm1", "nosuch0"]));

    let failures = run_cases(&h, &cases);
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// From an empty host: bad input must not create the state file, nor load
/// and pin the data path.
#[test]
fn bad_input_on_a_fresh_host_creates_no_state_and_no_pins() {
    let h = root_harness!();
    let missing_lower = config_file(
        &h,
        0,
        "[[endpoint]]\nname = \"vm1\"\nlower = \"nosuch0\"\nvlan = 10\n",
    );
    let syntax = config_file(
        &h,
        1,
        "[[endpoint]]\nname = \"vm1\"\nvlan = 10\nlower = x\n",
    );
    let cases = vec![
        case(
            &["endpoint", "add", "bad0", "--lower", LOWER, "--vlan", "0"],
            &["--vlan", "0"],
        ),
        case(
            &["endpoint", "add", "bad0", "--lower", "nosuch0"],
            &["--lower", "nosuch0"],
        ),
        case(
            &["endpoint", "add", "bad0", "--lower", LOWER, "--native", "5"],
            &["--native"],
        ),
        case(
            &[
                "endpoint",
                "add",
                "bad0",
                "--lower",
                LOWER,
                "--mac",
                &fmt_mac(&LOWER_MAC),
            ],
            &["--mac"],
        ),
        case(&["endpoint", "del", "nosuch0"], &["nosuch0"]),
        case(&["endpoint", "set", "nosuch0", "--vlan", "3"], &["nosuch0"]),
        case(&["apply", &missing_lower], &["vm1", "nosuch0"]),
        Case {
            line: Some(4),
            ..case(&["apply", &syntax], &[])
        },
    ];
    assert_eq!(state_bytes(&h), None);
    let failures = run_cases(&h, &cases);
    assert!(
        failures.is_empty(),
        "bad inputs on a fresh host:\n{}",
        failures.join("\n")
    );
    assert_eq!(state_bytes(&h), None, "a failed command wrote state.json");
    assert!(
        h.bpffs.pinned_files().is_empty(),
        "a failed command pinned {:?}",
        h.bpffs.pinned_files()
    );
}

/// `--vlan -1` (the value as its own argument, as a user types it): the
/// error must still name `--vlan` and `-1`.
#[test]
fn negative_vid_as_separate_argument_names_the_option() {
    let h = root_harness!();
    h.add("ep0", &["--vlan", "10"]);
    let cases = vec![
        case(
            &["endpoint", "add", "bad0", "--lower", LOWER, "--vlan", "-1"],
            &["--vlan", "-1"],
        ),
        case(
            &["endpoint", "set", "ep0", "--vlan", "-1"],
            &["--vlan", "-1"],
        ),
    ];
    let failures = run_cases(&h, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A file that passes every check `apply` makes up front but fails on the
/// host at `add` time (the MAC of the lower device itself; an MTU above
/// the lower device's) must still change nothing: the endpoint the file
/// drops must not be deleted before the error is found.
#[test]
fn apply_rejected_at_add_time_changes_nothing() {
    require_root!();
    let lower_mac = fmt_mac(&LOWER_MAC);
    let mut failures = Vec::new();
    for (field, needle) in [
        ("mac", format!("\"{lower_mac}\"")),
        ("mtu", "9000".to_string()),
    ] {
        let h = Harness::new();
        h.add("ep0", &["--vlan", "10"]);
        let file = config_file(
            &h,
            0,
            &format!("[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\n{field} = {needle}\n"),
        );
        let value = needle.trim_matches('"');
        failures.extend(run_cases(&h, &[case(&["apply", &file], &["vm1", value])]));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
