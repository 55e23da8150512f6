//! Endpoint lifecycle: validate, create the macvtap, attach, record; and
//! the reverse. Every change runs under the state lock.

use std::path::PathBuf;

use macvswitch_common::EndpointPolicy;

use crate::{
    error::{Error, Result},
    kernel::bpffs,
    kernel::datapath::{Datapath, Maps, PinLayout},
    kernel::netlink::Stacked,
    kernel::tapdev,
    model::isolation::{Isolation, source_info},
    model::policy::{Pcp, PortOptions, PortVlans, check_priority},
    model::state::{EndpointRecord, RecordStatus, State, StateDir},
    model::types::{IfName, Mac, Mode, Mtu},
    ops::session::Session,
    ops::validate::{check_community, unknown_endpoint, validate_add},
};

/// Where one macvswitch instance keeps its state and pins.
#[derive(Clone, Debug)]
pub struct Instance {
    pub state_dir: StateDir,
    pub pins: PinLayout,
    /// `--mark-mask`: the bits of `skb->mark` macvswitch may use; `None`
    /// keeps the mask in use (or the default on a first load).
    pub mark_mask: Option<u32>,
}

/// `endpoint add`, as typed by the user.
#[derive(Clone, Debug)]
pub struct AddRequest {
    pub name: IfName,
    pub lower: IfName,
    pub mode: Mode,
    pub mac: Option<Mac>,
    pub port: PortOptions,
    pub priority: Option<Pcp>,
    pub mtu: Option<Mtu>,
    pub allow_mac_spoofing: bool,
    pub isolation: Isolation,
}

/// `endpoint set`: policy changes applied in place.
#[derive(Clone, Debug)]
pub struct SetRequest {
    pub name: IfName,
    pub port: PortOptions,
    pub priority: Option<Pcp>,
    pub isolation: Option<Isolation>,
}

impl EndpointRecord {
    pub fn policy(&self) -> EndpointPolicy {
        let mut policy = self
            .vlans
            .to_policy(self.mac, self.priority, self.allow_mac_spoofing);
        policy.lower = self.lower_ifindex;
        policy.slot = self.slot;
        policy.community = self.isolation.community_id();
        policy.flags |= self.isolation.flags();
        policy
    }

    /// The endpoint as a sender, for the isolation checks of others.
    pub fn source(&self) -> macvswitch_common::SourceInfo {
        let policy = self.policy();
        source_info(self.ifindex, self.mode, policy.community, policy.flags)
    }
}

impl Instance {
    pub fn tap_path(&self, name: &IfName) -> PathBuf {
        self.state_dir.dev_dir().join(name.as_str())
    }

    /// Endpoints, leaving out those an interrupted command left half-made
    /// or half-deleted (the next change finishes them); waiting ones are
    /// listed, with their status.
    pub fn list(&self) -> Result<Vec<EndpointRecord>> {
        Ok(self
            .state_dir
            .load()?
            .settled()
            .endpoints
            .into_values()
            .collect())
    }

    pub fn get(&self, name: &IfName) -> Result<EndpointRecord> {
        self.state_dir
            .load()?
            .settled()
            .endpoints
            .remove(name)
            .ok_or_else(|| unknown_endpoint(name))
    }

    /// The counter maps, if the data path was ever loaded here.
    pub fn maps(&self) -> Result<Option<Maps>> {
        if !bpffs::is_bpffs(self.pins.root()) {
            return Ok(None);
        }
        Maps::open(&self.pins)
    }

    pub async fn add(&self, request: AddRequest) -> Result<EndpointRecord> {
        self.session().await?.add(request).await
    }

    pub async fn set(&self, request: SetRequest) -> Result<EndpointRecord> {
        self.session().await?.set(request).await
    }

    pub async fn del(&self, name: &IfName) -> Result<()> {
        self.session().await?.del(name).await
    }

    /// Removes everything this instance created.
    pub async fn reset(&self) -> Result<()> {
        self.session().await?.reset().await
    }
}

