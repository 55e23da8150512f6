//! `apply FILE.toml`: the plan it prints, idempotence (the second run
//! changes nothing), the `export` round trip, updates in place versus
//! replacements, removals, `--dry-run`, and links macvswitch does not
//! manage left alone.

use std::collections::BTreeMap;

use macvswitch_tests::expect::sent_to_wire;
use macvswitch_tests::lifecycle::{assert_consistent, macvtaps, recorded, state_bytes};
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Harness, root_harness};

const PREFIXES: [&str; 4] = ["+ ", "~ ", "± ", "- "];

fn endpoint(name: &str, body: &str) -> String {
    format!("[[endpoint]]\nname = \"{name}\"\nlower = \"{LOWER}\"\n{body}\n")
}

/// The file, from its endpoint sections (name -> body).
fn config(endpoints: &BTreeMap<&str, String>) -> String {
    let mut text = format!(
        "[[uplink]]\nname = \"{LOWER}\"\nreflective_relay = true\nhost_port = {{ name = \"host0\", vlan = 10, addresses = [\"192.0.2.1/24\"] }}\n\n"
    );
    for (name, body) in endpoints {
        text += &endpoint(name, body);
        text += "\n";
    }
    text
}

fn write(h: &Harness, name: &str, text: &str) -> String {
    let path = h.state.path().join(name);
    std::fs::write(&path, text).expect("writing config");
    path.to_string_lossy().into_owned()
}

/// Runs `apply ARGS`, checks every line is a plan line (or "no changes"),
/// returns the lines.
fn apply(h: &Harness, args: &[&str]) -> Vec<String> {
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    let out = h.ctl.ok(&all);
    let lines: Vec<String> = out.lines().map(String::from).collect();
    for l in &lines {
        assert!(
            l == "no changes" || PREFIXES.iter().any(|p| l.starts_with(p)),
            "`{}`: not a plan line: {l:?}\n{out}",
            all.join(" ")
        );
    }
    assert!(!lines.is_empty(), "`{}` printed nothing", all.join(" "));
    lines
}

fn assert_no_changes(h: &Harness, file: &str, context: &str) {
    assert_eq!(apply(h, &[file]), ["no changes"], "{context}");
}

/// Names and ifindexes of the links macvswitch does not manage.
fn unmanaged(h: &Harness) -> Vec<String> {
    h.topo
        .host
        .ip_ok(&["-o", "link", "show"])
        .lines()
        .filter(|l| l.contains("xveth") || l.contains("mvl0"))
        .map(|l| {
            let mut p = l.splitn(3, ':');
            format!("{}:{}", p.next().unwrap().trim(), p.next().unwrap().trim())
        })
        .collect()
}

