//! The guests, their addresses, and the cases run against them.
//!
//! ```text
//!  host namespace                                 wire namespace
//!  g1 (VLAN 10) ───┐
//!  g2 (VLAN 10) ───┤
//!  g3 (VLAN 20) ───┼── lower0 ══ veth, the trunk ══ sw0 ── br0 ── wtap0 ── peer guest
//!  host0 (VLAN 10) ┘                                                  (eth0.10, 802.1Q)
//! ```
//!
//! All addresses are in one subnet (192.0.2.0/24, 2001:db8:10::/64), so
//! only the VLANs keep guests apart. `--quick` starts g1 and g2 only (one
//! queue each) and runs the first case.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::lab::{LOWER, Lab, WIRE_TAP, bounded};
use super::qemu::{self, Guest, Nic};
use crate::vm::kernels::Kernel;

/// What every guest boots and where its console log goes.
pub struct Kit<'a> {
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    pub memory_mib: u32,
    pub boot_timeout: Duration,
    pub logs: &'a Path,
    pub echo: bool,
}

/// How a case went.
pub struct CaseResult {
    pub name: &'static str,
    pub passed: bool,
}

struct Member {
    name: &'static str,
    v4: &'static str,
    v6: &'static str,
}

/// A guest `name` whose addresses end in `host`: 192.0.2.HOST and
/// 2001:db8:10::HOST.
macro_rules! member {
    ($name:literal, $host:literal) => {
        Member {
            name: $name,
            v4: concat!("192.0.2.", $host),
            v6: concat!("2001:db8:10::", $host),
        }
    };
}

const G1: Member = member!("g1", "11");
const G2: Member = member!("g2", "12");
const G3: Member = member!("g3", "13");
const PEER: Member = member!("peer", "100");
/// The wire peer's NIC (no endpoint polices it).
const PEER_MAC: &str = "02:6d:73:77:00:64";
const HOST_PORT: &str = "host0";
const HOST_PORT_IP: &str = "192.0.2.1";
const HOST_PORT_ADDRESS: &str = "192.0.2.1/24";
const ACCESS_VLAN: &str = "10";
const OTHER_VLAN: &str = "20";
/// The wire peer's 802.1Q interface.
const PEER_VLAN_IF: &str = "eth0.10";

/// A command in a guest that should be quick (pings have their own
/// deadlines, well inside it).
const COMMAND: Duration = Duration::from_secs(30);

/// The guests of a run, in the order they start; dropped (killed) on any
/// early return.
struct World<'a> {
    guests: Vec<Guest>,
    lab: &'a Lab,
}

impl Kit<'_> {
    fn spec<'a>(&'a self, name: &'a str, smp: u32, nic: Nic<'a>) -> qemu::Spec<'a> {
        qemu::Spec {
            name,
            kernel: self.kernel,
            initramfs: self.initramfs,
            memory_mib: self.memory_mib,
            smp,
            nic,
            log: self.logs.join(format!("{name}.log")),
            echo: self.echo,
        }
    }
}

impl World<'_> {
    fn guest(&mut self, name: &str) -> &mut Guest {
        self.guests
            .iter_mut()
            .find(|g| g.name == name)
            .expect("a guest of this run")
    }
}

