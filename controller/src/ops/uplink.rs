//! Lower-device settings: reflective-relay emulation and the host port.

use macvswitch_common::{EndpointPolicy, POLICY_PROMISCUOUS};

use crate::{
    error::{Error, Result},
    kernel::datapath::Datapath,
    kernel::netlink::Stacked,
    model::isolation::source_info,
    model::policy::PortVlans,
    model::state::{HostPortRecord, RecordStatus, State, UplinkRecord},
    model::types::{Cidr, IfName, Mac, Mode, Vid},
    ops::endpoint::Instance,
    ops::session::Session,
};

/// `uplink set DEV ...`.
#[derive(Clone, Debug)]
pub struct UplinkSetRequest {
    pub lower: IfName,
    pub reflective_relay: Option<bool>,
    pub host_port: Option<HostPortRequest>,
    pub remove_host_port: bool,
}

#[derive(Clone, Debug)]
pub struct HostPortRequest {
    pub name: IfName,
    pub vlan: Option<Vid>,
    pub addresses: Vec<Cidr>,
}

impl HostPortRecord {
    /// The host port reaches every local endpoint, isolated ones included,
    /// like a promiscuous port of a private VLAN.
    pub fn policy(&self, lower: u32) -> EndpointPolicy {
        let mut policy = self.vlans.to_policy(self.mac, None, false);
        policy.lower = lower;
        policy.slot = self.slot;
        policy.flags |= POLICY_PROMISCUOUS;
        policy
    }
}

impl Instance {
    pub fn uplinks(&self) -> Result<Vec<UplinkRecord>> {
        let state = self.state_dir.load()?;
        Ok(state
            .uplinks
            .values()
            .map(|u| self.shown(&state, u))
            .collect())
    }

    pub fn uplink(&self, lower: &IfName) -> Result<UplinkRecord> {
        let state = self.state_dir.load()?;
        let record = state.uplinks.get(lower).ok_or_else(|| {
            Error::invalid(
                "DEV",
                lower,
                "has no uplink settings (see `macvswitch uplink list`)",
            )
        })?;
        Ok(self.shown(&state, record))
    }

    /// A record as shown: whether the clsact qdisc is ours also when the
    /// endpoints' tag carriage made it, and how the egress program is
    /// attached now.
    fn shown(&self, state: &State, record: &UplinkRecord) -> UplinkRecord {
        let mut record = record.clone();
        record.own_clsact = state.owns_qdisc(&record.name);
        record.attach = Datapath::uplink_mode(&self.pins, record.name.as_str()).or(record.attach);
        record
    }

    pub async fn uplink_set(&self, request: UplinkSetRequest) -> Result<UplinkRecord> {
        self.session().await?.uplink_set(request).await
    }
}