#[test]
fn apply_is_idempotent_round_trips_and_changes_the_least() {
    let h = root_harness!();
    h.topo.host.ip_ok(&[
        "link", "add", "xveth0", "type", "veth", "peer", "name", "xveth1",
    ]);
    h.topo.host.ip_ok(&[
        "link", "add", "mvl0", "link", LOWER, "type", "macvlan", "mode", "bridge",
    ]);
    h.topo.host.ip_ok(&["link", "set", "xveth0", "up"]);
    let unmanaged_before = unmanaged(&h);
    assert_eq!(unmanaged_before.len(), 3, "{unmanaged_before:?}");

    let mut eps: BTreeMap<&str, String> = BTreeMap::new();
    eps.insert("acc", "vlan = 10".into());
    eps.insert(
        "trk",
        "trunk = \"10,20,100-199\"\nnative = 10\nnative_tagged = true".into(),
    );
    eps.insert("tun", "tunnel = 300\ntunnel_cvlans = \"5,6\"".into());
    eps.insert("iso", "vlan = 10\nisolated = true".into());
    eps.insert("com", "vlan = 10\ncommunity = \"web\"\npriority = 5".into());
    eps.insert("unt", "mode = \"vepa\"".into());
    let file = write(&h, "host.toml", &config(&eps));

    // A dry run plans everything and changes nothing.
    let pins = h.bpffs.pinned_files();
    let links = h.topo.host.link_names();
    let dry = apply(&h, &[&file, "--dry-run"]);
    assert_eq!(state_bytes(&h), None, "--dry-run wrote state.json");
    assert_eq!(h.topo.host.link_names(), links, "--dry-run changed links");
    assert_eq!(h.bpffs.pinned_files(), pins, "--dry-run pinned something");

    // The first apply: what the dry run said, and it happens.
    let plan = apply(&h, &[&file]);
    assert_eq!(plan, dry, "the dry run and the apply plan differ");
    for name in eps.keys() {
        assert!(
            plan.iter()
                .any(|l| l.starts_with(&format!("+ endpoint {name} on {LOWER}"))),
            "no `+ endpoint {name}` in {plan:#?}"
        );
    }
    assert!(
        plan.iter()
            .any(|l| l.starts_with("~ uplink") && l.contains("reflective relay on")),
        "{plan:#?}"
    );
    assert!(
        plan.iter().any(|l| l.starts_with("+ host port host0")),
        "{plan:#?}"
    );
    assert_eq!(plan.len(), eps.len() + 2, "{plan:#?}");
    assert_consistent(&h, "after the first apply");
    assert_eq!(recorded(&h).len(), eps.len());

    let trk = h.show("trk").raw;
    assert_eq!(trk["trunk"], "10,20,100-199", "{trk}");
    assert_eq!(trk["native"], 10, "{trk}");
    assert_eq!(trk["native_tagged"], true, "{trk}");
    let tun = h.show("tun").raw;
    assert_eq!(tun["policy"], "tunnel", "{tun}");
    assert_eq!(h.show("iso").raw["isolated"], true);
    assert_eq!(h.show("com").raw["community"], "web");
    assert_eq!(h.show("com").raw["priority"], 5);
    assert_eq!(h.show("unt").raw["mode"], "vepa");
    assert_eq!(h.show("unt").raw["policy"], "untagged");
    let uplink = h.uplink();
    assert_eq!(uplink["reflective_relay"], true, "{uplink}");
    let addr = h.topo.host.ip_ok(&["-o", "addr", "show", "dev", "host0"]);
    assert!(addr.contains("192.0.2.1/24"), "host0: {addr}");

    // Twice: nothing to do.
    assert_no_changes(&h, &file, "the second apply");

    // Export round trip: applying the export changes nothing, and the
    // export of that is the same text.
    let exported = h.ctl.ok(&["export"]);
    let export_file = write(&h, "export.toml", &exported);
    assert_no_changes(&h, &export_file, "apply of the export");
    assert_eq!(h.ctl.ok(&["export"]), exported, "export is not stable");
    // And the original file still matches what the export produced.
    assert_no_changes(&h, &file, "the original after the export");

    // A VLAN edit: one "~" line, same macvtap, frames take the new VLAN.
    let acc = h.show("acc");
    eps.insert("acc", "vlan = 11".into());
    let file = write(&h, "host.toml", &config(&eps));
    let plan = apply(&h, &[&file]);
    assert_eq!(plan.len(), 1, "{plan:#?}");
    assert!(plan[0].starts_with("~ endpoint acc"), "{plan:#?}");
    let acc2 = h.show("acc");
    assert_eq!(
        acc2.ifindex, acc.ifindex,
        "a VLAN edit recreated the macvtap"
    );
    assert_eq!(acc2.vlan, Some(11));
    {
        let tap = h.tap(&acc2);
        let wire = h.topo.wire();
        let f = sent_to_wire(&tap, acc2.mac, &wire, "acc's frame on the wire");
        assert_eq!(f.vid(), Some(11), "{f:?}");
    }
    assert_no_changes(&h, &file, "after the VLAN edit");

    // A mode edit: one "±" line (the macvtap is made anew).
    eps.insert(
        "trk",
        "mode = \"private\"\ntrunk = \"10,20,100-199\"\nnative = 10\nnative_tagged = true".into(),
    );
    let file = write(&h, "host.toml", &config(&eps));
    let plan = apply(&h, &[&file]);
    assert_eq!(plan.len(), 1, "{plan:#?}");
    assert!(plan[0].starts_with("± endpoint trk"), "{plan:#?}");
    assert_eq!(h.show("trk").raw["mode"], "private");
    assert_consistent(&h, "after the mode edit");
    assert_no_changes(&h, &file, "after the mode edit");

    // Dropping an endpoint from the file deletes it.
    eps.remove("unt");
    let file = write(&h, "host.toml", &config(&eps));
    let plan = apply(&h, &[&file]);
    assert_eq!(plan, ["- endpoint unt"], "{plan:#?}");
    assert!(!macvtaps(&h).contains_key("unt"), "unt's macvtap is left");
    assert!(!recorded(&h).contains_key("unt"));
    assert_consistent(&h, "after dropping unt");
    assert_no_changes(&h, &file, "after dropping unt");

    // A dry run of real changes prints them and changes nothing.
    eps.insert("acc", "vlan = 12".into());
    eps.remove("tun");
    eps.insert("new", "vlan = 50".into());
    let changed = write(&h, "changed.toml", &config(&eps));
    let state_before = state_bytes(&h);
    let links = h.topo.host.link_names();
    let pins = h.bpffs.pinned_files();
    let dry = apply(&h, &[&changed, "--dry-run"]);
    assert_eq!(dry.len(), 3, "{dry:#?}");
    assert!(
        dry.iter().any(|l| l.starts_with("~ endpoint acc")),
        "{dry:#?}"
    );
    assert!(dry.iter().any(|l| l == "- endpoint tun"), "{dry:#?}");
    assert!(
        dry.iter().any(|l| l.starts_with("+ endpoint new")),
        "{dry:#?}"
    );
    assert_eq!(
        state_bytes(&h),
        state_before,
        "--dry-run changed state.json"
    );
    assert_eq!(h.topo.host.link_names(), links, "--dry-run changed links");
    assert_eq!(h.bpffs.pinned_files(), pins, "--dry-run changed pins");
    assert_no_changes(&h, &file, "after the dry run");

    // Links macvswitch does not manage: untouched throughout, even by reset.
    assert_eq!(unmanaged(&h), unmanaged_before);
    h.ctl.ok(&["reset"]);
    assert_eq!(unmanaged(&h), unmanaged_before, "reset touched them");
}

