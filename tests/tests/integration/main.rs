//! The root-only integration tests: one binary, one module per area, each
//! test driving the real `macvswitch` binary (MACVSWITCH_BIN, or
//! target/debug/macvswitch) in network namespaces, a bpffs and a state
//! directory of its own, so that tests run in parallel. Shared fixtures and
//! expectations live in the `macvswitch_tests` library (`expect` for
//! `at_guest`, `on_wire`, `absent`, `assert_drops`; `frame` for builders).
//!
//! Filter by module path: `cargo xtask test -p macvswitch-tests -- port::trunk::`.
//! Without root every test prints why it skipped.

mod attach;
mod carriage;
mod cni;
mod daemon;
mod endpoint;
mod first_hour;
mod guards;
mod handoff;
mod host_port;
mod isolation;
mod lifecycle;
mod metrics;
mod monitor;
mod packaging;
mod port;
mod readme;
mod relay;
mod show;
mod top;
mod trace;
