//! What macvswitch manages, as recorded in `<state-dir>/state.json` (the
//! file and its lock are `ops::store`'s), and the map values the records
//! stand for.

use std::collections::{BTreeMap, BTreeSet};

use macvswitch_common::{EndpointPolicy, POLICY_CHECK_SENDERS, POLICY_PROMISCUOUS, SourceInfo};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    model::guards::Guards,
    model::isolation::{Isolation, source_info},
    model::policy::{Pcp, PortVlans},
    model::spec::{EndpointSpec, HostPortSpec},
    model::types::{AttachMode, Cidr, IfName, Mac, Mode},
};

/// Where a record is in its life: a command killed half-way leaves
/// `Pending` (being added) or `Deleting`, and the next session finishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    #[default]
    Ready,
    Pending,
    Deleting,
    /// The lower device is gone; recreated when it is back.
    Waiting,
}

impl RecordStatus {
    pub fn is_ready(&self) -> bool {
        *self == RecordStatus::Ready
    }
}

/// One endpoint as recorded by `endpoint add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub name: IfName,
    pub lower: IfName,
    pub mode: Mode,
    pub mac: Mac,
    /// Which VLANs the port carries.
    pub vlans: PortVlans,
    /// PCP of the tags macvswitch pushes; `None` keeps the guest's.
    pub priority: Option<Pcp>,
    pub mtu: u32,
    pub allow_mac_spoofing: bool,
    /// Ifindex of the macvtap in its network namespace: the maps' key.
    pub ifindex: u32,
    /// Ifindex of the lower device when the endpoint was wired.
    #[serde(default)]
    pub lower_ifindex: u32,
    /// Index of its counters in the per-CPU counter array.
    #[serde(default)]
    pub slot: u16,
    /// Private-VLAN membership.
    #[serde(default)]
    pub isolation: Isolation,
    /// Access-port guards (state files older than them: the defaults).
    #[serde(default, flatten)]
    pub guards: Guards,
    /// How its programs are attached; `None` until they are (and in state
    /// files older than the clsact path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachMode>,
    #[serde(default, skip_serializing_if = "RecordStatus::is_ready")]
    pub status: RecordStatus,
    /// The kind of device: a macvtap unless a CNI network asked for a
    /// macvlan (older state files have only macvtaps).
    #[serde(default, skip_serializing_if = "Device::is_macvtap")]
    pub device: Device,
    /// Set when a CNI runtime made the endpoint: its device lives in the
    /// container's network namespace under `cni.ifname`, and `ifindex` is
    /// its index there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniAttachment>,
}

/// The stacked device an endpoint is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// With a tap character device, for a VM's hypervisor.
    #[default]
    Macvtap,
    /// A plain interface, for a container's own stack.
    Macvlan,
}

impl Device {
    pub fn is_macvtap(&self) -> bool {
        *self == Device::Macvtap
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Device::Macvtap => "macvtap",
            Device::Macvlan => "macvlan",
        }
    }
}

/// Who a CNI endpoint belongs to: the attachment's key (container ID,
/// network name, interface name) as CNI defines it, and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub container_id: String,
    pub network: String,
    /// Its name inside the container's namespace (`CNI_IFNAME`).
    pub ifname: IfName,
    /// The namespace path the runtime gave (`CNI_NETNS`).
    pub netns: std::path::PathBuf,
}

impl CniAttachment {
    /// Whether this is the attachment `(container_id, ifname)` of `network`.
    pub fn is(&self, network: &str, container_id: &str, ifname: &str) -> bool {
        self.network == network
            && self.container_id == container_id
            && self.ifname.as_str() == ifname
    }
}

impl EndpointRecord {
    /// The endpoint's map value on its own; see `State::policy_of` for the
    /// value in the context of its lower device.
    pub fn policy(&self) -> EndpointPolicy {
        let mut policy = self
            .vlans
            .to_policy(self.mac, self.priority, self.allow_mac_spoofing);
        policy.lower = self.lower_ifindex;
        policy.slot = self.slot;
        policy.community = self.isolation.community_id();
        policy.flags |= self.isolation.flags();
        self.guards.apply(&mut policy);
        policy
    }

