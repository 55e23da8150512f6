//! Builds the eBPF object (ebpf/) with the nightly toolchain and bpf-linker;
//! `src/datapath` embeds it. `AYA_BUILD_SKIP=1` skips this on lint-only hosts.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("controller/ has no parent"))?
        .join("ebpf");
    let root_dir = root.to_str().context("non-UTF-8 path to ebpf/")?;
    // The programs also compile the decisions in common/.
    println!("cargo:rerun-if-changed=../common/src");
    aya_build::build_ebpf(
        [Package {
            name: "macvswitch-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
