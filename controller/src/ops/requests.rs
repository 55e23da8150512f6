//! Changes to what exists, as the verbs take them. New endpoints and host
//! ports are `model::spec`'s; these say what to change of existing ones.

use crate::model::{
    isolation::Isolation,
    policy::{Pcp, PortOptions},
    spec::HostPortSpec,
    types::IfName,
};

/// `endpoint set`: policy changes applied in place. The VLAN options stay
/// raw: they resolve against the endpoint's current port.
#[derive(Clone, Debug)]
pub struct SetRequest {
    pub name: IfName,
    pub port: PortOptions,
    pub priority: Option<Pcp>,
    /// Back to the guest's own priority (`--no-priority`).
    pub clear_priority: bool,
    pub isolation: Option<Isolation>,
    pub allow_mac_spoofing: Option<bool>,
}

/// `uplink set LOWER ...`.
#[derive(Clone, Debug)]
pub struct UplinkSetRequest {
    pub lower: IfName,
    pub reflective_relay: Option<bool>,
    pub host_port: Option<HostPortSpec>,
    pub remove_host_port: bool,
    /// `--replace`: a host port of another name on the lower device goes
    /// first; without it, that is refused.
    pub replace_host_port: bool,
}
