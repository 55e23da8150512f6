//! Lower devices the kernel would refuse, refused first by macvswitch: one
//! line naming the option, exit status 2, nothing changed, and no raw
//! netlink text. (The kernel's own answers are a bare EINVAL or EBUSY.)

use macvswitch_tests::lifecycle::state_bytes;
use macvswitch_tests::topology::LOWER;
use macvswitch_tests::{Harness, root_harness};

/// Runs `args`, expecting a one-line refusal naming `option`, exit 2, and
/// no change to the links or the state file.
fn refused(h: &Harness, args: &[&str], option: &str, mentions: &str) {
    let links = h.topo.host.link_names();
    let state = state_bytes(h);
    let out = h.ctl.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.starts_with(&format!("error: {option}")) && stderr.contains(mentions),
        "{args:?}: {stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("netlink"),
        "{args:?}: {stderr}"
    );
    assert_eq!(
        h.topo.host.link_names(),
        links,
        "{args:?} changed the links"
    );
    assert_eq!(state_bytes(h), state, "{args:?} changed the state file");
}

#[test]
fn passthru_must_be_alone_on_its_lower_device() {
    let h = root_harness!();
    h.add("ep0", &[]);
    refused(
        &h,
        &[
            "endpoint", "add", "pt0", "--lower", LOWER, "--mode", "passthru",
        ],
        "--mode passthru",
        "ep0",
    );
    h.ctl.ok(&["endpoint", "del", "ep0"]);
    h.add("pt0", &["--mode", "passthru"]);
    refused(
        &h,
        &["endpoint", "add", "ep1", "--lower", LOWER],
        "--lower",
        "pt0 in passthru mode",
    );
    refused(
        &h,
        &["uplink", "set", LOWER, "--host-port", "host0"],
        "--host-port host0",
        "pt0 in passthru mode",
    );
    // In one batch too: the second of two planned endpoints.
    let file = h.state.path().join("two.toml");
    std::fs::write(
        &file,
        format!(
            "[[endpoint]]\nname = \"ep2\"\nlower = \"{LOWER}\"\n\n[[endpoint]]\nname = \"ep3\"\nlower = \"{LOWER}\"\nmode = \"passthru\"\n"
        ),
    )
    .expect("writing the config");
    h.ctl.ok(&["endpoint", "del", "pt0"]);
    let out = h.ctl.run(&["apply", file.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "apply: {stderr}");
    assert!(stderr.contains("passthru"), "apply: {stderr}");
    assert_eq!(h.topo.host.link_names(), ["lo", LOWER]);
}

#[test]
fn a_lower_device_that_cannot_carry_macvtaps_is_refused() {
    let h = root_harness!();
    refused(
        &h,
        &["endpoint", "add", "ep0", "--lower", "lo"],
        "--lower lo",
        "not an Ethernet device",
    );
    let host = &h.topo.host;
    host.ip_ok(&[
        "link", "add", "port0", "type", "veth", "peer", "name", "port1",
    ]);
    host.ip_ok(&["link", "add", "br0", "type", "bridge"]);
    host.ip_ok(&["link", "set", "port0", "master", "br0"]);
    refused(
        &h,
        &["endpoint", "add", "ep0", "--lower", "port0"],
        "--lower port0",
        "port of br0",
    );
}
