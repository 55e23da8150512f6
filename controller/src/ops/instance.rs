//! One macvswitch instance: where it keeps its state and pins. Reads go to
//! the state file directly; every change opens a session (`session.rs`).

use std::path::PathBuf;

use crate::{
    error::{Error, Result},
    kernel::{
        bpffs,
        datapath::{Datapath, Maps, PinLayout},
        sys,
    },
    model::{
        spec::EndpointSpec,
        state::{EndpointRecord, RecordStatus, State, UplinkRecord},
        types::IfName,
    },
    ops::{
        endpoint::ResetReport,
        requests::{SetRequest, UplinkSetRequest},
        store::StateDir,
        validate::unknown_endpoint,
    },
};

/// An endpoint's status as `endpoint list|show` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveStatus {
    /// Its macvtap is there and both programs are on it.
    Ready,
    /// Its lower device is gone; it is recreated when that is back.
    Waiting,
    /// Its macvtap is gone (deleted out of band) while the lower device is there.
    Missing,
    /// Its macvtap is there but a program is not on it.
    NotAttached,
    /// An interrupted `add`, rolled back by the next change.
    Pending,
    /// An interrupted `del`, finished by the next change.
    Deleting,
}

impl LiveStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Waiting => "waiting",
            Self::Missing => "missing",
            Self::NotAttached => "not-attached",
            Self::Pending => "pending",
            Self::Deleting => "deleting",
        }
    }

    /// What the status means and what brings the endpoint back.
    pub fn explained(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Waiting => {
                "waiting for its lower device (recreated when it is back: `macvswitch restore` or \
                 the daemon)"
            }
            Self::Missing => {
                "missing: its macvtap is gone (`macvswitch restore` forgets it, `endpoint add` \
                 makes it again)"
            }
            Self::NotAttached => {
                "not attached: a program is not on its macvtap (`macvswitch restore` puts it back)"
            }
            Self::Pending => "pending: an interrupted add (the next change rolls it back)",
            Self::Deleting => "deleting: an interrupted del (the next change finishes it)",
        }
    }
}

impl std::fmt::Display for LiveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one macvswitch instance keeps its state and pins.
#[derive(Clone, Debug)]
pub struct Instance {
    pub state_dir: StateDir,
    pub pins: PinLayout,
    /// `--mark-mask`: the bits of `skb->mark` macvswitch may use; `None`
    /// keeps the mask in use (or the default on a first load).
    pub mark_mask: Option<u32>,
    /// Where long operations report how far they are.
    pub progress: crate::ops::progress::Reporter,
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

    /// What the endpoint is right now, checked against the kernel: its
    /// macvtap under the recorded name and ifindex, both programs on it.
    pub fn live_status(&self, record: &EndpointRecord) -> LiveStatus {
        match record.status {
            RecordStatus::Waiting => return LiveStatus::Waiting,
            RecordStatus::Pending => return LiveStatus::Pending,
            RecordStatus::Deleting => return LiveStatus::Deleting,
            RecordStatus::Ready => {}
        }
        if let Some(cni) = &record.cni {
            let (name, ifname) = (record.name.as_str(), cni.ifname.as_str());
            if !crate::ops::cni::is_live_in(&cni.netns, ifname, record.ifindex) {
                return LiveStatus::Missing;
            }
            let attached = crate::kernel::netns::run_in(&cni.netns, || {
                Ok(Datapath::is_attached_as(&self.pins, name, ifname))
            });
            return if attached.unwrap_or(false) {
                LiveStatus::Ready
            } else {
                LiveStatus::NotAttached
            };
        }
        if !sys::is_live(record.name.as_str(), record.ifindex) {
            return if sys::has_link(record.lower.as_str()) {
                LiveStatus::Missing
            } else {
                LiveStatus::Waiting
            };
        }
        if !Datapath::is_attached(&self.pins, record.name.as_str()) {
            return LiveStatus::NotAttached;
        }
        LiveStatus::Ready
    }

    /// The counter maps, if the data path was ever loaded here.
    pub fn maps(&self) -> Result<Option<Maps>> {
        if !bpffs::is_bpffs(self.pins.root()) {
            return Ok(None);
        }
        Maps::open(&self.pins)
    }

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
                "LOWER",
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

    pub async fn add(&self, spec: EndpointSpec) -> Result<EndpointRecord> {
        self.session().await?.add(spec).await
    }

    pub async fn set(&self, request: SetRequest) -> Result<EndpointRecord> {
        self.session().await?.set(request).await
    }

    pub async fn del(&self, name: &IfName, force: bool) -> Result<EndpointRecord> {
        self.session().await?.del(name, force).await
    }

    /// Removes everything this instance created.
    pub async fn reset(&self, force: bool) -> Result<ResetReport> {
        self.session().await?.reset(force).await
    }

    pub async fn uplink_set(&self, request: UplinkSetRequest) -> Result<UplinkRecord> {
        self.session().await?.uplink_set(request).await
    }
}