    /// Why the endpoint must be made anew to become `spec` (its macvtap's
    /// lower device, mode, MAC or MTU differ), if it must.
    pub fn recreate_reason(&self, spec: &EndpointSpec) -> Option<String> {
        if self.lower != spec.lower {
            return Some(format!("lower {} -> {}", self.lower, spec.lower));
        }
        if self.mode != spec.mode {
            return Some(format!("mode {} -> {}", self.mode, spec.mode));
        }
        if self.mac != spec.mac() {
            return Some(format!("mac {} -> {}", self.mac, spec.mac()));
        }
        match spec.mtu {
            Some(mtu) if mtu.0 != self.mtu => Some(format!("mtu {} -> {}", self.mtu, mtu.0)),
            _ => None,
        }
    }

    /// Whether `spec` asks for another policy (VLANs, priority, isolation,
    /// spoofing, guards): a map update, no relink.
    pub fn policy_differs(&self, spec: &EndpointSpec) -> bool {
        self.vlans != spec.vlans
            || self.priority != spec.priority
            || self.isolation != spec.isolation
            || self.allow_mac_spoofing != spec.allow_mac_spoofing
            || self.guards != spec.guards
    }

    /// The endpoint as a sender, for the isolation checks of others.
    pub fn source(&self) -> SourceInfo {
        let policy = self.policy();
        source_info(self.ifindex, self.mode, policy.community, policy.flags)
    }
}

/// The host port of a lower device: a macvlan for the host's own stack,
/// under the same programs as a guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPortRecord {
    pub name: IfName,
    pub mac: Mac,
    pub vlans: PortVlans,
    pub addresses: Vec<Cidr>,
    pub ifindex: u32,
    #[serde(default)]
    pub slot: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachMode>,
    #[serde(default, skip_serializing_if = "RecordStatus::is_ready")]
    pub status: RecordStatus,
}

impl HostPortRecord {
    /// The host port reaches every local endpoint, isolated ones included,
    /// like a promiscuous port of a private VLAN.
    pub fn policy(&self, lower: u32) -> EndpointPolicy {
        let mut policy = self.vlans.to_policy(self.mac, None, false);
        Guards::none().apply(&mut policy);
        policy.lower = lower;
        policy.slot = self.slot;
        policy.flags |= POLICY_PROMISCUOUS;
        policy
    }

    /// The host port as `uplink set` and a configuration file state it.
    pub fn spec(&self) -> HostPortSpec {
        HostPortSpec {
            name: self.name.clone(),
            vlan: match self.vlans {
                PortVlans::Access { vlan } => Some(vlan),
                _ => None,
            },
            addresses: self.addresses.clone(),
        }
    }

    /// The host port as a sender on lower device `lower`.
    pub fn source(&self, lower: u32) -> SourceInfo {
        source_info(self.ifindex, Mode::Bridge, 0, self.policy(lower).flags)
    }
}

/// Settings of a lower device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkRecord {
    pub name: IfName,
    pub ifindex: u32,
    pub reflective_relay: bool,
    pub host_port: Option<HostPortRecord>,
    /// How the relay program is attached to the device's egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachMode>,
    /// macvswitch created the device's clsact qdisc (recorded before it
    /// does), so it removes it once nothing is on it; an operator's qdisc
    /// is never removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_clsact: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub endpoints: BTreeMap<IfName, EndpointRecord>,
    #[serde(default)]
    pub uplinks: BTreeMap<IfName, UplinkRecord>,
    /// The kernel boot the state was last written in: after a reboot the
    /// links are gone and get recreated rather than forgotten.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Lower devices without uplink settings whose clsact qdisc macvswitch
    /// made for their egress program (with settings, `own_clsact` there).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub own_qdiscs: BTreeSet<IfName>,
}

impl State {
    /// Whether macvswitch made the clsact qdisc on lower device `lower`.
    pub fn owns_qdisc(&self, lower: &IfName) -> bool {
        self.own_qdiscs.contains(lower) || self.uplinks.get(lower).is_some_and(|u| u.own_clsact)
    }

    /// An endpoint's map value in the context of its lower device: sender
    /// checks are only switched on where some endpoint could be kept apart
    /// or get its own frames back (any isolation, any mode but bridge).
    pub fn policy_of(&self, record: &EndpointRecord) -> EndpointPolicy {
        let mut policy = record.policy();
        let needs_checks = self.endpoints.values().any(|other| {
            other.lower == record.lower
                && (other.isolation != Isolation::Open || other.mode != Mode::Bridge)
        });
        if needs_checks {
            policy.flags |= POLICY_CHECK_SENDERS;
        }
        policy
    }

