//! CLI contract: `show`/`list` JSON, derived MACs, and rejection of bad
//! input without side effects.

use std::os::unix::fs::FileTypeExt;

use macvswitch_tests::frame::{fmt_mac, parse_mac};
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::{LOWER, LOWER_MAC};

#[test]
fn show_and_list_report_the_endpoint() {
    let h = root_harness!();
    let ep = h.add(
        "ep0",
        &[
            "--mode",
            "vepa",
            "--vlan",
            "10",
            "--mtu",
            "1400",
            "--mac",
            "02:AA:BB:CC:DD:01",
        ],
    );
    let v = &ep.raw;
    assert_eq!(v["name"], "ep0", "{v}");
    assert_eq!(v["lower"], LOWER, "{v}");
    assert_eq!(v["mode"], "vepa", "{v}");
    assert_eq!(v["mac"], "02:aa:bb:cc:dd:01", "mac must be lowercase: {v}");
    assert_eq!(v["vlan"], 10, "{v}");
    assert_eq!(v["mtu"], 1400, "{v}");
    assert_eq!(v["allow_mac_spoofing"], false, "{v}");

    // ifindex, MAC and MTU agree with the kernel.
    let link = h.topo.host.ip_ok(&["-o", "link", "show", "ep0"]);
    let idx: u64 = link.split(':').next().unwrap().trim().parse().unwrap();
    assert_eq!(ep.ifindex, idx, "ifindex vs `{link}`");
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(link.contains("02:aa:bb:cc:dd:01"), "{link}");
    assert!(
        link.contains("macvtap") || link.contains("@lower0"),
        "{link}"
    );

    // The tap path is a char device usable from here.
    let meta = std::fs::metadata(&ep.tap).expect("tap node");
    assert!(
        meta.file_type().is_char_device(),
        "{} is not a char device",
        ep.tap.display()
    );

    let ep1 = h.add("ep1", &[]);
    assert!(ep1.raw["vlan"].is_null(), "{}", ep1.raw);
    assert_eq!(ep1.raw["lower"], LOWER);
    let list = h.list();
    let arr = list.as_array().expect("list is an array");
    assert_eq!(arr.len(), 2, "{list}");
    for name in ["ep0", "ep1"] {
        let e = arr.iter().find(|e| e["name"] == name).expect(name);
        assert_eq!(e, &h.show(name).raw, "list and show disagree for {name}");
    }
}

#[test]
fn derived_mac_is_stable_local_unicast_and_per_name() {
    let h = root_harness!();
    let a = h.add("ep0", &[]);
    let b = h.add("ep1", &[]);
    let s = a.raw["mac"].as_str().unwrap();
    assert_eq!(s, s.to_lowercase());
    assert_eq!(
        a.mac[0] & 0x03,
        0x02,
        "not locally administered unicast: {s}"
    );
    assert_ne!(a.mac, b.mac, "two names, one MAC");
    h.ctl.ok(&["endpoint", "del", "ep0"]);
    let again = h.add("ep0", &[]);
    assert_eq!(again.mac, a.mac, "derived MAC changed across re-creation");
}