/// Starts the guests, runs the cases, powers the guests off.
pub fn run(lab: &Lab, kit: &Kit, quick: bool) -> Result<Vec<CaseResult>> {
    let mut world = start(lab, kit, quick)?;
    type Case = fn(&mut World) -> Result<String>;
    let mut cases: Vec<(&'static str, Case)> = vec![("same-vlan", same_vlan)];
    if !quick {
        cases.extend([
            ("other-vlan", other_vlan as Case),
            ("wire-peer", wire_peer),
            ("multiqueue", multiqueue),
            ("isolated", isolated),
            ("host-port", host_port),
        ]);
    }
    let mut results = Vec::new();
    for (name, case) in cases {
        let t = Instant::now();
        let outcome = case(&mut world);
        let secs = t.elapsed().as_secs_f64();
        match &outcome {
            Ok(detail) => println!("guest-test: PASS {name:<11} {detail} ({secs:.0} s)"),
            Err(e) => println!("guest-test: FAIL {name:<11} {e:#} ({secs:.0} s)"),
        }
        results.push(CaseResult {
            name,
            passed: outcome.is_ok(),
        });
    }
    for g in world.guests.drain(..) {
        g.power_off(Duration::from_secs(20));
    }
    Ok(results)
}

/// Endpoints, guests booted (in parallel), addresses set.
fn start<'a>(lab: &'a Lab, kit: &Kit, quick: bool) -> Result<World<'a>> {
    // (member, VLAN, queues, vCPUs): the multiqueue guest gets a vCPU per
    // queue, since virtio_net uses as many queue pairs as there are CPUs.
    let mut plan = vec![(G1, ACCESS_VLAN, 1, 1)];
    if quick {
        plan.push((G2, ACCESS_VLAN, 1, 1));
    } else {
        plan.push((G2, ACCESS_VLAN, 2, 2));
        plan.push((G3, OTHER_VLAN, 1, 1));
    }
    let mut world = World {
        guests: Vec::new(),
        lab,
    };
    let t = Instant::now();
    for (m, vlan, queues, smp) in &plan {
        lab.macvswitch(&["endpoint", "add", m.name, "--lower", LOWER, "--vlan", vlan])?;
        let mac = lab.endpoint_mac(m.name)?;
        let nic = Nic::Endpoint {
            mac: &mac,
            queues: *queues,
        };
        let spec = kit.spec(m.name, *smp, nic);
        let queues = queues.to_string();
        let mut cmd = lab.controller(&["exec", m.name, "--queues", &queues, "--"]);
        cmd.args(qemu::args(&spec));
        println!(
            "==> guest-test: {} on access VLAN {vlan}, {queues} queue(s): macvswitch exec {} --queues {queues} -- qemu-system-x86_64 ...",
            m.name, m.name
        );
        world.guests.push(Guest::start(cmd, &spec)?);
    }
    if !quick {
        let nic = Nic::Tap {
            ifname: WIRE_TAP,
            mac: PEER_MAC,
        };
        let spec = kit.spec(PEER.name, 1, nic);
        let mut cmd = lab.in_wire(&[]);
        cmd.args(qemu::args(&spec));
        println!("==> guest-test: peer on the wire side, tagging VLAN {ACCESS_VLAN} itself");
        world.guests.push(Guest::start(cmd, &spec)?);
    }
    for g in &mut world.guests {
        let booted = g.wait_ready(kit.boot_timeout)?;
        println!(
            "==> guest-test: {} takes commands after {:.1} s",
            g.name,
            booted.as_secs_f64()
        );
    }
    for (m, ..) in &plan {
        world.guest(m.name).check(&addresses("eth0", m), COMMAND)?;
    }
    if !quick {
        let vlan_if = format!(
            "ip link set eth0 up && ip link add link eth0 name {PEER_VLAN_IF} type vlan id {ACCESS_VLAN} && {}",
            addresses(PEER_VLAN_IF, &PEER)
        );
        world.guest(PEER.name).check(&vlan_if, COMMAND)?;
    }
    println!(
        "==> guest-test: {} guests up in {:.0} s",
        world.guests.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(world)
}

/// The shell line that gives `dev` its addresses (no duplicate address
/// detection: the addresses work at once).
fn addresses(dev: &str, m: &Member) -> String {
    format!(
        "echo 0 > /proc/sys/net/ipv6/conf/{dev}/accept_dad && ip link set {dev} up \
         && ip addr add {}/24 dev {dev} && ip addr add {}/64 dev {dev}",
        m.v4, m.v6
    )
}

/// How long a ping goes on: echo requests, seconds to wait for a reply
/// after the last one (`-W`), seconds in all (`-w`).
struct Bounds {
    count: u32,
    wait: u32,
    deadline: u32,
}

/// A ping that should be answered.
const ANSWERED: Bounds = Bounds {
    count: 3,
    wait: 2,
    deadline: 10,
};
/// A ping that should not be: answers on these paths take milliseconds
/// (tens of them under TCG), so a second of silence after the last
/// request says enough.
const UNANSWERED: Bounds = Bounds {
    count: 2,
    wait: 1,
    deadline: 4,
};

/// Replies to a bounded ping: (sent, received).
fn ping(g: &mut Guest, to: &str, prefix: &str, b: Bounds) -> Result<(u32, u32)> {
    let Bounds {
        count,
        wait,
        deadline,
    } = b;
    let out = g
        .run(
            &format!("{prefix}ping -c {count} -W {wait} -w {deadline} {to}"),
            COMMAND,
        )?
        .output;
    counts(&out).with_context(|| format!("{}: no ping summary: {}", g.name, out.join(" | ")))
}

/// "3 packets transmitted, 2 packets received, ..." (busybox) or
/// "3 packets transmitted, 2 received, ..." (iputils).
fn counts(lines: &[String]) -> Option<(u32, u32)> {
    let line = lines.iter().find(|l| l.contains("transmitted"))?;
    let mut parts = line.split(',');
    let first = |s: Option<&str>| s?.split_whitespace().next()?.parse().ok();
    Some((first(parts.next())?, first(parts.next())?))
}

/// `from` reaches `to` (at least one reply): "IPv4 3/3".
fn reaches(w: &mut World, from: &str, to: &str, what: &str) -> Result<String> {
    reaches_with(w, from, to, what, "")
}

