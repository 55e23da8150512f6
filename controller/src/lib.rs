//! The macvswitch controller: creates macvtap endpoints, loads and pins the
//! TC programs, fills their maps and reports their counters.
//!
//! Layers, each allowed to use only those below it:
//! - [`model`]: what the operator asks for and what is recorded (types,
//!   port policy, isolation, configuration, state records); uses only
//!   `macvswitch-common`;
//! - [`kernel`]: the kernel objects (data path programs, maps and pins,
//!   netlink, tap nodes, bpffs);
//! - [`ops`]: the instance, its session and the verbs, which validate
//!   requests against the state and the host and wire them into the kernel;
//! - the binary's edge: [`cli`], [`report`], [`daemon`] and `main.rs`;
//!   and [`cni`], the edge of the second binary, `macvswitch-cni`.
//!
//! [`error`] is shared by all of them.

pub mod cli;
pub mod cni;
pub mod daemon;
pub mod error;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod ops;
pub mod report;
pub mod top;
pub mod trace;
pub mod tree;

pub use error::Error;

/// The eBPF object built from ebpf/ by build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/macvswitch-ebpf"));