#[test]
fn bad_input_fails_cleanly_without_side_effects() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    let list_before = h.list();
    let links_before = h.topo.host.link_names();
    let pins_before = h.bpffs.pinned_files();
    let lower_mac = fmt_mac(&LOWER_MAC);
    let ep_mac = fmt_mac(&ep.mac);
    assert!(parse_mac(&ep_mac).is_some());

    // (args after `endpoint add`, text stderr must mention)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["bad0", "--lower", LOWER, "--vlan", "0"], "--vlan"),
        (vec!["bad0", "--lower", LOWER, "--vlan", "4095"], "--vlan"),
        (vec!["bad0", "--lower", LOWER, "--vlan", "abc"], "--vlan"),
        (
            vec!["bad0", "--lower", LOWER, "--mac", "01:00:5e:00:00:01"],
            "--mac",
        ),
        (
            vec!["bad0", "--lower", LOWER, "--mac", "02:00:00:00:00"],
            "--mac",
        ),
        (vec!["bad0", "--lower", LOWER, "--mac", &lower_mac], "--mac"),
        (vec!["bad0", "--lower", LOWER, "--mac", &ep_mac], "--mac"),
        (vec!["bad0", "--lower", LOWER, "--mode", "hub"], "--mode"),
        (vec!["bad0", "--lower", LOWER, "--mtu", "0"], "--mtu"),
        (vec!["bad0", "--lower", LOWER, "--mtu", "9000"], "--mtu"),
        (vec!["bad0", "--lower", "nosuchdev0"], "--lower"),
        (
            vec!["name-of-16-bytes", "--lower", LOWER],
            "name-of-16-bytes",
        ),
        (vec!["ep0", "--lower", LOWER, "--vlan", "20"], "ep0"),
    ];
    let mut failures = Vec::new();
    for (rest, needle) in &cases {
        let mut args = vec!["endpoint", "add"];
        args.extend_from_slice(rest);
        let out = h.ctl.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        let cmd = args.join(" ");
        if out.status.success() {
            failures.push(format!("`{cmd}` succeeded"));
            // Undo so later cases start from the same state.
            if let Some(name) = rest.first().filter(|n| **n != "ep0") {
                h.ctl.run(&["endpoint", "del", name]);
            }
            continue;
        }
        if lines.len() != 1 {
            failures.push(format!(
                "`{cmd}`: stderr is {} lines: {stderr:?}",
                lines.len()
            ));
        }
        if !stderr.contains(needle) {
            failures.push(format!(
                "`{cmd}`: stderr does not mention {needle}: {stderr:?}"
            ));
        }
        if h.list() != list_before {
            failures.push(format!("`{cmd}`: endpoint list changed: {}", h.list()));
        }
        if h.topo.host.link_names() != links_before {
            failures.push(format!(
                "`{cmd}`: links changed: {:?}",
                h.topo.host.link_names()
            ));
        }
        if h.bpffs.pinned_files() != pins_before {
            failures.push(format!(
                "`{cmd}`: pins changed: {:?}",
                h.bpffs.pinned_files()
            ));
        }
    }
    // Other subcommands with a bad name.
    for args in [
        vec!["endpoint", "show", "nosuch0", "--json"],
        vec!["endpoint", "del", "nosuch0"],
        vec!["stats", "nosuch0", "--json"],
    ] {
        let out = h.ctl.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("`{}` succeeded", args.join(" ")));
        } else if stderr.trim_end().lines().count() != 1 || !stderr.contains("nosuch0") {
            failures.push(format!("`{}`: stderr {stderr:?}", args.join(" ")));
        }
    }
    assert!(
        failures.is_empty(),
        "bad-input problems:\n{}",
        failures.join("\n")
    );
    assert_eq!(h.list(), list_before);
}

/// `macvswitch ARGS` without a namespace, state or bpffs: what clap refuses
/// never gets that far.
fn bare(args: &[&str]) -> std::process::Output {
    std::process::Command::new(macvswitch_tests::controller::binary())
        .args(args)
        .output()
        .expect("running macvswitch")
}

#[test]
fn bare_commands_print_usage_and_their_commands() {
    for (args, commands) in [
        (
            &[][..],
            &["endpoint", "uplink", "stats", "apply", "exec"][..],
        ),
        (&["endpoint"], &["add", "set", "del", "list", "show"]),
        (&["uplink"], &["set", "list", "show"]),
    ] {
        let out = bare(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: macvswitch"), "{args:?}: {stderr}");
        for command in commands {
            assert!(
                stderr.lines().any(|l| l.trim_start().starts_with(command)),
                "{args:?}: {command} not listed in:\n{stderr}"
            );
        }
    }
}

#[test]
fn typos_get_the_suggestion_and_the_help_to_read_in_one_line() {
    for (args, needles) in [
        (
            &["endpont"][..],
            &["'endpont'", "'endpoint'", "see `macvswitch --help`"][..],
        ),
        (
            &["endpoint", "add", "x", "--vlna", "3"],
            &[
                "'--vlna'",
                "'--vlan'",
                "see `macvswitch endpoint add --help`",
            ],
        ),
        (
            &["endpoint", "add", "x"],
            &["--lower", "see `macvswitch endpoint add --help`"],
        ),
        (
            &["uplink", "set", "eth0", "--reflective-relay", "maybe"],
            &["maybe", "(allowed: on, off)"],
        ),
    ] {
        let out = bare(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle} not in: {stderr}"
            );
        }
    }
}

