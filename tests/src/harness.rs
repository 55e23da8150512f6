//! One test's complete fixture: topology, private bpffs, private state dir
//! and a controller bound to them, plus helpers for endpoint JSON/stats.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::frame::{Mac, parse_mac};
use crate::tap::Tap;
use crate::wire::WireSocket;
use crate::{BpffsGuard, Controller, TempStateDir, Topology};

/// How long to wait for a frame that should arrive.
pub const ARRIVE: Duration = Duration::from_secs(2);
/// How long to watch for a frame that must not arrive.
pub const ABSENT: Duration = Duration::from_millis(300);

/// `uplink set` arguments for the usual host port: host0 on VLAN 10 with
/// 192.0.2.1/24.
pub const HOST_PORT_10: [&str; 6] = [
    "--host-port",
    "host0",
    "--vlan",
    "10",
    "--address",
    "192.0.2.1/24",
];

/// Fields of `endpoint show --json` that tests use.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub mac: Mac,
    pub ifindex: u64,
    pub vlan: Option<u16>,
    pub tap: PathBuf,
    pub raw: Value,
}

impl Endpoint {
    pub fn from_json(v: &Value) -> Endpoint {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("endpoint JSON lacks string {k:?}: {v}"))
                .to_string()
        };
        let mac_s = s("mac");
        Endpoint {
            name: s("name"),
            mac: parse_mac(&mac_s).unwrap_or_else(|| panic!("bad mac {mac_s:?} in {v}")),
            ifindex: v["ifindex"]
                .as_u64()
                .unwrap_or_else(|| panic!("endpoint JSON lacks ifindex: {v}")),
            vlan: v["vlan"].as_u64().map(|x| x as u16),
            // null while the endpoint's macvtap or tap node is not there
            tap: PathBuf::from(v["tap"].as_str().unwrap_or_default()),
            raw: v.clone(),
        }
    }
}

/// Fields drop in order: topology (namespaces, links), then the bpffs
/// mount, then the state dir.
pub struct Harness {
    pub ctl: Controller,
    pub topo: Topology,
    pub bpffs: BpffsGuard,
    pub state: TempStateDir,
}

impl Harness {
    pub fn new() -> Harness {
        let topo = Topology::new();
        let bpffs = BpffsGuard::new();
        let state = TempStateDir::new();
        let ctl = Controller::new(topo.host.name(), state.path(), bpffs.path());
        Harness {
            ctl,
            topo,
            bpffs,
            state,
        }
    }

    /// `endpoint add NAME --lower lower0 EXTRA...`, then `show`.
    pub fn add(&self, name: &str, extra: &[&str]) -> Endpoint {
        let mut args = vec!["endpoint", "add", name, "--lower", crate::topology::LOWER];
        args.extend_from_slice(extra);
        self.ctl.ok(&args);
        self.show(name)
    }

    pub fn show(&self, name: &str) -> Endpoint {
        Endpoint::from_json(&self.ctl.json(&["endpoint", "show", name, "--json"]))
    }

    pub fn list(&self) -> Value {
        self.ctl.json(&["endpoint", "list", "--json"])
    }

    /// `endpoint add NAME --lower lower0 --mode MODE --vlan 10 GROUP...`:
    /// a private-VLAN member, `GROUP` being `--isolated`, `--community C`
    /// or nothing (promiscuous).
    pub fn add_pvlan(&self, name: &str, mode: &str, group: &[&str]) -> Endpoint {
        let mut args = vec!["--mode", mode, "--vlan", "10"];
        args.extend_from_slice(group);
        self.add(name, &args)
    }

    /// Two private-VLAN guests `a` and `b` on VLAN 10 and `c20` on VLAN 20,
    /// all in `mode`, and their taps open: the cast of the bridge, relay
    /// and hairpin tests, as `(a, b, c20, tap a, tap b, tap c20)`.
    pub fn trio(
        &self,
        a: &str,
        b: &str,
        mode: &str,
    ) -> (Endpoint, Endpoint, Endpoint, Tap, Tap, Tap) {
        let a = self.add_pvlan(a, mode, &[]);
        let b = self.add_pvlan(b, mode, &[]);
        let c = self.add("c20", &["--mode", mode, "--vlan", "20"]);
        let (ta, tb, tc) = (self.tap(&a), self.tap(&b), self.tap(&c));
        (a, b, c, ta, tb, tc)
    }

