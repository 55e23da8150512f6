//! Converging the kernel to the state file after what hosts do: reboots,
//! `ip link del` by hand, lower devices that go and come back.

use std::collections::{BTreeMap, BTreeSet};

use rtnetlink::packet_route::link::InfoKind;

use crate::{
    error::Result,
    kernel::{datapath::Datapath, netlink::Link, netns, sys::current_boot_id},
    model::{
        state::{EndpointRecord, HostPortRecord, RecordStatus, UplinkRecord},
        types::{IfName, Mac},
    },
    ops::{
        cni::cni_device_present, session::Session, validate::lower_device, wiring::wire_host_port,
    },
};

/// What `restore` did, by endpoint or host-port name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Recreated with their recorded name, MAC and policy.
    pub recreated: Vec<String>,
    /// Recreated by hand under a recorded name: taken over.
    pub adopted: Vec<String>,
    /// Deleted out of band while their lower device exists: forgotten.
    pub removed: Vec<String>,
    /// Their lower device is gone: kept until it is back.
    pub waiting: Vec<String>,
    /// Could not be recreated, with why; kept and tried again next time.
    pub failed: Vec<String>,
}

impl RestoreReport {
    pub fn is_empty(&self) -> bool {
        self.recreated.is_empty()
            && self.adopted.is_empty()
            && self.removed.is_empty()
            && self.waiting.is_empty()
            && self.failed.is_empty()
    }

    /// One line per change, for logs.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut add = |names: &[String], what: &str| {
            lines.extend(names.iter().map(|name| format!("{name}: {what}")));
        };
        add(&self.recreated, "recreated");
        add(&self.adopted, "re-adopted (recreated by hand)");
        add(&self.removed, "deleted out of band: cleaned up");
        add(&self.waiting, "lower device gone: waiting for it");
        lines.extend(self.failed.iter().cloned());
        lines
    }
}

/// The link of a recorded device right now.
enum Presence<'a> {
    /// The recorded link, on the recorded lower device.
    Same(&'a Link),
    /// A link of our kind under the recorded name, but another one.
    Replaced(&'a Link),
    /// Nothing under the recorded name.
    Missing,
    /// Something else holds the name.
    Foreign,
}

fn presence<'a>(
    links: &'a [Link],
    name: &str,
    ifindex: u32,
    lower: u32,
    kind: &InfoKind,
) -> Presence<'a> {
    match links.iter().find(|link| link.name == name) {
        None => Presence::Missing,
        Some(link) if link.kind.as_ref() != Some(kind) || link.lower != Some(lower) => {
            Presence::Foreign
        }
        Some(link) if link.index == ifindex => Presence::Same(link),
        Some(link) => Presence::Replaced(link),
    }
}

