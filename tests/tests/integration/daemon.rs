//! `macvswitch daemon`: out-of-band `ip link del` of an endpoint and of its
//! lower device, a macvtap recreated by hand, and SIGTERM/SIGINT, which end
//! the daemon with status 0 while the pinned data path goes on forwarding.
//!
//! Each test runs the daemon as a child process inside the host namespace
//! (`ip netns exec` execs it, so the child is the daemon itself), with its
//! log in a file; a guard terminates it when the test ends or fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use macvswitch_tests::expect::at_guest;
use macvswitch_tests::frame::{ETHERTYPE_TEST, Marker, marked, marked_tagged, outer_ethertype};
use macvswitch_tests::harness::{ARRIVE, Endpoint};
use macvswitch_tests::topology::{LOWER, SWITCH_MAC};
use macvswitch_tests::wire::WireSocket;
use macvswitch_tests::{Harness, root_harness};

/// How long the daemon may take to notice and repair something.
const REACT: Duration = Duration::from_secs(10);
/// How long the daemon may take to start or to exit.
const START_STOP: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it returns `Some`, at most `timeout`.
fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// The daemon as a child process, terminated on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `macvswitch daemon` for the harness and waits until it
    /// watches link events.
    fn start(h: &Harness, log_name: &str) -> Daemon {
        let log = h.state.path().join(log_name);
        let file = File::create(&log).expect("daemon log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ctl.netns])
            .arg(&h.ctl.bin)
            .arg("--state-dir")
            .arg(&h.ctl.state_dir)
            .arg("--bpffs")
            .arg(&h.ctl.bpffs)
            .arg("daemon")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log file"))
            .stderr(file)
            .spawn()
            .expect("spawning the daemon");
        let mut daemon = Daemon { child, log };
        daemon.wait_log("watching link events", START_STOP);
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing every one of `needles`.
    fn wait_log_line(&mut self, needles: &[&str], timeout: Duration) -> String {
        let what = format!("a daemon log line with {needles:?}");
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
            {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the daemon exited ({status}) while waiting for {what}; log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; log:\n{log}"
            );
            std::thread::sleep(POLL);
        }
    }

    fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_log_line(&[needle], timeout)
    }

    fn kill(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the daemon to exit; None on timeout.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill(libc::SIGTERM);
            if self.wait_exit(START_STOP).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("daemon log:\n{}", self.log());
        }
    }
}

