//! The guests' network: two throw-away namespaces joined by a veth pair.
//! `host` holds the lower device `lower0`, the controller's endpoints and
//! its host port; `wire` is the far side of the trunk, where `sw0` and the
//! wire peer's tap `wtap0` sit on a bridge `br0` that carries the tags as
//! they come (no VLAN filtering). No link is made in the root namespace.
//!
//! The controller runs as the integration tests run it: `ip netns exec
//! host macvswitch --state-dir DIR --bpffs BPFFS ...`, with the bpffs
//! mounted in the root mount namespace (see `scratch`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::run;
use crate::scratch::{self, Scratch};

/// Names of everything a run makes start with this and the xtask's PID.
const PREFIX: &str = "msw-gt-";
/// The lower device of every endpoint, in the host namespace.
pub const LOWER: &str = "lower0";
/// The wire peer's tap, on the bridge in the wire namespace.
pub const WIRE_TAP: &str = "wtap0";
/// Limit for one `ip`, `mount` or `macvswitch` command (they take well
/// under a second; the controller's attach waits for RCU at most).
const COMMAND: Duration = Duration::from_secs(60);

/// The guests' namespaces and directories; [`Lab::cleanup`] (or `Drop`, on
/// error and panic) removes them.
pub struct Lab {
    pub host_ns: String,
    pub wire_ns: String,
    bin: PathBuf,
    scratch: Scratch,
}

impl Lab {
    pub fn create(bin: &Path) -> Result<Lab> {
        scratch::reap_stale(PREFIX, "guest-test", quiet);
        let scratch = Scratch::new(PREFIX, quiet);
        let mut lab = Lab {
            host_ns: scratch.ns_name("host"),
            wire_ns: scratch.ns_name("wire"),
            bin: bin.to_path_buf(),
            scratch,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        for role in ["host", "wire"] {
            self.scratch.add_ns(role)?;
        }
        let (h, w) = (self.host_ns.as_str(), self.wire_ns.as_str());
        // Made inside the host namespace, the peer moved straight to the
        // wire one: the root namespace's links are never touched.
        let steps: &[&[&str]] = &[
            &["-n", h, "link", "set", "lo", "up"],
            &["-n", w, "link", "set", "lo", "up"],
            &[
                "-n", h, "link", "add", LOWER, "type", "veth", "peer", "name", "sw0", "netns", w,
            ],
            &[
                "-n",
                w,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
            &["-n", w, "tuntap", "add", "dev", WIRE_TAP, "mode", "tap"],
            &["-n", w, "link", "set", "sw0", "master", "br0"],
            &["-n", w, "link", "set", WIRE_TAP, "master", "br0"],
            &["-n", w, "link", "set", "br0", "up"],
            &["-n", w, "link", "set", "sw0", "up"],
            &["-n", w, "link", "set", WIRE_TAP, "up"],
            &["-n", h, "link", "set", LOWER, "up"],
        ];
        for args in steps {
            quiet(Command::new("ip").args(*args))?;
        }
        self.scratch.mount()
    }

    /// `macvswitch ARGS` in the host namespace with this run's directories.
    pub fn controller(&self, args: &[&str]) -> Command {
        self.scratch.controller(&self.host_ns, &self.bin, args)
    }

    /// Runs `macvswitch ARGS`; its standard output, or an error with its
    /// standard error.
    pub fn macvswitch(&self, args: &[&str]) -> Result<String> {
        let out = bounded(&mut self.controller(args), COMMAND)?;
        if !out.status.success() {
            bail!(
                "`macvswitch {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ARGS` in the host namespace (`ip netns exec`).
    pub fn in_host(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host_ns]).args(args);
        cmd
    }

    /// `ARGS` in the wire namespace.
    pub fn in_wire(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.wire_ns]).args(args);
        cmd
    }

    /// The MAC of endpoint `name` (`endpoint show NAME --json`).
    pub fn endpoint_mac(&self, name: &str) -> Result<String> {
        let shown = self.macvswitch(&["endpoint", "show", name, "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&shown)
            .with_context(|| format!("`endpoint show {name} --json` is not JSON"))?;
        v["mac"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("`endpoint show {name} --json` has no \"mac\""))
    }

    /// Drops of `reason` on endpoint `name` (`stats NAME --json`).
    pub fn drops(&self, name: &str, reason: &str) -> Result<u64> {
        let out = self.macvswitch(&["stats", name, "--json"])?;
        let stats: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("`stats {name} --json` is not JSON"))?;
        let row = stats
            .as_array()
            .and_then(|rows| rows.first())
            .unwrap_or(&stats);
        Ok(row["drops"][reason].as_u64().unwrap_or(0))
    }

    pub fn cleanup(&mut self) -> Result<()> {
        if self.scratch.is_mounted() {
            // Programs, pins and host port go; a failure here is only
            // untidy, since the namespaces and the bpffs go next anyway.
            if let Err(e) = self.macvswitch(&["reset"]) {
                eprintln!("guest-test: cleanup: {e:#}");
            }
        }
        // Deleting the namespaces deletes the veth pair, the bridge, the
        // tap and the macvtaps, which detaches the programs.
        self.scratch.cleanup("guest-test")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("{e:#}");
        }
    }
}

/// Runs `cmd` with its output captured, killed after `limit`.
pub fn bounded(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", run::show(cmd)))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{}` did not finish in {} s",
                run::show(cmd),
                limit.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads a child's pipe to its end in a thread of its own, so that a full
/// pipe never blocks the child while we wait for it.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd`; an error carrying its standard error if it fails.
fn quiet(cmd: &mut Command) -> Result<()> {
    let out = bounded(cmd, COMMAND)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            run::show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
