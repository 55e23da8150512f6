//! TC programs of macvswitch. One file per hook; the decisions themselves
//! live in `macvswitch_common::decide` so that host tests run the same code.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod baseline;
/// Bench-only: pushes a tag on the wire peer's egress (see the file).
#[cfg(target_arch = "bpf")]
mod bench_tag;
#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod frame;
#[cfg(target_arch = "bpf")]
mod from_guest;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod port;
#[cfg(target_arch = "bpf")]
mod to_guest;
#[cfg(target_arch = "bpf")]
mod uplink;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `cargo build --workspace` also builds this crate for the host; there it
/// is an empty program.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
