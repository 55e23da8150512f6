//! Endpoints and host ports as the operator asks for them, from the command
//! line or a configuration file: every value already checked on its own,
//! before it is checked against the state and the host.

use serde::{Deserialize, Serialize};

use crate::model::{
    guards::Guards,
    isolation::Isolation,
    policy::{Pcp, PortVlans},
    state::{CniAttachment, Device},
    types::{Cidr, IfName, Mac, Mode, Mtu, Vid},
};

/// An endpoint to make: what `endpoint add` and an `[[endpoint]]` of a
/// configuration file ask for, its VLAN options resolved into a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub name: IfName,
    pub lower: IfName,
    pub mode: Mode,
    /// `None`: derived from the name.
    pub mac: Option<Mac>,
    pub vlans: PortVlans,
    pub priority: Option<Pcp>,
    /// `None`: the lower device's.
    pub mtu: Option<Mtu>,
    pub allow_mac_spoofing: bool,
    pub isolation: Isolation,
    pub guards: Guards,
    pub device: Device,
    /// Made for a CNI runtime, moved into its container's namespace.
    pub cni: Option<CniAttachment>,
}

impl EndpointSpec {
    /// The MAC the endpoint gets: the one asked for, else derived from its
    /// name.
    pub fn mac(&self) -> Mac {
        self.mac
            .unwrap_or_else(|| Mac::derived_from(self.name.as_str()))
    }
}

/// A host port to make (`uplink set LOWER --host-port`, `host_port` of an
/// `[[uplink]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPortSpec {
    pub name: IfName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
}
