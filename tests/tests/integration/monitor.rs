//! `macvswitch monitor`: drops show up with their endpoint, direction and
//! reason within a second, in every monitor that wants them; nothing is
//! published while no monitor runs (the programs' own count, read from the
//! pinned map, stays put), nor once a monitor was killed and its lease ran
//! out; `--all` samples passed frames.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use macvswitch_tests::Harness;
use macvswitch_tests::bpf::pinned_map_value;
use macvswitch_tests::expect::assert_refused;
use macvswitch_tests::frame::{self, Marker, TPID_8021Q, fmt_mac, marked, marked_tagged, test_mac};
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::SWITCH_MAC;
use serde_json::Value;

/// Possible CPUs: the per-CPU map values the kernel returns.
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("cpu/possible");
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// Events the programs published, summed over CPUs, from the pinned
/// `MONITOR_STATS` (its first field).
fn published(h: &Harness) -> u64 {
    const STATS_SIZE: usize = 40;
    let cpus = possible_cpus();
    let path = h.bpffs.path().join("maps").join("MONITOR_STATS");
    let bytes = pinned_map_value(&path, 0, STATS_SIZE * cpus);
    bytes
        .chunks(STATS_SIZE)
        .map(|cpu| u64::from_ne_bytes(cpu[..8].try_into().unwrap()))
        .sum()
}

/// The pinned `MONITOR` switch's `active` word: which slots are taken.
fn active(h: &Harness) -> u32 {
    const CONTROL_SIZE: usize = 8 + 64 + 16;
    let path = h.bpffs.path().join("maps").join("MONITOR");
    let bytes = pinned_map_value(&path, 0, CONTROL_SIZE);
    u32::from_ne_bytes(bytes[..4].try_into().unwrap())
}

/// A running `monitor --json`, its stdout lines arriving on a channel.
struct Monitor {
    child: Child,
    lines: Receiver<String>,
}

impl Monitor {
    /// Starts it and waits for its ready line.
    fn start(h: &Harness, args: &[&str]) -> Monitor {
        let mut all = vec!["monitor", "--json"];
        all.extend_from_slice(args);
        let mut child = h
            .ctl
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let monitor = Monitor { child, lines };
        let ready = monitor
            .next(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("monitor {args:?}: no ready line"));
        assert_eq!(ready["ready"], true, "first line: {ready}");
        monitor
    }

    fn next(&self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")),
            ),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The first event matching `want` within `timeout`, and when it came.
    fn event(&self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Option<(Value, Instant)> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(v) if v.get("endpoint").is_some() && want(&v) => {
                    return Some((v, Instant::now()));
                }
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// Sends `signal`, waits for the exit; the lines after the last event.
    fn stop(mut self, signal: i32) -> (std::process::ExitStatus, Vec<Value>) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().expect("wait monitor");
        let mut rest = Vec::new();
        while let Some(v) = self.next(Duration::from_millis(500)) {
            rest.push(v);
        }
        (status, rest)
    }
}

/// An IPv4/UDP packet between documentation addresses, as a payload.
fn ipv4_payload(m: &Marker) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&[192, 0, 2, 10, 192, 0, 2, 20]);
    p.extend_from_slice(&[0xc0, 0x00, 0, 9, 0, 28, 0, 0]);
    p.extend_from_slice(&m.0);
    p
}

