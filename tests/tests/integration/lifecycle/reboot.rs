//! After a reboot the links and the bpffs are gone and the state file says
//! another boot: `restore` (which `apply` and the daemon also run) makes
//! everything again, and traffic flows with the recorded policy.
//!
//! The reboot is simulated inside the test's namespaces: every link
//! macvswitch made is deleted, every pin removed (which detaches the
//! programs), and the state file's boot id changed.

use macvswitch_tests::expect::{at_guest, sent_to_wire};
use macvswitch_tests::frame::{Marker, marked_tagged};
use macvswitch_tests::harness::HOST_PORT_10;
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::SWITCH_MAC;

#[test]
fn restore_after_a_reboot_recreates_endpoints_relay_and_host_port() {
    let h = root_harness!();
    h.add("ep0", &["--vlan", "10"]);
    h.add("ep1", &["--trunk", "20,30", "--native", "40", "--isolated"]);
    h.uplink_set(&[&["--reflective-relay", "on"][..], &HOST_PORT_10].concat());
    let before = h.ctl.json(&["endpoint", "list", "--json"]);

    // The reboot: links and pins gone, another boot id.
    for name in ["ep0", "ep1", "host0"] {
        h.topo.host.ip_ok(&["link", "del", "dev", name]);
    }
    for dir in ["links", "uplinks", "progs", "maps"] {
        let path = h.bpffs.path().join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        }
    }
    let state_file = h.state.path().join("state.json");
    let text = std::fs::read_to_string(&state_file).expect("state file");
    let mut state: serde_json::Value = serde_json::from_str(&text).expect("state parses");
    state["boot_id"] = serde_json::json!("an-earlier-boot");
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).expect("state write");

    let out = h.ctl.ok(&["restore"]);
    for name in ["ep0", "ep1", "host0"] {
        assert!(
            out.contains(&format!("{name}: recreated")),
            "restore did not recreate {name}: {out}"
        );
    }
    // Same names, MACs and policies; new ifindexes and tap nodes.
    let after = h.ctl.json(&["endpoint", "list", "--json"]);
    for (b, a) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        for key in [
            "name",
            "mac",
            "policy",
            "vlan",
            "trunk",
            "native",
            "isolation",
        ] {
            assert_eq!(b[key], a[key], "{key} changed: {b} -> {a}");
        }
    }
    let links = h.topo.host.link_names();
    for name in ["ep0", "ep1", "host0"] {
        assert!(links.iter().any(|l| l == name), "{name} missing: {links:?}");
    }
    let uplink = h.uplink();
    assert_eq!(uplink["reflective_relay"], true, "{uplink}");
    assert_eq!(uplink["host_port"]["name"], "host0", "{uplink}");
    let addresses = h.topo.host.ip_ok(&["-o", "addr", "show", "dev", "host0"]);
    assert!(addresses.contains("192.0.2.1/24"), "{addresses}");

    // The data path is back: both directions on ep0's VLAN, through the
    // new tap node.
    let ep0 = h.show("ep0");
    let tap = h.tap(&ep0);
    let wire = h.topo.wire();
    let f = sent_to_wire(
        &tap,
        ep0.mac,
        &wire,
        "guest frame not forwarded after restore",
    );
    assert_eq!(f.vid(), Some(10), "{f:?}");
    let m = Marker::new();
    wire.send(&marked_tagged(ep0.mac, SWITCH_MAC, 10, &m));
    at_guest(&tap, &m, "wire frame not delivered after restore");
    // A second restore has nothing to do.
    assert_eq!(h.ctl.ok(&["restore"]).trim(), "");
}
