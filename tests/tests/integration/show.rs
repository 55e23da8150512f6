//! `macvswitch show`: every endpoint under its lower device and each VLAN it
//! carries, and a mark on one whose macvtap was deleted by hand.

use macvswitch_tests::root_harness;
use macvswitch_tests::topology::LOWER;

#[test]
fn show_groups_endpoints_by_lower_and_vlan_and_marks_a_missing_one() {
    let h = root_harness!();
    h.add("acc10", &["--vlan", "10"]);
    h.add("trk", &["--trunk", "10,20", "--native", "30"]);
    h.add("tun", &["--tunnel", "300"]);
    h.add("plain", &["--isolated"]);
    h.uplink_set(&["--reflective-relay", "on"]);

    let tree = h.ctl.json(&["show", "--json"]);
    let lowers = tree["lowers"].as_array().expect("lowers");
    assert_eq!(lowers.len(), 1, "{tree}");
    let lower = &lowers[0];
    assert_eq!(lower["name"], LOWER, "{tree}");
    assert_eq!(lower["reflective_relay"], true, "{tree}");
    let members = |vid: u64| -> Vec<String> {
        lower["vlans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["vlan"] == vid)
            .map(|v| {
                v["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(members(10), ["acc10", "trk"], "{tree}");
    assert_eq!(members(20), ["trk"], "{tree}");
    assert_eq!(members(30), ["trk"], "native VLAN: {tree}");
    assert_eq!(members(300), ["tun"], "{tree}");
    assert_eq!(lower["untagged"][0]["name"], "plain", "{tree}");
    assert_eq!(lower["untagged"][0]["isolation"], "isolated", "{tree}");
    assert!(
        tree.to_string().matches("\"status\":\"ready\"").count() == 6,
        "four endpoints, trk under three VLANs, all ready: {tree}"
    );

    // Deleted by hand: marked, and the reason named.
    h.topo.host.ip_ok(&["link", "del", "acc10"]);
    let text = h.ctl.ok(&["show"]);
    let line = text
        .lines()
        .find(|l| l.contains("acc10"))
        .unwrap_or_else(|| panic!("acc10 not shown:\n{text}"));
    assert!(
        line.trim_start().starts_with("! acc10") && line.contains("missing"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("trk ("))
            .all(|l| !l.trim_start().starts_with('!')),
        "{text}"
    );
}
