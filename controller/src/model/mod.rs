//! What the operator asks for and what macvswitch records: validated types,
//! the VLAN policy and isolation of a port, the configuration file and the
//! state records. Depends on `macvswitch-common` only.

pub mod config;
pub mod hash;
pub mod isolation;
pub mod policy;
pub mod spec;
pub mod state;
pub mod types;
