//! Running the test binaries: inside a QEMU guest (TCG) booted from an
//! unpacked Debian kernel and the initramfs, or directly on the host.
//! Either way each binary leaves `NAME.out` (its output) and `NAME.rc` (its
//! exit status) in the entry's results directory, which `report` reads.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::initramfs::{GUEST_RESULTS, RESULTS_TAG, ROOT_TAG, SCRIPT, WORK_ARG, WORK_TAG};
use super::kernels::Kernel;
use crate::run;

/// One integration-test executable, named after its cargo target.
pub struct TestBin {
    pub name: String,
    pub path: PathBuf,
}

/// What every run needs, host or guest.
pub struct RunSpec<'a> {
    /// Printed before each line of output: `[6.1] ...`.
    pub label: &'a str,
    pub bins: &'a [TestBin],
    pub controller: &'a Path,
    /// Extra environment, e.g. `MACVSWITCH_ATTACH=clsact`.
    pub env: &'a [(&'a str, &'a str)],
    /// Arguments for every test binary.
    pub test_args: &'a [String],
    pub results: &'a Path,
    /// Limit for one test binary.
    pub per_binary: Duration,
}

/// How long a run took; `boot` is the time until the guest's test script
/// started (None on the host).
pub struct Timing {
    pub boot: Option<Duration>,
    pub total: Duration,
    /// The whole run was cut off (the guest did not power off in time).
    pub timed_out: bool,
}

pub struct Vm<'a> {
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    pub smp: u32,
    pub memory_mib: u32,
    /// Limit for the whole guest, boot to power-off.
    pub limit: Duration,
    /// The workspace (binaries, test executables), shared again at its own
    /// path.
    pub workspace: &'a Path,
}

/// The first line the guest's test script prints: boot is over.
const STARTED: &str = "vm: kernel ";

pub fn run_in_vm(spec: &RunSpec, vm: &Vm) -> Result<Timing> {
    fresh_dir(spec.results)?;
    let script = spec.results.join(SCRIPT);
    fs::write(&script, guest_script(spec))
        .with_context(|| format!("cannot write {}", script.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-nodefaults", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio"])
        .args(["-m", &vm.memory_mib.to_string()])
        .args(["-smp", &vm.smp.to_string()])
        .arg("-kernel")
        .arg(&vm.kernel.vmlinuz)
        .arg("-initrd")
        .arg(vm.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init {WORK_ARG}={}",
            vm.workspace.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path=/,mount_tag={ROOT_TAG},security_model=none,readonly=on,multidevs=remap"
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag={RESULTS_TAG},security_model=none,multidevs=remap",
            spec.results.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag={WORK_TAG},security_model=none,readonly=on,multidevs=remap",
            vm.workspace.display()
        ));
    println!("$ {}", run::show(&cmd));
    let log = spec.results.join("console.log");
    let out = stream(cmd, spec.label, &log, vm.limit, Some(STARTED))?;
    Ok(Timing {
        boot: out.marker,
        total: out.elapsed,
        timed_out: out.status.is_none(),
    })
}

pub fn run_on_host(spec: &RunSpec) -> Result<Timing> {
    fresh_dir(spec.results)?;
    let start = Instant::now();
    for bin in spec.bins {
        println!("[{}] == {}", spec.label, bin.name);
        let mut cmd = Command::new(&bin.path);
        cmd.env("MACVSWITCH_BIN", spec.controller)
            .envs(spec.env.iter().copied())
            .args(spec.test_args);
        let out = spec.results.join(format!("{}.out", bin.name));
        let ran = stream(cmd, spec.label, &out, spec.per_binary, None)?;
        // 124 as coreutils' timeout(1) says, like the guest does.
        let rc = ran.status.map_or(124, |s| s.code().unwrap_or(128));
        fs::write(
            spec.results.join(format!("{}.rc", bin.name)),
            format!("{rc}\n"),
        )?;
        println!(
            "[{}] {}: exit {rc} in {:.0} s",
            spec.label,
            bin.name,
            ran.elapsed.as_secs_f64()
        );
    }
    Ok(Timing {
        boot: None,
        total: start.elapsed(),
        timed_out: false,
    })
}

