//! Crash safety: `kill -9` of the CLI in the middle of `endpoint add`,
//! `endpoint set`, `endpoint del` and `apply`, at random delays, then the
//! next command repairs: the state file parses, no record is left pending
//! or deleting, every recorded endpoint has its macvtap (recorded ifindex),
//! its two link pins and its tap node, no unrecorded macvtap is left, and
//! `reset` leaves nothing. Delays are random but seeded (`MSW_SEED`).
//!
//! "The next command" is `endpoint set anchor0 --vlan 99` on an endpoint
//! the killed commands never touch: an ordinary command that opens a
//! session, without `restore`'s own repairs masking a bad leftover.

use std::collections::BTreeSet;
use std::time::Duration;

use macvswitch_tests::attach;
use macvswitch_tests::expect::sent_to_wire;
use macvswitch_tests::harness::Endpoint;
use macvswitch_tests::lifecycle::{
    Rng, assert_consistent, assert_reset_clean, recorded, run_and_kill, state,
};
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Harness, root_harness};

/// Kills per operation.
const ROUNDS: usize = 8;

fn anchor(h: &Harness) -> Endpoint {
    h.add("anchor0", &["--vlan", "99"])
}

/// An ordinary command that opens a session, then the checks.
fn next_command_and_check(h: &Harness, context: &str) {
    eprintln!("{context}");
    h.ctl.ok(&["endpoint", "set", "anchor0", "--vlan", "99"]);
    assert_consistent(h, context);
    // Readers agree with the state file.
    let listed: BTreeSet<String> = h
        .list()
        .as_array()
        .expect("list is an array")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect();
    let recorded: BTreeSet<String> = recorded(h).into_keys().collect();
    assert_eq!(listed, recorded, "{context}: list vs state.json");
}

fn us(d: u64) -> Duration {
    Duration::from_micros(d)
}

/// What the killed command left, before anything repairs it: the statuses
/// of interrupted records (for the log; proves the kills land mid-way).
fn leftovers(h: &Harness) -> Vec<String> {
    recorded(h)
        .iter()
        .filter_map(|(name, r)| r["status"].as_str().map(|s| format!("{name}:{s}")))
        .collect()
}

#[test]
fn kill_during_add_then_next_command_repairs() {
    let h = root_harness!();
    anchor(&h);
    let mut rng = Rng::from_env("kill_during_add");
    for i in 0..ROUNDS {
        let name = format!("ep{i}");
        let vlan = (10 + i).to_string();
        let delay = rng.range(0, 80_000);
        let done = run_and_kill(
            &h,
            &["endpoint", "add", &name, "--lower", LOWER, "--vlan", &vlan],
            us(delay),
        );
        let context = format!(
            "add {name} killed after {delay} µs (finished: {done:?}, left {:?})",
            leftovers(&h)
        );
        next_command_and_check(&h, &context);
        // Whatever survived is usable: delete it or add it again.
        if recorded(&h).contains_key(&name) {
            assert_eq!(h.show(&name).vlan, Some(10 + i as u16), "{context}");
        } else {
            h.add(&name, &["--vlan", &vlan]);
            assert_consistent(&h, &format!("{context}, then added again"));
        }
    }
    assert_reset_clean(&h);
}

#[test]
fn kill_during_set_then_kernel_follows_the_state_file() {
    let h = root_harness!();
    anchor(&h);
    let ep = h.add("ep0", &["--vlan", "10"]);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();
    let mut rng = Rng::from_env("kill_during_set");
    for i in 0..ROUNDS {
        let vlan = (20 + i).to_string();
        let delay = rng.range(0, 8_000);
        let done = run_and_kill(&h, &["endpoint", "set", "ep0", "--vlan", &vlan], us(delay));
        let context = format!(
            "set ep0 --vlan {vlan} killed after {delay} µs ({done:?}, left {:?})",
            leftovers(&h)
        );
        next_command_and_check(&h, &context);
        // The recorded VLAN is the one frames get: a set killed between
        // its map update and its state write is undone.
        let recorded_vlan = state(&h)["endpoints"]["ep0"]["vlans"]["vlan"]
            .as_u64()
            .unwrap_or_else(|| panic!("{context}: ep0 has no access VLAN: {}", state(&h)));
        assert_eq!(h.show("ep0").ifindex, ep.ifindex, "{context}: relinked");
        wire.drain();
        let f = sent_to_wire(
            &tap,
            ep.mac,
            &wire,
            &format!("{context}: guest frame not seen on the wire"),
        );
        assert_eq!(
            f.vid(),
            Some(recorded_vlan as u16),
            "{context}: the kernel tags with another VLAN than state.json records"
        );
    }
    assert_reset_clean(&h);
}

