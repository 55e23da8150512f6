//! Attach modes: TCX and clsact side by side on one kernel, and the clsact
//! path's identity and cleanup.
//!
//! - `reload`, `restore` and further invocations replace our clsact filters
//!   in place: exactly one filter on every hook, whatever runs how often.
//! - `uplink set --reflective-relay off`, `endpoint del` and `reset`
//!   remove our filters, and the clsact qdisc only where macvswitch made
//!   it; an operator's qdisc and filters on the lower device survive.
//! - A filter of someone else's at our priority is not taken over.
//! - `--attach` forces a mode for new attachments; a device keeps its mode.

use macvswitch_tests::attach::{self, PRIORITY};
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Harness, root_harness};
use serde_json::Value;

const ADD_EP0: [&str; 7] = ["endpoint", "add", "ep0", "--lower", LOWER, "--vlan", "10"];
const RELAY_ON: [&str; 5] = ["uplink", "set", LOWER, "--reflective-relay", "on"];

/// `args` with `--attach clsact` in front.
fn clsact<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--attach", "clsact"];
    all.extend_from_slice(args);
    all
}

/// Every filter on `hook` of `dev`, asserting that there is exactly one and
/// that it is ours.
fn assert_only_ours(h: &Harness, dev: &str, hook: &str, context: &str) -> Value {
    let all = attach::filters(&h.topo.host, dev, hook);
    assert_eq!(all.len(), 1, "{context}: {dev} {hook}: {all:#?}");
    assert!(
        attach::is_ours(&all[0]),
        "{context}: {dev} {hook}: {all:#?}"
    );
    all[0].clone()
}

/// A foreign classic-BPF filter (it matches nothing) at `pref` on `hook`.
fn add_foreign_filter(h: &Harness, hook: &str, pref: u64) {
    h.topo.host.exec_ok(&[
        "tc",
        "filter",
        "add",
        "dev",
        LOWER,
        hook,
        "prio",
        &pref.to_string(),
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
    ]);
}

/// The foreign (not ours) filters on `hook` of the lower device.
fn foreign(h: &Harness, hook: &str) -> Vec<Value> {
    attach::filters(&h.topo.host, LOWER, hook)
        .into_iter()
        .filter(|f| !attach::is_ours(f))
        .collect()
}

#[test]
fn reload_and_restore_replace_the_clsact_filters_in_place() {
    let h = root_harness!();
    h.ctl.ok(&clsact(&ADD_EP0));
    h.ctl.ok(&clsact(
        &[&RELAY_ON[..], &["--host-port", "host0", "--vlan", "10"]].concat(),
    ));
    assert_eq!(h.show("ep0").raw["attach"], "clsact");
    let up = h.uplink();
    assert_eq!(up["attach"], "clsact", "{up}");
    assert_eq!(up["own_clsact"], true, "{up}");
    assert_eq!(up["host_port"]["attach"], "clsact", "{up}");
    let hooks = [
        ("ep0", "ingress"),
        ("ep0", "egress"),
        ("host0", "ingress"),
        ("host0", "egress"),
        (LOWER, "egress"),
    ];
    let before: Vec<Value> = hooks
        .iter()
        .map(|(dev, hook)| assert_only_ours(&h, dev, hook, "after add"))
        .collect();
    for step in ["reload", "reload", "restore", "restore", "endpoint list"] {
        // Without --attach too: a device keeps the mode it has.
        let args: Vec<&str> = step.split(' ').collect();
        h.ctl.ok(&args);
        for (dev, hook) in hooks {
            assert_only_ours(&h, dev, hook, &format!("after {step}"));
        }
    }
    for ((dev, hook), old) in hooks.iter().zip(&before) {
        let new = assert_only_ours(&h, dev, hook, "at the end");
        assert_eq!(new["options"]["handle"], old["options"]["handle"]);
        assert_ne!(
            new["options"]["prog"]["id"], old["options"]["prog"]["id"],
            "{dev} {hook}: reload did not replace the program"
        );
    }
    assert!(
        h.bpffs.pinned_files().iter().all(|p| {
            !p.starts_with(h.bpffs.path().join("links"))
                && !p.starts_with(h.bpffs.path().join("uplinks"))
        }),
        "TCX pins on clsact devices: {:?}",
        h.bpffs.pinned_files()
    );
    macvswitch_tests::lifecycle::assert_consistent(&h, "after reloads");

    // A filter deleted by hand comes back with `restore`, alone.
    let ours = attach::ours(&h.topo.host, "ep0", "ingress");
    let handle = ours[0]["options"]["handle"].as_str().expect("handle");
    h.topo.host.exec_ok(&[
        "tc",
        "filter",
        "del",
        "dev",
        "ep0",
        "ingress",
        "pref",
        &PRIORITY.to_string(),
        "handle",
        handle,
        "bpf",
    ]);
    assert!(attach::ours(&h.topo.host, "ep0", "ingress").is_empty());
    h.ctl.ok(&["restore"]);
    assert_only_ours(&h, "ep0", "ingress", "after restore");
    assert_only_ours(&h, "ep0", "egress", "after restore");
}

