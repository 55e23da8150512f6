//! Helpers for the lifecycle tests (crash safety, races, `apply`, upgrades):
//! spawning and SIGKILLing the CLI, and the consistency
//! check between the state file, the host namespace's macvtaps, the link
//! pins and the tap nodes.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Harness;
pub use crate::rng::Rng;

/// The controller's command of a harness ([`crate::Controller::command`]),
/// not started, with no stdin and its output discarded.
pub fn command(h: &Harness, args: &[&str]) -> Command {
    let mut cmd = h.ctl.command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Starts `args`, waits `delay`, SIGKILLs it (if still running) and reaps
/// it. Returns the exit status if it finished before the kill.
pub fn run_and_kill(h: &Harness, args: &[&str], delay: Duration) -> Option<ExitStatus> {
    let mut child: Child = command(h, args)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning macvswitch {}: {e}", args.join(" ")));
    std::thread::sleep(delay);
    let finished = child.try_wait().expect("try_wait");
    if finished.is_none() {
        // Child::kill sends SIGKILL; it errs only if already reaped.
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    finished.or_else(|| status.code().map(|_| status))
}

/// `<state-dir>/state.json`, byte for byte, or `None` when absent.
pub fn state_bytes(h: &Harness) -> Option<Vec<u8>> {
    match std::fs::read(h.state.path().join("state.json")) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("reading state.json: {e}"),
    }
}

/// The state file, parsed (an absent file is an empty state). Panics with
/// the text if it does not parse: a torn write.
pub fn state(h: &Harness) -> Value {
    match state_bytes(h) {
        None => serde_json::json!({ "endpoints": {}, "uplinks": {} }),
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "state.json does not parse ({e}):\n{}",
                String::from_utf8_lossy(&bytes)
            )
        }),
    }
}

/// The recorded endpoints: name -> record.
pub fn recorded(h: &Harness) -> BTreeMap<String, Value> {
    let s = state(h);
    s["endpoints"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The macvtaps in the host namespace: name -> ifindex.
pub fn macvtaps(h: &Harness) -> BTreeMap<String, u64> {
    let out = h
        .topo
        .host
        .ip_ok(&["-o", "link", "show", "type", "macvtap"]);
    out.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let index = parts.next()?.trim().parse().ok()?;
            let name = parts.next()?.trim().split('@').next()?.to_string();
            Some((name, index))
        })
        .collect()
}

/// (name, ifindex) -> "MAJOR:MINOR" of every macvtap's tap device, read
/// from the namespace's sysfs.
fn tap_devices(h: &Harness) -> BTreeMap<(String, u64), String> {
    let out = h.topo.host.exec_ok(&[
        "sh",
        "-c",
        "for d in /sys/class/net/*/macvtap/tap*; do [ -e \"$d/dev\" ] && echo \"$d $(cat $d/dev)\"; done; true",
    ]);
    out.lines()
        .filter_map(|l| {
            let (path, dev) = l.split_once(' ')?;
            // /sys/class/net/NAME/macvtap/tapN
            let mut it = path.rsplit('/');
            let tap = it.next()?;
            let _ = it.next()?;
            let name = it.next()?;
            let index = tap.strip_prefix("tap")?.parse().ok()?;
            Some(((name.to_string(), index), dev.trim().to_string()))
        })
        .collect()
}

/// The pin paths of endpoint `name`'s two links.
pub fn link_pins(h: &Harness, name: &str) -> [PathBuf; 2] {
    let dir = h.bpffs.path().join("links").join(name);
    [dir.join("egress"), dir.join("ingress")]
}

/// Everything wrong between the state file and the kernel, as sentences;
/// empty when consistent:
/// - the state file parses and no record is `pending`/`deleting`/`waiting`;
/// - every recorded endpoint has its macvtap with the recorded ifindex, its
///   programs attached in its recorded mode (two link pins, or one filter
///   of ours per hook) and a tap node with the macvtap's device number;
/// - every macvtap in the host namespace is recorded (no orphan).
pub fn problems(h: &Harness) -> Vec<String> {
    let mut problems = Vec::new();
    let records = recorded(h);
    let taps = macvtaps(h);
    let devices = tap_devices(h);
    for (name, record) in &records {
        if let Some(status) = record.get("status").and_then(Value::as_str)
            && status != "ready"
        {
            problems.push(format!("{name}: record left with status {status:?}"));
        }
        let ifindex = record["ifindex"].as_u64().unwrap_or(0);
        match taps.get(name) {
            None => problems.push(format!("{name}: recorded, but no macvtap of that name")),
            Some(&index) if index != ifindex => problems.push(format!(
                "{name}: recorded ifindex {ifindex}, the macvtap has {index}"
            )),
            Some(_) => {}
        }
        let mode = record["attach"].as_str().unwrap_or("tcx");
        problems.extend(crate::attach::endpoint_problems(
            &h.topo.host,
            h.bpffs.path(),
            name,
            mode,
        ));
        let node = h.state.path().join("dev").join(name);
        match std::fs::metadata(&node) {
            Err(e) => problems.push(format!("{name}: tap node {}: {e}", node.display())),
            Ok(meta) => {
                let rdev = meta.rdev();
                let have = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
                let want = devices.get(&(name.clone(), ifindex));
                if !meta.file_type().is_char_device() || want != Some(&have) {
                    problems.push(format!(
                        "{name}: tap node {} is {have} (char: {}), the macvtap's is {want:?}",
                        node.display(),
                        meta.file_type().is_char_device()
                    ));
                }
            }
        }
    }
    for (name, index) in &taps {
        if !records.contains_key(name) {
            problems.push(format!(
                "orphan macvtap {name} (ifindex {index}) not recorded"
            ));
        }
    }
    problems
}

/// Panics with every problem and the state file when inconsistent.
pub fn assert_consistent(h: &Harness, context: &str) {
    let p = problems(h);
    assert!(
        p.is_empty(),
        "{context}: state and kernel disagree:\n  {}\nstate.json: {}\nlinks: {:?}",
        p.join("\n  "),
        state_bytes(h)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| "(absent)".into()),
        h.topo.host.link_names()
    );
}

/// After `reset --force` (a test may still hold a tap): no macvtap, no
/// pin, no state file, no tap node.
pub fn assert_reset_clean(h: &Harness) {
    h.ctl.ok(&["reset", "--force"]);
    assert_eq!(macvtaps(h), BTreeMap::new(), "macvtaps left after reset");
    assert_eq!(
        h.bpffs.pinned_files(),
        Vec::<PathBuf>::new(),
        "pins left after reset"
    );
    assert_eq!(state_bytes(h), None, "state.json left after reset");
    let dev = h.state.path().join("dev");
    let left: Vec<_> = std::fs::read_dir(&dev)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "tap nodes left after reset: {left:?}");
}

/// Polls `f` every 20 ms until it returns true, at most `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
