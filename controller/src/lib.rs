//! The macvswitch controller: creates macvtap endpoints, loads and pins the
//! TC programs, fills their maps and reports their counters.

pub mod apply;
pub mod bpffs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod endpoint;
pub mod error;
pub mod handoff;
pub mod isolation;
pub mod netlink;
pub mod policy;
pub mod reconcile;
pub mod report;
pub mod session;
pub mod state;
pub mod tapdev;
pub mod types;
pub mod uplink;
pub mod validate;

pub use error::Error;

/// The eBPF object built from ebpf/ by build.rs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/macvswitch-ebpf"));
