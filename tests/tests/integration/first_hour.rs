//! What a newcomer meets in the first hour (issue 16): the host port
//! changes in place and is replaced only when asked; `endpoint list|show`
//! report the endpoint as the kernel has it; destructive commands on
//! endpoints in use need `--force` and every change says what it changed;
//! a refused command leaves no state directory or lock behind.

use std::path::Path;

use macvswitch_tests::expect::assert_refused;
use macvswitch_tests::harness::HOST_PORT_10;
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Controller, Harness, root_harness};
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names and `status` of `endpoint list --json`.
fn statuses(h: &Harness) -> Vec<(String, String)> {
    h.list()
        .as_array()
        .expect("list is an array")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_string(),
                e["status"].as_str().expect("status").to_string(),
            )
        })
        .collect()
}

/// The STATUS column of `endpoint list` for `name`.
fn status_column(h: &Harness, name: &str) -> String {
    let table = h.ctl.ok(&["endpoint", "list"]);
    let header = table.lines().next().expect("header");
    let at = header
        .find("STATUS")
        .unwrap_or_else(|| panic!("no STATUS in {header}"));
    let row = table
        .lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"));
    row[at..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The host port's addresses as `ip` shows them.
fn addresses(h: &Harness, dev: &str) -> String {
    h.topo.host.ip_ok(&["-o", "addr", "show", "dev", dev])
}

#[test]
fn host_port_changes_vlan_and_addresses_in_place() {
    let h = root_harness!();
    h.uplink_set(&HOST_PORT_10);
    let before = h.uplink()["host_port"].clone();
    let out = h.ctl.ok(&[
        "uplink",
        "set",
        LOWER,
        "--host-port",
        "host0",
        "--vlan",
        "20",
        "--address",
        "198.51.100.1/24",
    ]);
    assert!(out.contains("access 20 198.51.100.1/24"), "{out}");
    let after = h.uplink()["host_port"].clone();
    assert_eq!(
        after["ifindex"], before["ifindex"],
        "not recreated: {after}"
    );
    assert_eq!(after["vlan"], 20, "{after}");
    assert_eq!(after["addresses"], serde_json::json!(["198.51.100.1/24"]));
    let shown = addresses(&h, "host0");
    assert!(shown.contains("198.51.100.1/24"), "{shown}");
    assert!(!shown.contains("192.0.2.1/24"), "old address kept: {shown}");
}

#[test]
fn host_port_of_another_name_is_replaced_only_when_asked() {
    let h = root_harness!();
    h.uplink_set(&HOST_PORT_10);
    let out = h.ctl.run(&[
        "uplink",
        "set",
        LOWER,
        "--host-port",
        "host1",
        "--vlan",
        "20",
    ]);
    assert_refused(&out, "lower0 already has host port host0; add --replace");
    assert!(out.stdout.is_empty());
    assert_eq!(h.uplink()["host_port"]["name"], "host0");
    let links = h.topo.host.link_names();
    assert!(!links.iter().any(|l| l == "host1"), "{links:?}");

    h.uplink_set(&["--host-port", "host1", "--vlan", "20", "--replace"]);
    assert_eq!(h.uplink()["host_port"]["name"], "host1");
    let links = h.topo.host.link_names();
    assert!(!links.iter().any(|l| l == "host0"), "{links:?}");
    assert!(links.iter().any(|l| l == "host1"), "{links:?}");
}

#[test]
fn list_and_show_report_the_live_status() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    h.add("ep1", &["--vlan", "10"]);
    assert_eq!(ep.raw["status"], "ready");
    assert_eq!(status_column(&h, "ep0"), "ready");

    // Its programs taken off behind macvswitch's back (pin or filter).
    let _ = std::fs::remove_dir_all(h.bpffs.path().join("links").join("ep1"));
    for hook in ["ingress", "egress"] {
        let _ = h
            .topo
            .host
            .exec(&["tc", "filter", "del", "dev", "ep1", hook]);
    }
    assert_eq!(h.show("ep1").raw["status"], "not-attached");
    assert_eq!(status_column(&h, "ep1"), "not-attached");

    // Its macvtap deleted by hand: no tap shown as if usable.
    h.topo.host.ip_ok(&["link", "del", "ep0"]);
    let shown = h.show("ep0");
    assert_eq!(shown.raw["status"], "missing");
    assert_eq!(shown.raw["tap"], Value::Null);
    assert_eq!(status_column(&h, "ep0"), "missing");
    let text = h.ctl.ok(&["endpoint", "show", "ep0"]);
    assert!(text.contains("status: missing"), "{text}");
    assert!(text.contains("tap: none"), "{text}");
    assert!(!text.contains("qemu: macvswitch exec"), "{text}");

    // The lower device gone: waiting for it.
    h.topo.host.ip_ok(&["link", "del", LOWER]);
    assert_eq!(
        statuses(&h),
        vec![
            ("ep0".to_string(), "waiting".to_string()),
            ("ep1".to_string(), "waiting".to_string())
        ]
    );
}

#[test]
fn del_of_an_endpoint_in_use_names_the_process_and_needs_force() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    let tap = h.tap(&ep);
    let me = format!("process {}", std::process::id());

    let out = h.ctl.run(&["endpoint", "del", "ep0"]);
    assert_refused(&out, &me);
    assert_refused(&out, "--force");
    assert_eq!(h.names(), vec!["ep0"]);

    let out = h.ctl.ok(&["endpoint", "del", "ep0", "--force"]);
    assert_eq!(out, "deleted endpoint ep0\n");
    assert!(h.names().is_empty());

    // The fd still open is the deleted macvtap's, not that of a new one
    // that may get its device number.
    h.add("ep0", &["--vlan", "10"]);
    assert_eq!(
        h.ctl.ok(&["endpoint", "del", "ep0"]),
        "deleted endpoint ep0\n"
    );
    drop(tap);

    h.add("ep1", &[]);
    let out = h.ctl.ok(&["--quiet", "endpoint", "del", "ep1"]);
    assert_eq!(out, "");
}

