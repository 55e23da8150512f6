//! Changes to what exists, as the verbs take them. New endpoints and host
//! ports are `model::spec`'s; these say what to change of existing ones.

use crate::model::{
    guards::{Guards, IpList, StormLimit},
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
    pub guards: GuardChanges,
}

/// `endpoint set`'s guard options: `None` leaves a guard as it is.
#[derive(Clone, Debug, Default)]
pub struct GuardChanges {
    /// `Some(None)`: `--no-ip`, address checks off.
    pub ip: Option<Option<IpList>>,
    pub allow_dhcp_server: Option<bool>,
    pub allow_ra: Option<bool>,
    pub allow_bpdu: Option<bool>,
    /// `Some(None)`: `--no-storm-limit`.
    pub storm_limit: Option<Option<StormLimit>>,
}

impl GuardChanges {
    pub fn apply_to(&self, guards: &mut Guards) {
        if let Some(ip) = &self.ip {
            guards.ip = ip.clone();
        }
        if let Some(allow) = self.allow_dhcp_server {
            guards.allow_dhcp_server = allow;
        }
        if let Some(allow) = self.allow_ra {
            guards.allow_ra = allow;
        }
        if let Some(allow) = self.allow_bpdu {
            guards.allow_bpdu = allow;
        }
        if let Some(limit) = self.storm_limit {
            guards.storm_limit = limit;
        }
    }
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
