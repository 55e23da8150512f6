//! `cargo xtask demo`: the controller at work in throw-away network
//! namespaces (see `scratch`), with every command and its output shown.

use std::path::Path;
use std::process::Command;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use macvswitch_tests::{
    frame::{Marker, marked, marked_tagged, parse, parse_mac, vid},
    netns::in_netns,
    tap::Tap,
    topology::{SWITCH_MAC, SWITCH_PORT},
    wire::WireSocket,
};

use crate::run::{self, Workspace};
use crate::scratch::{self, Scratch};

const PREFIX: &str = "msw-demo-";

pub fn demo(ws: &Workspace) -> Result<()> {
    if !run::is_root() {
        bail!("the demo creates network namespaces and mounts a bpffs: run it as root");
    }
    let bin = ws.controller_bin();
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build -p macvswitch`",
            bin.display()
        );
    }
    scratch::reap_stale(PREFIX, "demo", run::check);

    let mut env = DemoEnv::new();
    let result = env.create().and_then(|()| env.exercise(&bin));
    let cleaned = env.cleanup();
    match (result, cleaned) {
        (Ok(()), Ok(())) => {
            println!("demo: OK, cleaned up");
            Ok(())
        }
        (Err(e), _) => Err(e.context("demo failed (cleaned up)")),
        (Ok(()), Err(e)) => Err(e),
    }
}

/// The demo's namespaces and directories; [`DemoEnv::cleanup`] (or
/// `Drop`, on panic) removes them.
struct DemoEnv {
    host_ns: String,
    switch_ns: String,
    scratch: Scratch,
}

impl DemoEnv {
    fn new() -> Self {
        let scratch = Scratch::new(PREFIX, run::check);
        Self {
            host_ns: scratch.ns_name("host"),
            switch_ns: scratch.ns_name("switch"),
            scratch,
        }
    }

    fn create(&mut self) -> Result<()> {
        println!(
            "demo: host namespace {}, switch namespace {}",
            self.host_ns, self.switch_ns
        );
        for role in ["host", "switch"] {
            self.scratch.add_ns(role)?;
        }
        // No IPv6 chatter (router solicitations, DAD) from the namespaces'
        // own stacks: the counters shown then count the demo's frames only.
        for ns in [&self.host_ns, &self.switch_ns] {
            for conf in ["all", "default"] {
                run::check(Command::new("ip").args([
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{conf}.disable_ipv6=1"),
                ]))?;
            }
        }
        // Created inside the host namespace, peer moved straight to the
        // switch one: the root namespace's links are never touched.
        run::check(Command::new("ip").args([
            "-n",
            &self.host_ns,
            "link",
            "add",
            "lower0",
            "type",
            "veth",
            "peer",
            "name",
            "sw0",
            "netns",
            &self.switch_ns,
        ]))?;
        run::check(Command::new("ip").args(["-n", &self.host_ns, "link", "set", "lower0", "up"]))?;
        run::check(Command::new("ip").args(["-n", &self.switch_ns, "link", "set", "sw0", "up"]))?;
        self.scratch.mount()
    }

    fn exercise(&self, bin: &Path) -> Result<()> {
        let steps: &[&[&str]] = &[
            &[
                "endpoint", "add", "vm1", "--lower", "lower0", "--vlan", "10",
            ],
            &[
                "endpoint", "add", "vm2", "--lower", "lower0", "--vlan", "20",
            ],
            &["endpoint", "list"],
            &["endpoint", "show", "vm1", "--json"],
        ];
        for args in steps {
            run::check(&mut self.macvswitch(bin, args))?;
        }
        self.frames(bin)?;
        run::check(&mut self.macvswitch(bin, &["stats"]))?;
        run::check(&mut self.macvswitch(bin, &["reset"]))?;
        Ok(())
    }

    /// `macvswitch ARGS` in the host namespace with the demo's directories.
    fn macvswitch(&self, bin: &Path, args: &[&str]) -> Command {
        self.scratch.controller(&self.host_ns, bin, args)
    }

    /// Frames through vm1's tap and the wire (sw0): one from the guest
    /// leaves tagged, one from the wire arrives untagged, one on another
    /// VLAN is dropped and counted.
    fn frames(&self, bin: &Path) -> Result<()> {
        let shown = run::output(&mut self.macvswitch(bin, &["endpoint", "show", "vm1", "--json"]))
            .context("`endpoint show vm1 --json` failed")?;
        let vm1: serde_json::Value = serde_json::from_str(&shown)?;
        let mac = vm1["mac"]
            .as_str()
            .and_then(parse_mac)
            .context("vm1's MAC in `endpoint show --json`")?;
        let tap = Tap::open(vm1["tap"].as_str().context("vm1's tap node")?);
        let wire = in_netns(&self.switch_ns, || WireSocket::open_here(SWITCH_PORT));
        let wait = Duration::from_secs(2);
        let describe = |tags: &[(u16, u16)]| match tags {
            [] => "untagged".to_string(),
            tags => tags
                .iter()
                .map(|&(tpid, tci)| format!("tagged {tpid:#06x} VLAN {}", vid(tci)))
                .collect::<Vec<_>>()
                .join(", "),
        };

        println!("demo: vm1 (access VLAN 10) sends an untagged frame to the switch");
        let marker = Marker::new();
        tap.write(&marked(SWITCH_MAC, mac, &marker));
        let out = wire
            .recv_matching(wait, |f| marker.is_in(&f.bytes))
            .context("vm1's frame never reached the wire")?;
        let tags: Vec<_> = out.vlan.into_iter().collect();
        println!(
            "  the switch port {SWITCH_PORT} receives it {}",
            describe(&tags)
        );
        if out.vid() != Some(10) {
            bail!("vm1's frame left {}, not on VLAN 10", describe(&tags));
        }

        println!("demo: the switch sends a frame tagged VLAN 10 to vm1");
        let marker = Marker::new();
        wire.send(&marked_tagged(mac, SWITCH_MAC, 10, &marker));
        let got = tap
            .read_matching(wait, |f| marker.is_in(f))
            .context("the VLAN 10 frame never reached vm1")?;
        let tags = parse(&got).map(|p| p.tags).unwrap_or_default();
        println!("  vm1 reads it {}", describe(&tags));
        if !tags.is_empty() {
            bail!("vm1 read its VLAN's frame {}", describe(&tags));
        }

        println!("demo: the switch sends a frame tagged VLAN 20 (vm2's) to vm1's MAC");
        let before = self.wrong_vlan_drops(bin)?;
        let marker = Marker::new();
        wire.send(&marked_tagged(mac, SWITCH_MAC, 20, &marker));
        if tap.read_matching(wait, |f| marker.is_in(f)).is_some() {
            bail!("vm1 read a frame of VLAN 20");
        }
        let after = self.wrong_vlan_drops(bin)?;
        println!("  vm1 reads nothing; its wrong-vlan drop counter went from {before} to {after}");
        if after <= before {
            bail!("the VLAN 20 frame was not counted as wrong-vlan on vm1");
        }
        Ok(())
    }

    fn wrong_vlan_drops(&self, bin: &Path) -> Result<u64> {
        let out = run::output(&mut self.macvswitch(bin, &["stats", "vm1", "--json"]))
            .context("`stats vm1 --json` failed")?;
        let stats: serde_json::Value = serde_json::from_str(&out)?;
        let row = stats
            .as_array()
            .and_then(|rows| rows.first())
            .unwrap_or(&stats);
        Ok(row["drops"]["wrong-vlan"].as_u64().unwrap_or(0))
    }

    /// Deleting the namespaces deletes the veth and the macvtaps, which
    /// detaches the programs before their pins go with the bpffs.
    fn cleanup(&mut self) -> Result<()> {
        self.scratch.cleanup("demo")
    }
}
