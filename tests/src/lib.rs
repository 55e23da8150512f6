//! Test-support library for macvswitch's root-only integration tests.
//!
//! Everything here builds isolated, throw-away fixtures so tests can run in
//! parallel and never touch the root network namespace:
//! - [`netns`]: named network namespaces that delete themselves on drop;
//! - [`topology`]: the standard "host" (lower device) / "switch" (wire) pair;
//! - [`bpffs`]: a private bpffs instance and a private state directory;
//! - [`bpf`]: raw bpf(2) on pinned maps (read a value, a layout; pin one);
//! - [`controller`]: runs the real `macvswitch` binary inside the host netns;
//! - [`wire`]: AF_PACKET socket that reports the VLAN tag from skb metadata;
//! - [`tap`]: plain-frame access to a macvtap character device;
//! - [`frame`]: Ethernet frame builders / parsers with per-test markers;
//! - [`expect`]: shared expectations (`at_guest`, `on_wire`, `absent`,
//!   `assert_drops`, tables of refused frames);
//! - [`hairpin`]: a switch port that sends every frame back (reflective relay);
//! - [`harness`]: all of the above bundled for one test (`Harness`), and the
//!   one-endpoint-against-the-wire fixture (`OnePort`);
//! - [`lifecycle`]: SIGKILLing the CLI and checking state against kernel;
//! - [`attach`]: what is attached, as TCX pins or clsact filters;
//! - [`rng`]: the seeded PRNG of randomized tests.

pub mod attach;
pub mod bpf;
pub mod bpffs;
pub mod controller;
pub mod expect;
pub mod frame;
pub mod hairpin;
pub mod harness;
pub mod lifecycle;
pub mod netns;
pub mod rng;
pub mod tap;
pub mod topology;
pub mod wire;

pub use bpffs::{BpffsGuard, TempStateDir};
pub use controller::Controller;
pub use harness::{Harness, OnePort};
pub use netns::NetNs;
pub use topology::Topology;

/// Message printed when a root-only test is skipped.
pub const NEEDS_ROOT: &str = "needs root (creates network namespaces and loads eBPF)";

/// True when running as root (euid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns true if the current test may run; otherwise prints the skip
/// message. The libtest harness names each test's thread after the test,
/// which gives us the test name without having to pass it in.
pub fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    let current = std::thread::current();
    let name = current.name().unwrap_or("test");
    eprintln!("skipping {name}: {NEEDS_ROOT}");
    false
}

/// Early-returns from the calling test unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::root_or_skip() {
            return;
        }
    };
}

/// The prologue of a test that needs root and one [`Harness`]: skips the
/// test (returns) when not root, else the harness: `let h = root_harness!();`.
#[macro_export]
macro_rules! root_harness {
    () => {{
        if !$crate::root_or_skip() {
            return;
        }
        $crate::Harness::new()
    }};
}

/// The prologue of a test that needs root and one [`OnePort`]: skips the
/// test (returns) when not root, else `OnePort::new(name, extra)`, or with
/// a policy, `OnePort::with_policy(name, policy, extra)`.
#[macro_export]
macro_rules! root_port {
    ($name:expr, $extra:expr $(,)?) => {{
        if !$crate::root_or_skip() {
            return;
        }
        $crate::OnePort::new($name, $extra)
    }};
    ($name:expr, $policy:expr, $extra:expr $(,)?) => {{
        if !$crate::root_or_skip() {
            return;
        }
        $crate::OnePort::with_policy($name, $policy, $extra)
    }};
}

/// One `#[test]` per row of a table, each calling `$run` with its row, so
/// that the rows run in parallel and are filtered by name like any test:
///
/// ```ignore
/// cases! { private_vlans:
///     bridge_mode_private_vlans => Path::Bridge,
///     vepa_with_relay_private_vlans => Path::Relay,
/// }
/// ```
#[macro_export]
macro_rules! cases {
    ($run:path: $($name:ident => $row:expr),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run($row)
            }
        )+
    };
}

#[cfg(test)]
mod selftest;
