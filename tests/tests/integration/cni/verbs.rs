//! Every verb with host-local, and its failure cases: what the plugin
//! answers, and what it leaves in the container, the state and IPAM.

use macvswitch_tests::{bpf::pinned_prog_id, require_root, topology::LOWER};
use serde_json::{Value, json};

use super::{
    Cni, addresses, assert_cni_error, assert_ok, container, link, links, netns_path, ok_json,
};

#[test]
fn add_check_del_with_host_local() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    let conf = cni.conf(json!({}));
    let result = cni.add(&pod, "c1", "net1", &conf);
    assert_eq!(result["cniVersion"], "1.1.0", "{result}");
    let iface = &result["interfaces"][0];
    assert_eq!(iface["name"], "net1", "{result}");
    assert_eq!(iface["sandbox"], netns_path(&pod), "{result}");
    assert_eq!(iface["mtu"], 1500, "{result}");
    let ip = result["ips"][0]["address"].as_str().expect("an address");
    assert!(ip.starts_with("192.0.2."), "{result}");
    assert_eq!(result["ips"][0]["interface"], 0, "{result}");
    // In the container, as the result says.
    let net1 = link(&pod, "net1");
    assert_eq!(net1["address"], iface["mac"], "{net1}");
    assert_eq!(net1["linkinfo"]["info_kind"], "macvlan", "{net1}");
    assert!(net1["flags"].to_string().contains("UP"), "{net1}");
    assert_eq!(addresses(&pod, "net1"), vec![ip.to_string()]);
    assert_eq!(cni.reserved("vlan100"), vec![ip.split('/').next().unwrap()]);
    // One switch: the CLI lists it, with whose it is.
    let listed = cni.endpoints();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["container_id"], "c1");
    assert_eq!(listed[0]["network"], "vlan100");
    assert_eq!(listed[0]["ifname"], "net1");
    assert_eq!(listed[0]["status"], "ready");
    assert_eq!(listed[0]["vlan"], 100);
    assert_eq!(listed[0]["device"], "macvlan");
    let table = cni.h.ctl.ok(&["endpoint", "list"]);
    assert!(
        table.contains("container c1 network vlan100 as net1"),
        "{table}"
    );

    assert_ok(&cni.check(&pod, "c1", "net1", &conf, &result), "CHECK");

    cni.del(&pod, "c1", "net1", &conf);
    assert!(!links(&pod).contains(&"net1".to_string()));
    assert!(cni.endpoints().is_empty());
    assert!(
        cni.reserved("vlan100").is_empty(),
        "host-local still holds an address"
    );
    assert!(
        !cni.h
            .bpffs
            .path()
            .join("links")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "link pins left behind"
    );
    // A second DEL finds nothing and succeeds.
    cni.del(&pod, "c1", "net1", &conf);
}