#[test]
fn reset_lists_the_endpoints_in_use_and_needs_force() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    h.add("ep1", &["--vlan", "20"]);
    h.uplink_set(&HOST_PORT_10);
    let tap = h.tap(&ep);

    let out = h.ctl.run(&["reset"]);
    assert_refused(&out, "endpoints in use: ep0 (open in process");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ep1"), "ep1 is not in use: {stderr}");
    assert!(stdout(&out).is_empty());
    assert_eq!(h.names(), vec!["ep0", "ep1"]);

    let out = h.ctl.ok(&["reset", "--force"]);
    assert_eq!(out, "reset: removed 2 endpoints and 1 host port\n");
    drop(tap);
    assert!(h.names().is_empty());
}

/// `path` and everything under it, for messages.
fn tree(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            found.push(entry.path().display().to_string());
            found.extend(tree(&entry.path()));
        }
    }
    found
}

#[test]
fn a_refused_command_leaves_no_state_dir_or_lock() {
    let h = root_harness!();
    let fresh = h.state.path().join("new");
    let ctl = Controller::new(h.topo.host.name(), &fresh, h.bpffs.path());
    let out = ctl.run(&["endpoint", "add", "vm1", "--lower", "lo"]);
    assert_refused(&out, "--lower lo");
    assert!(!fresh.exists(), "left behind: {:?}", tree(&fresh));
    let out = ctl.run(&["endpoint", "del", "vm1"]);
    assert_refused(&out, "no such endpoint");
    assert!(!fresh.exists(), "left behind: {:?}", tree(&fresh));

    // In a directory that exists, only what was there stays.
    let empty = h.state.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let ctl = Controller::new(h.topo.host.name(), &empty, h.bpffs.path());
    assert_refused(
        &ctl.run(&["uplink", "set", "nope0", "--reflective-relay", "on"]),
        "LOWER nope0",
    );
    assert!(tree(&empty).is_empty(), "left behind: {:?}", tree(&empty));
}

#[test]
fn reset_leaves_the_state_dir_as_it_found_it() {
    let h = root_harness!();
    let fresh = h.state.path().join("new");
    let ctl = Controller::new(h.topo.host.name(), &fresh, h.bpffs.path());
    ctl.ok(&["endpoint", "add", "ep0", "--lower", LOWER]);
    assert!(fresh.join("state.json").exists());
    assert_eq!(ctl.ok(&["reset"]), "reset: removed 1 endpoint\n");
    // No lock, state or tap node left; the directory itself stays.
    assert!(fresh.is_dir());
    assert!(tree(&fresh).is_empty(), "left behind: {:?}", tree(&fresh));
    std::fs::remove_dir(&fresh).unwrap();
    // A reset where there is nothing makes nothing.
    assert_eq!(ctl.ok(&["--quiet", "reset"]), "");
    assert!(!fresh.exists(), "left behind: {:?}", tree(&fresh));

    h.add("ep1", &[]);
    h.ctl.ok(&["reset"]);
    assert!(h.state.path().is_dir());
    assert!(
        tree(h.state.path()).is_empty(),
        "left behind: {:?}",
        tree(h.state.path())
    );
}
