//! One macvswitch instance: where it keeps its state and pins. Reads go to
//! the state file directly; every change opens a session (`session.rs`).

use std::path::PathBuf;

use crate::{
    error::{Error, Result},
    kernel::{
        bpffs,
        datapath::{Datapath, Maps, PinLayout},
    },
    model::{
        spec::EndpointSpec,
        state::{EndpointRecord, State, UplinkRecord},
        types::IfName,
    },
    ops::{
        requests::{SetRequest, UplinkSetRequest},
        store::StateDir,
        validate::unknown_endpoint,
    },
};

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

    pub async fn del(&self, name: &IfName) -> Result<()> {
        self.session().await?.del(name).await
    }

    /// Removes everything this instance created.
    pub async fn reset(&self) -> Result<()> {
        self.session().await?.reset().await
    }

    pub async fn uplink_set(&self, request: UplinkSetRequest) -> Result<UplinkRecord> {
        self.session().await?.uplink_set(request).await
    }
}
