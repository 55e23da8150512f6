//! `cargo xtask bench`: the data-path benchmarks
//! (`controller/benches/datapath.rs`), which write BENCHMARKS.md.

use anyhow::{Result, bail};

use crate::run::{self, Workspace};

/// `cargo bench -p macvswitch --bench datapath`; with `smoke`, its
/// seconds-long smoke mode, which writes nothing.
pub fn bench(ws: &Workspace, smoke: bool) -> Result<()> {
    if !run::is_root() {
        bail!("the benchmarks need root (network namespaces, eBPF)");
    }
    let mut cmd = ws.cargo();
    cmd.args(["bench", "-p", "macvswitch", "--bench", "datapath"])
        // The bench runs the `macvswitch` that `cargo bench` builds with it.
        .env_remove("MACVSWITCH_BIN")
        .env(
            "MACVSWITCH_BENCH_COMMAND",
            if smoke {
                "cargo xtask bench --smoke"
            } else {
                "cargo xtask bench"
            },
        );
    if smoke {
        cmd.args(["--", "--smoke"]);
    }
    run::check(&mut cmd)
}
