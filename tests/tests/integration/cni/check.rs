//! CHECK: the interface, its MAC, MTU, addresses, programs and policy
//! against what ADD made, each out-of-band change named.

use macvswitch_tests::require_root;
use serde_json::json;

use super::{Cni, assert_cni_error, assert_ok, container};

/// CHECK verifies what is there: a MAC, VLAN, program or address changed
/// behind the plugin's back fails it with a message naming the change.
#[test]
fn check_finds_out_of_band_changes() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    let conf = cni.conf(json!({}));
    let result = cni.add(&pod, "c1", "net1", &conf);
    let name = cni.endpoints()[0]["name"].as_str().unwrap().to_string();
    let check = || cni.check(&pod, "c1", "net1", &conf, &result);
    assert_ok(&check(), "CHECK");

    pod.ip_ok(&["link", "set", "net1", "address", "02:00:00:00:99:99"]);
    assert_cni_error(&check(), 100, &["mac 02:00:00:00:99:99"]);
    let mac = result["interfaces"][0]["mac"].as_str().unwrap();
    pod.ip_ok(&["link", "set", "net1", "address", mac]);
    assert_ok(&check(), "CHECK");

    cni.h.ctl.ok(&["endpoint", "set", &name, "--vlan", "200"]);
    assert_cni_error(&check(), 100, &["vlans", "access 200", "access 100"]);
    cni.h.ctl.ok(&["endpoint", "set", &name, "--vlan", "100"]);
    assert_ok(&check(), "CHECK");

    pod.ip_ok(&["link", "set", "net1", "mtu", "1400"]);
    assert_cni_error(&check(), 100, &["mtu 1400"]);
    pod.ip_ok(&["link", "set", "net1", "mtu", "1500"]);

    let ip = result["ips"][0]["address"].as_str().unwrap();
    pod.ip_ok(&["addr", "del", ip, "dev", "net1"]);
    assert_cni_error(&check(), 100, &["address", ip]);
    pod.ip_ok(&["addr", "add", ip, "dev", "net1"]);
    assert_ok(&check(), "CHECK");

    // Unpinning a TCX link detaches its program.
    let pin = cni.h.bpffs.path().join("links").join(&name).join("ingress");
    if pin.exists() {
        std::fs::remove_file(&pin).unwrap();
        assert_cni_error(&check(), 100, &["programs"]);
    } else {
        // clsact: the filter goes by hand.
        pod.exec_ok(&["tc", "filter", "del", "dev", "net1", "ingress"]);
        assert_cni_error(&check(), 100, &["programs"]);
    }
    // `restore` puts it back, and CHECK agrees again.
    cni.h.ctl.ok(&["restore"]);
    assert_ok(&check(), "CHECK");

    // Unknown attachment: code 3; CHECK before 0.4.0 does not exist.
    let other = cni.check(&pod, "c9", "net1", &conf, &result);
    assert_cni_error(&other, 3, &["c9"]);
    let old = cni.check(
        &pod,
        "c1",
        "net1",
        &cni.conf(json!({"cniVersion": "0.3.1"})),
        &result,
    );
    assert_cni_error(&old, 1, &["CHECK", "0.4.0"]);
    cni.del(&pod, "c1", "net1", &conf);
}