#[test]
fn kill_during_del_then_next_command_finishes_it() {
    let h = root_harness!();
    anchor(&h);
    for i in 0..ROUNDS {
        h.ctl.ok(&[
            "endpoint",
            "add",
            &format!("ep{i}"),
            "--lower",
            LOWER,
            "--vlan",
            &(10 + i).to_string(),
        ]);
    }
    let mut rng = Rng::from_env("kill_during_del");
    for i in 0..ROUNDS {
        let name = format!("ep{i}");
        let delay = rng.range(0, 40_000);
        let done = run_and_kill(&h, &["endpoint", "del", &name], us(delay));
        let context = format!(
            "del {name} killed after {delay} µs ({done:?}, left {:?})",
            leftovers(&h)
        );
        next_command_and_check(&h, &context);
        if recorded(&h).contains_key(&name) {
            // Killed before it started: the endpoint is whole, and goes.
            h.ctl.ok(&["endpoint", "del", &name]);
            assert_consistent(&h, &format!("{context}, then deleted again"));
        }
        assert!(!recorded(&h).contains_key(&name), "{context}");
    }
    assert_reset_clean(&h);
}

/// Two files that differ in every way `apply` can change things: adds,
/// updates in place, replacements, deletions, relay and host port.
fn apply_files(h: &Harness) -> [String; 2] {
    // An [[endpoint]] table on the lower device with the settings `rest`.
    let endpoint = |name: &str, rest: &str| {
        format!("\n[[endpoint]]\nname = \"{name}\"\nlower = \"{LOWER}\"\n{rest}\n")
    };
    let a = [
        format!(
            "[[uplink]]\nname = \"{LOWER}\"\nreflective_relay = true\n\
             host_port = {{ name = \"host0\", vlan = 10, addresses = [\"192.0.2.1/24\"] }}\n"
        ),
        endpoint("anchor0", "vlan = 99"),
        endpoint("a1", "vlan = 10"),
        endpoint("a2", "trunk = \"10,20\"\nnative = 10"),
        endpoint("a3", "tunnel = 100"),
        endpoint("a4", "isolated = true"),
    ]
    .concat();
    let b = [
        format!("[[uplink]]\nname = \"{LOWER}\"\n"),
        endpoint("anchor0", "vlan = 99"),
        endpoint("a1", "vlan = 11"),
        endpoint("a2", "mode = \"vepa\"\ntrunk = \"10,20\"\nnative = 10"),
        endpoint("a4", "community = \"web\""),
        endpoint("a5", "vlan = 30"),
        endpoint("a6", "trunk = \"40-42\""),
    ]
    .concat();
    [a, b].map(|text| {
        let path = h
            .state
            .path()
            .join(format!("cfg-{}.toml", text.len()))
            .to_string_lossy()
            .into_owned();
        std::fs::write(&path, text).expect("writing config");
        path
    })
}