impl Session<'_> {
    pub async fn uplink_set(&mut self, request: UplinkSetRequest) -> Result<UplinkRecord> {
        let links = self.netlink.links().await?;
        let lower = links
            .iter()
            .find(|link| link.name == request.lower.as_str())
            .cloned()
            .ok_or_else(|| {
                Error::invalid(
                    "DEV",
                    &request.lower,
                    "no such device in this network namespace",
                )
            })?;
        if lower.is_macvlan_family() {
            return Err(Error::invalid(
                "DEV",
                &request.lower,
                "is itself a macvlan/macvtap; give the device it sits on",
            ));
        }
        if let Some(host_port) = &request.host_port {
            crate::ops::validate::check_lower_carries(
                "--host-port",
                host_port.name.as_str(),
                &lower,
                &links,
                Mode::Bridge,
                &self.state,
            )?;
            let taken = links
                .iter()
                .any(|link| link.name == host_port.name.as_str())
                || self.state.endpoints.contains_key(&host_port.name);
            if taken {
                return Err(Error::invalid(
                    "--host-port",
                    &host_port.name,
                    "an interface of that name exists; pick a free name",
                ));
            }
        }
        let mut record = self
            .state
            .uplinks
            .get(&request.lower)
            .cloned()
            .unwrap_or(UplinkRecord {
                name: request.lower.clone(),
                ifindex: lower.index,
                reflective_relay: false,
                host_port: None,
                attach: None,
                own_clsact: false,
            });
        record.ifindex = lower.index;

        if let Some(relay) = request.reflective_relay {
            if relay {
                self.attach_relay(&mut record).await?;
            } else {
                self.datapath()
                    .await?
                    .maps
                    .set_relay(record.ifindex, false)?;
            }
            record.reflective_relay = relay;
            self.state
                .uplinks
                .insert(record.name.clone(), record.clone());
            self.save()?;
            if !relay {
                // The program stays while endpoints on the device need it.
                self.release_uplink_program(&record.name, record.ifindex, "");
                if let Some(updated) = self.state.uplinks.get(&record.name) {
                    record = updated.clone();
                }
            }
        }
        if (request.remove_host_port || request.host_port.is_some())
            && let Some(old) = record.host_port.clone()
        {
            self.mark_host_port_deleting(&mut record)?;
            self.unwire_host_port(&record, &old).await;
            record.host_port = None;
            self.state
                .uplinks
                .insert(record.name.clone(), record.clone());
            self.save()?;
        }
        if let Some(request) = request.host_port {
            let mut port = HostPortRecord {
                mac: Mac::derived_from(request.name.as_str()),
                name: request.name,
                vlans: match request.vlan {
                    Some(vlan) => PortVlans::Access { vlan },
                    None => PortVlans::Untagged,
                },
                addresses: request.addresses,
                ifindex: 0,
                slot: self.state.free_slot()?,
                attach: None,
                status: RecordStatus::Pending,
            };
            // Intent first, as for endpoints.
            record.host_port = Some(port.clone());
            self.state
                .uplinks
                .insert(record.name.clone(), record.clone());
            self.save()?;
            let mtu = lower.mtu.unwrap_or(1500);
            if let Err(error) = self.wire_new_host_port(&record, &mut port, mtu).await {
                self.unwire_host_port(&record, &port).await;
                record.host_port = None;
                self.state
                    .uplinks
                    .insert(record.name.clone(), record.clone());
                self.save()?;
                return Err(error);
            }
            port.status = RecordStatus::Ready;
            record.host_port = Some(port);
        }
        self.state
            .uplinks
            .insert(record.name.clone(), record.clone());
        self.save()?;
        Ok(record)
    }

    pub(crate) async fn wire_new_host_port(
        &mut self,
        uplink: &UplinkRecord,
        port: &mut HostPortRecord,
        mtu: u32,
    ) -> Result<()> {
        let link = self
            .netlink
            .create_stacked(
                Stacked::Macvlan,
                port.name.as_str(),
                uplink.ifindex,
                Mode::Bridge,
                port.mac,
                mtu,
            )
            .await?;
        port.ifindex = link.index;
        // A new device: `--attach` decides its mode.
        port.attach = None;
        let datapath = self.datapath().await?;
        datapath.maps.reset_counters(port.slot)?;
        self.ensure_uplink_program(&uplink.name, uplink.ifindex)
            .await?;
        let datapath = self.datapath().await?;
        let mode = wire_host_port(datapath, uplink.ifindex, port)?;
        port.attach = Some(mode);
        self.netlink.bring_up(port.ifindex).await?;
        for cidr in &port.addresses {
            self.netlink.add_address(port.ifindex, *cidr).await?;
        }
        Ok(())
    }

    /// Records that the host port is being removed before removing it, so a
    /// kill half-way is finished by the next session.
    pub(crate) fn mark_host_port_deleting(&mut self, uplink: &mut UplinkRecord) -> Result<()> {
        if let Some(port) = uplink.host_port.as_mut() {
            port.status = RecordStatus::Deleting;
            self.state
                .uplinks
                .insert(uplink.name.clone(), uplink.clone());
            self.save()?;
        }
        Ok(())
    }

    /// Turns the relay on for `record`'s device: its map entry, then the
    /// program on its egress. A clsact qdisc the attach is going to create
    /// is recorded as ours first, so a kill half-way leaves none that
    /// `reset` would not remove.
    pub(crate) async fn attach_relay(&mut self, record: &mut UplinkRecord) -> Result<()> {
        self.state
            .uplinks
            .insert(record.name.clone(), record.clone());
        self.ensure_uplink_program(&record.name, record.ifindex)
            .await?;
        if let Some(updated) = self.state.uplinks.get(&record.name) {
            *record = updated.clone();
        }
        self.datapath().await?.maps.set_relay(record.ifindex, true)
    }

    /// Undoes the relay and host port of an uplink (for `reset`).
    pub(crate) async fn unwire_uplink(&mut self, uplink: &UplinkRecord) {
        if let Ok(Some(maps)) = self.maps()
            && let Err(e) = maps.set_tags_from_mark(uplink.ifindex, false)
        {
            log::warn!("{}: {e}", uplink.name);
        }
        let own_qdisc = uplink.own_clsact || self.state.owns_qdisc(&uplink.name);
        if let Err(e) =
            Datapath::detach_uplink(&self.instance.pins, uplink.name.as_str(), own_qdisc)
        {
            log::warn!("{}: {e}", uplink.name);
        }
        if let Ok(Some(maps)) = self.maps()
            && let Err(e) = maps.set_relay(uplink.ifindex, false)
        {
            log::warn!("{}: {e}", uplink.name);
        }
        if let Some(port) = &uplink.host_port {
            self.unwire_host_port(uplink, port).await;
        }
    }

    pub(crate) async fn unwire_host_port(&mut self, uplink: &UplinkRecord, port: &HostPortRecord) {
        self.unwire_device(port.name.as_str(), port.ifindex, port.mac, uplink.ifindex)
            .await;
        self.release_uplink_program(&uplink.name, uplink.ifindex, port.name.as_str());
    }
}

/// Writes the host port's map entries and attaches its programs; returns
/// the attach mode.
pub(crate) fn wire_host_port(
    datapath: &mut Datapath,
    lower: u32,
    port: &HostPortRecord,
) -> Result<crate::model::types::AttachMode> {
    write_host_port_maps(datapath, lower, port)?;
    datapath.attach(port.name.as_str(), port.attach)
}

/// The host port's policy and sender entry.
pub(crate) fn write_host_port_maps(
    datapath: &mut Datapath,
    lower: u32,
    port: &HostPortRecord,
) -> Result<()> {
    let policy = port.policy(lower);
    datapath.maps.set_policy(port.ifindex, &policy)?;
    let source = source_info(port.ifindex, Mode::Bridge, 0, policy.flags);
    datapath.maps.set_source(lower, port.mac, &source)
}
