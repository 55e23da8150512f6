//! Throw-away network namespaces, a state directory and a bpffs for one
//! run of the controller (`cargo xtask demo`, `cargo xtask guest-test`).
//!
//! The bpffs is mounted here, in xtask's (the root) mount namespace: one
//! mounted inside `ip netns exec` would vanish with its private mount
//! namespace, and the pinned links with it. Everything is named after a
//! prefix and the xtask's PID, so that what a killed run left is found and
//! removed by the next one ([`reap_stale`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use macvswitch_tests::Controller;

use crate::run;

/// How a scratch area runs its `ip` and `mount` commands: shown
/// (`run::check`) or quietly with a time limit.
pub type Runner = fn(&mut Command) -> Result<()>;

/// Everything a run makes; [`Scratch::cleanup`] (or `Drop`, on error and
/// panic) removes what was made, in reverse order, past failures.
pub struct Scratch {
    prefix: &'static str,
    runner: Runner,
    pub tmp: PathBuf,
    pub bpffs: PathBuf,
    pub state: PathBuf,
    made_ns: Vec<String>,
    made_tmp: bool,
    mounted: bool,
    done: bool,
}

impl Scratch {
    pub fn new(prefix: &'static str, runner: Runner) -> Scratch {
        let tmp = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        Scratch {
            prefix,
            runner,
            bpffs: tmp.join("bpffs"),
            state: tmp.join("state"),
            tmp,
            made_ns: Vec::new(),
            made_tmp: false,
            mounted: false,
            done: false,
        }
    }

    /// The name of this run's namespace `role` (made by [`Scratch::add_ns`]).
    pub fn ns_name(&self, role: &str) -> String {
        format!("{}{}-{role}", self.prefix, std::process::id())
    }

    /// Makes this run's namespace `role`; its name.
    pub fn add_ns(&mut self, role: &str) -> Result<String> {
        let ns = self.ns_name(role);
        (self.runner)(Command::new("ip").args(["netns", "add", &ns]))?;
        self.made_ns.push(ns.clone());
        Ok(ns)
    }

    /// Makes the state directory and mounts the bpffs.
    pub fn mount(&mut self) -> Result<()> {
        if run::exists(&self.tmp) {
            bail!("{} already exists", self.tmp.display());
        }
        fs::create_dir_all(&self.bpffs)
            .with_context(|| format!("cannot create {}", self.bpffs.display()))?;
        self.made_tmp = true;
        fs::create_dir_all(&self.state)?;
        (self.runner)(
            Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&self.bpffs),
        )?;
        self.mounted = true;
        Ok(())
    }

    /// Whether the bpffs is mounted (and so the controller may have pinned
    /// something).
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }

    /// `BIN ARGS` in namespace `ns` with this run's directories:
    /// `ip netns exec NS BIN --state-dir DIR --bpffs BPFFS ARGS`.
    pub fn controller(&self, ns: &str, bin: &Path, args: &[&str]) -> Command {
        Controller {
            netns: ns.to_string(),
            state_dir: self.state.clone(),
            bpffs: self.bpffs.clone(),
            bin: bin.to_path_buf(),
        }
        .command(args)
    }

    /// Deletes the namespaces (and with them every link in them, which
    /// detaches the programs), unmounts the bpffs and removes the
    /// directory; keeps going past failures and reports them all.
    pub fn cleanup(&mut self, what: &str) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut errors = Vec::new();
        for ns in self.made_ns.drain(..).rev() {
            if let Err(e) = (self.runner)(Command::new("ip").args(["netns", "del", &ns])) {
                errors.push(format!("{e:#}"));
            }
        }
        if self.mounted {
            self.mounted = false;
            if let Err(e) = unmount(self.runner, &self.bpffs) {
                errors.push(format!("{e:#}"));
            }
        }
        if self.made_tmp {
            self.made_tmp = false;
            if let Err(e) = fs::remove_dir_all(&self.tmp) {
                errors.push(format!("cannot remove {}: {e}", self.tmp.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{what} cleanup incomplete: {}", errors.join("; "))
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup("scratch") {
            eprintln!("{e:#}");
        }
    }
}

fn unmount(runner: Runner, dir: &Path) -> Result<()> {
    if runner(Command::new("umount").arg(dir)).is_ok() {
        return Ok(());
    }
    runner(Command::new("umount").arg("-l").arg(dir))
}

/// Removes what an earlier run with `prefix` left when it was killed (Drop
/// does not run on SIGKILL or Ctrl-C): only ours, and only when that xtask
/// is gone. `what` names the run in the messages.
pub fn reap_stale(prefix: &str, what: &str, runner: Runner) {
    let gone = |pid: &str| {
        !pid.is_empty()
            && pid.chars().all(|c| c.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
    };
    let netns = run::output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for name in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name
            .strip_prefix(prefix)
            .and_then(|r| r.split_once('-'))
            .map_or("", |(pid, _)| pid);
        if gone(pid) {
            println!("{what}: removing namespace {name} left by an earlier run");
            let _ = runner(Command::new("ip").args(["netns", "del", name]));
        }
    }
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if gone(pid) {
            println!(
                "{what}: removing {} left by an earlier run",
                e.path().display()
            );
            let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            let under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| Path::new(m).starts_with(e.path()))
                .collect();
            if under.iter().any(|m| unmount(runner, Path::new(m)).is_err()) {
                continue; // never remove files under a live mount
            }
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