fn reaches_with(w: &mut World, from: &str, to: &str, what: &str, prefix: &str) -> Result<String> {
    let (sent, got) = ping(w.guest(from), to, prefix, ANSWERED)?;
    if got == 0 {
        bail!("{from} gets no reply from {to} ({what}, {sent} sent)");
    }
    Ok(format!("{what} {got}/{sent}"))
}

/// `from` does not reach `to` (no reply at all).
fn blocked(w: &mut World, from: &str, to: &str) -> Result<()> {
    let (sent, got) = ping(w.guest(from), to, "", UNANSWERED)?;
    if got != 0 {
        bail!("{from} reaches {to}: {got} of {sent} replies");
    }
    Ok(())
}

/// Forget every neighbour, so that each case resolves addresses afresh.
fn flush(w: &mut World, names: &[&str]) -> Result<()> {
    for n in names {
        w.guest(n).check("ip neigh flush dev eth0", COMMAND)?;
    }
    Ok(())
}

fn same_vlan(w: &mut World) -> Result<String> {
    let a = reaches(w, G1.name, G2.v4, "IPv4")?;
    let b = reaches(w, G1.name, G2.v6, "IPv6")?;
    let c = reaches(w, G2.name, G1.v4, "IPv4")?;
    let d = reaches(w, G2.name, G1.v6, "IPv6")?;
    Ok(format!(
        "g1 and g2 on access VLAN {ACCESS_VLAN} ping each other: g1->g2 {a}, {b}; g2->g1 {c}, {d}"
    ))
}

/// Drops of `reason` on the endpoints `names`, summed.
fn drops(w: &World, names: &[&str], reason: &str) -> Result<u64> {
    names.iter().map(|name| w.lab.drops(name, reason)).sum()
}

fn other_vlan(w: &mut World) -> Result<String> {
    flush(w, &[G1.name, G3.name])?;
    let before = drops(w, &[G1.name, G3.name], "wrong-vlan")?;
    blocked(w, G3.name, G1.v4)?;
    blocked(w, G3.name, G1.v6)?;
    blocked(w, G1.name, G3.v4)?;
    let after = drops(w, &[G1.name, G3.name], "wrong-vlan")?;
    if after <= before {
        bail!("no reply, but no wrong-vlan drop on g1 or g3 either: the frames got lost elsewhere");
    }
    Ok(format!(
        "g3 on VLAN {OTHER_VLAN}, same subnet, and g1 on VLAN {ACCESS_VLAN}: no reply either way \
         (IPv4, IPv6), {} frames dropped as wrong-vlan",
        after - before
    ))
}

fn wire_peer(w: &mut World) -> Result<String> {
    let config = w
        .guest(PEER.name)
        .check("cat /proc/net/vlan/config", COMMAND)?;
    if !config.iter().any(|l| {
        let f: Vec<&str> = l.split('|').map(str::trim).collect();
        f == [PEER_VLAN_IF, ACCESS_VLAN, "eth0"]
    }) {
        bail!(
            "the peer has no 802.1Q interface {PEER_VLAN_IF}: {}",
            config.join(" | ")
        );
    }
    flush(w, &[G1.name, PEER.name])?;
    let a = reaches(w, G1.name, PEER.v4, "IPv4")?;
    let b = reaches(w, G1.name, PEER.v6, "IPv6")?;
    Ok(format!(
        "g1 reaches the peer across the trunk, whose {PEER_VLAN_IF} (802.1Q, VID {ACCESS_VLAN}) answers: {a}, {b}"
    ))
}

fn multiqueue(w: &mut World) -> Result<String> {
    // The host's side: QEMU holds the endpoint's tap once per queue.
    let shown = w.lab.macvswitch(&["endpoint", "show", G2.name, "--json"])?;
    let tap = serde_json::from_str::<serde_json::Value>(&shown)?["tap"]
        .as_str()
        .map(std::path::PathBuf::from)
        .context("`endpoint show g2 --json` has no \"tap\"")?;
    let pid = w.guest(G2.name).pid();
    for fd in [3, 4] {
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .with_context(|| format!("QEMU (pid {pid}) has no fd {fd}"))?;
        if link != tap {
            bail!(
                "QEMU's fd {fd} is {}, not g2's tap {}",
                link.display(),
                tap.display()
            );
        }
    }
    // The guest's side: two queue pairs, and each CPU sends on its own.
    let queues = w
        .guest(G2.name)
        .check("ls /sys/class/net/eth0/queues", COMMAND)?
        .join(" ");
    let n = |kind: &str| {
        queues
            .split_whitespace()
            .filter(|q| q.starts_with(kind))
            .count()
    };
    if (n("rx-"), n("tx-")) != (2, 2) {
        bail!("g2 has queues {queues}, not two each way");
    }
    flush(w, &[G2.name, G1.name])?;
    // virtio_net maps each CPU's transmissions to its own queue: a ping
    // pinned to CPU N sends on queue N, whose completions then interrupt.
    let mut seen = Vec::new();
    for cpu in 0..2u32 {
        let before = interrupts(w.guest(G2.name))?;
        let what = format!("from CPU {cpu}");
        let replies = reaches_with(w, G2.name, G1.v4, &what, &format!("taskset {} ", 1 << cpu))?;
        let after = interrupts(w.guest(G2.name))?;
        let queue = format!("output.{cpu}");
        let rose = |q: &str| {
            after
                .get(q)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(q).copied().unwrap_or(0))
        };
        if rose(&queue) == 0 {
            bail!("g2's ping {what} ({replies}) left no completion on transmit queue {cpu}");
        }
        seen.push(format!(
            "{replies} on tx queue {cpu} (+{} interrupts)",
            rose(&queue)
        ));
    }
    Ok(format!(
        "g2 (exec --queues 2: QEMU holds its tap as fds 3 and 4; 2 vCPUs) has 2 queue pairs \
         and reaches g1 on each: {}",
        seen.join(", ")
    ))
}

