//! STATUS and GC: the master, the programs and IPAM; stale attachments
//! of this network only, past failures.

use macvswitch_tests::{require_root, topology::LOWER};
use serde_json::{Value, json};

use super::{Cni, assert_cni_error, assert_ok, container, links};

#[test]
fn status_looks_at_the_master_and_ipam() {
    require_root!();
    let cni = Cni::new();
    let conf = cni.conf(json!({}));
    assert_ok(&cni.run("STATUS", &conf, &[]), "STATUS");
    let missing = cni.conf(json!({"master": "nosuch0"}));
    assert_cni_error(&cni.run("STATUS", &missing, &[]), 50, &["master nosuch0"]);
    cni.h.topo.host.ip_ok(&["link", "set", LOWER, "down"]);
    assert_cni_error(&cni.run("STATUS", &conf, &[]), 50, &["master", "down"]);
    cni.h.topo.host.ip_ok(&["link", "set", LOWER, "up"]);
    assert_ok(&cni.run("STATUS", &conf, &[]), "STATUS");
    let old = cni.conf(json!({"cniVersion": "1.0.0"}));
    assert_cni_error(&cni.run("STATUS", &old, &[]), 1, &["STATUS", "1.1.0"]);
    // The network has endpoints, but no programs are pinned where the
    // configuration says: not available.
    let pod = container("pod");
    cni.add(&pod, "c1", "net1", &conf);
    let elsewhere = macvswitch_tests::TempStateDir::new();
    let unloaded = cni.conf(json!({"bpffs": elsewhere.path()}));
    assert_cni_error(
        &cni.run("STATUS", &unloaded, &[]),
        50,
        &["programs", "not loaded"],
    );
    assert_ok(&cni.run("STATUS", &conf, &[]), "STATUS with the endpoint");
    cni.del(&pod, "c1", "net1", &conf);
}

/// GC removes this network's attachments the runtime no longer lists, and
/// their addresses; other networks' and the CLI's endpoints stay.
#[test]
fn gc_removes_only_stale_attachments_of_its_network() {
    require_root!();
    let cni = Cni::new();
    let (pod1, pod2, pod3) = (container("p1"), container("p2"), container("p3"));
    let conf = cni.conf(json!({}));
    let other = cni.conf(json!({"name": "vlan200", "vlan": 200}));
    cni.add(&pod1, "c1", "net1", &conf);
    cni.add(&pod2, "c2", "net1", &conf);
    cni.add(&pod3, "c3", "net1", &other);
    cni.h.add("vm1", &["--vlan", "100"]);
    assert_eq!(cni.endpoints().len(), 4);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "net1"}]);
    assert_ok(&cni.run("GC", &gc, &[]), "GC");
    let left: Vec<Value> = cni.endpoints();
    let owners: Vec<String> = left
        .iter()
        .map(|e| e["container_id"].as_str().unwrap_or("cli").to_string())
        .collect();
    assert_eq!(owners.len(), 3, "{left:?}");
    for kept in ["c1", "c3", "cli"] {
        assert!(
            owners.contains(&kept.to_string()),
            "{kept} went: {owners:?}"
        );
    }
    assert!(
        !links(&pod2).contains(&"net1".to_string()),
        "c2's interface stayed"
    );
    assert!(links(&pod1).contains(&"net1".to_string()));
    assert_eq!(cni.reserved("vlan100").len(), 1, "c2's address stayed held");
    assert_eq!(cni.reserved("vlan200").len(), 1);
    // Nothing listed at all: the rest of this network goes, nothing else.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_ok(&cni.run("GC", &gc, &[]), "GC");
    assert_eq!(cni.endpoints().len(), 2);
    assert!(cni.reserved("vlan100").is_empty());
    // A failure does not stop GC: with the IPAM plugin gone, the stale
    // endpoint still goes, and the failure is reported.
    cni.add(&pod2, "c2", "net1", &conf);
    let mut gc = cni.conf(json!({"ipam": {"type": "gone-ipam"}}));
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_cni_error(
        &cni.run("GC", &gc, &[]),
        100,
        &["GC", "1 failure", "gone-ipam"],
    );
    assert!(
        !links(&pod2).contains(&"net1".to_string()),
        "GC stopped at the error"
    );
    assert_eq!(cni.endpoints().len(), 2);
    // Before 1.1.0 there is no GC.
    let old = cni.conf(json!({"cniVersion": "1.0.0"}));
    assert_cni_error(&cni.run("GC", &old, &[]), 1, &["GC"]);
}
