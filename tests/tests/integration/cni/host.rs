//! One switch per host: `restore`, `reload` and `reset` handle a CNI
//! endpoint as they handle the CLI's, in its container.

use macvswitch_tests::{attach, bpf::pinned_prog_id, require_root};
use serde_json::json;

use super::{Cni, assert_ok, container, links};

/// `restore` keeps a container's endpoint while it is there and forgets
/// it once its namespace is gone; `reset` removes it from the container.
#[test]
fn restore_and_reset_handle_cni_endpoints() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    let gone = container("gone");
    let conf = cni.conf(json!({}));
    cni.add(&pod, "c1", "net1", &conf);
    cni.add(&gone, "c2", "net1", &conf);
    drop(gone);
    let report = cni.h.ctl.ok(&["restore"]);
    let left = cni.endpoints();
    assert_eq!(left.len(), 1, "{report}: {left:?}");
    assert_eq!(left[0]["container_id"], "c1");
    assert_eq!(left[0]["status"], "ready");
    // A freshly loaded data path (what a new binary does by itself) takes
    // the container's endpoint along: its policy is in the new maps and
    // its links run the new programs, so CHECK still agrees.
    let result = cni.add(&pod, "c3", "net3", &conf);
    cni.h.ctl.ok(&["reload"]);
    assert_ok(
        &cni.check(&pod, "c3", "net3", &conf, &result),
        "CHECK after reload",
    );
    let name = cni
        .endpoints()
        .into_iter()
        .find(|e| e["container_id"] == "c3")
        .expect("c3 listed")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let bpffs = cni.h.bpffs.path();
    let builds: Vec<_> = std::fs::read_dir(bpffs.join("progs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    for (hook, program) in [("ingress", "to_guest"), ("egress", "from_guest")] {
        let loaded = u64::from(pinned_prog_id(&builds[0].join(program)));
        // TCX: the pinned link's program; clsact: our filter's, in the pod.
        let running = match attach::ours(&pod, "net3", hook).first() {
            Some(filter) => filter["options"]["prog"]["id"].as_u64().expect("prog id"),
            None => u64::from(pinned_prog_id(&bpffs.join("links").join(&name).join(hook))),
        };
        assert_eq!(
            running, loaded,
            "the {hook} of c3 runs another program than the one loaded"
        );
    }
    cni.h.ctl.ok(&["reset"]);
    for ifname in ["net1", "net3"] {
        assert!(
            !links(&pod).contains(&ifname.to_string()),
            "reset left {ifname}"
        );
    }
}
