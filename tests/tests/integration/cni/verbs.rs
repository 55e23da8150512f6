//! ADD, DEL and VERSION with host-local, and ADD's refusals: what the
//! plugin answers, and what it leaves in the container, the state and IPAM.

use macvswitch_tests::require_root;
use serde_json::json;

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
