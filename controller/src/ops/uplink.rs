//! The uplink verb: `uplink set LOWER`, a lower device's settings
//! (reflective-relay emulation, the host port), in one session.

use crate::{
    error::Result,
    model::{
        policy::PortVlans,
        spec::HostPortSpec,
        state::{HostPortRecord, RecordStatus, UplinkRecord},
        types::Mac,
    },
    ops::{
        requests::UplinkSetRequest, session::Session, validate::validate_uplink_set,
        wiring::write_host_port_maps,
    },
};

impl Session<'_> {
    pub async fn uplink_set(&mut self, request: UplinkSetRequest) -> Result<UplinkRecord> {
        let links = self.netlink.links().await?;
        let lower = validate_uplink_set(&request, &self.state, &links)?.clone();
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
            self.keep_uplink(&record)?;
            if !relay {
                // The program stays while endpoints on the device need it.
                self.release_uplink_program(&record.name, record.ifindex, "");
                if let Some(updated) = self.state.uplinks.get(&record.name) {
                    record = updated.clone();
                }
            }
        }
        // The same name again: that port changes in place.
        let in_place = request.host_port.as_ref().and_then(|spec| {
            record
                .host_port
                .as_ref()
                .filter(|port| port.name == spec.name && port.status.is_ready())
                .map(|_| spec.clone())
        });
        if let Some(spec) = in_place {
            self.update_host_port(&mut record, spec).await?;
            return Ok(record);
        }
        if (request.remove_host_port || request.host_port.is_some())
            && let Some(old) = record.host_port.clone()
        {
            self.mark_host_port_deleting(&mut record)?;
            self.unwire_host_port(&record, &old).await;
            record.host_port = None;
            self.keep_uplink(&record)?;
        }
        if let Some(spec) = request.host_port {
            let mut port = HostPortRecord {
                mac: Mac::derived_from(spec.name.as_str()),
                name: spec.name,
                vlans: match spec.vlan {
                    Some(vlan) => PortVlans::Access { vlan },
                    None => PortVlans::Untagged,
                },
                addresses: spec.addresses,
                ifindex: 0,
                slot: self.state.free_slot()?,
                attach: None,
                status: RecordStatus::Pending,
            };
            // Intent first, as for endpoints.
            record.host_port = Some(port.clone());
            self.keep_uplink(&record)?;
            let mtu = lower.mtu.unwrap_or(1500);
            if let Err(error) = self.wire_new_host_port(&record, &mut port, mtu).await {
                self.unwire_host_port(&record, &port).await;
                record.host_port = None;
                self.keep_uplink(&record)?;
                return Err(error);
            }
            port.status = RecordStatus::Ready;
            record.host_port = Some(port);
        }
        self.keep_uplink(&record)?;
        Ok(record)
    }

    /// Changes the VLAN and addresses of the lower device's host port in
    /// place: one policy map update, addresses removed and added on the
    /// same macvlan (no relink).
    async fn update_host_port(
        &mut self,
        record: &mut UplinkRecord,
        spec: HostPortSpec,
    ) -> Result<()> {
        let Some(mut port) = record.host_port.clone() else {
            return Ok(());
        };
        let old_addresses = std::mem::take(&mut port.addresses);
        port.vlans = match spec.vlan {
            Some(vlan) => PortVlans::Access { vlan },
            None => PortVlans::Untagged,
        };
        port.addresses = spec.addresses;
        record.host_port = Some(port.clone());
        self.state
            .uplinks
            .insert(record.name.clone(), record.clone());
        write_host_port_maps(self.pinned_maps()?, record.ifindex, &port)?;
        self.refresh_lower(&record.name)?;
        for cidr in old_addresses.iter().filter(|a| !port.addresses.contains(a)) {
            self.netlink.del_address(port.ifindex, *cidr).await?;
        }
        for cidr in port.addresses.iter().filter(|a| !old_addresses.contains(a)) {
            self.netlink.add_address(port.ifindex, *cidr).await?;
        }
        self.save()
    }
}

impl Session<'_> {
    /// Records `record` as the lower device's settings, on disk at once.
    fn keep_uplink(&mut self, record: &UplinkRecord) -> Result<()> {
        self.state
            .uplinks
            .insert(record.name.clone(), record.clone());
        self.save()
    }
}
