//! The endpoint verbs: `endpoint add|set|del` and `reset`, each in one
//! session, every request checked (`validate.rs`) before anything changes.

use std::collections::BTreeSet;

use crate::{
    error::{Error, Result},
    kernel::{bpffs, datapath::Datapath},
    model::{
        policy::PortVlans,
        spec::EndpointSpec,
        state::{EndpointRecord, RecordStatus, State},
        types::{IfName, Vid},
    },
    ops::{
        handoff::{holders_text, tap_holders, tap_holders_of},
        requests::SetRequest,
        session::Session,
        validate::{check_community, check_mac_twin, unknown_endpoint, validate_add},
    },
};

impl Session<'_> {
    pub async fn add(&mut self, spec: EndpointSpec) -> Result<EndpointRecord> {
        let name = spec.name.clone();
        let mut records = self.add_many(vec![spec]).await?;
        records
            .pop()
            .ok_or_else(|| Error::Refused(format!("{name}: adding it made no record")))
    }

    /// Adds endpoints in one go: every request is checked before anything
    /// changes, the intents are written in one state write, and the state is
    /// written once more at the end, so `apply` of many endpoints costs
    /// about the kernel work alone.
    pub async fn add_many(&mut self, specs: Vec<EndpointSpec>) -> Result<Vec<EndpointRecord>> {
        let links = self.netlink.links().await?;
        let mut records = Vec::with_capacity(specs.len());
        let mut planned = self.state.clone();
        for spec in specs {
            let (lower, mac, mtu) = validate_add(&spec, &planned, &links)?;
            check_community(&planned, &spec.name, &spec.isolation)?;
            let record = EndpointRecord {
                name: spec.name,
                lower: spec.lower,
                mode: spec.mode,
                mac,
                vlans: spec.vlans,
                priority: spec.priority,
                mtu,
                allow_mac_spoofing: spec.allow_mac_spoofing,
                ifindex: 0,
                lower_ifindex: lower.index,
                slot: planned.free_slot()?,
                isolation: spec.isolation,
                guards: spec.guards,
                attach: None,
                status: RecordStatus::Pending,
                device: spec.device,
                cni: spec.cni,
            };
            check_mac_twin(&planned, &record)?;
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
        let lowers: BTreeSet<IfName> = records.iter().map(|record| record.lower.clone()).collect();
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
        let progress = self.instance.progress.clone();
        let steps = progress.begin("creating endpoints", records.len());
        for record in records.iter_mut() {
            self.wire(record).await?;
            steps.step();
        }
        Ok(())
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
        let vlans = request.port.port(&record.vlans, request.priority)?;
        if let Some(isolation) = &request.isolation {
            check_community(&self.state, &request.name, isolation)?;
        }
        let mut updated = record.clone();
        if let Some(isolation) = &request.isolation {
            updated.isolation = isolation.clone();
        }
        // A port that stops pushing tags drops a stale --priority.
        let kept = record.priority.filter(|_| !request.clear_priority);
        updated.priority = request.priority.or(kept).filter(|_| vlans.pushes_tags());
        updated.vlans = vlans;
        if let Some(allow) = request.allow_mac_spoofing {
            updated.allow_mac_spoofing = allow;
        }
        request.guards.apply_to(&mut updated.guards);
        self.update_in_place(&record, updated).await
    }

    /// Writes a live endpoint's changed policy (VLANs, priority,
    /// isolation, spoofing, guards) into the maps, then records it.
    pub(crate) async fn update_in_place(
        &mut self,
        record: &EndpointRecord,
        updated: EndpointRecord,
    ) -> Result<EndpointRecord> {
        let same_kind = record.vlans.kind() == updated.vlans.kind();
        // Refused before the state changes if there are no maps to write.
        self.pinned_maps()?;
        // In the state first: the lower device's sender checks, and this
        // endpoint's own policy, are computed from it.
        self.state
            .endpoints
            .insert(updated.name.clone(), updated.clone());
        self.pinned_maps()?
            .set_source(updated.lower_ifindex, updated.mac, &updated.source())?;
        self.refresh_lower(&updated.lower)?;
        // Per-VLAN counters of VLANs the port no longer carries go; a
        // tunnel counts customer VLANs, which stay meaningful.
        self.pinned_maps()?.forget_vlans(updated.ifindex, |vid| {
            same_kind
                && (matches!(updated.vlans, PortVlans::Tunnel { .. })
                    || Vid::new(vid).is_some_and(|vid| updated.vlans.carries(vid)))
        })?;
        self.save()?;
        Ok(updated)
    }

    /// Deletes an endpoint; one whose tap a process holds open only with
    /// `force`, since its guest loses its network.
    pub async fn del(&mut self, name: &IfName, force: bool) -> Result<EndpointRecord> {
        let mut record = self
            .state
            .endpoints
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_endpoint(name))?;
        let holders = tap_holders(&record);
        if !force && !holders.is_empty() {
            return Err(Error::invalid(
                "NAME",
                name,
                format!(
                    "its tap is open in {}; stop that first, or add --force to delete it anyway",
                    holders_text(&holders)
                ),
            ));
        }
        record.status = RecordStatus::Deleting;
        self.state.endpoints.insert(name.clone(), record.clone());
        self.save()?;
        self.unwire(&record).await;
        self.state.endpoints.remove(name);
        self.save()?;
        self.refresh_lower(&record.lower)?;
        Ok(record)
    }

    /// Removes everything this instance created; endpoints whose tap a
    /// process holds open only with `force`.
    pub async fn reset(&mut self, force: bool) -> Result<ResetReport> {
        let endpoints: Vec<_> = self.state.endpoints.values().cloned().collect();
        let in_use: Vec<String> = tap_holders_of(&endpoints)
            .iter()
            .map(|(name, holders)| format!("{name} (open in {})", holders_text(holders)))
            .collect();
        if !force && !in_use.is_empty() {
            return Err(Error::invalid(
                "reset",
                "",
                format!(
                    "endpoints in use: {}; stop those first, or add --force to remove everything \
                     anyway",
                    in_use.join(", ")
                ),
            ));
        }
        let progress = self.instance.progress.clone();
        let steps = progress.begin("removing endpoints", endpoints.len());
        for record in &endpoints {
            self.unwire(record).await;
            steps.step();
        }
        drop(steps);
        let uplinks: Vec<_> = self.state.uplinks.values().cloned().collect();
        for uplink in &uplinks {
            self.unwire_uplink(uplink).await;
        }
        if bpffs::is_bpffs(self.instance.pins.root()) {
            Datapath::remove_all_pins(&self.instance.pins)?;
        }
        self.state = State::default();
        self.clear()?;
        Ok(ResetReport {
            endpoints: endpoints.len(),
            host_ports: uplinks.iter().filter(|u| u.host_port.is_some()).count(),
        })
    }
}

/// What `reset` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    pub endpoints: usize,
    pub host_ports: usize,
}

impl std::fmt::Display for ResetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        write!(f, "reset: removed {}", plural(self.endpoints, "endpoint"))?;
        if self.host_ports > 0 {
            write!(f, " and {}", plural(self.host_ports, "host port"))?;
        }
        Ok(())
    }
}
