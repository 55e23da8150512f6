//! The state file and its lock, in `<state-dir>/`.
//!
//! Every change happens under an exclusive lock on `<state-dir>/lock`, and
//! the file is replaced atomically (temp file, fsync, rename), so concurrent
//! invocations serialize and a crash never leaves half a file.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{
    error::{Error, Result},
    kernel::sys::current_boot_id,
    model::state::State,
};

/// The state directory: lock, state file and private tap nodes.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// Whether the directory and its lock file were there before a command.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub dir: bool,
    pub lock: bool,
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

    /// Takes the exclusive lock, creating the directory if needed. A lock
    /// file `reset` removed while this waited is not a lock: take the new one.
    pub fn lock(&self) -> Result<StateLock> {
        fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
        let path = self.lock_file();
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            file.lock()
                .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
            let held = file
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let current = fs::metadata(&path).ok();
            if current.is_some_and(|m| (m.dev(), m.ino()) == (held.dev(), held.ino())) {
                return Ok(StateLock { _file: file });
            }
        }
    }

    fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// What is there before a command runs, so that a command that fails
    /// (or a `reset`) can leave the directory as it found it.
    pub fn found(&self) -> Found {
        Found {
            dir: self.root.is_dir(),
            lock: self.lock_file().exists(),
        }
    }

    /// Removes what this command created that holds nothing: the lock file
    /// and the directory, if they were not there before, and a state file
    /// that records nothing in a directory that was not there.
    pub fn leave_as_found(&self, found: Found) {
        if !found.dir
            && self
                .load()
                .is_ok_and(|state| state.endpoints.is_empty() && state.uplinks.is_empty())
        {
            let _ = fs::remove_file(self.state_file());
            let _ = fs::remove_dir(self.dev_dir());
        }
        if !found.lock {
            let _ = fs::remove_file(self.lock_file());
        }
        if !found.dir {
            // Only if empty: what anyone else put there stays.
            let _ = fs::remove_dir(&self.root);
        }
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

    /// Removes the state file, tap nodes and lock file (for `reset`): the
    /// directory is left as it was before macvswitch used it. Needs the
    /// lock; a command waiting for it takes the next one (see `lock`).
    pub fn clear(&self, _lock: &StateLock) -> Result<()> {
        for path in [
            self.state_file(),
            self.root.join("state.json.tmp"),
            self.lock_file(),
        ] {
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
    use crate::model::{
        isolation::Isolation,
        policy::PortVlans,
        state::{EndpointRecord, RecordStatus},
        types::{AttachMode, IfName, Mode, Vid},
    };

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
                    vlan: Vid::new(10).unwrap(),
                },
                priority: None,
                mtu: 1500,
                allow_mac_spoofing: false,
                ifindex: 7,
                lower_ifindex: 2,
                slot: 0,
                isolation: Isolation::Community("blue".into()),
                guards: Default::default(),
                attach: Some(AttachMode::Clsact),
                status: RecordStatus::Pending,
                device: Default::default(),
                cni: None,
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