    /// `uplink set lower0 ARGS...`.
    pub fn uplink_set(&self, args: &[&str]) {
        let mut all = vec!["uplink", "set", crate::topology::LOWER];
        all.extend_from_slice(args);
        self.ctl.ok(&all);
    }

    /// `uplink show lower0 --json`.
    pub fn uplink(&self) -> Value {
        self.ctl
            .json(&["uplink", "show", crate::topology::LOWER, "--json"])
    }

    /// The names `endpoint list` reports, sorted.
    pub fn names(&self) -> Vec<String> {
        let list = self.list();
        let mut v: Vec<String> = list
            .as_array()
            .unwrap_or_else(|| panic!("endpoint list --json is not an array: {list}"))
            .iter()
            .map(|e| e["name"].as_str().expect("name").to_string())
            .collect();
        v.sort();
        v
    }

    /// Opens the endpoint's tap node as the guest.
    pub fn tap(&self, ep: &Endpoint) -> crate::tap::Tap {
        crate::tap::Tap::open(&ep.tap)
    }

    /// The stats object of one endpoint.
    pub fn stats(&self, name: &str) -> Value {
        let v = self.ctl.json(&["stats", name, "--json"]);
        let arr = v
            .as_array()
            .unwrap_or_else(|| panic!("stats --json is not an array: {v}"));
        arr.iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("stats for {name} missing: {v}"))
            .clone()
    }

    /// `drops.<reason>` for `name` (0 when absent).
    pub fn drops(&self, name: &str, reason: &str) -> u64 {
        self.stats(name)["drops"][reason].as_u64().unwrap_or(0)
    }

    /// The per-VLAN counters of `name` for `vid` (trunk and tunnel ports;
    /// a tunnel counts customer VLANs, 0 for untagged customer frames), or
    /// `None` when `stats` has no row for that VID.
    pub fn vlan_stats(&self, name: &str, vid: u16) -> Option<Value> {
        let s = self.stats(name);
        s["vlans"]
            .as_array()
            .unwrap_or_else(|| panic!("stats {name}: no vlans array: {s}"))
            .iter()
            .find(|v| v["vid"].as_u64() == Some(u64::from(vid)))
            .cloned()
    }

    /// `vlans[vid].<dir>.packets` for `name` (0 when the VID has no row).
    pub fn vlan_packets(&self, name: &str, vid: u16, dir: &str) -> u64 {
        self.vlan_stats(name, vid)
            .map_or(0, |v| v[dir]["packets"].as_u64().unwrap_or(0))
    }

    /// `<dir>.packets` where dir is "to_guest" or "from_guest".
    pub fn packets(&self, name: &str, dir: &str) -> u64 {
        let s = self.stats(name);
        s[dir]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("stats {name}: no {dir}.packets: {s}"))
    }
}

/// The fixture of a test of one endpoint against the wire: its harness,
/// the endpoint, its tap (open before anything is sent: a macvtap drops
/// frames while no fd is open) and an AF_PACKET socket on the wire.
/// Destructure it with the harness bound, `let OnePort { h, ep, tap, wire }
/// = OnePort::new(..)`, or by reference, `let OnePort { ep, tap, wire, .. }
/// = &port`: destructuring the value with `..` would drop the harness, and
/// its namespaces, at once.
pub struct OnePort {
    pub h: Harness,
    pub ep: Endpoint,
    pub tap: Tap,
    pub wire: WireSocket,
}

impl OnePort {
    /// `endpoint add NAME --lower lower0 EXTRA...` in a fresh harness.
    pub fn new(name: &str, extra: &[&str]) -> OnePort {
        let h = Harness::new();
        let ep = h.add(name, extra);
        let tap = h.tap(&ep);
        let wire = h.topo.wire();
        OnePort { h, ep, tap, wire }
    }

    /// As [`OnePort::new`], for a port whose `show` must report `policy`
    /// ("access", "trunk", "tunnel", ...).
    pub fn with_policy(name: &str, policy: &str, extra: &[&str]) -> OnePort {
        let port = OnePort::new(name, extra);
        let raw = &port.ep.raw;
        assert_eq!(raw["policy"], policy, "show: {raw}");
        port
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
