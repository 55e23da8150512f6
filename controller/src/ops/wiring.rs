//! Wiring the devices macvswitch makes into the data path, and undoing it:
//! a guest's macvtap and a lower device's host port (a macvlan), each
//! created down, given its map entries and programs, then brought up.

use std::{collections::BTreeSet, os::fd::AsRawFd as _};

use crate::{
    error::{Error, Result},
    kernel::{
        datapath::{Datapath, Maps},
        netlink::{Netlink, Stacked},
        netns, tapdev,
    },
    model::{
        state::{
            CniAttachment, Device, EndpointRecord, HostPortRecord, RecordStatus, UplinkRecord,
        },
        types::{AttachMode, Mac, Mode},
    },
    ops::session::Session,
};

impl Session<'_> {
    /// Creates one macvtap and attaches everything, in an order where no
    /// frame ever passes unfiltered: policy and programs before the link
    /// comes up.
    pub(crate) async fn wire(&mut self, record: &mut EndpointRecord) -> Result<()> {
        self.create_macvtap(record).await?;
        // A new device: `--attach` decides its mode.
        record.attach = None;
        self.attach_endpoint(record).await
    }

    async fn create_macvtap(&mut self, record: &mut EndpointRecord) -> Result<()> {
        let kind = match record.device {
            Device::Macvtap => Stacked::Macvtap,
            Device::Macvlan => Stacked::Macvlan,
        };
        let link = self
            .netlink
            .create_stacked(
                kind,
                record.name.as_str(),
                record.lower_ifindex,
                record.mode,
                record.mac,
                record.mtu,
            )
            .await?;
        record.ifindex = link.index;
        // Recorded now, so a rollback finds the link by its ifindex.
        self.state
            .endpoints
            .insert(record.name.clone(), record.clone());
        if let Some(cni) = record.cni.clone() {
            self.move_into_container(record, &cni).await?;
        }
        Ok(())
    }

    /// Moves a new, still down, CNI endpoint into its container's
    /// namespace as `cni.ifname`. Its ifindex there is the maps' key, so it
    /// must be no other endpoint's: it keeps its index if that is free
    /// there and no other endpoint's key, else asks for one above all of
    /// those (a kernel without IFLA_NEW_IFINDEX picks its own, checked
    /// after the move).
    async fn move_into_container(
        &mut self,
        record: &mut EndpointRecord,
        cni: &CniAttachment,
    ) -> Result<()> {
        let netns = netns::open(&cni.netns)?;
        let ifname = cni.ifname.as_str();
        let inside = Netlink::connect_in(&cni.netns)?;
        let keys: BTreeSet<u32> = self
            .state
            .endpoints
            .values()
            .filter(|other| other.name != record.name)
            .map(|other| other.ifindex)
            .collect();
        let taken: BTreeSet<u32> = inside.links().await?.iter().map(|l| l.index).collect();
        let wanted = if keys.contains(&record.ifindex) || taken.contains(&record.ifindex) {
            let highest = keys.iter().chain(&taken).copied().max().unwrap_or(0);
            highest.max(record.ifindex) + 1
        } else {
            record.ifindex
        };
        let asked = self
            .netlink
            .move_to_netns(record.ifindex, netns.as_raw_fd(), ifname, Some(wanted))
            .await;
        if let Err(error) = asked {
            log::info!("{ifname}: ifindex {wanted} refused ({error}); the kernel picks one");
            self.netlink
                .move_to_netns(record.ifindex, netns.as_raw_fd(), ifname, None)
                .await?;
        }
        let link = inside.link_by_name(ifname).await?.ok_or_else(|| {
            Error::Refused(format!(
                "{ifname}: gone from {} right after the move",
                cni.netns.display()
            ))
        })?;
        // Recorded before anything else can fail, so a rollback deletes it
        // there.
        record.ifindex = link.index;
        self.state
            .endpoints
            .insert(record.name.clone(), record.clone());
        if keys.contains(&link.index) {
            return Err(Error::Refused(format!(
                "{ifname}: its ifindex {} in {} is already another endpoint's policy key",
                link.index,
                cni.netns.display()
            )));
        }
        Ok(())
    }

    /// Wires an existing macvtap (`record.ifindex`) into the data path:
    /// policy and programs first, then the link comes up. Records the
    /// attach mode in `record` and in the state's record of it.
    pub(crate) async fn attach_endpoint(&mut self, record: &mut EndpointRecord) -> Result<()> {
        self.ensure_uplink_program(&record.lower, record.lower_ifindex)
            .await?;
        self.write_maps(record).await?;
        let datapath = self.datapath().await?;
        let mode = match &record.cni {
            // Attached from inside the container's namespace, where the
            // device now is.
            Some(cni) => netns::run_in(&cni.netns, || {
                datapath.attach_as(record.name.as_str(), cni.ifname.as_str(), record.attach)
            })?,
            None => datapath.attach(record.name.as_str(), record.attach)?,
        };
        record.attach = Some(mode);
        if let Some(recorded) = self.state.endpoints.get_mut(&record.name) {
            recorded.attach = Some(mode);
        }
        self.bring_up(record).await
    }

    async fn write_maps(&mut self, record: &EndpointRecord) -> Result<()> {
        let policy = self.state.policy_of(record);
        let maps = &mut self.datapath().await?.maps;
        maps.set_policy(record.ifindex, &policy)?;
        maps.reset_counters(record.slot)?;
        maps.set_source(record.lower_ifindex, record.mac, &record.source())
    }

    /// The tap node, then the link up.
    async fn bring_up(&mut self, record: &EndpointRecord) -> Result<()> {
        if let Some(cni) = &record.cni {
            // The VM launcher in the container opens the tap itself.
            return Netlink::connect_in(&cni.netns)?
                .bring_up(record.ifindex)
                .await;
        }
        if record.device == Device::Macvlan {
            return self.netlink.bring_up(record.ifindex).await;
        }
        tapdev::create_node(
            &self.instance.state_dir.dev_dir(),
            record.name.as_str(),
            record.ifindex,
        )?;
        self.netlink.bring_up(record.ifindex).await
    }

    /// Undoes whatever part of an endpoint exists. Best effort: each step
    /// runs even if an earlier one failed, and failures are logged.
    pub(crate) async fn unwire(&mut self, record: &EndpointRecord) {
        let name = record.name.as_str();
        if let Some(cni) = &record.cni {
            delete_in_container(cni, record).await;
        }
        self.unwire_device(name, record.ifindex, record.mac, record.lower_ifindex)
            .await;
        self.release_uplink_program(&record.lower, record.lower_ifindex, name);
        if let Err(e) = tapdev::remove_node(&self.instance.tap_path(&record.name)) {
            log::warn!("{name}: {e}");
        }
    }

    /// Undoes whatever part of a stacked device (macvtap or host port)
    /// exists: its link, its link pins, its map entries. Best effort, each
    /// step logged on failure.
    pub(crate) async fn unwire_device(&mut self, name: &str, ifindex: u32, mac: Mac, lower: u32) {
        // The link goes first: its TCX links go with it in one step, where
        // unpinning them first would wait for a grace period each.
        // The ifindex may have been reused by now: delete only our link.
        match self.netlink.link_by_name(name).await {
            // An add killed before it recorded the ifindex: the link is ours
            // if it has our MAC on our lower device.
            Ok(Some(link))
                if link.index == ifindex
                    || (ifindex == 0
                        && link.mac == Some(mac.octets())
                        && link.lower == Some(lower)) =>
            {
                if let Err(e) = self.netlink.delete(link.index).await {
                    log::warn!("{name}: {e}");
                }
            }
            Ok(_) => log::info!("{name}: the link was already gone"),
            Err(e) => log::warn!("{name}: {e}"),
        }
        if let Err(e) = Datapath::detach(&self.instance.pins, name) {
            log::warn!("{name}: {e}");
        }
        match self.maps() {
            Ok(Some(maps)) => {
                let removed = if ifindex == 0 {
                    Ok(())
                } else {
                    maps.remove(ifindex)
                };
                if let Err(e) = removed.and_then(|()| maps.remove_source(lower, mac)) {
                    log::warn!("{name}: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!("{name}: {e}"),
        }
    }

    /// Creates the host port's macvlan and wires it (as `wire` does a
    /// macvtap), then gives it its addresses.
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

    /// Undoes whatever part of a host port exists (as `unwire`).
    pub(crate) async fn unwire_host_port(&mut self, uplink: &UplinkRecord, port: &HostPortRecord) {
        self.unwire_device(port.name.as_str(), port.ifindex, port.mac, uplink.ifindex)
            .await;
        self.release_uplink_program(&uplink.name, uplink.ifindex, port.name.as_str());
    }
}

/// Deletes a CNI endpoint's device in its container's namespace, if the
/// namespace and the device (by name, MAC and lower device) are still
/// there; a namespace already gone took the device with it.
async fn delete_in_container(cni: &CniAttachment, record: &EndpointRecord) {
    let name = record.name.as_str();
    if !netns::exists(&cni.netns) {
        log::info!("{name}: namespace {} already gone", cni.netns.display());
        return;
    }
    let inside = match Netlink::connect_in(&cni.netns) {
        Ok(inside) => inside,
        Err(e) => return log::warn!("{name}: {e}"),
    };
    match inside.link_by_name(cni.ifname.as_str()).await {
        Ok(Some(link)) if link.mac == Some(record.mac.octets()) => {
            if let Err(e) = inside.delete(link.index).await {
                log::warn!("{name}: {e}");
            }
        }
        Ok(_) => log::info!("{name}: {} was already gone", cni.ifname),
        Err(e) => log::warn!("{name}: {e}"),
    }
}

/// Writes the host port's map entries and attaches its programs; returns
/// the attach mode.
pub(crate) fn wire_host_port(
    datapath: &mut Datapath,
    lower: u32,
    port: &HostPortRecord,
) -> Result<AttachMode> {
    write_host_port_maps(&mut datapath.maps, lower, port)?;
    datapath.attach(port.name.as_str(), port.attach)
}

/// The host port's policy and sender entry.
pub(crate) fn write_host_port_maps(
    maps: &mut Maps,
    lower: u32,
    port: &HostPortRecord,
) -> Result<()> {
    maps.set_policy(port.ifindex, &port.policy(lower))?;
    maps.set_source(lower, port.mac, &port.source(lower))
}
