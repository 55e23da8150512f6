//! Where the pins live under the bpffs directory, and small file helpers.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::{TcAttachType, links::PinnedLink};
use macvswitch_common::names;

use crate::error::{Error, Result};

/// Every program of the object that the controller loads (and pins).
pub(super) const PROGRAMS: [&str; 3] = [
    names::PROG_FROM_GUEST,
    names::PROG_TO_GUEST,
    names::PROG_UPLINK_EGRESS,
];

/// Where the pins live.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This build's programs.
    pub(super) fn progs_dir(&self) -> PathBuf {
        self.root.join("progs").join(build_id())
    }

    /// Where this build pins program `name`.
    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    pub(super) fn build(&self) -> String {
        build_id()
    }

    /// Removes the program pins of other builds; their programs live on
    /// while links still run them.
    pub(super) fn remove_other_builds(&self) -> Result<()> {
        let Ok(entries) = fs::read_dir(self.root.join("progs")) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            if entry.file_name() != build_id().as_str() {
                remove_dir_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    pub(super) fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    pub(super) fn links_of(&self, endpoint: &str) -> PathBuf {
        self.root.join("links").join(escape_pin_name(endpoint))
    }

    pub(super) fn link(&self, endpoint: &str, hook: Hook) -> PathBuf {
        self.links_of(endpoint).join(hook.suffix())
    }

    pub(super) fn uplink_link(&self, lower: &str) -> PathBuf {
        self.root
            .join("uplinks")
            .join(escape_pin_name(lower))
            .join("egress")
    }

    pub(super) fn is_loaded(&self) -> bool {
        PROGRAMS.iter().all(|name| self.prog(name).exists())
    }
}

/// The two hooks of an endpoint.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// The macvtap's egress: frames the guest wrote.
    FromGuest,
    /// The macvtap's ingress: frames for the guest.
    ToGuest,
}

impl Hook {
    /// Ingress first: an endpoint understands tags carried in the mark
    /// before it sends any.
    pub(super) const ALL: [Hook; 2] = [Hook::ToGuest, Hook::FromGuest];

    pub(super) fn suffix(self) -> &'static str {
        match self {
            Hook::FromGuest => "egress",
            Hook::ToGuest => "ingress",
        }
    }

    pub(super) fn attach_type(self) -> TcAttachType {
        match self {
            Hook::FromGuest => TcAttachType::Egress,
            Hook::ToGuest => TcAttachType::Ingress,
        }
    }
}

/// The build of the embedded eBPF object: FNV-1a of its bytes, so a new
/// binary with other programs loads them instead of adopting old ones.
fn build_id() -> String {
    format!("{:016x}", crate::model::hash::fnv1a64(crate::EBPF_OBJECT))
}

/// Escapes a name for bpffs, which refuses '.' in file names: bytes other
/// than ASCII letters, digits, '-' and '_' become `%XX`.
pub(super) fn escape_pin_name(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            escaped.push(byte as char);
        } else {
            escaped += &format!("%{byte:02X}");
        }
    }
    escaped
}

/// Removes a link's pin, which detaches it; a missing pin is fine.
pub(super) fn unpin_link(path: &Path) -> Result<()> {
    match PinnedLink::from_pin(path) {
        Ok(link) => link
            .unpin()
            .map(drop)
            .map_err(|e| Error::io(format!("unpinning {}", path.display()), e)),
        Err(_) if !path.exists() => Ok(()),
        Err(e) => Err(Error::bpf(format!("opening {}", path.display()), e)),
    }
}

pub(super) fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

pub(super) fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_have_no_dots() {
        assert_eq!(escape_pin_name("eth0.10"), "eth0%2E10");
        assert_eq!(escape_pin_name("a%b"), "a%25b");
        assert_eq!(escape_pin_name("vm-1_x"), "vm-1_x");
    }
}
