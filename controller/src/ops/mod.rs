//! The operations: an instance and its session (state lock, state, netlink
//! and data path), requests validated in one place, wiring endpoints, host
//! ports and lower devices into the kernel, and the verbs (endpoint,
//! uplink, restore, apply). Uses `kernel` and `model`.

pub mod apply;
pub mod cni;
pub mod endpoint;
pub mod handoff;
pub mod instance;
pub mod lower;
pub mod progress;
pub mod reconcile;
pub mod requests;
pub mod session;
pub mod store;
pub mod uplink;
pub mod validate;
pub mod wiring;
