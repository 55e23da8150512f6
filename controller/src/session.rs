//! A session: the state lock held, the state loaded, a netlink socket and
//! (on demand) the data path. Every change to what macvswitch manages runs
//! in one, so concurrent invocations serialize; a multi-step command such
//! as `apply` runs all its steps in a single session.
//!
//! Opening a session first repairs what an interrupted command left: a
//! `kill -9` at any point leaves either a finished step, or a record marked
//! `Pending` (an `add` in flight, rolled back) or `Deleting` (a `del` in
//! flight, finished), and every live endpoint gets its recorded policy
//! written again (a `set` whose state write was lost).

use macvswitch_common::{
    EndpointPolicy, POLICY_CHECK_SENDERS, UplinkConfig, isolation::UPLINK_REFLECTIVE_RELAY,
};

use crate::{
    bpffs,
    datapath::{Datapath, Maps},
    endpoint::Instance,
    error::Result,
    isolation::Isolation,
    netlink::Netlink,
    state::{EndpointRecord, RecordStatus, State, StateLock},
    types::{IfName, Mode},
};

pub struct Session<'a> {
    pub(crate) instance: &'a Instance,
    lock: StateLock,
    pub state: State,
    pub(crate) netlink: Netlink,
    datapath: Option<Datapath>,
    /// The pinned maps, when they were needed without the programs.
    opened_maps: Option<Maps>,
}

impl Instance {
    /// Takes the lock, loads the state and repairs interrupted commands.
    pub async fn session(&self) -> Result<Session<'_>> {
        let lock = self.state_dir.lock()?;
        let state = self.state_dir.load()?;
        let mut session = Session {
            instance: self,
            lock,
            state,
            netlink: Netlink::connect()?,
            datapath: None,
            opened_maps: None,
        };
        session.repair().await?;
        Ok(session)
    }
}

impl Session<'_> {
    /// Writes the state atomically.
    pub fn save(&self) -> Result<()> {
        self.instance.state_dir.save(&self.lock, &self.state)
    }

    /// Removes the state file and tap nodes (for `reset`).
    pub fn clear(&self) -> Result<()> {
        self.instance.state_dir.clear(&self.lock)
    }

    /// The data path, loaded (and everything recorded re-attached) if this
    /// is the first use since a reset or a reboot.
    pub async fn datapath(&mut self) -> Result<&mut Datapath> {
        if self.datapath.is_none() {
            let mut datapath = self.open_datapath(false)?;
            if datapath.fresh {
                self.reattach(&mut datapath)?;
            }
            self.opened_maps = None;
            self.datapath = Some(datapath);
        }
        Ok(self.datapath.as_mut().expect("just set"))
    }

    /// Loads a fresh copy of the programs and swaps every link to it
    /// atomically (what a new binary does by itself).
    pub async fn reload(&mut self) -> Result<()> {
        let mut datapath = self.open_datapath(true)?;
        self.reattach(&mut datapath)?;
        self.opened_maps = None;
        self.datapath = Some(datapath);
        self.save()
    }

    /// Checks the kernel, then adopts the pinned data path or loads one
    /// (`fresh_copy`: always load). A kernel that lacks something fails
    /// here, before a device or the state changes; a data path loaded just
    /// for this command goes again.
    fn open_datapath(&mut self, fresh_copy: bool) -> Result<Datapath> {
        Datapath::check_kernel()?;
        bpffs::prepare(self.instance.pins.root())?;
        let pins = self.instance.pins.clone();
        let datapath = if fresh_copy {
            Datapath::load(pins)?
        } else {
            Datapath::open_or_load(pins)?
        };
        if let Err(error) = datapath.check_attach_path() {
            let nothing_recorded = self.state.endpoints.is_empty() && self.state.uplinks.is_empty();
            if datapath.fresh && nothing_recorded {
                drop(datapath);
                Datapath::remove_all_pins(&self.instance.pins)?;
            }
            return Err(error);
        }
        Ok(datapath)
    }

    /// The maps, if a data path is pinned; never loads one.
    pub fn maps(&mut self) -> Result<Option<&mut Maps>> {
        if self.datapath.is_none() && self.opened_maps.is_none() {
            self.opened_maps = self.instance.maps()?;
        }
        Ok(match &mut self.datapath {
            Some(datapath) => Some(&mut datapath.maps),
            None => self.opened_maps.as_mut(),
        })
    }
}

