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

use std::collections::BTreeMap;

use macvswitch_common::{EndpointPolicy, MarkCarriage, POLICY_CHECK_SENDERS, carriage};

use crate::{
    error::{Error, Result},
    kernel::bpffs,
    kernel::datapath::{Datapath, Maps},
    kernel::netlink::Netlink,
    model::isolation::Isolation,
    model::state::{EndpointRecord, RecordStatus, State, StateLock},
    model::types::{AttachMode, IfName, Mode},
    ops::endpoint::Instance,
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
    /// replaced in place), in an order where no frame is misread across
    /// the swap: every port's ingress program first (the new one reads tags
    /// carried in the mark and pushed tags alike), then the lower devices'
    /// egress programs, then the ports' egress programs, and only then may
    /// tags travel in the mark. Records the modes. Links that are gone, or
    /// replaced by others under the same name, are left to `restore`.
    fn reattach(&mut self, datapath: &mut Datapath) -> Result<()> {
        // Every live port, with the mode its ingress hook got.
        let mut ports: Vec<(IfName, AttachMode)> = Vec::new();
        let mut lowers: BTreeMap<IfName, u32> = BTreeMap::new();
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
            lowers.insert(record.lower.clone(), record.lower_ifindex);
            let mode = datapath.attach_to_guest(name.as_str(), record.attach)?;
            if let Some(record) = self.state.endpoints.get_mut(name) {
                record.attach = Some(mode);
            }
            ports.push((name.clone(), mode));
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
                crate::ops::uplink::write_host_port_maps(datapath, uplink.ifindex, port)?;
                let mode = datapath.attach_to_guest(port.name.as_str(), port.attach)?;
                if let Some(port) = self
                    .state
                    .uplinks
                    .get_mut(lower)
                    .and_then(|u| u.host_port.as_mut())
                {
                    port.attach = Some(mode);
                }
                lowers.insert(lower.clone(), uplink.ifindex);
                ports.push((port.name.clone(), mode));
            }
        }
        lowers.retain(|name, ifindex| is_live(name.as_str(), *ifindex));
        for (lower, ifindex) in &lowers {
            self.attach_lower_program(datapath, lower, *ifindex, false)?;
        }
        for (name, mode) in &ports {
            datapath.attach_from_guest(name.as_str(), Some(*mode))?;
            log::info!("{name}: attached to the loaded data path");
        }
        for ifindex in lowers.values() {
            datapath.maps.set_tags_from_mark(*ifindex, true)?;
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
        let carriage = MarkCarriage::new(mask, random_u32()?)
            .map_err(|e| Error::invalid("--mark-mask", format!("{mask:#010x}"), mask_rule(e)))?;
        maps.set_carriage(&carriage)
    }

    /// Whether any endpoint or host port is recorded.
    fn has_ports(&self) -> bool {
        !self.state.endpoints.is_empty()
            || self.state.uplinks.values().any(|u| u.host_port.is_some())
    }

    /// Attaches the egress program of lower device `lower` if it is not
    /// there yet, then lets its endpoints carry their tags in the mark.
    pub(crate) async fn ensure_uplink_program(
        &mut self,
        lower: &IfName,
        ifindex: u32,
    ) -> Result<()> {
        self.datapath().await?;
        let mut datapath = self.datapath.take().expect("loaded just above");
        let attached = self.attach_lower_program(&mut datapath, lower, ifindex, true);
        self.datapath = Some(datapath);
        attached
    }

    /// Attaches (or swaps in) the egress program of `lower`; a clsact qdisc
    /// the attach is going to create is recorded as ours first. With
    /// `raise_flag`, endpoints may carry tags in the mark afterwards; an
    /// attached program and a raised flag are left as they are.
    fn attach_lower_program(
        &mut self,
        datapath: &mut Datapath,
        lower: &IfName,
        ifindex: u32,
        raise_flag: bool,
    ) -> Result<()> {
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
        if lower_in_use(&self.state, lower, leaving) {
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
}

/// How a mark mask must look, for the one-line error.
pub(crate) fn mask_rule(error: carriage::MaskError) -> String {
    let why = match error {
        carriage::MaskError::TagFieldNotContiguous => "its lowest 17 set bits are not contiguous",
        carriage::MaskError::TooFewPatternBits => "it has fewer than 25 bits",
    };
    format!(
        "a mask whose lowest 17 set bits are contiguous (they carry the tag) with at least 8 \
         more (a random pattern), e.g. 0xffffffff or 0xffffff80; {why}"
    )
}

/// Whether anything recorded on `lower`, other than `leaving`, needs its
/// egress program: an endpoint, the host port or relay emulation.
fn lower_in_use(state: &State, lower: &IfName, leaving: &str) -> bool {
    state
        .endpoints
        .values()
        .any(|record| record.lower == *lower && record.name.as_str() != leaving)
        || state.uplinks.get(lower).is_some_and(|uplink| {
            uplink.reflective_relay
                || uplink
                    .host_port
                    .as_ref()
                    .is_some_and(|port| port.name.as_str() != leaving)
        })
}

/// Four random bytes from the kernel.
fn random_u32() -> Result<u32> {
    let mut bytes = [0u8; 4];
    // SAFETY: the buffer is valid for its length.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        return Err(Error::io(
            "reading random bytes",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(u32::from_ne_bytes(bytes))
}

/// Whether this network namespace has link `name` with `ifindex`.
fn is_live(name: &str, ifindex: u32) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        == Some(ifindex)
}