    /// Whether endpoints on `lower` may carry their tags in the mark for
    /// its egress program to write: not once a CNI endpoint sits on it in
    /// another namespace, since a frame crossing namespaces between
    /// endpoints (macvlan's bridge-mode forward) has its mark scrubbed,
    /// while a tag in the skb's metadata survives.
    pub fn tags_may_ride_in_mark(&self, lower: &IfName) -> bool {
        !self
            .endpoints
            .values()
            .any(|record| record.lower == *lower && record.cni.is_some())
    }

    /// Whether anything recorded on `lower`, other than `leaving`, needs its
    /// egress program: an endpoint, the host port or relay emulation.
    pub fn lower_in_use(&self, lower: &IfName, leaving: &str) -> bool {
        self.endpoints
            .values()
            .any(|record| record.lower == *lower && record.name.as_str() != leaving)
            || self.uplinks.get(lower).is_some_and(|uplink| {
                uplink.reflective_relay
                    || uplink
                        .host_port
                        .as_ref()
                        .is_some_and(|port| port.name.as_str() != leaving)
            })
    }

    /// Whether the link `index` (called `name`, if known) is a recorded
    /// endpoint, host port or lower device, by name or recorded ifindex.
    pub fn concerns_link(&self, index: u32, name: Option<&str>) -> bool {
        let by_name = |recorded: &IfName| name == Some(recorded.as_str());
        self.endpoints.values().any(|record| {
            by_name(&record.name)
                || by_name(&record.lower)
                || record.ifindex == index
                || record.lower_ifindex == index
        }) || self.uplinks.values().any(|uplink| {
            by_name(&uplink.name)
                || uplink.ifindex == index
                || uplink
                    .host_port
                    .as_ref()
                    .is_some_and(|port| by_name(&port.name) || port.ifindex == index)
        })
    }

    /// "endpoint" or "host port" `name`, and its lower device, as recorded.
    pub fn describe(&self, name: &str) -> (&'static str, String) {
        if let Some(record) = self
            .endpoints
            .values()
            .find(|record| record.name.as_str() == name)
        {
            return ("endpoint", record.lower.to_string());
        }
        if let Some(uplink) = self.uplinks.values().find(|uplink| {
            uplink
                .host_port
                .as_ref()
                .is_some_and(|port| port.name.as_str() == name)
        }) {
            return ("host port", uplink.name.to_string());
        }
        ("device", "its lower device".to_string())
    }

    /// Whether endpoint or host port `name` waits for its lower device.
    pub fn is_waiting(&self, name: &str) -> bool {
        let waiting = RecordStatus::Waiting;
        self.endpoints
            .values()
            .any(|record| record.name.as_str() == name && record.status == waiting)
            || self.uplinks.values().any(|uplink| {
                uplink
                    .host_port
                    .as_ref()
                    .is_some_and(|port| port.name.as_str() == name && port.status == waiting)
            })
    }

    /// The state as it will be once interrupted commands are finished:
    /// pending adds rolled back, pending deletes done.
    pub fn settled(mut self) -> Self {
        self.endpoints.retain(|_, record| {
            !matches!(
                record.status,
                RecordStatus::Pending | RecordStatus::Deleting
            )
        });
        for uplink in self.uplinks.values_mut() {
            if uplink.host_port.as_ref().is_some_and(|port| {
                matches!(port.status, RecordStatus::Pending | RecordStatus::Deleting)
            }) {
                uplink.host_port = None;
            }
        }
        self
    }

    /// The lowest counter slot no endpoint or host port holds.
    pub fn free_slot(&self) -> Result<u16> {
        let used: BTreeSet<u16> = self
            .endpoints
            .values()
            .map(|r| r.slot)
            .chain(
                self.uplinks
                    .values()
                    .filter_map(|u| u.host_port.as_ref().map(|p| p.slot)),
            )
            .collect();
        (0..macvswitch_common::MAX_ENDPOINTS as u16)
            .find(|slot| !used.contains(slot))
            .ok_or_else(|| {
                Error::Refused(format!(
                    "all {} endpoint slots are in use",
                    macvswitch_common::MAX_ENDPOINTS
                ))
            })
    }
}
