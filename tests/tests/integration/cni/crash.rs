//! A `kill -9` of the plugin in the middle of ADD, at random delays: the
//! next command repairs it as it repairs the CLI's (no record left pending,
//! no device of an undone add left in the container), and the runtime's
//! DEL (an ADD that failed gets one) then leaves nothing: no record, no
//! interface, no pins, no address held.

use std::{io::Write as _, process::Stdio, time::Duration};

use macvswitch_tests::{lifecycle::Rng, require_root};
use serde_json::json;

use super::{Cni, container, links, netns_path};

const ROUNDS: usize = 8;

#[test]
fn a_killed_add_is_repaired_and_deleted() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    let path = netns_path(&pod);
    let conf = cni.conf(json!({}));
    let mut rng = Rng::from_env("cni crash");
    for round in 0..ROUNDS {
        let delay = Duration::from_micros(rng.next_u64() % 120_000);
        let context = format!("round {round}, killed after {delay:?}");
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", cni.h.topo.host.name()])
            .arg(&cni.bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_PATH", super::CNI_PATH)
            .envs(std::env::var("MACVSWITCH_ATTACH").map(|mode| ("MACVSWITCH_ATTACH", mode)))
            .envs(Cni::env(&path, "c1", "net1"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        // An IPAM plugin started before the kill finishes on its own.
        std::thread::sleep(Duration::from_millis(200));

        // The next session repairs: nothing pending, and an undone add
        // leaves no interface in the container.
        cni.h.ctl.ok(&["restore"]);
        let state = macvswitch_tests::lifecycle::state(&cni.h);
        let records = state["endpoints"].as_object().unwrap();
        assert!(
            records.values().all(|r| r.get("status").is_none()),
            "{context}: {state}"
        );
        assert_eq!(
            records.is_empty(),
            !links(&pod).contains(&"net1".to_string()),
            "{context}: record and interface disagree: {state} {:?}",
            links(&pod)
        );

        cni.del(&pod, "c1", "net1", &conf);
        assert!(cni.endpoints().is_empty(), "{context}");
        assert!(!links(&pod).contains(&"net1".to_string()), "{context}");
        assert!(cni.reserved("vlan100").is_empty(), "{context}");
        let pinned = cni.h.bpffs.path().join("links");
        assert!(
            !pinned.read_dir().is_ok_and(|mut d| d.next().is_some()),
            "{context}: link pins left"
        );
    }
}
