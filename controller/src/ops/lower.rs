//! The lower devices' side of the wiring: the egress program every lower
//! device with endpoints carries (tags carried in the mark, relay
//! emulation), and re-wiring everything to a freshly loaded data path.

use std::collections::BTreeMap;

use crate::{
    error::Result,
    kernel::{
        datapath::{Datapath, Hook},
        netns,
        sys::is_live,
    },
    model::{
        state::{CniAttachment, RecordStatus, UplinkRecord},
        types::{AttachMode, IfName},
    },
    ops::{cni::is_live_in, session::Session, wiring::write_host_port_maps},
};

impl Session<'_> {
    /// Re-wires everything recorded to freshly loaded programs and maps,
    /// each hook in the mode it has (TCX link swapped, clsact filter
    /// replaced in place), in an order where no frame is misread across
    /// the swap: every port's ingress program first (the new one reads tags
    /// carried in the mark and pushed tags alike), then the lower devices'
    /// egress programs, then the ports' egress programs, and only then may
    /// tags travel in the mark. Records the modes. Links that are gone, or
    /// replaced by others under the same name, are left to `restore`.
    pub(crate) fn reattach(&mut self, datapath: &mut Datapath) -> Result<()> {
        // Every live port, with the mode its ingress hook got.
        let mut ports: Vec<(IfName, AttachMode, Option<CniAttachment>)> = Vec::new();
        let mut lowers: BTreeMap<IfName, u32> = BTreeMap::new();
        let names: Vec<IfName> = self.state.endpoints.keys().cloned().collect();
        for name in &names {
            let record = &self.state.endpoints[name];
            let live = match &record.cni {
                Some(cni) => is_live_in(&cni.netns, cni.ifname.as_str(), record.ifindex),
                None => is_live(record.name.as_str(), record.ifindex),
            };
            if record.status != RecordStatus::Ready || !live {
                continue;
            }
            datapath
                .maps
                .set_policy(record.ifindex, &self.state.policy_of(record))?;
            datapath
                .maps
                .set_source(record.lower_ifindex, record.mac, &record.source())?;
            lowers.insert(record.lower.clone(), record.lower_ifindex);
            let cni = record.cni.clone();
            let mode = attach_hook_at(datapath, name, cni.as_ref(), Hook::ToGuest, record.attach)?;
            if let Some(record) = self.state.endpoints.get_mut(name) {
                record.attach = Some(mode);
            }
            ports.push((name.clone(), mode, cni));
        }
        let uplinks: Vec<IfName> = self.state.uplinks.keys().cloned().collect();
        for lower in &uplinks {
            let uplink = self.state.uplinks[lower].clone();
            if !is_live(uplink.name.as_str(), uplink.ifindex) {
                continue;
            }
            datapath
                .maps
                .set_relay(uplink.ifindex, uplink.reflective_relay)?;
            if uplink.reflective_relay {
                lowers.insert(lower.clone(), uplink.ifindex);
            }
            if let Some(port) = uplink
                .host_port
                .as_ref()
                .filter(|p| p.status.is_ready() && is_live(p.name.as_str(), p.ifindex))
            {
                write_host_port_maps(&mut datapath.maps, uplink.ifindex, port)?;
                let mode = datapath.attach_hook(port.name.as_str(), Hook::ToGuest, port.attach)?;
                if let Some(port) = self
                    .state
                    .uplinks
                    .get_mut(lower)
                    .and_then(|u| u.host_port.as_mut())
                {
                    port.attach = Some(mode);
                }
                lowers.insert(lower.clone(), uplink.ifindex);
                ports.push((port.name.clone(), mode, None));
            }
        }
        lowers.retain(|name, ifindex| is_live(name.as_str(), *ifindex));
        for (lower, ifindex) in &lowers {
            self.attach_uplink_program(datapath, lower, *ifindex, false)?;
        }
        for (name, mode, cni) in &ports {
            attach_hook_at(datapath, name, cni.as_ref(), Hook::FromGuest, Some(*mode))?;
            log::info!("{name}: attached to the loaded data path");
        }
        for (lower, ifindex) in &lowers {
            let in_mark = self.state.tags_may_ride_in_mark(lower);
            datapath.maps.set_tags_from_mark(*ifindex, in_mark)?;
        }
        Ok(())
    }
}

