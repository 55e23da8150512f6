//! `cargo xtask setup`: make a fresh Debian 12 machine able to build, test
//! and demo macvswitch. Every step checks first, so a second run is quick.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::demo;
use crate::run::{self, Workspace};

/// Debian packages the build, the tests and the demo use. All are on the
/// stock image today but iputils-ping; they are checked so a leaner image
/// still works.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip netns / ip link for the demo and the tests"),
    ("mount", "mount/umount of the demo's bpffs"),
    ("gcc", "the linker cargo uses"),
    ("libc6-dev", "C runtime for linking"),
    ("zlib1g-dev", "libz for linking bpf-linker against LLVM"),
    ("iputils-ping", "ping in the host-port tests"),
    ("systemd", "systemd-analyze, which checks the packaged unit"),
    (
        "containernetworking-plugins",
        "host-local in /usr/lib/cni, the IPAM plugin the CNI tests delegate to",
    ),
    (
        "util-linux",
        "unshare, for tests that change /dev in a private mount namespace",
    ),
];

/// The bpf-linker release whose `llvm-NN` features are known to build here.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup(ws: &Workspace) -> Result<()> {
    apt_install(APT_PACKAGES)?;
    let nightly = nightly_toolchain()?;
    rust_src()?;
    bpf_linker(ws, &nightly)?;
    step("building macvswitch");
    ws.build_controller()?;
    step("running the demo");
    demo::demo(ws)
}

fn step(msg: &str) {
    println!("==> setup: {msg}");
}

/// Installs those of `packages` (name, what for) that are missing.
pub fn apt_install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !dpkg_installed(p))
        .collect();
    let names: Vec<&str> = packages.iter().map(|(p, _)| *p).collect();
    if missing.is_empty() {
        step(&format!("apt packages {}: installed", names.join(" ")));
        return Ok(());
    }
    step(&format!("apt packages: installing {}", missing.join(" ")));
    if !run::is_root() {
        bail!(
            "not root: install these Debian packages first: apt-get install {}",
            missing.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-y"])
            .args(args)
            .stdin(std::process::Stdio::null());
        run::check(&mut cmd)
    };
    apt(&["update"])?;
    let mut args = vec!["install", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

fn dpkg_installed(pkg: &str) -> bool {
    run::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

pub struct Nightly {
    sysroot: PathBuf,
    llvm_major: u32,
}

fn nightly_toolchain() -> Result<Nightly> {
    let toolchains = run::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("`rustup toolchain list` failed: is rustup on PATH?")?;
    let Some(name) = toolchains
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|t| *t == "nightly" || t.starts_with("nightly-"))
    else {
        bail!(
            "no nightly Rust toolchain: the eBPF crate needs one (`-Z build-std`) whose \
             LLVM matches bpf-linker's; install it with `rustup toolchain install nightly \
             --profile minimal --component rust-src` (rustup lists: {})",
            toolchains.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    };
    let version = run::output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .context("`rustup run nightly rustc -vV` failed")?;
    let release = field(&version, "release").unwrap_or("?");
    let llvm = field(&version, "LLVM version").context("nightly rustc reports no LLVM version")?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot parse LLVM version {llvm:?}"))?;
    let sysroot =
        run::output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("`rustup run nightly rustc --print sysroot` failed")?;
    step(&format!(
        "nightly toolchain: {name} (rustc {release}, LLVM {llvm})"
    ));
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        llvm_major,
    })
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn rust_src() -> Result<()> {
    let installed = run::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("`rustup component list --toolchain nightly --installed` failed")?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        step("rust-src for nightly: installed");
        return Ok(());
    }
    step("rust-src for nightly: installing");
    run::check(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker(ws: &Workspace, nightly: &Nightly) -> Result<()> {
    if let Some(v) = run::output(Command::new("bpf-linker").arg("--version")) {
        step(&format!("bpf-linker: {}", v.trim()));
        return Ok(());
    }
    let major = nightly.llvm_major;
    let prefix = llvm_copy(nightly)?;
    step(&format!(
        "bpf-linker: installing {BPF_LINKER_VERSION} against LLVM {major} in {} (~2 min)",
        prefix.display()
    ));
    let mut cmd = ws.cargo();
    cmd.env("LLVM_PREFIX", &prefix).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ]);
    run::check(&mut cmd)?;
    match run::output(Command::new("bpf-linker").arg("--version")) {
        Some(v) => {
            step(&format!("bpf-linker: {}", v.trim()));
            Ok(())
        }
        None => bail!(
            "bpf-linker was installed but `bpf-linker --version` fails: is {} on PATH?",
            run::cargo_home()
                .map(|h| h.join("bin").display().to_string())
                .unwrap_or_else(|| "$CARGO_HOME/bin".into())
        ),
    }
}

/// Copy the nightly's own libLLVM into a stable prefix for bpf-linker to
/// link against. A copy, not a link: a rustup update deletes the original,
/// and bpf-linker's RUNPATH points at this prefix.
fn llvm_copy(nightly: &Nightly) -> Result<PathBuf> {
    let major = nightly.llvm_major;
    let src_dir = nightly.sysroot.join("lib");
    let wanted = format!("libLLVM.so.{major}.");
    let mut found: Vec<PathBuf> = fs::read_dir(&src_dir)
        .with_context(|| format!("cannot read {}", src_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&wanted) && n.contains("-rust-"))
        })
        .collect();
    found.sort();
    let Some(src) = found.pop() else {
        bail!(
            "no {wanted}*-rust-* in {}: cannot give bpf-linker the nightly's LLVM",
            src_dir.display()
        );
    };
    let prefix = llvm_prefix(major)?;
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let file_name = src.file_name().context("libLLVM path has no file name")?;
    let dest = lib.join(file_name);
    let same_size = |a: &Path, b: &Path| match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.len() == b.len(),
        _ => false,
    };
    if !same_size(&src, &dest) {
        step(&format!(
            "LLVM {major}: copying {} to {}",
            src.display(),
            lib.display()
        ));
        let tmp = lib.join(".libLLVM.partial");
        fs::copy(&src, &tmp).with_context(|| format!("cannot copy {}", src.display()))?;
        fs::rename(&tmp, &dest)?;
    }
    let link = lib.join("libLLVM.so");
    if run::exists(&link) {
        fs::remove_file(&link)?;
    }
    std::os::unix::fs::symlink(file_name, &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    Ok(prefix)
}

fn llvm_prefix(major: u32) -> Result<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| run::home_dir().map(|h| h.join(".local").join("share")))
        .context("neither XDG_DATA_HOME nor HOME is set")?;
    Ok(data.join("macvswitch").join(format!("llvm-{major}")))
}