#[test]
fn answers_in_the_version_asked_for() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let conf = cni.conf(json!({"cniVersion": version}));
        let result = cni.add(&pod, "c1", "net1", &conf);
        assert_eq!(result["cniVersion"], version, "{result}");
        let ip = &result["ips"][0];
        if version.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{version}: {result}");
        } else {
            assert!(ip.get("version").is_none(), "{version}: {result}");
        }
        assert_eq!(
            result["interfaces"][0].get("mtu").is_some(),
            version == "1.1.0",
            "{version}: {result}"
        );
        cni.del(&pod, "c1", "net1", &conf);
    }
    let answer = ok_json(
        &cni.run_raw("VERSION", r#"{"cniVersion":"1.1.0"}"#, &[]),
        "VERSION",
    );
    assert_eq!(
        answer["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    assert_eq!(answer["cniVersion"], "1.1.0");
}

/// One refused ADD: its stdin and environment, the code and what the
/// message names.
struct Refusal<'a> {
    what: &'a str,
    stdin: String,
    env: Vec<(&'a str, &'a str)>,
    code: u64,
    needles: Vec<&'a str>,
}

impl<'a> Refusal<'a> {
    fn new(
        what: &'a str,
        stdin: String,
        env: Vec<(&'a str, &'a str)>,
        code: u64,
        needles: Vec<&'a str>,
    ) -> Self {
        Self {
            what,
            stdin,
            env,
            code,
            needles,
        }
    }
}

/// Bad input gets the spec's error with its code and a message naming the
/// key and the value, and changes nothing: no record, no link in the
/// container, no address held.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    let path = netns_path(&pod);
    let env = Cni::env(&path, "c1", "net1");
    let before = links(&pod);
    let cases: Vec<Refusal> = vec![
        Refusal::new(
            "unknown version",
            cni.conf(json!({"cniVersion": "0.2.0"})).to_string(),
            env.clone(),
            1,
            vec!["cniVersion", "0.2.0", "1.1.0"],
        ),
        Refusal::new(
            "missing master",
            cni.conf(json!({"master": "nosuch0"})).to_string(),
            env.clone(),
            7,
            vec!["master", "nosuch0"],
        ),
        Refusal::new(
            "no master at all",
            cni.conf(json!({"master": null})).to_string(),
            env.clone(),
            7,
            vec!["master"],
        ),
        Refusal::new(
            "bad VLAN",
            cni.conf(json!({"vlan": 4095})).to_string(),
            env.clone(),
            7,
            vec!["vlan", "4095", "1..=4094"],
        ),
        Refusal::new(
            "two port kinds",
            cni.conf(json!({"trunk": "10,20"})).to_string(),
            env.clone(),
            7,
            vec!["vlan/trunk/tunnel"],
        ),
        Refusal::new(
            "unknown device",
            cni.conf(json!({"device": "tun"})).to_string(),
            env.clone(),
            7,
            vec!["device", "tun", "macvlan"],
        ),
        Refusal::new(
            "bad mode",
            cni.conf(json!({"mode": "hairpin"})).to_string(),
            env.clone(),
            7,
            vec!["mode", "hairpin"],
        ),
        Refusal::new(
            "unknown IPAM plugin",
            cni.conf(json!({"ipam": {"type": "nosuch-ipam"}}))
                .to_string(),
            env.clone(),
            7,
            vec!["ipam", "nosuch-ipam"],
        ),
        Refusal::new(
            "not JSON",
            "{cniVersion".to_string(),
            env.clone(),
            6,
            vec!["JSON"],
        ),
        Refusal::new(
            "no CNI_IFNAME",
            cni.conf(json!({})).to_string(),
            vec![("CNI_CONTAINERID", "c1"), ("CNI_NETNS", path.as_str())],
            4,
            vec!["CNI_IFNAME"],
        ),
        Refusal::new(
            "a namespace that is not there",
            cni.conf(json!({})).to_string(),
            Cni::env("/run/netns/msw-no-such-ns", "c1", "net1"),
            4,
            vec!["CNI_NETNS", "msw-no-such-ns"],
        ),
        Refusal::new(
            "bad MAC in CNI_ARGS",
            cni.conf(json!({})).to_string(),
            [
                env.clone(),
                vec![("CNI_ARGS", "IgnoreUnknown=1;MAC=01:00:00:00:00:01")],
            ]
            .concat(),
            4,
            vec!["CNI_ARGS", "MAC=01:00:00:00:00:01"],
        ),
    ];
    for Refusal {
        what,
        stdin,
        env,
        code,
        needles,
    } in cases
    {
        eprintln!("{what}");
        let out = cni.run_raw("ADD", &stdin, &env);
        assert_cni_error(&out, code, &needles);
        assert!(cni.endpoints().is_empty(), "{what}: a record was left");
        assert_eq!(links(&pod), before, "{what}: the container changed");
        assert!(
            cni.reserved("vlan100").is_empty(),
            "{what}: an address is held"
        );
    }
    let out = cni.run("FROB", &cni.conf(json!({})), &env);
    assert_cni_error(&out, 4, &["CNI_COMMAND", "FROB"]);
    // A host that never had a switch: a refused ADD leaves no state
    // directory behind.
    let fresh = cni.h.state.path().join("never");
    let conf = cni.conf(json!({"master": "nosuch0", "stateDir": fresh}));
    assert_cni_error(&cni.run("ADD", &conf, &env), 7, &["master nosuch0"]);
    assert!(
        !fresh.exists(),
        "{} was made for a refused ADD",
        fresh.display()
    );
}