/// The script the guest runs in the chroot of the host's root: every test
/// binary in turn, each under timeout(1), its output both to the console
/// and to the results directory.
fn guest_script(spec: &RunSpec) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut s = String::from(
        "#!/bin/sh\n# generated by cargo xtask vm-test; runs inside the guest\ncd /\n",
    );
    s.push_str(
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         HOME=/root TMPDIR=/tmp\n",
    );
    s.push_str(&format!(
        "export MACVSWITCH_BIN={}\n",
        q(&spec.controller.to_string_lossy())
    ));
    for (k, v) in spec.env {
        s.push_str(&format!("export {k}={}\n", q(v)));
    }
    s.push_str(&format!(
        "R={GUEST_RESULTS}\n\
         echo \"{STARTED}$(uname -r), $(nproc) CPUs\"\n\
         run() {{\n\
         \x20   name=$1; shift; t=$(date +%s)\n\
         \x20   echo \"vm: == $name\"\n\
         \x20   {{ timeout -k 10 {secs} \"$@\"; echo $? > $R/$name.rc; }} 2>&1 | tee $R/$name.out\n\
         \x20   echo \"vm: $name: exit $(cat $R/$name.rc) in $(( $(date +%s) - t )) s\"\n\
         }}\n",
        secs = spec.per_binary.as_secs()
    ));
    for bin in spec.bins {
        s.push_str(&format!(
            "run {} {}",
            bin.name,
            q(&bin.path.to_string_lossy())
        ));
        for a in spec.test_args {
            s.push(' ');
            s.push_str(&q(a));
        }
        s.push('\n');
    }
    s
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if run::exists(dir) {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

struct Streamed {
    /// None: killed at the time limit.
    status: Option<ExitStatus>,
    elapsed: Duration,
    /// When the first line holding the marker appeared.
    marker: Option<Duration>,
}

/// Runs `cmd` with stdout and stderr merged, each line printed with the
/// label and written to `log`; kills it (its whole process group) after
/// `limit`.
fn stream(
    mut cmd: Command,
    label: &str,
    log: &Path,
    limit: Duration,
    marker: Option<&'static str>,
) -> Result<Streamed> {
    let (reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    // Its own process group, so that a time-out also ends what it spawned.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", cmd.get_program().to_string_lossy()))?;
    // Our copies of the pipe's write end must go, or the reader never
    // sees end-of-file.
    drop(cmd);
    let (done_tx, done_rx) = mpsc::channel();
    let prefix = label.to_string();
    thread::spawn(move || {
        let mut seen = None;
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let text = printable(&String::from_utf8_lossy(&line));
            if seen.is_none() && marker.is_some_and(|m| text.contains(m)) {
                seen = Some(start.elapsed());
            }
            println!("[{prefix}] {text}");
            let _ = writeln!(file, "{text}");
        }
        let _ = done_tx.send(seen);
    });
    let status = wait(&mut child, start + limit)?;
    let elapsed = start.elapsed();
    if status.is_none() {
        println!("[{label}] killed after {} s (time limit)", limit.as_secs());
    }
    // Something the child left running may still hold the pipe: stop
    // waiting for the rest of its output after a few seconds.
    let marker = done_rx.recv_timeout(Duration::from_secs(5)).ok().flatten();
    Ok(Streamed {
        status,
        elapsed,
        marker,
    })
}

/// The line without terminal control sequences (the firmware clears the
/// screen on the serial console) and carriage returns.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // ESC [ params letter, or ESC and one character.
                if chars.next_if_eq(&'[').is_some() {
                    while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
                } else {
                    chars.next();
                }
            }
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn wait(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_sequences_are_dropped() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2Jvm: kernel 6.1\r"),
            "vm: kernel 6.1"
        );
    }
}
