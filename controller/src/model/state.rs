//! What macvswitch manages, kept in `<state-dir>/state.json`.
//!
//! Every change happens under an exclusive lock on `<state-dir>/lock`, and
//! the file is replaced atomically (temp file, fsync, rename), so concurrent
//! invocations serialize and a crash never leaves half a file.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    model::isolation::Isolation,
    model::policy::{Pcp, PortVlans},
    model::types::{AttachMode, Cidr, IfName, Mac, Mode},
};

/// Where a record is in its life: a command killed half-way leaves
/// `Pending` (being added) or `Deleting`, and the next session finishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    #[default]
    Ready,
    Pending,
    Deleting,
    /// The lower device is gone; recreated when it is back.
    Waiting,
}

impl RecordStatus {
    pub fn is_ready(&self) -> bool {
        *self == RecordStatus::Ready
    }
}

/// One endpoint as recorded by `endpoint add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub name: IfName,
    pub lower: IfName,
    pub mode: Mode,
    pub mac: Mac,
    /// Which VLANs the port carries.
    pub vlans: PortVlans,
    /// PCP of the tags macvswitch pushes; `None` keeps the guest's.
    pub priority: Option<Pcp>,
    pub mtu: u32,
    pub allow_mac_spoofing: bool,
    /// Ifindex of the macvtap in its network namespace: the maps' key.
    pub ifindex: u32,
    /// Ifindex of the lower device when the endpoint was wired.
    #[serde(default)]
    pub lower_ifindex: u32,
    /// Index of its counters in the per-CPU counter array.
    #[serde(default)]
    pub slot: u16,
    /// Private-VLAN membership.
    #[serde(default)]
    pub isolation: Isolation,
    /// How its programs are attached; `None` until they are (and in state
    /// files older than the clsact path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachMode>,
    #[serde(default, skip_serializing_if = "RecordStatus::is_ready")]
    pub status: RecordStatus,
}

/// The host port of a lower device: a macvlan for the host's own stack,
/// under the same programs as a guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPortRecord {
    pub name: IfName,
    pub mac: Mac,
    pub vlans: PortVlans,
    pub addresses: Vec<Cidr>,
    pub ifindex: u32,
    #[serde(default)]
    pub slot: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachMode>,
    #[serde(default, skip_serializing_if = "RecordStatus::is_ready")]
    pub status: RecordStatus,
}

/// Settings of a lower device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkRecord {
    pub name: IfName,
    pub ifindex: u32,
    pub reflective_relay: bool,
    pub host_port: Option<HostPortRecord>,
    /// How the relay program is attached to the device's egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachMode>,
    /// macvswitch created the device's clsact qdisc (recorded before it
    /// does), so it removes it once nothing is on it; an operator's qdisc
    /// is never removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_clsact: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub endpoints: BTreeMap<IfName, EndpointRecord>,
    #[serde(default)]
    pub uplinks: BTreeMap<IfName, UplinkRecord>,
    /// The kernel boot the state was last written in: after a reboot the
    /// links are gone and get recreated rather than forgotten.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Lower devices without uplink settings whose clsact qdisc macvswitch
    /// made for their egress program (with settings, `own_clsact` there).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub own_qdiscs: std::collections::BTreeSet<IfName>,
}

impl State {
    /// Whether macvswitch made the clsact qdisc on lower device `lower`.
    pub fn owns_qdisc(&self, lower: &IfName) -> bool {
        self.own_qdiscs.contains(lower) || self.uplinks.get(lower).is_some_and(|u| u.own_clsact)
    }

    /// The state as it will be once interrupted commands are finished:
    /// pending adds rolled back, pending deletes done.
    pub fn settled(mut self) -> Self {
        self.endpoints.retain(|_, record| {
            !matches!(
                record.status,
                RecordStatus::Pending | RecordStatus::Deleting
            )
        });
        for uplink in self.uplinks.values_mut() {
            if uplink.host_port.as_ref().is_some_and(|port| {
                matches!(port.status, RecordStatus::Pending | RecordStatus::Deleting)
            }) {
                uplink.host_port = None;
            }
        }
        self
    }

    /// The lowest counter slot no endpoint or host port holds.
    pub fn free_slot(&self) -> Result<u16> {
        let used: std::collections::BTreeSet<u16> = self
            .endpoints
            .values()
            .map(|r| r.slot)
            .chain(
                self.uplinks
                    .values()
                    .filter_map(|u| u.host_port.as_ref().map(|p| p.slot)),
            )
            .collect();
        (0..macvswitch_common::MAX_ENDPOINTS as u16)
            .find(|slot| !used.contains(slot))
            .ok_or_else(|| {
                Error::Refused(format!(
                    "all {} endpoint slots are in use",
                    macvswitch_common::MAX_ENDPOINTS
                ))
            })
    }
}

/// This boot of the kernel.
pub fn current_boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}

/// The state directory: lock, state file and private tap nodes.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// Held while the state may change; released on drop.
pub struct StateLock {
    _file: File,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Directory of the per-endpoint tap character-device nodes.
    pub fn dev_dir(&self) -> PathBuf {
        self.root.join("dev")
    }

    /// Takes the exclusive lock, creating the directory if needed.
    pub fn lock(&self) -> Result<StateLock> {
        fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        file.lock()
            .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
        Ok(StateLock { _file: file })
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<State> {
        let path = self.state_file();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::State { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Replaces the state file atomically. Needs the lock.
    pub fn save(&self, _lock: &StateLock, state: &State) -> Result<()> {
        let path = self.state_file();
        let tmp = self.root.join("state.json.tmp");
        let mut state = state.clone();
        state.boot_id = current_boot_id();
        let bytes = serde_json::to_vec_pretty(&state).expect("state serializes");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename itself is durable only once the directory is synced.
            File::open(&self.root)?.sync_all()
        };
        write().map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Removes the state file and tap nodes (for `reset`). Needs the lock.
    pub fn clear(&self, _lock: &StateLock) -> Result<()> {
        for path in [self.state_file(), self.root.join("state.json.tmp")] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
        }
        match fs::remove_dir_all(self.dev_dir()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("removing {}", self.dev_dir().display()),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips() {
        let dir = std::env::temp_dir().join(format!("msw-state-{}", std::process::id()));
        let state_dir = StateDir::new(&dir);
        let lock = state_dir.lock().unwrap();
        assert_eq!(state_dir.load().unwrap(), State::default());
        let name: IfName = "vm1".parse().unwrap();
        let mut state = State::default();
        state.endpoints.insert(
            name.clone(),
            EndpointRecord {
                name,
                lower: "eth0".parse().unwrap(),
                mode: Mode::Vepa,
                mac: "02:00:00:00:00:01".parse().unwrap(),
                vlans: PortVlans::Access {
                    vlan: crate::model::types::Vid::new(10).unwrap(),
                },
                priority: None,
                mtu: 1500,
                allow_mac_spoofing: false,
                ifindex: 7,
                lower_ifindex: 2,
                slot: 0,
                isolation: Isolation::Community("blue".into()),
                attach: Some(AttachMode::Clsact),
                status: RecordStatus::Pending,
            },
        );
        state_dir.save(&lock, &state).unwrap();
        state.boot_id = current_boot_id();
        assert_eq!(state_dir.load().unwrap(), state);
        assert!(!dir.join("state.json.tmp").exists());
        state_dir.clear(&lock).unwrap();
        assert_eq!(state_dir.load().unwrap(), State::default());
        fs::remove_dir_all(&dir).unwrap();
    }
}