/// Host ports: every recorded one exists as a link, and no other macvlan
/// is in the host namespace.
fn assert_host_ports_consistent(h: &Harness, context: &str) {
    let s = state(h);
    let recorded: BTreeSet<String> = s["uplinks"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|u| u["host_port"]["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for u in s["uplinks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        if let Some(status) = u["host_port"]["status"].as_str() {
            assert_eq!(status, "ready", "{context}: host port record: {u}");
        }
    }
    let macvlans: BTreeSet<String> = h
        .topo
        .host
        .ip_ok(&["-o", "link", "show", "type", "macvlan"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        macvlans, recorded,
        "{context}: macvlans vs recorded host ports"
    );
}

#[test]
fn kill_during_apply_then_apply_converges() {
    let h = root_harness!();
    anchor(&h);
    let files = apply_files(&h);
    let mut rng = Rng::from_env("kill_during_apply");
    for i in 0..6 {
        let file = &files[i % 2];
        let delay = rng.range(0, 150_000);
        let done = run_and_kill(&h, &["apply", file], us(delay));
        let context = format!(
            "apply {file} killed after {delay} µs ({done:?}, left {:?})",
            leftovers(&h)
        );
        next_command_and_check(&h, &context);
        assert_host_ports_consistent(&h, &context);
        // Applying the same file again converges, and then has nothing
        // left to do.
        h.ctl.ok(&["apply", file]);
        assert_consistent(&h, &format!("{context}, then applied"));
        assert_host_ports_consistent(&h, &format!("{context}, then applied"));
        let again = h.ctl.ok(&["apply", file]);
        assert_eq!(
            again.trim(),
            "no changes",
            "{context}: a second apply after the converging one"
        );
    }
    assert_reset_clean(&h);
}

/// What a `kill -9` between an add's intent record and its completion
/// leaves: a `pending` record whose macvtap never came. Read commands must
/// not present it as a live endpoint, and `apply --dry-run` must plan to
/// add it (as the real `apply`, which repairs first, does).
#[test]
fn half_added_endpoint_is_not_shown_as_live() {
    let h = root_harness!();
    let anchor = anchor(&h);
    let mut s = state(&h);
    let mut ghost = s["endpoints"]["anchor0"].clone();
    ghost["name"] = "ghost0".into();
    ghost["mac"] = "02:00:5e:77:00:01".into();
    ghost["ifindex"] = 0.into();
    ghost["status"] = "pending".into();
    s["endpoints"]["ghost0"] = ghost;
    std::fs::write(
        h.state.path().join("state.json"),
        serde_json::to_vec_pretty(&s).unwrap(),
    )
    .unwrap();
    let file = h.state.path().join("ghost.toml");
    std::fs::write(
        &file,
        format!(
            "[[endpoint]]\nname = \"anchor0\"\nlower = \"{LOWER}\"\nvlan = 99\nmac = \"{}\"\n\n[[endpoint]]\nname = \"ghost0\"\nlower = \"{LOWER}\"\nvlan = 99\nmac = \"02:00:5e:77:00:01\"\n",
            anchor.raw["mac"].as_str().unwrap()
        ),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();

    let mut failures = Vec::new();
    let listed: Vec<String> = h
        .list()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    if listed.contains(&"ghost0".to_string()) {
        failures.push(format!(
            "`endpoint list --json` shows the half-added ghost0 as an endpoint: {listed:?}"
        ));
    }
    if h.ctl
        .run(&["endpoint", "show", "ghost0", "--json"])
        .status
        .success()
    {
        failures.push("`endpoint show ghost0` succeeds for a half-added endpoint".into());
    }
    let plan = h.ctl.ok(&["apply", &file, "--dry-run"]);
    if !plan.lines().any(|l| l.starts_with("+ endpoint ghost0")) {
        failures.push(format!(
            "`apply --dry-run` does not plan to add the half-added ghost0: {plan:?}"
        ));
    }
    // The next session repairs, and the real apply adds it.
    next_command_and_check(&h, "after a pending record");
    let plan_real = h.ctl.ok(&["apply", &file]);
    assert!(
        plan_real
            .lines()
            .any(|l| l.starts_with("+ endpoint ghost0")),
        "{plan_real}"
    );
    assert_consistent(&h, "after applying");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Relay on and off on clsact, `kill -9`ed at random points, on a lower
/// device without endpoints (with some, the program stays for their tags):
/// after the next `restore` its egress carries exactly one filter of ours
/// if the state says relay is on and none if off, and in the end `reset`
/// removes the clsact qdisc macvswitch made (it records that the qdisc
/// will be its own before it creates it).
#[test]
fn kill_during_relay_changes_on_clsact_then_no_filter_or_qdisc_is_lost() {
    let h = root_harness!();
    let mut rng = Rng::from_env("kill_during_relay_changes_on_clsact");
    for i in 0..ROUNDS * 2 {
        let on_off = if i % 2 == 0 { "on" } else { "off" };
        let delay = rng.range(0, 80_000);
        let args = [
            "--attach",
            "clsact",
            "uplink",
            "set",
            LOWER,
            "--reflective-relay",
            on_off,
        ];
        let done = run_and_kill(&h, &args, us(delay));
        let context = format!("relay {on_off} killed after {delay} µs ({done:?})");
        eprintln!("{context}");
        h.ctl.ok(&["--attach", "clsact", "restore"]);
        let relay = state(&h)["uplinks"][LOWER]["reflective_relay"] == true;
        let ours = attach::ours(&h.topo.host, LOWER, "egress").len();
        assert_eq!(
            ours,
            usize::from(relay),
            "{context}: relay {relay} in the state, {ours} filters of ours"
        );
        assert_eq!(
            attach::filters(&h.topo.host, LOWER, "egress").len(),
            ours,
            "{context}: foreign filters appeared"
        );
        assert_consistent(&h, &context);
    }
    h.ctl.ok(&["reset", "--force"]); // the guest still holds its tap
    assert!(attach::filters(&h.topo.host, LOWER, "egress").is_empty());
    assert!(
        !attach::qdiscs(&h.topo.host, LOWER).contains(&"clsact".to_string()),
        "reset left the clsact qdisc macvswitch made"
    );
}