/// A semantic error names the file, the endpoint's table and the field as
/// the file writes it; the plan shows every setting an added endpoint gets
/// and every field an update changes.
#[test]
fn errors_point_into_the_file_and_the_plan_shows_every_field() {
    let h = root_harness!();
    let file = h.state.path().join("bad.toml");
    std::fs::write(
        &file,
        format!("[[endpoint]]\nname = \"vm1\"\nlower = \"{LOWER}\"\nnative = 10\n"),
    )
    .unwrap();
    let out = h.ctl.run(&["apply", file.to_str().unwrap()]);
    macvswitch_tests::expect::assert_refused(
        &out,
        &format!(
            "{} [[endpoint]] vm1: native = 10: needs a trunk port (trunk = \"VIDLIST\")",
            file.display()
        ),
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("--"),
        "CLI names in a file's error"
    );

    let good = h.state.path().join("good.toml");
    let body = format!(
        "[[endpoint]]\nname = \"vm2\"\nlower = \"{LOWER}\"\nmode = \"vepa\"\n\
         mac = \"02:00:00:00:00:02\"\ntrunk = \"10,20\"\nnative = 10\npriority = 5\n\
         community = \"web\"\nmtu = 1400\nallow_mac_spoofing = true\n"
    );
    std::fs::write(&good, &body).unwrap();
    let plan = h.ctl.ok(&["apply", good.to_str().unwrap()]);
    for field in [
        "+ endpoint vm2",
        "mode vepa",
        "mac 02:00:00:00:00:02",
        "mtu 1400",
        "priority 5",
        "community web",
        "mac spoofing allowed",
    ] {
        assert!(plan.contains(field), "{field} not in the plan:\n{plan}");
    }
    std::fs::write(&good, body.replace("priority = 5\n", "")).unwrap();
    let plan = h.ctl.ok(&["apply", good.to_str().unwrap()]);
    assert!(plan.contains("priority 5 -> the guest's"), "{plan}");
}

/// `apply` of many endpoints shows a bar on a terminal (here a pty from
/// `script`) and nothing when its output is a pipe.
#[test]
fn apply_shows_progress_on_a_terminal_only() {
    let h = root_harness!();
    let file = h.state.path().join("many.toml");
    let endpoints: BTreeMap<&str, String> = [
        "p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10", "p11", "p12",
    ]
    .into_iter()
    .map(|name| (name, "vlan = 10\n".to_string()))
    .collect();
    std::fs::write(&file, config(&endpoints)).unwrap();
    let command = format!(
        "ip netns exec {} {} --state-dir {} --bpffs {} apply {}",
        h.topo.host.name(),
        macvswitch_tests::controller::binary().display(),
        h.state.path().display(),
        h.bpffs.path().display(),
        file.display()
    );
    let out = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("creating endpoints"),
        "no bar on a terminal:\n{shown}"
    );

    // Through a pipe: the plan, and nothing else.
    h.ctl.ok(&["reset"]);
    let out = h.ctl.run(&["apply", file.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .filter(|l| l.starts_with("+ endpoint"))
            .count()
            == 12
            && !stdout.contains("creating endpoints"),
        "{stdout}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
