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

use macvswitch_common::{EndpointPolicy, MarkCarriage, carriage};

use crate::{
    error::{Error, Result},
    kernel::{
        bpffs,
        datapath::{Datapath, Maps},
        netlink::Netlink,
        sys::{self, random_u32},
    },
    model::{
        state::{RecordStatus, State},
        types::{IfName, mark_mask_rule},
    },
    ops::{cni::is_live_in, instance::Instance, store::StateLock},
};

pub struct Session<'a> {
    pub(crate) instance: &'a Instance,
    lock: StateLock,
    pub state: State,
    pub(crate) netlink: Netlink,
    pub(super) datapath: Option<Datapath>,
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
        let datapath = self.take_datapath()?;
        Ok(self.datapath.insert(datapath))
    }

    /// The data path as `datapath` gives it, out of the session, for work
    /// that also changes the session; the caller puts it back.
    pub(crate) fn take_datapath(&mut self) -> Result<Datapath> {
        if let Some(datapath) = self.datapath.take() {
            return Ok(datapath);
        }
        let mut datapath = self.open_datapath(false)?;
        if datapath.fresh {
            self.reattach(&mut datapath)?;
        }
        self.opened_maps = None;
        Ok(datapath)
    }

    /// Loads a fresh copy of the programs and swaps every link to it
    /// atomically (what a new binary does by itself); returns how many
    /// endpoints run it.
    pub async fn reload(&mut self) -> Result<usize> {
        let mut datapath = self.open_datapath(true)?;
        self.reattach(&mut datapath)?;
        self.opened_maps = None;
        self.datapath = Some(datapath);
        self.save()?;
        Ok(self
            .state
            .endpoints
            .values()
            .filter(|r| {
                r.status.is_ready()
                    && match &r.cni {
                        Some(cni) => is_live_in(&cni.netns, cni.ifname.as_str(), r.ifindex),
                        None => sys::is_live(r.name.as_str(), r.ifindex),
                    }
            })
            .count())
    }

    /// Checks the kernel, then adopts the pinned data path or loads one
    /// (`fresh_copy`: always load). A kernel that lacks something fails
    /// here, before a device or the state changes; a data path loaded just
    /// for this command goes again.
    fn open_datapath(&mut self, fresh_copy: bool) -> Result<Datapath> {
        Datapath::check_kernel()?;
        bpffs::prepare(self.instance.pins.root())?;
        let pins = self.instance.pins.clone();
        let mut datapath = if fresh_copy {
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
        self.configure_carriage(&mut datapath.maps)?;
        Ok(datapath)
    }

    /// The maps of the pinned data path; an error if there is none (a
    /// `reset` ran since the caller found it).
    pub(crate) fn pinned_maps(&mut self) -> Result<&mut Maps> {
        let pins = self.instance.pins.root().display().to_string();
        self.maps()?.ok_or_else(|| {
            Error::Refused(format!("no data path pinned under {pins}; was it reset?"))
        })
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
                    && match &record.cni {
                        Some(cni) => is_live_in(&cni.netns, cni.ifname.as_str(), record.ifindex),
                        None => links.iter().any(|link| {
                            link.index == record.ifindex && link.name == record.name.as_str()
                        }),
                    }
            })
            .map(|record| (record.clone(), self.state.policy_of(record)))
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

impl Session<'_> {
    /// Rewrites the policies of the live endpoints on `lower`, after a
    /// change that may switch its sender checks on or off.
    pub(crate) fn refresh_lower(&mut self, lower: &IfName) -> Result<()> {
        let policies: Vec<(u32, EndpointPolicy)> = self
            .state
            .endpoints
            .values()
            .filter(|record| record.lower == *lower && record.status.is_ready())
            .map(|record| (record.ifindex, self.state.policy_of(record)))
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
    /// Sets how tags are carried in the mark when the maps are new, or when
    /// `--mark-mask` asks for another mask while nothing carries tags.
    fn configure_carriage(&self, maps: &mut Maps) -> Result<()> {
        let requested = self.instance.mark_mask;
        let current = maps.carriage()?;
        let mask = match (current, requested) {
            (Some(_), None) => return Ok(()),
            (Some(current), Some(mask)) if current.mask == mask => return Ok(()),
            (Some(current), Some(mask)) if self.has_ports() => {
                return Err(Error::invalid(
                    "--mark-mask",
                    format!("{mask:#010x}"),
                    format!(
                        "the data path carries tags with mask {:#010x} while endpoints exist; \
                         leave the option out, or `macvswitch reset` first",
                        current.mask
                    ),
                ));
            }
            (_, mask) => mask.unwrap_or(carriage::DEFAULT_MARK_MASK),
        };
        let carriage = MarkCarriage::new(mask, random_u32()?).map_err(|e| {
            Error::invalid("--mark-mask", format!("{mask:#010x}"), mark_mask_rule(e))
        })?;
        maps.set_carriage(&carriage)
    }

    /// Whether any endpoint or host port is recorded.
    fn has_ports(&self) -> bool {
        !self.state.endpoints.is_empty()
            || self.state.uplinks.values().any(|u| u.host_port.is_some())
    }
}