#[test]
fn drops_show_with_endpoint_and_reason_within_a_second_and_only_while_watched() {
    let h = root_harness!();
    let acc = h.add("acc", &["--vlan", "10"]);
    let tap = h.tap(&acc);
    let wire = h.topo.wire();
    let spoof = test_mac(0x77);

    // Nobody watches: drops are counted, nothing is published.
    tap.write(&marked(SWITCH_MAC, spoof, &Marker::new()));
    wire.send(&marked_tagged(acc.mac, SWITCH_MAC, 20, &Marker::new()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.drops("acc", "spoofed-source"), 1);
    assert_eq!(h.drops("acc", "wrong-vlan"), 1);
    assert_eq!(published(&h), 0, "published with no monitor running");

    let all = Monitor::start(&h, &[]);
    let picky = Monitor::start(&h, &["--endpoint", "acc", "--reason", "wrong-vlan"]);

    // A wrong-VLAN frame from the wire.
    let sent = Instant::now();
    wire.send(&marked_tagged(acc.mac, SWITCH_MAC, 20, &Marker::new()));
    for monitor in [&all, &picky] {
        let (event, at) = monitor
            .event(Duration::from_secs(3), |v| v["reason"] == "wrong-vlan")
            .expect("the wrong-vlan drop in the monitor");
        assert!(
            at - sent < Duration::from_secs(1),
            "after {:?}: {event}",
            at - sent
        );
        assert_eq!(event["endpoint"], "acc", "{event}");
        assert_eq!(event["direction"], "to_guest", "{event}");
        assert_eq!(event["verdict"], "drop", "{event}");
        assert_eq!(event["src"], fmt_mac(&SWITCH_MAC), "{event}");
        assert_eq!(event["dst"], fmt_mac(&acc.mac), "{event}");
        let tags = event["tags"].as_array().expect("tags");
        assert_eq!(tags.len(), 1, "{event}");
        assert_eq!(tags[0]["vid"], 20, "{event}");
        assert_eq!(tags[0]["tpid"], format!("0x{TPID_8021Q:04x}"), "{event}");
    }

    // A spoofed IPv4 frame from the guest: the first monitor only.
    let m = Marker::new();
    let sent = Instant::now();
    tap.write(&frame::eth(SWITCH_MAC, spoof, 0x0800, &ipv4_payload(&m)));
    let (event, at) = all
        .event(Duration::from_secs(3), |v| v["reason"] == "spoofed-source")
        .expect("the spoofed-source drop in the monitor");
    assert!(
        at - sent < Duration::from_secs(1),
        "after {:?}: {event}",
        at - sent
    );
    assert_eq!(event["endpoint"], "acc", "{event}");
    assert_eq!(event["direction"], "from_guest", "{event}");
    assert_eq!(event["src"], fmt_mac(&spoof), "{event}");
    assert_eq!(event["ethertype"], "0x0800", "{event}");
    assert_eq!(event["src_ip"], "192.0.2.10", "{event}");
    assert_eq!(event["dst_ip"], "192.0.2.20", "{event}");
    assert_eq!(event["protocol"], "udp", "{event}");
    assert!(
        picky
            .event(Duration::from_millis(500), |v| v["reason"]
                == "spoofed-source")
            .is_none(),
        "--reason wrong-vlan showed a spoofed-source drop"
    );

    for monitor in [all, picky] {
        let (status, rest) = monitor.stop(libc::SIGINT);
        assert!(status.success(), "monitor exit: {status}");
        let lost = rest
            .iter()
            .find(|v| v.get("lost").is_some())
            .expect("a lost line at exit");
        assert_eq!(lost["lost"]["rate_limit"], 0, "{lost}");
    }

    // Stopped: nothing more is published.
    assert_eq!(
        active(&h),
        0,
        "slots left taken after both monitors stopped"
    );
    let before = published(&h);
    assert!(before >= 3, "published {before}");
    tap.write(&marked(SWITCH_MAC, spoof, &Marker::new()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.drops("acc", "spoofed-source"), 3);
    assert_eq!(
        published(&h),
        before,
        "published after every monitor stopped"
    );

    // Killed: its lease runs out and publishing stops by itself.
    let killed = Monitor::start(&h, &[]);
    assert_ne!(active(&h), 0);
    let (status, _) = killed.stop(libc::SIGKILL);
    assert!(!status.success());
    assert_ne!(
        active(&h),
        0,
        "nobody cleared the killed monitor's slot yet"
    );
    std::thread::sleep(Duration::from_secs(6));
    let before = published(&h);
    tap.write(&marked(SWITCH_MAC, spoof, &Marker::new()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.drops("acc", "spoofed-source"), 4);
    assert_eq!(
        published(&h),
        before,
        "published after a killed monitor's lease"
    );
    // That frame found every lease run out and switched publishing off.
    assert_eq!(active(&h), 0, "the killed monitor's slot is still taken");
}

#[test]
fn all_samples_passed_frames_and_bad_options_are_refused() {
    let h = root_harness!();
    let acc = h.add("acc", &["--vlan", "10"]);
    let tap = h.tap(&acc);
    let _wire = h.topo.wire();

    let monitor = Monitor::start(&h, &["--all", "--sample", "1", "--vlan", "10"]);
    tap.write(&marked(SWITCH_MAC, acc.mac, &Marker::new()));
    let (event, _) = monitor
        .event(Duration::from_secs(3), |v| v["verdict"] == "pass")
        .expect("a passed frame with --all --sample 1");
    assert_eq!(event["endpoint"], "acc", "{event}");
    assert_eq!(event["direction"], "from_guest", "{event}");
    assert!(event["reason"].is_null(), "{event}");
    let (status, _) = monitor.stop(libc::SIGTERM);
    assert!(status.success(), "monitor exit: {status}");

    for (args, needle) in [
        (&["monitor", "--reason", "bogus"][..], "--reason"),
        (&["monitor", "--sample", "5"][..], "--sample"),
        (&["monitor", "--all", "--sample", "0"][..], "--sample"),
        (&["monitor", "--vlan", "5000"][..], "--vlan"),
        (&["monitor", "--endpoint", "nosuch"][..], "nosuch"),
    ] {
        assert_refused(&h.ctl.run(args), needle);
    }
}
