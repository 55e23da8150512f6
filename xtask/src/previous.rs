//! The previous release's `macvswitch`, built from git, for the upgrade
//! test: endpoints made by it must be taken over by this build without a
//! frame crossing a VLAN.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run::{self, Workspace};

/// The last commit before VLAN carriage in the mark (tags pushed on the
/// macvtap, policies in a hash map): the build operators upgrade from.
pub const PREVIOUS_RELEASE: &str = "99a829713101763fa5b5c9496f3671de30f85d84";

/// Builds (once; cached under target/previous/) and returns the previous
/// release's binary.
pub fn build(ws: &Workspace) -> Result<PathBuf> {
    let dir = ws.target_dir.join("previous");
    let short = &PREVIOUS_RELEASE[..12];
    let bin = dir.join(format!("macvswitch-{short}"));
    if bin.is_file() {
        return Ok(bin);
    }
    let src = dir.join(format!("src-{short}"));
    if src.exists() {
        fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    }
    fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    println!("xtask: building the previous release ({short}) for the upgrade test");
    let archive = Command::new("git")
        .current_dir(&ws.root)
        .args(["archive", "--format=tar", PREVIOUS_RELEASE])
        .output()
        .context("running git archive")?;
    if !archive.status.success() {
        bail!(
            "git archive {PREVIOUS_RELEASE}: {}",
            String::from_utf8_lossy(&archive.stderr).trim()
        );
    }
    let tar = src.join("source.tar");
    fs::write(&tar, &archive.stdout).context("writing the archive")?;
    run::check(
        Command::new("tar")
            .current_dir(&src)
            .args(["-xf", "source.tar"]),
    )?;
    let mut cargo = Command::new(&ws.cargo);
    cargo
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["build", "--quiet", "-p", "macvswitch"]);
    run::check(&mut cargo)?;
    fs::copy(dir.join("target/debug/macvswitch"), &bin)
        .with_context(|| format!("copying the binary to {}", bin.display()))?;
    // The sources and objects are not needed again; the binary is cached.
    let _ = fs::remove_dir_all(&src);
    let _ = fs::remove_dir_all(dir.join("target"));
    Ok(bin)
}
