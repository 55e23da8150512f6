//! Runs the real `macvswitch` binary inside the host namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Path of the controller binary: `$MACVSWITCH_BIN`, else
/// `<target>/debug/macvswitch` next to this test executable
/// (which lives in `<target>/debug/deps/`).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MACVSWITCH_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "MACVSWITCH_BIN={} does not exist: run `cargo xtask test` or `cargo build -p macvswitch` first",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in <target>/<profile>/deps/");
    let p = profile_dir.join("macvswitch");
    assert!(
        p.is_file(),
        "controller binary {} not found: run `cargo xtask test` or `cargo build -p macvswitch` first (or set MACVSWITCH_BIN)",
        p.display()
    );
    p
}

/// One controller "installation": namespace + state dir + bpffs dir.
#[derive(Debug, Clone)]
pub struct Controller {
    pub netns: String,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub bin: PathBuf,
}

impl Controller {
    pub fn new(netns: &str, state_dir: &Path, bpffs: &Path) -> Controller {
        Controller {
            netns: netns.to_string(),
            state_dir: state_dir.to_path_buf(),
            bpffs: bpffs.to_path_buf(),
            bin: binary(),
        }
    }

    /// `ip netns exec NS BIN --state-dir S --bpffs B args...`, not started.
    /// `ip netns exec` execs the binary, so the child's pid is the
    /// controller's once it runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(&self.bin)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .args(args);
        cmd
    }

    /// Runs `macvswitch args...` to the end; its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// Starts `macvswitch args...` without waiting (output discarded).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        crate::netns::check(&out, &format!("macvswitch {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, asserts success, parses stdout as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "macvswitch {}: stdout is not JSON ({e}):\n{out}",
                args.join(" ")
            )
        })
    }
}