#[test]
fn under_ip_netns_exec_the_default_bpffs_is_refused_with_advice_that_works() {
    let h = root_harness!();
    // No --bpffs: the default, /sys/fs/bpf/macvswitch, which `ip netns exec`
    // hides under a fresh sysfs.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", h.topo.host.name()])
        .arg(macvswitch_tests::controller::binary())
        .arg("--state-dir")
        .arg(h.state.path())
        .args(["endpoint", "add", "ep0", "--lower", LOWER])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("private mount namespace")
            && stderr.contains("mount -t bpf bpf /run/msw/bpffs")
            && stderr.contains("--bpffs /run/msw/bpffs"),
        "{stderr}"
    );
    assert!(h.names().is_empty(), "a refused add made {:?}", h.names());
    // The advice, at the harness's own path: a bpffs mounted from the root
    // mount namespace outside /sys, passed with --bpffs, works.
    assert!(!h.bpffs.path().starts_with("/sys"));
    h.add("ep0", &[]);
}

/// `endpoint set` changes exactly what it is given: a new trunk list keeps
/// the native VLAN, its tagging, the priority, the isolation and the
/// spoofing setting; each has its own way back to the default.
#[test]
fn set_changes_only_what_it_is_given_and_each_setting_has_a_way_back() {
    let h = root_harness!();
    h.add(
        "ep0",
        &[
            "--trunk",
            "10,20,100-199",
            "--native",
            "10",
            "--native-tagged",
            "--priority",
            "3",
            "--isolated",
            "--allow-mac-spoofing",
        ],
    );
    // (set arguments, the fields `show --json` must have afterwards)
    let kept: [(&str, serde_json::Value); 6] = [
        ("trunk", "10,30".into()),
        ("native", 10.into()),
        ("native_tagged", true.into()),
        ("priority", 5.into()),
        ("isolated", true.into()),
        ("allow_mac_spoofing", true.into()),
    ];
    set_and_check(&h, &["--trunk", "10,30", "--priority", "5"], &kept);

    h.ctl.ok(&["endpoint", "set", "ep0", "--trunk", "10,40"]);
    assert_eq!(h.show("ep0").raw["priority"], 5, "priority kept");

    let defaults: [(&str, serde_json::Value); 6] = [
        ("trunk", "10,40".into()),
        ("native", serde_json::Value::Null),
        ("native_tagged", false.into()),
        ("priority", serde_json::Value::Null),
        ("isolation", "open".into()),
        ("allow_mac_spoofing", false.into()),
    ];
    let back = [
        "--no-native",
        "--no-priority",
        "--no-allow-mac-spoofing",
        "--open",
    ];
    set_and_check(&h, &back, &defaults);

    // A tunnel keeps its customer VLANs when it moves to another S-VLAN.
    h.add("ep1", &["--tunnel", "300", "--tunnel-cvlans", "7,8"]);
    h.ctl.ok(&["endpoint", "set", "ep1", "--tunnel", "301"]);
    let v = h.show("ep1").raw;
    assert_eq!(
        (v["tunnel"].clone(), v["tunnel_cvlans"].clone()),
        (301.into(), "7-8".into()),
        "{v}"
    );
    h.ctl.ok(&["endpoint", "set", "ep1", "--all-cvlans"]);
    assert!(h.show("ep1").raw["tunnel_cvlans"].is_null());

    // The set-only ways back refuse a port they do not fit, in one line.
    let out = h.ctl.run(&["endpoint", "set", "ep1", "--no-native"]);
    macvswitch_tests::expect::assert_refused(&out, "--no-native");
}

/// `endpoint set ep0 ARGS`, then every field of `show --json` as expected.
fn set_and_check(
    h: &macvswitch_tests::Harness,
    args: &[&str],
    expected: &[(&str, serde_json::Value)],
) {
    let mut command = vec!["endpoint", "set", "ep0"];
    command.extend_from_slice(args);
    h.ctl.ok(&command);
    let shown = h.show("ep0").raw;
    for (field, value) in expected {
        assert_eq!(&shown[*field], value, "{field} after set {args:?}: {shown}");
    }
}