/// The endpoint's record in the state file.
fn recorded(h: &Harness, name: &str) -> serde_json::Value {
    let path = h.state.path().join("state.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let state: serde_json::Value = serde_json::from_str(&text).expect("state.json is JSON");
    state["endpoints"][name].clone()
}

/// Whether `name` carries our programs: TCX link pins, or our clsact
/// filters.
fn attached(h: &Harness, name: &str) -> bool {
    macvswitch_tests::attach::attached(&h.topo.host, h.bpffs.path(), name)
}

/// The ifindex of `name` in the host namespace.
fn ifindex(h: &Harness, name: &str) -> u64 {
    let out = h.topo.host.ip_ok(&["-o", "link", "show", name]);
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
}

/// A guest frame written to the endpoint's (current) tap node reaches the
/// wire tagged with `vid`; `attempts` > 1 allows for a link that is still
/// coming up.
fn guest_frame_leaves_tagged(ep: &Endpoint, wire: &WireSocket, vid: u16, attempts: usize) {
    let tap = macvswitch_tests::tap::Tap::open(&ep.tap);
    for _ in 0..attempts {
        let m = Marker::new();
        tap.write(&marked(SWITCH_MAC, ep.mac, &m));
        if let Some(frame) = wire.recv_matching(ARRIVE, |f| m.is_in(&f.bytes)) {
            assert_eq!(
                frame.vid(),
                Some(vid),
                "{}: guest frame left with the wrong tag",
                ep.name
            );
            return;
        }
    }
    panic!(
        "{}: a guest frame never reached the wire ({attempts} tries)",
        ep.name
    );
}

/// A wire frame tagged `vid` for the endpoint reaches its guest untagged.
fn wire_frame_reaches_guest(ep: &Endpoint, wire: &WireSocket, vid: u16) {
    let tap = macvswitch_tests::tap::Tap::open(&ep.tap);
    let m = Marker::new();
    wire.send(&marked_tagged(ep.mac, SWITCH_MAC, vid, &m));
    let frame = at_guest(
        &tap,
        &m,
        &format!("{}: a wire frame never reached the guest", ep.name),
    );
    assert_eq!(
        outer_ethertype(&frame),
        Some(ETHERTYPE_TEST),
        "{}: the frame reached the guest still tagged",
        ep.name
    );
}

#[test]
fn endpoint_deleted_out_of_band_is_cleaned_up() {
    let h = root_harness!();
    let ep0 = h.add("ep0", &["--vlan", "10"]);
    let mut daemon = Daemon::start(&h, "daemon.log");
    daemon.wait_log("watching link events", START_STOP);
    // The CLI works next to the daemon, and the daemon leaves its work be.
    let ep1 = h.add("ep1", &["--vlan", "20"]);
    assert_eq!(h.names(), ["ep0", "ep1"]);
    assert!(attached(&h, "ep0") && ep0.tap.exists());

    h.topo.host.ip_ok(&["link", "del", "ep0"]);
    daemon.wait_log_line(&["ep0", "deleted out of band"], REACT);
    eventually(REACT, "ep0 to leave `endpoint list`", || {
        (h.names() == ["ep1"]).then_some(())
    });
    assert!(!attached(&h, "ep0"), "ep0's link pins left behind");
    assert!(
        !ep0.tap.exists(),
        "tap node {} left behind",
        ep0.tap.display()
    );
    assert!(
        !h.ctl
            .run(&["endpoint", "show", "ep0", "--json"])
            .status
            .success()
    );
    // ep1 is untouched and still forwards.
    assert!(attached(&h, "ep1") && ep1.tap.exists());
    assert_eq!(h.show("ep1").ifindex, ep1.ifindex);
    guest_frame_leaves_tagged(&ep1, &h.topo.wire(), 20, 1);
    let log = daemon.log();
    assert!(!log.contains("ep1 deleted"), "daemon log:\n{log}");
    // The daemon does not hold the state lock between reactions.
    h.ctl.ok(&["endpoint", "del", "ep1"]);
    assert_eq!(h.names(), Vec::<String>::new());
}

#[test]
fn lower_device_gone_and_back_brings_endpoints_back() {
    let h = root_harness!();
    let eps = [
        h.add("ep0", &["--vlan", "10"]),
        h.add("ep1", &["--vlan", "20"]),
    ];
    let mut daemon = Daemon::start(&h, "daemon.log");

    // Deleting the veth takes sw0 and both macvtaps with it.
    h.topo.host.ip_ok(&["link", "del", LOWER]);
    for ep in &eps {
        daemon.wait_log_line(&[&ep.name, "waiting"], REACT);
    }
    eventually(REACT, "both endpoints recorded as waiting", || {
        eps.iter()
            .all(|ep| recorded(&h, &ep.name)["status"] == "waiting")
            .then_some(())
    });
    assert_eq!(h.names(), ["ep0", "ep1"], "waiting endpoints were dropped");
    assert_eq!(h.topo.host.link_names(), ["lo"]);

    // The same lower device again, cabled to the switch namespace.
    h.topo.cable();

    for ep in &eps {
        daemon.wait_log_line(&[&ep.name, "recreated on", LOWER], REACT);
    }
    eventually(REACT, "both endpoints ready again", || {
        eps.iter()
            .all(|ep| recorded(&h, &ep.name).get("status").is_none())
            .then_some(())
    });
    let mut links = h.topo.host.link_names();
    links.sort();
    assert_eq!(links, ["ep0", "ep1", "lo", LOWER]);
    let wire = h.topo.wire();
    for (old, vid) in eps.iter().zip([10, 20]) {
        let ep = h.show(&old.name);
        assert_eq!(ep.mac, old.mac, "{}: the MAC changed", ep.name);
        assert_eq!(ep.vlan, Some(vid), "{}: the VLAN changed", ep.name);
        assert_eq!(
            ep.ifindex,
            ifindex(&h, &ep.name),
            "{}: stale ifindex",
            ep.name
        );
        assert!(attached(&h, &ep.name), "{}: no link pins", ep.name);
        // The new tap node belongs to the new macvtap.
        guest_frame_leaves_tagged(&ep, &wire, vid, 3);
        wire_frame_reaches_guest(&ep, &wire, vid);
    }
}

#[test]
fn macvtap_recreated_by_hand_is_readopted() {
    let h = root_harness!();
    let old = h.add("ep0", &["--vlan", "10"]);
    let mut daemon = Daemon::start(&h, "daemon.log");

    // One `ip` process, so both events land in one debounce window: a
    // delete seen alone would (rightly) forget the endpoint.
    let batch = h.state.path().join("recreate.ip");
    std::fs::write(
        &batch,
        format!("link del ep0\nlink add ep0 link {LOWER} type macvtap mode bridge\n"),
    )
    .expect("writing the ip batch");
    run_ip_batch(&h, &batch);
    let new_index = ifindex(&h, "ep0");
    assert_ne!(new_index, old.ifindex);

    daemon.wait_log_line(&["ep0", "re-adopted"], REACT);
    let ep = eventually(REACT, "ep0 recorded with its new ifindex", || {
        let ep = h.show("ep0");
        (ep.ifindex == new_index).then_some(ep)
    });
    assert_eq!(ep.vlan, Some(10));
    assert!(attached(&h, "ep0"), "no link pins for ep0");
    let wire = h.topo.wire();
    guest_frame_leaves_tagged(&ep, &wire, 10, 3);
    wire_frame_reaches_guest(&ep, &wire, 10);
    let log = daemon.log();
    assert!(!log.contains("deleted out of band"), "daemon log:\n{log}");
}

fn run_ip_batch(h: &Harness, batch: &Path) {
    let out = Command::new("ip")
        .args(["-n", h.topo.host.name(), "-batch"])
        .arg(batch)
        .output()
        .expect("running ip -batch");
    macvswitch_tests::netns::check(&out, "ip -batch");
}

#[test]
fn sigterm_and_sigint_exit_cleanly_and_the_data_path_keeps_forwarding() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--vlan", "10"]);
    let wire = h.topo.wire();
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut daemon = Daemon::start(&h, &format!("daemon-{name}.log"));
        let pins = h.bpffs.pinned_files();
        daemon.kill(signal);
        let status = daemon
            .wait_exit(START_STOP)
            .unwrap_or_else(|| panic!("the daemon did not exit on {name}"));
        assert!(
            status.success(),
            "the daemon exited with {status} on {name}; log:\n{}",
            daemon.log()
        );
        assert!(daemon.log().contains(name), "log:\n{}", daemon.log());
        assert_eq!(h.bpffs.pinned_files(), pins, "{name} changed the pins");
        assert_eq!(h.show("ep0").ifindex, ep.ifindex);
        // Forwarding goes on without the daemon, both ways.
        guest_frame_leaves_tagged(&ep, &wire, 10, 1);
        wire_frame_reaches_guest(&ep, &wire, 10);
    }
}

/// A container's namespace went without a DEL: the daemon hears nothing
/// from there, but the next restore it runs (for an event on the lower
/// device here, else its periodic resync) forgets the endpoint, its pins
/// and map entries, and leaves the rest alone.
#[test]
fn a_cni_endpoint_whose_container_went_is_cleaned_up() {
    if !macvswitch_tests::root_or_skip() {
        return;
    }
    let cni = crate::cni::Cni::new();
    let (pod, kept) = (crate::cni::container("pod"), crate::cni::container("kept"));
    let conf = cni.conf(serde_json::json!({}));
    cni.add(&pod, "c1", "net1", &conf);
    cni.add(&kept, "c2", "net1", &conf);
    let mut daemon = Daemon::start(&cni.h, "daemon.log");
    drop(pod);
    cni.h
        .topo
        .host
        .ip_ok(&["link", "set", LOWER, "mtu", "1400"]);
    eventually(REACT, "the gone container's endpoint forgotten", || {
        (cni.endpoints().len() == 1).then_some(())
    });
    assert_eq!(cni.endpoints()[0]["container_id"], "c2");
    daemon.wait_log_line(&["deleted out of band"], REACT);
    cni.del(&kept, "c2", "net1", &conf);
}
