//! The README's CNI examples, parsed as written and used: the conflist's
//! plugin configuration (as a runtime builds it from the list) and the
//! NetworkAttachmentDefinition's through ADD, CHECK and DEL; the KubeVirt
//! VM must name that attachment and the macvtap binding.

use macvswitch_tests::{require_root, topology::LOWER};
use serde_json::{Value, json};

use super::{Cni, addresses, assert_ok, container, link, links};
use crate::readme::blocks;

/// The README's blocks in `lang` whose text contains `marker`.
fn example(lang: &str, marker: &str) -> (usize, String) {
    let found: Vec<_> = blocks()
        .into_iter()
        .filter(|b| b.lang == lang && b.text.contains(marker))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {lang} block with {marker:?} in the README"
    );
    (found[0].first_line, found[0].text.clone())
}

/// A plugin configuration from the README, made to run here: the test's
/// lower device, state, pins and host-local data directory.
fn localised(cni: &Cni, mut conf: Value) -> Value {
    assert_eq!(conf["master"], "eth0", "{conf}");
    conf["master"] = json!(LOWER);
    conf["stateDir"] = json!(cni.h.state.path());
    conf["bpffs"] = json!(cni.h.bpffs.path());
    if conf["ipam"]["type"].is_string() {
        conf["ipam"]["dataDir"] = json!(cni.ipam.path());
    }
    conf
}

fn parse_yaml(line: usize, text: &str) -> Value {
    serde_yaml_ng::from_str(text)
        .unwrap_or_else(|e| panic!("README:{line}: the YAML does not parse: {e}"))
}

#[test]
fn conflist_example_adds_checks_and_deletes() {
    require_root!();
    let (line, text) = example("json", "\"plugins\"");
    let list: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("README:{line}: the conflist does not parse: {e}"));
    let plugins = list["plugins"].as_array().expect("plugins");
    assert_eq!(plugins.len(), 1);
    // As libcni does: the list's name and version go into each plugin's.
    let mut conf = plugins[0].clone();
    assert_eq!(conf["type"], "macvswitch-cni");
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    let cni = Cni::new();
    let conf = localised(&cni, conf);
    let pod = container("pod");
    let result = cni.add(&pod, "c1", "eth0", &conf);
    assert_eq!(result["ips"][0]["gateway"], "192.0.2.1", "{result}");
    let ip = result["ips"][0]["address"].as_str().unwrap();
    assert_eq!(addresses(&pod, "eth0"), vec![ip.to_string()]);
    assert_eq!(cni.endpoints()[0]["vlan"], 100);
    assert_eq!(cni.endpoints()[0]["isolated"], true);
    assert_ok(&cni.check(&pod, "c1", "eth0", &conf, &result), "CHECK");
    cni.del(&pod, "c1", "eth0", &conf);
    assert!(!links(&pod).contains(&"eth0".to_string()));
    assert!(cni.endpoints().is_empty());
}

#[test]
fn multus_and_kubevirt_examples_attach_a_macvtap() {
    require_root!();
    let (line, text) = example("yaml", "NetworkAttachmentDefinition");
    let nad = parse_yaml(line, &text);
    assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
    let config = nad["spec"]["config"].as_str().expect("spec.config");
    let conf: Value = serde_json::from_str(config)
        .unwrap_or_else(|e| panic!("README:{line}: spec.config is not JSON: {e}"));
    assert_eq!(
        conf["name"], nad["metadata"]["name"],
        "Multus names the network"
    );
    assert_eq!(conf["device"], "macvtap");

    let (line, text) = example("yaml", "kind: VirtualMachine");
    let vm = parse_yaml(line, &text);
    let spec = &vm["spec"]["template"]["spec"];
    let iface = &spec["domain"]["devices"]["interfaces"][0];
    let network = &spec["networks"][0];
    assert_eq!(iface["binding"]["name"], "macvtap", "README:{line}");
    assert_eq!(iface["name"], network["name"], "README:{line}");
    assert_eq!(
        network["multus"]["networkName"], nad["metadata"]["name"],
        "README:{line}: the VM names the NetworkAttachmentDefinition"
    );

    // What Multus runs for the VM's pod: the NAD's config with the MAC
    // KubeVirt chose as runtimeConfig, the pod's secondary interface.
    let cni = Cni::new();
    let mut conf = localised(&cni, conf);
    conf["runtimeConfig"] = json!({"mac": "02:00:00:00:0a:01"});
    let pod = container("virt-launcher");
    let result = cni.add(&pod, "vm1-pod", "net1", &conf);
    assert_eq!(
        result["interfaces"][0]["mac"], "02:00:00:00:0a:01",
        "{result}"
    );
    assert!(result["ips"].as_array().unwrap().is_empty(), "{result}");
    let net1 = link(&pod, "net1");
    assert_eq!(net1["linkinfo"]["info_kind"], "macvtap", "{net1}");
    assert_eq!(net1["address"], "02:00:00:00:0a:01");
    // The tap's character device, as virt-launcher's libvirt finds it.
    let tap = pod.exec_ok(&["sh", "-c", "ls /sys/class/net/net1/macvtap"]);
    let index = net1["ifindex"].as_u64().unwrap();
    assert_eq!(
        tap.trim(),
        format!("tap{index}"),
        "the tap is named by its ifindex"
    );
    assert_ok(&cni.check(&pod, "vm1-pod", "net1", &conf, &result), "CHECK");
    cni.del(&pod, "vm1-pod", "net1", &conf);
    assert!(!links(&pod).contains(&"net1".to_string()));
}