/// The MAC: from the configuration, overridden by `MAC` in CNI_ARGS,
/// overridden by `runtimeConfig.mac`.
#[test]
fn mac_comes_from_config_args_or_runtime_config() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    let path = netns_path(&pod);
    let conf = cni.conf(json!({"mac": "02:00:00:00:01:01"}));
    assert_eq!(
        cni.add(&pod, "c1", "net1", &conf)["interfaces"][0]["mac"],
        "02:00:00:00:01:01"
    );
    cni.del(&pod, "c1", "net1", &conf);
    let env = [
        Cni::env(&path, "c1", "net1"),
        vec![("CNI_ARGS", "IgnoreUnknown=1;MAC=02:00:00:00:01:02")],
    ]
    .concat();
    let result = ok_json(&cni.run("ADD", &conf, &env), "ADD");
    assert_eq!(result["interfaces"][0]["mac"], "02:00:00:00:01:02");
    assert_eq!(link(&pod, "net1")["address"], "02:00:00:00:01:02");
    cni.del(&pod, "c1", "net1", &conf);
    let conf = cni.conf(json!({"runtimeConfig": {"mac": "02:00:00:00:01:03"}}));
    let result = ok_json(&cni.run("ADD", &conf, &env), "ADD");
    assert_eq!(result["interfaces"][0]["mac"], "02:00:00:00:01:03");
    cni.del(&pod, "c1", "net1", &conf);
}

/// DEL succeeds for an attachment never made, after a failed ADD (whose
/// address it must not take from another), and once the namespace is gone.
#[test]
fn del_always_succeeds_and_releases() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    // One address only: the second ADD fails in IPAM, after the endpoint
    // was made, and must leave nothing.
    let conf = cni.conf(json!({"ipam": {
        "type": "host-local",
        "dataDir": cni.ipam.path(),
        "ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "192.0.2.50", "rangeEnd": "192.0.2.50"}]],
    }}));
    cni.del(&pod, "never-added", "net1", &conf);
    cni.add(&pod, "c1", "net1", &conf);
    let out = cni.run("ADD", &conf, &Cni::env(&netns_path(&pod), "c2", "net2"));
    // host-local's own code (999) is passed on.
    assert_cni_error(&out, 999, &["ipam host-local", "no IP addresses available"]);
    assert!(
        !links(&pod).contains(&"net2".to_string()),
        "the failed ADD left net2"
    );
    assert_eq!(cni.endpoints().len(), 1);
    // DEL of the failed ADD releases nothing of c1's.
    cni.del(&pod, "c2", "net2", &conf);
    assert_eq!(cni.reserved("vlan100"), vec!["192.0.2.50"]);
    // The runtime removed the namespace before DEL: the device went with
    // it, the record, pins and address go now.
    let path = netns_path(&pod);
    drop(pod);
    let out = cni.run("DEL", &conf, &Cni::env(&path, "c1", "net1"));
    assert_ok(&out, "DEL after the namespace went");
    assert!(cni.endpoints().is_empty());
    assert!(cni.reserved("vlan100").is_empty());
}

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
        assert_eq!(
            pinned_prog_id(&bpffs.join("links").join(&name).join(hook)),
            pinned_prog_id(&builds[0].join(program)),
            "the {hook} link of c3 runs another program than the one loaded"
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

/// An interface name the container already has: the move is refused
/// after the endpoint was made, and the ADD is undone entirely (no record,
/// no device left in the host's namespace, no pins, no address).
#[test]
fn a_taken_interface_name_undoes_the_add() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    pod.ip_ok(&[
        "link", "add", "net1", "type", "veth", "peer", "name", "peer1",
    ]);
    let host_links = links(&cni.h.topo.host);
    let out = cni.run(
        "ADD",
        &cni.conf(json!({})),
        &Cni::env(&netns_path(&pod), "c1", "net1"),
    );
    assert_cni_error(&out, 100, &["net1"]);
    assert!(cni.endpoints().is_empty(), "a record was left");
    assert_eq!(
        links(&cni.h.topo.host),
        host_links,
        "a device was left on the host"
    );
    assert!(cni.reserved("vlan100").is_empty());
    assert!(
        !cni.h
            .bpffs
            .path()
            .join("links")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "link pins left behind"
    );
    assert_eq!(
        link(&pod, "net1")["linkinfo"]["info_kind"],
        "veth",
        "the container's own net1 changed"
    );
}