/// The guest's virtio-net queue interrupts, by queue ("input.0", ...),
/// summed over CPUs.
fn interrupts(g: &mut Guest) -> Result<std::collections::BTreeMap<String, u64>> {
    let lines = g.check("grep virtio0- /proc/interrupts", COMMAND)?;
    Ok(lines
        .iter()
        .filter_map(|l| {
            let queue = l.split_whitespace().last()?.strip_prefix("virtio0-")?;
            let total = l
                .split_whitespace()
                .skip(1)
                .map_while(|f| f.parse::<u64>().ok())
                .sum();
            Some((queue.to_string(), total))
        })
        .filter(|(q, _)| q.starts_with("input") || q.starts_with("output"))
        .collect())
}

fn isolated(w: &mut World) -> Result<String> {
    // Live: QEMU keeps its tap fds.
    w.lab.macvswitch(&[
        "endpoint",
        "set",
        G3.name,
        "--vlan",
        ACCESS_VLAN,
        "--isolated",
    ])?;
    flush(w, &[G1.name, G3.name, PEER.name])?;
    let before = drops(w, &[G1.name, G3.name], "isolation")?;
    let a = reaches(w, G3.name, PEER.v4, "IPv4")?;
    let b = reaches(w, G3.name, PEER.v6, "IPv6")?;
    blocked(w, G3.name, G1.v4)?;
    blocked(w, G1.name, G3.v4)?;
    let after = drops(w, &[G1.name, G3.name], "isolation")?;
    if after <= before {
        bail!("no reply, but no isolation drop on g1 or g3 either");
    }
    Ok(format!(
        "g3, now isolated on VLAN {ACCESS_VLAN} (endpoint set, live), reaches the peer on the wire ({a}, {b}) \
         but not its neighbour g1 (no reply either way, {} frames dropped as isolation)",
        after - before
    ))
}

fn host_port(w: &mut World) -> Result<String> {
    w.lab.macvswitch(&[
        "uplink",
        "set",
        LOWER,
        "--host-port",
        HOST_PORT,
        "--vlan",
        ACCESS_VLAN,
        "--address",
        HOST_PORT_ADDRESS,
    ])?;
    let [count, wait, deadline] =
        [ANSWERED.count, ANSWERED.wait, ANSWERED.deadline].map(|n| n.to_string());
    let mut cmd = w
        .lab
        .in_host(&["ping", "-c", &count, "-W", &wait, "-w", &deadline, G1.v4]);
    let out = bounded(&mut cmd, COMMAND)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let (sent, got) = counts(&lines).context("host ping printed no summary")?;
    if got == 0 {
        bail!("the host port {HOST_PORT} gets no reply from g1 ({sent} sent)");
    }
    // The guest's side of the same path.
    let back = reaches(w, G1.name, HOST_PORT_IP, "IPv4")?;
    Ok(format!(
        "the host port {HOST_PORT} ({HOST_PORT_ADDRESS}, VLAN {ACCESS_VLAN}) pings g1: IPv4 {got}/{sent}; g1 pings it back: {back}"
    ))
}

#[cfg(test)]
mod tests {
    use super::counts;

    #[test]
    fn ping_summaries() {
        let l = |s: &str| vec![s.to_string()];
        assert_eq!(
            counts(&l(
                "3 packets transmitted, 2 packets received, 33% packet loss"
            )),
            Some((3, 2))
        );
        assert_eq!(
            counts(&l(
                "3 packets transmitted, 3 received, 0% packet loss, time 2003ms"
            )),
            Some((3, 3))
        );
        assert_eq!(counts(&l("PING 192.0.2.1")), None);
    }
}
