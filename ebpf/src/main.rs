//! TC programs of macvswitch. One file per hook; the decisions themselves
//! live in `macvswitch_common::decide` so that host tests run the same code.
//!
//! Three programs are bench-only and production never loads them:
//! `baseline` (empty), `bench_push_tag` and `bench_monitor_idle`. They are in this object on
//! purpose: the benchmark subtracts `baseline` from the real programs, which
//! is only honest if it is the same build (compiler, flags, bpf-linker,
//! loader) as they are, and a second object would be a
//! second build. It costs production nothing: the controller loads and pins
//! only `from_guest`, `to_guest` and `uplink_egress` (and `monitor_publish`,
//! which `MONITOR_PROGS` holds), a program that is not
//! loaded never reaches the kernel, and no bench program has a map of its
//! own (the controller pins every map of the object; `bench_monitor_idle`
//! reads production's `MONITOR`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_xadd` for storm control's shared bucket (see `guards`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

/// Bench-only: the empty program the benchmark subtracts (see above).
#[cfg(target_arch = "bpf")]
mod baseline;
/// Bench-only: pushes a tag on the wire peer's egress (see the file).
/// Bench-only: the monitor's switch read alone (see the file).
#[cfg(target_arch = "bpf")]
mod bench_monitor;
#[cfg(target_arch = "bpf")]
mod bench_tag;
#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod frame;
#[cfg(target_arch = "bpf")]
mod from_guest;
#[cfg(target_arch = "bpf")]
mod guards;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod monitor;
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