impl Session<'_> {
    /// Makes the kernel match the state file, and the state file match
    /// what was deliberately removed. Idempotent; cheap when all is well.
    pub async fn restore(&mut self) -> Result<RestoreReport> {
        let mut report = RestoreReport::default();
        let rebooted = self
            .state
            .boot_id
            .as_ref()
            .is_some_and(|recorded| Some(recorded) != current_boot_id().as_ref());
        let links = self.netlink.links().await?;
        let endpoints: Vec<EndpointRecord> = self
            .state
            .endpoints
            .values()
            .filter(|r| matches!(r.status, RecordStatus::Ready | RecordStatus::Waiting))
            .cloned()
            .collect();
        let progress = self.instance.progress.clone();
        let steps = progress.begin("restoring endpoints", endpoints.len());
        for record in endpoints {
            self.restore_endpoint(record, &links, rebooted, &mut report)
                .await?;
            steps.step();
        }
        drop(steps);
        let uplinks: Vec<UplinkRecord> = self.state.uplinks.values().cloned().collect();
        for uplink in uplinks {
            self.restore_uplink(uplink, &links, rebooted, &mut report)
                .await?;
        }
        self.restore_uplink_programs(&links).await?;
        if !report.is_empty() || rebooted {
            self.save()?;
            let lowers: BTreeSet<_> = self
                .state
                .endpoints
                .values()
                .map(|r| r.lower.clone())
                .collect();
            for lower in lowers {
                self.refresh_lower(&lower)?;
            }
        }
        Ok(report)
    }

    /// The egress program of every lower device with live endpoints: one
    /// removed behind macvswitch's back (its pin or clsact filter deleted)
    /// would let tags carried in the mark leave untagged, so its endpoints
    /// push their tags themselves again at once, and then it is put back.
    async fn restore_uplink_programs(&mut self, links: &[Link]) -> Result<()> {
        let lowers: BTreeMap<IfName, u32> = self
            .state
            .endpoints
            .values()
            .filter(|r| r.status.is_ready())
            .filter(|r| {
                lower_device(links, r.lower.as_str()).map(|l| l.index) == Some(r.lower_ifindex)
            })
            .map(|r| (r.lower.clone(), r.lower_ifindex))
            .collect();
        for (lower, ifindex) in lowers {
            if Datapath::is_uplink_attached(&self.instance.pins, lower.as_str()) {
                continue;
            }
            log::warn!(
                "{lower}: its egress program is gone; endpoints push their tags until it is back"
            );
            if let Some(maps) = self.maps()? {
                maps.set_tags_from_mark(ifindex, false)?;
            }
            self.ensure_uplink_program(&lower, ifindex).await?;
        }
        Ok(())
    }

    async fn restore_endpoint(
        &mut self,
        mut record: EndpointRecord,
        links: &[Link],
        rebooted: bool,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let name = record.name.to_string();
        if let Some(cni) = record.cni.clone() {
            // A container's device is the runtime's to make again: one gone
            // with its namespace or its lower device is cleaned up, never
            // recreated here.
            let lower_there = lower_device(links, record.lower.as_str())
                .is_some_and(|lower| lower.index == record.lower_ifindex);
            if lower_there && cni_device_present(&cni, &record).await {
                let ifname = cni.ifname.as_str();
                let attached = netns::run_in(&cni.netns, || {
                    Ok(Datapath::is_attached_as(&self.instance.pins, &name, ifname))
                })?;
                if !attached {
                    self.attach_endpoint(&mut record).await?;
                    self.state.endpoints.insert(record.name.clone(), record);
                    report.adopted.push(name);
                }
            } else {
                self.unwire(&record).await;
                self.state.endpoints.remove(&record.name);
                report.removed.push(name);
            }
            return Ok(());
        }
        let Some(lower) = lower_device(links, record.lower.as_str()) else {
            if record.status != RecordStatus::Waiting {
                // Its macvtap went with the lower device; clear the rest.
                self.unwire(&record).await;
                record.status = RecordStatus::Waiting;
                self.state.endpoints.insert(record.name.clone(), record);
                report.waiting.push(name);
            }
            return Ok(());
        };
        match presence(
            links,
            &name,
            record.ifindex,
            lower.index,
            &InfoKind::MacVtap,
        ) {
            Presence::Same(_) if record.status == RecordStatus::Ready => {
                if !Datapath::is_attached(&self.instance.pins, &name) {
                    self.attach_endpoint(&mut record).await?;
                }
            }
            Presence::Same(link) | Presence::Replaced(link) => {
                self.unwire_maps(&record);
                // Another device than the one recorded: `--attach` decides.
                record.attach = None;
                record.ifindex = link.index;
                record.lower_ifindex = lower.index;
                if let Some(mac) = link.mac.and_then(Mac::new) {
                    record.mac = mac;
                }
                record.status = RecordStatus::Ready;
                self.attach_endpoint(&mut record).await?;
                self.state.endpoints.insert(record.name.clone(), record);
                report.adopted.push(name);
            }
            Presence::Missing if rebooted || record.status == RecordStatus::Waiting => {
                self.unwire(&record).await;
                record.lower_ifindex = lower.index;
                record.ifindex = 0;
                if let Err(error) = self.wire(&mut record).await {
                    self.unwire(&record).await;
                    report
                        .failed
                        .push(format!("{name}: could not recreate: {error}"));
                    return Ok(());
                }
                record.status = RecordStatus::Ready;
                self.state.endpoints.insert(record.name.clone(), record);
                report.recreated.push(name);
            }
            Presence::Missing => {
                self.unwire(&record).await;
                self.state.endpoints.remove(&record.name);
                report.removed.push(name);
            }
            Presence::Foreign => {
                log::warn!(
                    "{name}: the name is held by a device macvswitch did not make; leaving it"
                );
            }
        }
        Ok(())
    }

    async fn restore_uplink(
        &mut self,
        mut uplink: UplinkRecord,
        links: &[Link],
        rebooted: bool,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let Some(lower) = lower_device(links, uplink.name.as_str()).cloned() else {
            if let Some(stale) = uplink
                .host_port
                .clone()
                .filter(|port| port.status != RecordStatus::Waiting)
            {
                self.unwire_host_port(&uplink, &stale).await;
                report.waiting.push(stale.name.to_string());
                uplink.host_port = Some(HostPortRecord {
                    status: RecordStatus::Waiting,
                    ..stale
                });
                self.state.uplinks.insert(uplink.name.clone(), uplink);
            }
            return Ok(());
        };
        let moved = lower.index != uplink.ifindex;
        if uplink.reflective_relay
            && (moved || !Datapath::is_uplink_attached(&self.instance.pins, uplink.name.as_str()))
        {
            let old = uplink.ifindex;
            self.datapath().await?.maps.set_relay(old, false)?;
            if moved {
                // A new device: the qdisc macvswitch made went with the old
                // one, and `--attach` decides its mode.
                uplink.own_clsact = false;
                uplink.attach = None;
            }
            uplink.ifindex = lower.index;
            self.attach_relay(&mut uplink).await?;
            self.state
                .uplinks
                .insert(uplink.name.clone(), uplink.clone());
        }
        if moved {
            uplink.ifindex = lower.index;
            self.state
                .uplinks
                .insert(uplink.name.clone(), uplink.clone());
        }
        let Some(port) = uplink.host_port.clone() else {
            return Ok(());
        };
        let name = port.name.to_string();
        match presence(links, &name, port.ifindex, lower.index, &InfoKind::MacVlan) {
            Presence::Same(_) if port.status == RecordStatus::Ready => {
                if !Datapath::is_attached(&self.instance.pins, &name) {
                    self.ensure_uplink_program(&uplink.name, lower.index)
                        .await?;
                    wire_host_port(self.datapath().await?, lower.index, &port)?;
                }
            }
            Presence::Missing if !(rebooted || moved || port.status == RecordStatus::Waiting) => {
                self.unwire_host_port(&uplink, &port).await;
                uplink.host_port = None;
                self.state.uplinks.insert(uplink.name.clone(), uplink);
                report.removed.push(name);
            }
            Presence::Foreign => {
                log::warn!(
                    "{name}: the name is held by a device macvswitch did not make; leaving it"
                );
            }
            // Recreated by hand, or to be recreated: either way, make it anew.
            _ => {
                self.unwire_host_port(&uplink, &port).await;
                let mut fresh = port.clone();
                fresh.ifindex = 0;
                let mtu = lower.mtu.unwrap_or(1500);
                if let Err(error) = self.wire_new_host_port(&uplink, &mut fresh, mtu).await {
                    self.unwire_host_port(&uplink, &fresh).await;
                    report
                        .failed
                        .push(format!("{name}: could not recreate: {error}"));
                    return Ok(());
                }
                fresh.status = RecordStatus::Ready;
                uplink.host_port = Some(fresh);
                self.state.uplinks.insert(uplink.name.clone(), uplink);
                report.recreated.push(name);
            }
        }
        Ok(())
    }

    /// Forgets an endpoint's map entries (for a re-adoption under a new
    /// ifindex).
    fn unwire_maps(&mut self, record: &EndpointRecord) {
        if let Ok(Some(maps)) = self.maps()
            && let Err(e) = maps
                .remove(record.ifindex)
                .and_then(|()| maps.remove_source(record.lower_ifindex, record.mac))
        {
            log::warn!("{}: {e}", record.name);
        }
    }
}