impl Session<'_> {
    pub async fn add(&mut self, request: AddRequest) -> Result<EndpointRecord> {
        let mut records = self.add_many(vec![request]).await?;
        Ok(records.pop().expect("one record per request"))
    }

    /// Adds endpoints in one go: every request is checked before anything
    /// changes, the intents are written in one state write, and the state is
    /// written once more at the end, so `apply` of many endpoints costs
    /// about the kernel work alone.
    pub async fn add_many(&mut self, requests: Vec<AddRequest>) -> Result<Vec<EndpointRecord>> {
        let links = self.netlink.links().await?;
        let mut records = Vec::with_capacity(requests.len());
        let mut planned = self.state.clone();
        for request in &requests {
            let vlans = request.port.resolve(&PortVlans::Untagged)?;
            check_priority(&vlans, request.priority)?;
            let (lower, mac, mtu) = validate_add(request, &planned, &links)?;
            check_community(&planned, &request.name, &request.isolation)?;
            let record = EndpointRecord {
                name: request.name.clone(),
                lower: request.lower.clone(),
                mode: request.mode,
                mac,
                vlans,
                priority: request.priority,
                mtu,
                allow_mac_spoofing: request.allow_mac_spoofing,
                ifindex: 0,
                lower_ifindex: lower.index,
                slot: planned.free_slot()?,
                isolation: request.isolation.clone(),
                attach: None,
                status: RecordStatus::Pending,
            };
            if let Some(twin) = planned.endpoints.values().find(|other| {
                other.lower_ifindex == record.lower_ifindex && other.mac == record.mac
            }) {
                return Err(Error::invalid(
                    "--mac",
                    record.mac,
                    format!("already used by {} on {}", twin.name, record.lower),
                ));
            }
            planned
                .endpoints
                .insert(record.name.clone(), record.clone());
            records.push(record);
        }
        self.datapath().await?;
        // Intent first: if we are killed from here on, the next session
        // finds the pending records and rolls the adds back.
        self.state = planned;
        self.save()?;
        // The others on the lower devices check senders before the new
        // ones send, if they need them to.
        let lowers: std::collections::BTreeSet<IfName> =
            records.iter().map(|record| record.lower.clone()).collect();
        for lower in &lowers {
            self.refresh_lower(lower)?;
        }
        if let Err(error) = self.wire_batch(&mut records).await {
            // All or nothing: what was made of the batch goes again.
            for record in &records {
                self.unwire(record).await;
                self.state.endpoints.remove(&record.name);
            }
            self.save()?;
            for lower in &lowers {
                self.refresh_lower(lower)?;
            }
            return Err(error);
        }
        for record in &mut records {
            record.status = RecordStatus::Ready;
            self.state
                .endpoints
                .insert(record.name.clone(), record.clone());
        }
        self.save()?;
        Ok(records)
    }

    /// Creates the macvtaps and attaches everything (see `wire`). The
    /// kernel's TCX attach waits for an RCU grace period under the rtnl
    /// lock (10–20 ms per link here), which bounds how fast a batch goes;
    /// attaching from parallel threads does not help, they queue on the lock.
    async fn wire_batch(&mut self, records: &mut [EndpointRecord]) -> Result<()> {
        for record in records.iter_mut() {
            self.wire(record).await?;
        }
        Ok(())
    }

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
        let link = self
            .netlink
            .create_stacked(
                Stacked::Macvtap,
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
        Ok(())
    }

    /// Wires an existing macvtap (`record.ifindex`) into the data path:
    /// policy and programs first, then the link comes up. Records the
    /// attach mode in `record` and in the state's record of it.
    pub(crate) async fn attach_endpoint(&mut self, record: &mut EndpointRecord) -> Result<()> {
        self.ensure_uplink_program(&record.lower, record.lower_ifindex)
            .await?;
        self.write_maps(record).await?;
        let mode = self
            .datapath()
            .await?
            .attach(record.name.as_str(), record.attach)?;
        record.attach = Some(mode);
        if let Some(recorded) = self.state.endpoints.get_mut(&record.name) {
            recorded.attach = Some(mode);
        }
        self.bring_up(record).await
    }

    async fn write_maps(&mut self, record: &EndpointRecord) -> Result<()> {
        let policy = crate::ops::session::policy_in(&self.state, record);
        let maps = &mut self.datapath().await?.maps;
        maps.set_policy(record.ifindex, &policy)?;
        maps.reset_counters(record.slot)?;
        maps.set_source(record.lower_ifindex, record.mac, &record.source())
    }

    /// The tap node, then the link up.
    async fn bring_up(&mut self, record: &EndpointRecord) -> Result<()> {
        tapdev::create_node(
            &self.instance.state_dir.dev_dir(),
            record.name.as_str(),
            record.ifindex,
        )?;
        self.netlink.bring_up(record.ifindex).await
    }

    /// Changes the VLAN policy or isolation of a live endpoint: one atomic
    /// map update, no relink, the tap fd stays open and other VLANs keep
    /// flowing.
    pub async fn set(&mut self, request: SetRequest) -> Result<EndpointRecord> {
        let record = self
            .state
            .endpoints
            .get(&request.name)
            .filter(|record| record.status.is_ready())
            .cloned()
            .ok_or_else(|| unknown_endpoint(&request.name))?;
        let vlans = request.port.resolve(&record.vlans)?;
        check_priority(&vlans, request.priority)?;
        if let Some(isolation) = &request.isolation {
            check_community(&self.state, &request.name, isolation)?;
        }
        let mut updated = record.clone();
        if let Some(isolation) = &request.isolation {
            updated.isolation = isolation.clone();
        }
        // A port that stops pushing tags drops a stale --priority.
        updated.priority = request
            .priority
            .or(record.priority)
            .filter(|_| vlans.pushes_tags());
        updated.vlans = vlans;
        self.update_in_place(&record, updated).await
    }

    /// Writes a live endpoint's changed policy (VLANs, priority,
    /// isolation, spoofing) into the maps, then records it.
    pub(crate) async fn update_in_place(
        &mut self,
        record: &EndpointRecord,
        updated: EndpointRecord,
    ) -> Result<EndpointRecord> {
        let same_kind = record.vlans.kind() == updated.vlans.kind();
        let pins = self.instance.pins.root().to_path_buf();
        if self.maps()?.is_none() {
            return Err(Error::Refused(format!(
                "no data path pinned under {}; was it reset?",
                pins.display()
            )));
        }
        // In the state first: the lower device's sender checks, and this
        // endpoint's own policy, are computed from it.
        self.state
            .endpoints
            .insert(updated.name.clone(), updated.clone());
        let maps = self.maps()?.expect("checked above");
        maps.set_source(updated.lower_ifindex, updated.mac, &updated.source())?;
        self.refresh_lower(&updated.lower)?;
        let maps = self.maps()?.expect("checked above");
        // Per-VLAN counters of VLANs the port no longer carries go; a
        // tunnel counts customer VLANs, which stay meaningful.
        maps.forget_vlans(updated.ifindex, |vid| {
            same_kind
                && (matches!(updated.vlans, PortVlans::Tunnel { .. })
                    || crate::model::types::Vid::new(vid)
                        .is_some_and(|vid| updated.vlans.carries(vid)))
        })?;
        self.save()?;
        Ok(updated)
    }

    pub async fn del(&mut self, name: &IfName) -> Result<()> {
        let mut record = self
            .state
            .endpoints
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_endpoint(name))?;
        record.status = RecordStatus::Deleting;
        self.state.endpoints.insert(name.clone(), record.clone());
        self.save()?;
        self.unwire(&record).await;
        self.state.endpoints.remove(name);
        self.save()?;
        self.refresh_lower(&record.lower)
    }

    /// Removes everything this instance created.
    pub async fn reset(&mut self) -> Result<()> {
        let endpoints: Vec<_> = self.state.endpoints.values().cloned().collect();
        for record in &endpoints {
            self.unwire(record).await;
        }
        let uplinks: Vec<_> = self.state.uplinks.values().cloned().collect();
        for uplink in &uplinks {
            self.unwire_uplink(uplink).await;
        }
        if bpffs::is_bpffs(self.instance.pins.root()) {
            Datapath::remove_all_pins(&self.instance.pins)?;
        }
        self.state = State::default();
        self.clear()
    }

    /// Undoes whatever part of an endpoint exists. Best effort: each step
    /// runs even if an earlier one failed, and failures are logged.
    pub(crate) async fn unwire(&mut self, record: &EndpointRecord) {
        let name = record.name.as_str();
        self.unwire_device(name, record.ifindex, record.mac, record.lower_ifindex)
            .await;
        self.release_uplink_program(&record.lower, record.lower_ifindex, name);
        if let Err(e) = tapdev::remove_node(&self.instance.tap_path(&record.name)) {
            log::warn!("{name}: {e}");
        }
    }
}

impl Session<'_> {
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
}
