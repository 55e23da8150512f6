//! One guest: QEMU (TCG) booting the kernel and the initramfs, driven
//! through its serial console. The guest's `/init` reads shell lines from
//! the console; [`Guest::run`] sends one and reads up to the line that
//! carries its exit status.
//!
//! QEMU runs in its own process group, dies with this process (parent-death
//! signal, which survives the exec of `ip netns exec` and `macvswitch
//! exec`), and is killed with its group when the `Guest` goes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::vm::{guest::printable, kernels::Kernel};

/// The line `/init` prints when the guest takes commands.
pub const READY: &str = "guest: ready";
/// Lines of console output kept for error messages.
const TAIL: usize = 25;

/// How the guest's NIC reaches the host.
pub enum Nic<'a> {
    /// The tap fds `macvswitch exec --queues Q` hands over as 3..3+Q-1.
    Endpoint { mac: &'a str, queues: u32 },
    /// A tap device QEMU opens by name, in QEMU's network namespace.
    Tap { ifname: &'a str, mac: &'a str },
}

pub struct Spec<'a> {
    pub name: &'a str,
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    pub memory_mib: u32,
    pub smp: u32,
    pub nic: Nic<'a>,
    /// Every console line goes here.
    pub log: PathBuf,
    /// Print console lines as they come, prefixed with the guest's name.
    pub echo: bool,
}

/// QEMU's arguments for `spec` (the program name included).
pub fn args(spec: &Spec) -> Vec<String> {
    let mut a: Vec<String> = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
    ]
    .map(String::from)
    .to_vec();
    a.extend(["-m".into(), spec.memory_mib.to_string()]);
    a.extend(["-smp".into(), spec.smp.to_string()]);
    a.extend(["-kernel".into(), spec.kernel.vmlinuz.display().to_string()]);
    a.extend(["-initrd".into(), spec.initramfs.display().to_string()]);
    a.extend([
        "-append".into(),
        "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init".into(),
    ]);
    // No option ROM: iPXE is not needed (nor maybe installed) for -kernel.
    let (netdev, device) = match spec.nic {
        Nic::Endpoint { mac, queues: 1 } => (
            "tap,id=n0,fd=3,vhost=off".to_string(),
            format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
        ),
        Nic::Endpoint { mac, queues } => {
            let fds: Vec<String> = (3..3 + queues).map(|f| f.to_string()).collect();
            (
                format!("tap,id=n0,fds={},vhost=off", fds.join(":")),
                // One vector per queue each way, one for config, one for
                // the control queue.
                format!(
                    "virtio-net-pci,netdev=n0,mac={mac},mq=on,vectors={},romfile=",
                    2 * queues + 2
                ),
            )
        }
        Nic::Tap { ifname, mac } => (
            format!("tap,id=n0,ifname={ifname},script=no,downscript=no,vhost=off"),
            format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
        ),
    };
    a.extend(["-netdev".into(), netdev, "-device".into(), device]);
    a
}

pub struct Guest {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    tail: VecDeque<String>,
    log: PathBuf,
    started: Instant,
    seq: u32,
}

/// A command's exit status and the console lines it printed.
pub struct Ran {
    pub rc: i32,
    pub output: Vec<String>,
}

impl Guest {
    /// Starts `cmd` (which ends in QEMU's command line) for `spec`.
    pub fn start(mut cmd: Command, spec: &Spec) -> Result<Guest> {
        let (reader, writer) = std::io::pipe()?;
        cmd.stdin(Stdio::piped())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut log = File::create(&spec.log)
            .with_context(|| format!("cannot create {}", spec.log.display()))?;
        let _ = writeln!(log, "$ {}", crate::run::show(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the guest {}", spec.name))?;
        // Our copies of the pipe's write end must go, or the reader never
        // sees end-of-file.
        drop(cmd);
        let stdin = child.stdin.take().context("QEMU's stdin")?;
        let (tx, lines) = mpsc::channel();
        let (name, echo) = (spec.name.to_string(), spec.echo);
        thread::spawn(move || {
            for line in BufReader::new(reader).split(b'\n') {
                let Ok(line) = line else { break };
                let text = printable(&String::from_utf8_lossy(&line));
                let _ = writeln!(log, "{text}");
                if echo {
                    println!("[{name}] {text}");
                }
                if tx.send(text).is_err() {
                    break;
                }
            }
        });
        Ok(Guest {
            name: spec.name.to_string(),
            child,
            stdin,
            lines,
            tail: VecDeque::new(),
            log: spec.log.clone(),
            started: Instant::now(),
            seq: 0,
        })
    }

    /// QEMU's process id (`ip netns exec` and `macvswitch exec` exec it in
    /// place, so it is the process started).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the guest takes commands; how long it took since start.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
        let deadline = self.started + limit;
        loop {
            let line = self.next_line(deadline, "the end of its boot")?;
            if line.starts_with(READY) {
                return Ok(self.started.elapsed());
            }
            if let Some(why) = line.strip_prefix("guest: failed: ") {
                bail!("{}: {why}{}", self.name, self.context());
            }
        }
    }

    /// Runs one shell line in the guest; its exit status and output.
    pub fn run(&mut self, line: &str, limit: Duration) -> Result<Ran> {
        self.seq += 1;
        let tag = format!("@@done {} ", self.seq);
        // `$?` is expanded after `line` ran; the echoed command (if the
        // console echoed) has `$?`, not a number, after the tag.
        writeln!(self.stdin, "{line}; echo \"{tag}$?\"")
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("{}: cannot write to the console", self.name))?;
        let deadline = Instant::now() + limit;
        let mut output = Vec::new();
        loop {
            let l = self.next_line(deadline, &format!("`{line}` to finish"))?;
            if let Some(rc) = l.strip_prefix(&tag).and_then(|r| r.trim().parse().ok()) {
                return Ok(Ran { rc, output });
            }
            output.push(l);
        }
    }

