//! The CNI plugin, driven exactly as a container runtime drives it: the
//! `macvswitch-cni` binary run in the host namespace with `CNI_*` in its
//! environment and the network configuration on stdin, containers as
//! namespaces the test makes (`CNI_NETNS=/run/netns/NAME`), addresses from
//! Debian's real host-local IPAM plugin with a data directory per test.

mod check;
mod crash;
mod examples;
mod host;
mod status_gc;
mod traffic;
mod verbs;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use macvswitch_tests::{Harness, NetNs, TempStateDir, topology::LOWER};
use serde_json::{Value, json};

/// Where Debian's containernetworking-plugins puts host-local.
pub const CNI_PATH: &str = "/usr/lib/cni";

/// The plugin binary, beside the controller's.
pub fn plugin() -> PathBuf {
    let bin = macvswitch_tests::controller::binary().with_file_name("macvswitch-cni");
    assert!(
        bin.is_file(),
        "{} not found: `cargo build -p macvswitch` builds it",
        bin.display()
    );
    bin
}

/// A host (the harness: lower0 cabled to a switch namespace, a bpffs and
/// a state directory) with a CNI network on lower0 and host-local's data
/// directory.
pub struct Cni {
    pub h: Harness,
    pub ipam: TempStateDir,
    pub bin: PathBuf,
}

/// A container: a namespace with its loopback up.
pub fn container(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    ns.ip_ok(&["link", "set", "lo", "up"]);
    ns
}

pub fn netns_path(ns: &NetNs) -> String {
    format!("/run/netns/{}", ns.name())
}

impl Cni {
    pub fn new() -> Cni {
        assert!(
            Path::new(CNI_PATH).join("host-local").is_file(),
            "{CNI_PATH}/host-local is missing: `cargo xtask setup` installs containernetworking-plugins"
        );
        Cni {
            h: Harness::new(),
            ipam: TempStateDir::new(),
            bin: plugin(),
        }
    }

    /// The network `vlan100`: a macvlan per container on lower0, access
    /// VLAN 100, addresses from 192.0.2.0/24; `extra` keys replace (null:
    /// remove) the defaults.
    pub fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.1.0",
            "name": "vlan100",
            "type": "macvswitch-cni",
            "master": LOWER,
            "device": "macvlan",
            "vlan": 100,
            "stateDir": self.h.state.path(),
            "bpffs": self.h.bpffs.path(),
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam.path(),
                "ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "192.0.2.10", "rangeEnd": "192.0.2.99"}]],
            },
        });
        for (key, value) in extra.as_object().expect("extra keys are an object") {
            if value.is_null() {
                conf.as_object_mut().unwrap().remove(key);
            } else {
                conf[key] = value.clone();
            }
        }
        conf
    }

    /// Runs the plugin as a runtime does: `ip netns exec HOST` (the host's
    /// namespace), only `CNI_*` and PATH in the environment.
    pub fn run(&self, command: &str, conf: &Value, env: &[(&str, &str)]) -> Output {
        self.run_raw(command, &conf.to_string(), env)
    }

    pub fn run_raw(&self, command: &str, stdin: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.h.topo.host.name()])
            .arg(&self.bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", CNI_PATH)
            .envs(std::env::var("MACVSWITCH_ATTACH").map(|mode| ("MACVSWITCH_ATTACH", mode)))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning macvswitch-cni");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// The attachment's environment.
    pub fn env<'a>(ns: &'a str, id: &'a str, ifname: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", ns),
            ("CNI_IFNAME", ifname),
        ]
    }

    /// ADD that must succeed; its result.
    pub fn add(&self, ns: &NetNs, id: &str, ifname: &str, conf: &Value) -> Value {
        let path = netns_path(ns);
        let out = self.run("ADD", conf, &Self::env(&path, id, ifname));
        ok_json(&out, "ADD")
    }

    /// DEL that must succeed.
    pub fn del(&self, ns: &NetNs, id: &str, ifname: &str, conf: &Value) {
        let path = netns_path(ns);
        let out = self.run("DEL", conf, &Self::env(&path, id, ifname));
        assert_ok(&out, "DEL");
    }

    /// CHECK with `prev` as prevResult.
    pub fn check(&self, ns: &NetNs, id: &str, ifname: &str, conf: &Value, prev: &Value) -> Output {
        let mut conf = conf.clone();
        conf["prevResult"] = prev.clone();
        let path = netns_path(ns);
        self.run("CHECK", &conf, &Self::env(&path, id, ifname))
    }

    /// The controller's endpoints, as `endpoint list --json` shows them.
    pub fn endpoints(&self) -> Vec<Value> {
        self.h.list().as_array().expect("a list").clone()
    }

    /// The addresses host-local holds for network `name`.
    pub fn reserved(&self, network: &str) -> Vec<String> {
        let dir = self.ipam.path().join(network);
        let mut ips: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips
    }
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ok_json(out: &Output, what: &str) -> Value {
    assert_ok(out, what);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A refusal in the spec's error form with code `code`, its message
/// containing each of `needles`.
pub fn assert_cni_error(out: &Output, code: u64, needles: &[&str]) -> Value {
    assert!(
        !out.status.success(),
        "expected CNI error {code}, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let error: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the error is not JSON on stdout ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(error["code"], code, "{error}");
    assert!(error["cniVersion"].is_string(), "{error}");
    let msg = error["msg"].as_str().expect("msg");
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    for needle in needles {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    error
}

/// The links of a container, by name.
pub fn links(ns: &NetNs) -> Vec<String> {
    ns.link_names()
}

/// `ip -j link show IFNAME` in `ns`.
pub fn link(ns: &NetNs, ifname: &str) -> Value {
    let out = ns.ip_ok(&["-j", "-d", "link", "show", ifname]);
    serde_json::from_str::<Value>(&out).expect("ip -j")[0].clone()
}

/// The IPv4 addresses (`a.b.c.d/n`) on `ifname` in `ns`.
pub fn addresses(ns: &NetNs, ifname: &str) -> Vec<String> {
    let out = ns.ip_ok(&["-j", "-4", "addr", "show", ifname]);
    let parsed: Value = serde_json::from_str(&out).expect("ip -j");
    parsed[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}
