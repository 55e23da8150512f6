//! `cargo xtask test` and `cargo xtask lint`.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::run::{self, Workspace};

/// Returns the exit code of `cargo test`, for xtask to exit with.
pub fn test(ws: &Workspace, cargo_args: &[String], test_args: &[String]) -> Result<i32> {
    let start = Instant::now();
    let bin = ws.build_controller()?;
    let mut cmd = ws.cargo();
    cmd.env("MACVSWITCH_BIN", &bin).arg("test");
    // A checkout without the previous release's commit (a shallow clone, a
    // tarball) cannot build it: the upgrade test then says it skipped.
    match crate::previous::build(ws) {
        Ok(previous) => {
            cmd.env("MACVSWITCH_PREVIOUS_BIN", previous);
        }
        Err(e) => eprintln!(
            "xtask test: the previous release could not be built ({e:#}); the upgrade test \
             from it will say that it skipped"
        ),
    }
    // `--workspace` would override a `-p` given to narrow the run.
    let picks_package = cargo_args
        .iter()
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    if !picks_package {
        cmd.arg("--workspace");
    }
    // All targets, so that the benchmark's smoke mode runs (it is a bench
    // target, which plain `cargo test` skips), unless targets were picked.
    let picks_targets = cargo_args.iter().any(|a| {
        [
            "--lib",
            "--bins",
            "--bin",
            "--tests",
            "--test",
            "--benches",
            "--bench",
            "--examples",
            "--example",
            "--doc",
            "--all-targets",
        ]
        .iter()
        .any(|t| a == t || a.starts_with(&format!("{t}=")))
    });
    if !picks_targets {
        cmd.arg("--all-targets");
    }
    cmd.args(cargo_args);
    if !test_args.is_empty() {
        cmd.arg("--").args(test_args);
    }
    let status = run::status(&mut cmd)?;
    let secs = start.elapsed().as_secs_f64();
    let code = status.code().unwrap_or(1);
    if status.success() {
        println!("xtask test: passed in {secs:.1} s");
    } else {
        println!("xtask test: FAILED ({status}) after {secs:.1} s");
    }
    Ok(code)
}

pub fn lint(ws: &Workspace) -> Result<()> {
    let mut failed = Vec::new();
    let mut fmt = ws.cargo();
    fmt.args(["fmt", "--all", "--check"]);
    if !run::status(&mut fmt)?.success() {
        failed.push("cargo fmt (run `cargo fmt --all` to fix)");
    }
    let mut clippy = ws.cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    if !run::status(&mut clippy)?.success() {
        failed.push("cargo clippy");
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("xtask lint: clean");
    Ok(())
}