#[test]
fn relay_off_and_reset_remove_our_filters_and_only_our_qdisc() {
    let h = root_harness!();
    h.ctl
        .ok(&clsact(&["endpoint", "add", "ep0", "--lower", LOWER]));
    h.ctl.ok(&clsact(&RELAY_ON));
    assert!(attach::qdiscs(&h.topo.host, LOWER).contains(&"clsact".to_string()));
    assert_only_ours(&h, LOWER, "egress", "relay on");

    // Relay off: the program stays while ep0 carries its tags in the
    // mark; once ep0 is gone too, our filter and the qdisc we made go.
    h.uplink_set(&["--reflective-relay", "off"]);
    assert_only_ours(&h, LOWER, "egress", "relay off, ep0 still there");
    h.ctl.ok(&["endpoint", "del", "ep0"]);
    let left = attach::filters(&h.topo.host, LOWER, "egress");
    assert!(left.is_empty(), "relay off and ep0 gone left {left:#?}");
    assert!(
        !attach::qdiscs(&h.topo.host, LOWER).contains(&"clsact".to_string()),
        "relay off left the clsact qdisc macvswitch made"
    );
    assert_eq!(h.uplink()["own_clsact"], false);

    // On again; an operator then hangs a filter of theirs on our qdisc:
    // `reset` takes ours and leaves theirs, and so the qdisc.
    h.ctl.ok(&clsact(&RELAY_ON));
    add_foreign_filter(&h, "ingress", 5);
    h.ctl.ok(&["reset"]);
    assert!(attach::ours(&h.topo.host, LOWER, "egress").is_empty());
    assert_eq!(foreign(&h, "ingress").len(), 1, "the operator's filter");
    assert!(attach::qdiscs(&h.topo.host, LOWER).contains(&"clsact".to_string()));
}

/// The operator's own clsact qdisc on the lower device, before macvswitch.
fn add_operators_qdisc(h: &Harness) {
    h.topo
        .host
        .exec_ok(&["tc", "qdisc", "add", "dev", LOWER, "clsact"]);
}

#[test]
fn reset_leaves_an_operators_qdisc_and_filters() {
    let h = root_harness!();
    add_operators_qdisc(&h);
    add_foreign_filter(&h, "ingress", 5);
    add_foreign_filter(&h, "egress", 5);
    add_foreign_filter(&h, "egress", 49152);
    h.ctl.ok(&clsact(&ADD_EP0));
    h.ctl.ok(&clsact(&RELAY_ON));
    let up = h.uplink();
    assert_eq!(up["own_clsact"], false, "the qdisc was there: {up}");
    assert_eq!(attach::ours(&h.topo.host, LOWER, "egress").len(), 1);
    h.ctl.ok(&["reload"]);
    assert_eq!(attach::ours(&h.topo.host, LOWER, "egress").len(), 1);

    h.ctl.ok(&["reset"]);
    assert!(attach::ours(&h.topo.host, LOWER, "egress").is_empty());
    assert_eq!(foreign(&h, "ingress").len(), 1, "ingress after reset");
    assert_eq!(foreign(&h, "egress").len(), 2, "egress after reset");
    assert!(
        attach::qdiscs(&h.topo.host, LOWER).contains(&"clsact".to_string()),
        "reset removed the operator's clsact qdisc"
    );
}

#[test]
fn a_foreign_filter_at_our_priority_is_not_taken_over() {
    let h = root_harness!();
    add_operators_qdisc(&h);
    add_foreign_filter(&h, "egress", PRIORITY);
    let out = h.ctl.run(&clsact(&RELAY_ON));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("priority {PRIORITY}")) && !stderr.contains("netlink error"),
        "stderr: {stderr}"
    );
    assert_eq!(foreign(&h, "egress").len(), 1);
    assert!(attach::ours(&h.topo.host, LOWER, "egress").is_empty());
    let list = h.ctl.json(&["uplink", "list", "--json"]);
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().all(|u| u["reflective_relay"] == false)),
        "{list}"
    );
}

#[test]
fn a_forced_mode_applies_to_new_devices_and_each_keeps_its_own() {
    let h = root_harness!();
    h.ctl
        .ok(&clsact(&["endpoint", "add", "epc", "--lower", LOWER]));
    let out = h.ctl.run(&[
        "--attach", "tcx", "endpoint", "add", "ept", "--lower", LOWER,
    ]);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no TCX"), "stderr: {stderr}");
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        eprintln!("skipping the TCX half: this kernel has no TCX ({stderr})");
        return;
    }
    assert_eq!(h.show("epc").raw["attach"], "clsact");
    assert_eq!(h.show("ept").raw["attach"], "tcx");
    for step in [
        &["reload"][..],
        &["--attach", "clsact", "reload"],
        &["--attach", "tcx", "reload"],
    ] {
        h.ctl.ok(step);
        let ctx = format!("after {step:?}");
        assert!(
            attach::endpoint_problems(&h.topo.host, h.bpffs.path(), "epc", "clsact").is_empty(),
            "{ctx}: {:?}",
            attach::endpoint_problems(&h.topo.host, h.bpffs.path(), "epc", "clsact")
        );
        assert!(
            attach::endpoint_problems(&h.topo.host, h.bpffs.path(), "ept", "tcx").is_empty(),
            "{ctx}: {:?}",
            attach::endpoint_problems(&h.topo.host, h.bpffs.path(), "ept", "tcx")
        );
    }
    let text = h.ctl.ok(&["endpoint", "show", "epc"]);
    assert!(text.contains("attach: clsact"), "{text}");
}

#[test]
fn a_bad_attach_mode_is_refused_before_anything_changes() {
    let h = root_harness!();
    let out = h.ctl.run(&[
        "--attach", "xdp", "endpoint", "add", "ep0", "--lower", LOWER,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "stderr: {stderr}");
    assert!(
        stderr.contains("--attach") && stderr.contains("xdp") && stderr.contains("clsact"),
        "stderr: {stderr}"
    );
    assert_eq!(h.topo.host.link_names(), ["lo", LOWER]);
    assert!(!h.state.path().join("state.json").exists());
}
