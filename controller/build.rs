//! Builds the eBPF object (ebpf/) with the nightly toolchain and bpf-linker;
//! `src/lib.rs` embeds it. `AYA_BUILD_SKIP=1` skips this on lint-only hosts.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // Lint-only hosts: an empty object, which the controller refuses to load.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("macvswitch-ebpf");
        std::fs::write(out, [])?;
        return Ok(());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("controller/ has no parent"))?
        .join("ebpf");
    let root_dir = root.to_str().context("non-UTF-8 path to ebpf/")?;
    // The programs also compile the decisions in common/.
    println!("cargo:rerun-if-changed=../common/src");
    // aya-build relays everything the inner cargo prints as a build-script
    // warning; a quiet inner cargo leaves only compiler diagnostics and
    // errors, so a `warning:` line in our build means something.
    // SAFETY: no other thread of this build script exists yet.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [Package {
            name: "macvswitch-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