/// Attaches one hook of port `name`, whose device is in a container's
/// namespace under another name if it is a CNI endpoint.
fn attach_hook_at(
    datapath: &mut Datapath,
    name: &IfName,
    cni: Option<&CniAttachment>,
    hook: Hook,
    prefer: Option<AttachMode>,
) -> Result<AttachMode> {
    match cni {
        Some(cni) => netns::run_in(&cni.netns, || {
            datapath.attach_hook_as(name.as_str(), cni.ifname.as_str(), hook, prefer)
        }),
        None => datapath.attach_hook(name.as_str(), hook, prefer),
    }
}

impl Session<'_> {
    /// Attaches the egress program of lower device `lower` if it is not
    /// there yet, then lets its endpoints carry their tags in the mark.
    pub(crate) async fn ensure_uplink_program(
        &mut self,
        lower: &IfName,
        ifindex: u32,
    ) -> Result<()> {
        let mut datapath = self.take_datapath()?;
        let attached = self.attach_uplink_program(&mut datapath, lower, ifindex, true);
        self.datapath = Some(datapath);
        attached
    }

    /// Attaches (or swaps in) the egress program of `lower`; a clsact qdisc
    /// the attach is going to create is recorded as ours first. With
    /// `raise_flag`, endpoints may carry tags in the mark afterwards; an
    /// attached program and a raised flag are left as they are.
    fn attach_uplink_program(
        &mut self,
        datapath: &mut Datapath,
        lower: &IfName,
        ifindex: u32,
        raise_flag: bool,
    ) -> Result<()> {
        if raise_flag && !self.state.tags_may_ride_in_mark(lower) {
            datapath.maps.set_tags_from_mark(ifindex, false)?;
        }
        let raise_flag = raise_flag && self.state.tags_may_ride_in_mark(lower);
        // A lower device recreated under a new ifindex keeps a stale pin:
        // the flag at its current ifindex tells.
        if raise_flag
            && let Some(mode) = Datapath::uplink_mode(&self.instance.pins, lower.as_str())
            && datapath.maps.tags_from_mark(ifindex)?
        {
            if let Some(uplink) = self.state.uplinks.get_mut(lower) {
                uplink.attach = Some(mode);
            }
            return Ok(());
        }
        let prefer = self.state.uplinks.get(lower).and_then(|u| u.attach);
        if !self.state.own_qdiscs.contains(lower)
            && datapath.uplink_would_create_qdisc(lower.as_str(), prefer)?
        {
            self.state.own_qdiscs.insert(lower.clone());
            self.save()?;
        }
        let attached = datapath.attach_uplink(lower.as_str(), prefer)?;
        if let Some(uplink) = self.state.uplinks.get_mut(lower) {
            uplink.attach = Some(attached.mode);
        }
        if raise_flag {
            datapath.maps.set_tags_from_mark(ifindex, true)?;
        }
        Ok(())
    }

    /// Detaches the egress program of `lower` once nothing recorded on it
    /// needs it (`leaving` is on its way out): endpoints first push their
    /// tags themselves again, then the program goes, and the clsact qdisc
    /// if macvswitch made it. Best effort, logged.
    pub(crate) fn release_uplink_program(&mut self, lower: &IfName, ifindex: u32, leaving: &str) {
        if self.state.lower_in_use(lower, leaving) {
            return;
        }
        match self.maps() {
            Ok(Some(maps)) => {
                if let Err(e) = maps.set_tags_from_mark(ifindex, false) {
                    log::warn!("{lower}: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!("{lower}: {e}"),
        }
        let own_qdisc = self.state.owns_qdisc(lower);
        if let Err(e) = Datapath::detach_uplink(&self.instance.pins, lower.as_str(), own_qdisc) {
            log::warn!("{lower}: {e}");
            return;
        }
        self.state.own_qdiscs.remove(lower);
        if let Some(uplink) = self.state.uplinks.get_mut(lower) {
            uplink.attach = None;
            uplink.own_clsact = false;
        }
        if let Err(e) = self.save() {
            log::warn!("{lower}: {e}");
        }
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
}
