//! `cargo xtask fuzz`: the full proof-of-isolation run, a million random and
//! hostile frames through the real programs (BPF_PROG_TEST_RUN) and the
//! pure decision functions, each compared with the reference model
//! (controller/tests/isolation_property.rs). Needs root.

use anyhow::{Result, bail};

use crate::run::{self, Workspace};

pub struct Options {
    pub frames: u64,
    pub seed: Option<u64>,
    pub per_policy: Option<u64>,
}

pub fn fuzz(ws: &Workspace, options: &Options) -> Result<()> {
    if !run::is_root() {
        bail!("the fuzz run loads eBPF programs (BPF_PROG_TEST_RUN): run it as root");
    }
    let mut cmd = ws.cargo();
    cmd.env("MSW_FUZZ_FRAMES", options.frames.to_string());
    if let Some(seed) = options.seed {
        cmd.env("MSW_FUZZ_SEED", seed.to_string());
    }
    if let Some(per_policy) = options.per_policy {
        cmd.env("MSW_FUZZ_PER_POLICY", per_policy.to_string());
    }
    cmd.args([
        "test",
        "--release",
        "-p",
        "macvswitch",
        "--test",
        "isolation_property",
        "--",
        "--nocapture",
    ]);
    run::check(&mut cmd)?;
    println!(
        "xtask fuzz: {} frames, no disagreement, no violation",
        options.frames
    );
    Ok(())
}
