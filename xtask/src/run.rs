//! Locating the workspace and running commands with their command line shown.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{Context, Result, bail};

pub struct Workspace {
    pub root: PathBuf,
    /// The `cargo` that runs this xtask (env `CARGO`), so rustup picks the same toolchain.
    pub cargo: OsString,
    pub target_dir: PathBuf,
}

impl Workspace {
    pub fn discover() -> Result<Self> {
        let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        add_cargo_bin_to_path();
        Ok(Self {
            root,
            cargo,
            target_dir,
        })
    }

    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.root);
        cmd
    }

    /// Where `cargo build -p macvswitch` puts the binary.
    pub fn controller_bin(&self) -> PathBuf {
        self.target_dir.join("debug").join("macvswitch")
    }

    pub fn build_controller(&self) -> Result<PathBuf> {
        let mut cmd = self.cargo();
        cmd.args(["build", "-p", "macvswitch"]);
        check(&mut cmd)?;
        let bin = self.controller_bin();
        if !bin.is_file() {
            bail!("{} was not built", bin.display());
        }
        Ok(bin)
    }
}

/// `cargo install` puts binaries (bpf-linker) in `$CARGO_HOME/bin`, which a
/// fresh shell may not have on PATH; every child of xtask gets it.
fn add_cargo_bin_to_path() {
    // Added even before it exists: `setup` may create it with `cargo install`.
    let Some(bin) = cargo_home().map(|h| h.join("bin")) else {
        return;
    };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called once at start-up, before any thread is spawned.
        unsafe { env::set_var("PATH", joined) };
    }
}

pub fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".cargo")))
}

pub fn home_dir() -> Option<PathBuf> {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The command line as a person would type it (quoted only where needed).
pub fn show(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            parts.push(format!(
                "{}={}",
                k.to_string_lossy(),
                quote(&v.to_string_lossy())
            ));
        }
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Print the command line, run it with inherited stdio, return its status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    println!("$ {}", show(cmd));
    cmd.status()
        .with_context(|| format!("cannot run {}", cmd.get_program().to_string_lossy()))
}

/// Like [`status`], but a non-zero exit is an error.
pub fn check(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", show(cmd));
    }
    Ok(())
}

/// Run quietly and capture stdout; `None` if it cannot start or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out: Output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether xtask runs as root: the tests' own check.
pub use macvswitch_tests::is_root;

pub fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}