impl Session<'_> {
    /// Finishes or rolls back what interrupted commands left, and writes
    /// every live endpoint's recorded policy again.
    async fn repair(&mut self) -> Result<()> {
        let interrupted: Vec<_> = self
            .state
            .endpoints
            .values()
            .filter(|record| {
                matches!(
                    record.status,
                    RecordStatus::Pending | RecordStatus::Deleting
                )
            })
            .cloned()
            .collect();
        for record in &interrupted {
            log::warn!(
                "{}: finishing an interrupted {}",
                record.name,
                match record.status {
                    RecordStatus::Pending => "add (rolling it back)",
                    _ => "del",
                }
            );
            self.unwire(record).await;
            self.state.endpoints.remove(&record.name);
        }
        let interrupted_ports: Vec<_> = self
            .state
            .uplinks
            .values()
            .filter_map(|uplink| {
                let port = uplink.host_port.as_ref()?;
                matches!(port.status, RecordStatus::Pending | RecordStatus::Deleting)
                    .then(|| (uplink.clone(), port.clone()))
            })
            .collect();
        for (uplink, port) in &interrupted_ports {
            log::warn!("{}: finishing an interrupted host port change", port.name);
            self.unwire_host_port(uplink, port).await;
            if let Some(uplink) = self.state.uplinks.get_mut(&uplink.name) {
                uplink.host_port = None;
            }
        }
        if !interrupted.is_empty() || !interrupted_ports.is_empty() {
            self.save()?;
        }
        self.rewrite_policies().await
    }

    /// Writes the recorded policy of every endpoint whose macvtap is still
    /// the one recorded: a `set` killed between the map update and the
    /// state write is undone, so the state file stays the truth.
    async fn rewrite_policies(&mut self) -> Result<()> {
        if self.state.endpoints.is_empty() {
            return Ok(());
        }
        let links = self.netlink.links().await?;
        let live: Vec<_> = self
            .state
            .endpoints
            .values()
            .filter(|record| {
                record.status.is_ready()
                    && links.iter().any(|link| {
                        link.index == record.ifindex && link.name == record.name.as_str()
                    })
            })
            .map(|record| (record.clone(), policy_in(&self.state, record)))
            .collect();
        if let Some(maps) = self.maps()? {
            for (record, policy) in live {
                maps.set_policy(record.ifindex, &policy)?;
                maps.set_source(record.lower_ifindex, record.mac, &record.source())?;
            }
        }
        Ok(())
    }
}

/// An endpoint's map value in the context of its lower device: sender
/// checks are only switched on where some endpoint could be kept apart or
/// get its own frames back (any isolation, any mode but bridge).
pub(crate) fn policy_in(state: &State, record: &EndpointRecord) -> EndpointPolicy {
    let mut policy = record.policy();
    let needs_checks = state.endpoints.values().any(|other| {
        other.lower == record.lower
            && (other.isolation != Isolation::Open || other.mode != Mode::Bridge)
    });
    if needs_checks {
        policy.flags |= POLICY_CHECK_SENDERS;
    }
    policy
}

impl Session<'_> {
    /// Rewrites the policies of the live endpoints on `lower`, after a
    /// change that may switch its sender checks on or off.
    pub(crate) fn refresh_lower(&mut self, lower: &IfName) -> Result<()> {
        let policies: Vec<(u32, EndpointPolicy)> = self
            .state
            .endpoints
            .values()
            .filter(|record| record.lower == *lower && record.status.is_ready())
            .map(|record| (record.ifindex, policy_in(&self.state, record)))
            .collect();
        if let Some(maps) = self.maps()? {
            for (ifindex, policy) in policies {
                maps.set_policy(ifindex, &policy)?;
            }
        }
        Ok(())
    }
}

impl Session<'_> {
    /// Re-wires everything recorded to freshly loaded programs and maps,
    /// each hook in the mode it has (TCX link swapped, clsact filter
    /// replaced in place); records the modes. Links that are gone, or
    /// replaced by others under the same name, are left to `restore`.
    fn reattach(&mut self, datapath: &mut Datapath) -> Result<()> {
        let names: Vec<IfName> = self.state.endpoints.keys().cloned().collect();
        for name in &names {
            let record = &self.state.endpoints[name];
            if record.status != RecordStatus::Ready
                || !is_live(record.name.as_str(), record.ifindex)
            {
                continue;
            }
            datapath
                .maps
                .set_policy(record.ifindex, &policy_in(&self.state, record))?;
            datapath
                .maps
                .set_source(record.lower_ifindex, record.mac, &record.source())?;
            let mode = datapath.attach(name.as_str(), record.attach)?;
            if let Some(record) = self.state.endpoints.get_mut(name) {
                record.attach = Some(mode);
            }
            log::info!("{name}: attached to the loaded data path");
        }
        let lowers: Vec<IfName> = self.state.uplinks.keys().cloned().collect();
        for lower in &lowers {
            let mut uplink = self.state.uplinks[lower].clone();
            if uplink.reflective_relay && is_live(uplink.name.as_str(), uplink.ifindex) {
                let config = UplinkConfig {
                    flags: UPLINK_REFLECTIVE_RELAY,
                };
                datapath.maps.set_uplink(uplink.ifindex, Some(config))?;
                if !uplink.own_clsact
                    && datapath.uplink_would_create_qdisc(lower.as_str(), uplink.attach)?
                {
                    // Recorded before it exists, as in `attach_relay`.
                    uplink.own_clsact = true;
                    self.state.uplinks.insert(lower.clone(), uplink.clone());
                    self.save()?;
                }
                let attached = datapath.attach_uplink(lower.as_str(), uplink.attach)?;
                uplink.attach = Some(attached.mode);
                uplink.own_clsact |= attached.created_qdisc;
            }
            if let Some(port) = uplink
                .host_port
                .as_mut()
                .filter(|p| p.status.is_ready() && is_live(p.name.as_str(), p.ifindex))
            {
                port.attach = Some(crate::uplink::wire_host_port(
                    datapath,
                    uplink.ifindex,
                    port,
                )?);
            }
            self.state.uplinks.insert(lower.clone(), uplink);
        }
        Ok(())
    }
}

/// Whether this network namespace has link `name` with `ifindex`.
fn is_live(name: &str, ifindex: u32) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        == Some(ifindex)
}
