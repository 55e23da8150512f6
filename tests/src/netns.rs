//! Named network namespaces as RAII guards.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace created with `ip netns add`, deleted on drop (also
/// when the test panics, since drop runs during unwinding).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `msw-<pid>-<counter>-<tag>`. pid + counter make the name unique
    /// across parallel tests in one process and across test binaries.
    pub fn new(tag: &str) -> NetNs {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("msw-{}-{n}-{tag}", std::process::id());
        let out = run_cmd(Command::new("ip").args(["netns", "add", &name]));
        assert!(
            out.status.success(),
            "ip netns add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NetNs { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip netns exec NAME args...`. Note that `ip netns exec` also gives
    /// the command a private mount namespace with its own `/sys`.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        run_cmd(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
        )
    }

    /// Like [`NetNs::exec`] but panics on failure and returns stdout.
    pub fn exec_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = self.exec(args);
        check(&out, &format!("ip netns exec {} ...", self.name));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `ip -n NAME args...` (no mount-namespace games, cheaper).
    pub fn ip<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Like [`NetNs::ip`] but panics on failure and returns stdout.
    pub fn ip_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = self.ip(args);
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        check(&out, &format!("ip -n {} {}", self.name, shown.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Names of all links in the namespace (without the `@peer` suffix).
    pub fn link_names(&self) -> Vec<String> {
        self.ip_ok(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    /// Runs `f` on a fresh thread that has joined this namespace, so sockets
    /// created by `f` belong to it. setns(CLONE_NEWNET) only affects the
    /// calling thread, hence the dedicated thread; the resulting fds remain
    /// usable from any thread afterwards.
    pub fn enter_and<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }
}

/// [`NetNs::enter_and`] for any namespace `ip netns add` made, by name.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: valid fd for a netns file; affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Never panic in drop (it may run during unwinding): just report.
        let out = run_cmd(Command::new("ip").args(["netns", "del", &self.name]));
        if !out.status.success() {
            eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn run_cmd(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Panics with the command's output if it failed.
pub fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