    /// Like [`Guest::run`], but a non-zero exit status is an error.
    pub fn check(&mut self, line: &str, limit: Duration) -> Result<Vec<String>> {
        let ran = self.run(line, limit)?;
        if ran.rc != 0 {
            bail!(
                "{}: `{line}` exited {}: {}",
                self.name,
                ran.rc,
                ran.output.join(" | ")
            );
        }
        Ok(ran.output)
    }

    /// Powers the guest off and waits for QEMU to exit (killed after
    /// `limit`).
    pub fn power_off(mut self, limit: Duration) {
        let _ = writeln!(self.stdin, "poweroff -f").and_then(|()| self.stdin.flush());
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        // Drop kills it.
    }

    /// The next console line; an error (naming what it was `waiting_for`)
    /// at `deadline` or when QEMU is gone.
    fn next_line(&mut self, deadline: Instant, waiting_for: &str) -> Result<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                if self.tail.len() == TAIL {
                    self.tail.pop_front();
                }
                self.tail.push_back(line.clone());
                Ok(line)
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "{}: timed out waiting for {waiting_for}{}",
                self.name,
                self.context()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string());
                bail!(
                    "{}: QEMU exited ({}) while waiting for {waiting_for}{}",
                    self.name,
                    status.unwrap_or_else(|e| e.to_string()),
                    self.context()
                )
            }
        }
    }

    /// The last console lines and where the rest is, for an error.
    fn context(&self) -> String {
        let mut s = format!("; console log {}", self.log.display());
        if !self.tail.is_empty() {
            s.push_str(", last lines:");
            for l in &self.tail {
                s.push_str("\n    ");
                s.push_str(l);
            }
        }
        s
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pgid = i32::try_from(self.child.id()).unwrap_or(0);
        if pgid > 0 {
            // SAFETY: kill(2) on the process group QEMU leads (spawned with
            // process_group(0)); it cannot name anything of ours.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{Nic, Spec, args, printable};
    use crate::vm::kernels::Kernel;

    fn netdev_and_device(nic: Nic) -> (String, String) {
        let kernel = Kernel {
            package: "linux-image-x-cloud-amd64".into(),
            release: "x".into(),
            vmlinuz: PathBuf::from("/k/vmlinuz"),
            modules: PathBuf::from("/k/modules"),
        };
        let spec = Spec {
            name: "g",
            kernel: &kernel,
            initramfs: Path::new("/k/initrd"),
            memory_mib: 256,
            smp: 1,
            nic,
            log: PathBuf::from("/dev/null"),
            echo: false,
        };
        let a = args(&spec);
        assert_eq!(a[0], "qemu-system-x86_64");
        assert!(a.windows(2).any(|w| w == ["-accel", "tcg"]));
        let after = |flag: &str| {
            let i = a.iter().position(|x| x == flag).expect(flag);
            a[i + 1].clone()
        };
        (after("-netdev"), after("-device"))
    }

    #[test]
    fn nics_are_handed_over_as_libvirt_does() {
        let mac = "52:54:00:00:00:01";
        assert_eq!(
            netdev_and_device(Nic::Endpoint { mac, queues: 1 }),
            (
                "tap,id=n0,fd=3,vhost=off".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile=")
            )
        );
        assert_eq!(
            netdev_and_device(Nic::Endpoint { mac, queues: 2 }),
            (
                "tap,id=n0,fds=3:4,vhost=off".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},mq=on,vectors=6,romfile=")
            )
        );
        let (netdev, _) = netdev_and_device(Nic::Tap { ifname: "t0", mac });
        assert_eq!(
            netdev,
            "tap,id=n0,ifname=t0,script=no,downscript=no,vhost=off"
        );
    }

    #[test]
    fn control_sequences_are_dropped() {
        assert_eq!(printable("\x1bc\x1b[2Jguest: ready\r"), "guest: ready");
    }
}
