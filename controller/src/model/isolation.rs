//! Private-VLAN membership of an endpoint, as the operator states it.

use std::fmt;

use macvswitch_common::{POLICY_ISOLATED, SourceInfo, isolation};
use serde::{Deserialize, Serialize};

use crate::model::{hash::fnv1a32, types::Mode};

/// Which local endpoints an endpoint may exchange frames with (RFC 5517
/// private VLANs). The wire is always reachable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Reaches other endpoints in no community.
    #[default]
    Open,
    /// Reaches no other local endpoint.
    Isolated,
    /// Reaches the endpoints of this community.
    Community(String),
}

impl Isolation {
    /// The community id the programs compare: a stable hash of the name,
    /// never 0 (which stands for "no community").
    pub fn community_id(&self) -> u32 {
        match self {
            Isolation::Community(name) => community_id(name),
            _ => 0,
        }
    }

    pub fn flags(&self) -> u32 {
        match self {
            Isolation::Isolated => POLICY_ISOLATED,
            _ => 0,
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Isolation::Open => f.write_str("open"),
            Isolation::Isolated => f.write_str("isolated"),
            Isolation::Community(name) => write!(f, "community {name}"),
        }
    }
}

/// 32-bit FNV-1a of the name, stable across builds, folded away from 0.
fn community_id(name: &str) -> u32 {
    fnv1a32(name.as_bytes()).max(1)
}

/// The kernel's view of a local sender.
pub fn source_info(ifindex: u32, mode: Mode, community: u32, flags: u32) -> SourceInfo {
    SourceInfo {
        ifindex,
        community,
        flags,
        mode: match mode {
            Mode::Bridge => isolation::SOURCE_MODE_BRIDGE,
            Mode::Vepa => isolation::SOURCE_MODE_VEPA,
            Mode::Private => isolation::SOURCE_MODE_PRIVATE,
            Mode::Passthru => isolation::SOURCE_MODE_PASSTHRU,
        },
    }
}
