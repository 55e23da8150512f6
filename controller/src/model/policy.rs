//! The VLAN policy of a port, as the operator states it, and its
//! translation into the map value the programs read.

use std::{collections::BTreeSet, fmt, str::FromStr};

use macvswitch_common::{
    EndpointPolicy, POLICY_ALLOW_MAC_SPOOFING, POLICY_CVLANS_LIMITED, POLICY_NATIVE_TAGGED,
    POLICY_PRIORITY_SET, PORT_ACCESS, PORT_TRUNK, PORT_TUNNEL, PORT_UNTAGGED, VidSet,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    model::types::{Mac, Vid},
};

/// A non-empty set of VLAN ids, written `10,20,100-199`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VidList(BTreeSet<Vid>);

impl VidList {
    pub const ALLOWED: &str =
        "VLAN list must be comma-separated VLAN ids or ranges A-B, each in 1..=4094";

    pub fn contains(&self, vid: Vid) -> bool {
        self.0.contains(&vid)
    }

    pub fn iter(&self) -> impl Iterator<Item = Vid> + '_ {
        self.0.iter().copied()
    }

    fn to_vid_set(&self) -> VidSet {
        let mut set = VidSet::EMPTY;
        for vid in &self.0 {
            set.insert(vid.get());
        }
        set
    }
}

impl FromStr for VidList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || Self::ALLOWED.to_string();
        let vid = |text: &str| text.trim().parse::<Vid>().map_err(|_| bad());
        let mut set = BTreeSet::new();
        for item in s.split(',') {
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (vid(first)?, vid(last)?);
                    if first > last {
                        return Err(bad());
                    }
                    for raw in first.get()..=last.get() {
                        set.insert(Vid::new(raw).expect("within a valid range"));
                    }
                }
                None => {
                    set.insert(vid(item)?);
                }
            }
        }
        Ok(Self(set))
    }
}

serde_as_text!(VidList);

/// Ranges collapsed: `10,20,100-199`.
impl fmt::Display for VidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.to_vid_set().to_string())
    }
}

/// An 802.1p priority code point, 0..=7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Pcp(u8);

impl Pcp {
    pub const ALLOWED: &str = "priority must be a number in 0..=7";

    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Pcp {
    type Error = String;

    fn try_from(pcp: u8) -> Result<Self, String> {
        (pcp <= 7)
            .then_some(Self(pcp))
            .ok_or_else(|| Self::ALLOWED.to_string())
    }
}

impl From<Pcp> for u8 {
    fn from(pcp: Pcp) -> u8 {
        pcp.0
    }
}

impl FromStr for Pcp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<u8>()
            .map_err(|_| Self::ALLOWED.to_string())
            .and_then(Self::try_from)
    }
}

/// Which VLANs a port carries, in Open vSwitch's terms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PortVlans {
    /// Untagged frames only.
    #[default]
    Untagged,
    /// One VLAN; the guest sees it untagged.
    Access { vlan: Vid },
    /// The listed VLANs, tagged; optionally a native VLAN.
    Trunk {
        vlans: VidList,
        native: Option<Vid>,
        /// The native VLAN reaches the guest tagged.
        native_tagged: bool,
    },
    /// dot1q-tunnel: all guest frames go into service VLAN `svlan`, under
    /// an 802.1ad tag; `cvlans` limits the customer VLANs carried.
    Tunnel { svlan: Vid, cvlans: Option<VidList> },
}

impl PortVlans {
    pub fn kind(&self) -> &'static str {
        match self {
            PortVlans::Untagged => "untagged",
            PortVlans::Access { .. } => "access",
            PortVlans::Trunk { .. } => "trunk",
            PortVlans::Tunnel { .. } => "tunnel",
        }
    }

    /// Whether macvswitch pushes tags on this port, so `--priority` means
    /// something.
    pub fn pushes_tags(&self) -> bool {
        match self {
            PortVlans::Untagged => false,
            PortVlans::Access { .. } | PortVlans::Tunnel { .. } => true,
            PortVlans::Trunk { native, .. } => native.is_some(),
        }
    }

    /// Whether frames of `vid` (on the wire) reach this port at all.
    pub fn carries(&self, vid: Vid) -> bool {
        match self {
            PortVlans::Untagged => false,
            PortVlans::Access { vlan } => *vlan == vid,
            PortVlans::Trunk { vlans, native, .. } => vlans.contains(vid) || *native == Some(vid),
            PortVlans::Tunnel { svlan, .. } => *svlan == vid,
        }
    }

    /// The map value for a guest with `mac`.
    pub fn to_policy(
        &self,
        mac: Mac,
        priority: Option<Pcp>,
        allow_mac_spoofing: bool,
    ) -> EndpointPolicy {
        let mut policy = EndpointPolicy::untagged(mac.octets());
        match self {
            PortVlans::Untagged => policy.kind = PORT_UNTAGGED,
            PortVlans::Access { vlan } => {
                policy.kind = PORT_ACCESS;
                policy.vlan = vlan.get();
            }
            PortVlans::Trunk {
                vlans,
                native,
                native_tagged,
            } => {
                policy.kind = PORT_TRUNK;
                policy.vlan = native.map_or(0, Vid::get);
                policy.vids = vlans.to_vid_set();
                if *native_tagged {
                    policy.flags |= POLICY_NATIVE_TAGGED;
                }
            }
            PortVlans::Tunnel { svlan, cvlans } => {
                policy.kind = PORT_TUNNEL;
                policy.vlan = svlan.get();
                if let Some(cvlans) = cvlans {
                    policy.vids = cvlans.to_vid_set();
                    policy.flags |= POLICY_CVLANS_LIMITED;
                }
            }
        }
        if let Some(pcp) = priority {
            policy.priority = pcp.get();
            policy.flags |= POLICY_PRIORITY_SET;
        }
        if allow_mac_spoofing {
            policy.flags |= POLICY_ALLOW_MAC_SPOOFING;
        }
        policy
    }
}

/// The VLAN policy in a few words, for tables and plans.
impl fmt::Display for PortVlans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PortVlans::Untagged => "untagged".to_string(),
            PortVlans::Access { vlan } => format!("access {vlan}"),
            PortVlans::Trunk {
                vlans,
                native,
                native_tagged,
            } => {
                let native = match native {
                    Some(vid) if *native_tagged => format!(" native {vid} tagged"),
                    Some(vid) => format!(" native {vid}"),
                    None => String::new(),
                };
                format!("trunk {vlans}{native}")
            }
            PortVlans::Tunnel { svlan, cvlans } => match cvlans {
                Some(list) => format!("tunnel {svlan} cvlans {list}"),
                None => format!("tunnel {svlan}"),
            },
        };
        f.pad(&text)
    }
}

/// The VLAN options of `endpoint add` and `endpoint set`, before they
/// are checked against each other and the current policy.
#[derive(Clone, Debug, Default)]
pub struct PortOptions {
    pub vlan: Option<Vid>,
    pub trunk: Option<VidList>,
    pub native: Option<Vid>,
    /// `Some(true)` for --native-tagged, `Some(false)` for --native-untagged.
    pub native_tagged: Option<bool>,
    pub tunnel: Option<Vid>,
    pub tunnel_cvlans: Option<VidList>,
    /// `set` only: make the port untagged.
    pub untagged: bool,
    /// `set` only: the trunk drops its native VLAN.
    pub no_native: bool,
    /// `set` only: the tunnel carries every customer VLAN again.
    pub all_cvlans: bool,
}

impl PortOptions {
    /// The port's new VLANs (see `resolve`), checked against `priority`:
    /// what `endpoint add`, `endpoint set` and a configuration file accept.
    pub fn port(&self, current: &PortVlans, priority: Option<Pcp>) -> Result<PortVlans> {
        let port = self.resolve(current)?;
        check_priority(&port, priority)?;
        Ok(port)
    }

    /// The port's new VLANs: `current` with exactly the given options
    /// changed. A new port kind starts from scratch (on `add`, `current` is
    /// untagged); the same kind keeps what no option names: `--trunk` on a
    /// trunk keeps its native VLAN, `--tunnel` on a tunnel its customer
    /// VLANs.
    pub fn resolve(&self, current: &PortVlans) -> Result<PortVlans> {
        let mut port = match (self.vlan, &self.trunk, self.tunnel) {
            (Some(vlan), _, _) => PortVlans::Access { vlan },
            (_, Some(vlans), _) => match current {
                PortVlans::Trunk {
                    native,
                    native_tagged,
                    ..
                } => PortVlans::Trunk {
                    vlans: vlans.clone(),
                    native: *native,
                    native_tagged: *native_tagged,
                },
                _ => PortVlans::Trunk {
                    vlans: vlans.clone(),
                    native: None,
                    native_tagged: false,
                },
            },
            (_, _, Some(svlan)) => match current {
                PortVlans::Tunnel { cvlans, .. } => PortVlans::Tunnel {
                    svlan,
                    cvlans: cvlans.clone(),
                },
                _ => PortVlans::Tunnel {
                    svlan,
                    cvlans: None,
                },
            },
            _ if self.untagged => PortVlans::Untagged,
            _ => current.clone(),
        };
        match &mut port {
            PortVlans::Trunk {
                native,
                native_tagged,
                ..
            } if self.no_native => {
                if self.native.is_some() || self.native_tagged.is_some() {
                    return Err(Error::invalid(
                        "--no-native",
                        "",
                        "cannot be given with --native, --native-tagged or --native-untagged",
                    ));
                }
                *native = None;
                *native_tagged = false;
            }
            _ if self.no_native => {
                return Err(Error::invalid("--no-native", "", "needs a trunk port"));
            }
            _ => {}
        }
        match &mut port {
            PortVlans::Tunnel { cvlans, .. } if self.all_cvlans => {
                if self.tunnel_cvlans.is_some() {
                    return Err(Error::invalid(
                        "--all-cvlans",
                        "",
                        "cannot be given with --tunnel-cvlans",
                    ));
                }
                *cvlans = None;
            }
            _ if self.all_cvlans => {
                return Err(Error::invalid(
                    "--all-cvlans",
                    "",
                    "needs a tunnel port (--tunnel SVID)",
                ));
            }
            _ => {}
        }
        match &mut port {
            PortVlans::Trunk {
                native,
                native_tagged,
                ..
            } => {
                if let Some(vid) = self.native {
                    *native = Some(vid);
                }
                if let Some(tagged) = self.native_tagged {
                    if native.is_none() {
                        return Err(Error::invalid(
                            native_flag(tagged),
                            "",
                            "needs a native VLAN (--native VID)",
                        ));
                    }
                    *native_tagged = tagged;
                }
            }
            _ => {
                if let Some(vid) = self.native {
                    return Err(Error::invalid(
                        "--native",
                        vid,
                        "needs a trunk port (--trunk VIDLIST)",
                    ));
                }
                if let Some(tagged) = self.native_tagged {
                    return Err(Error::invalid(
                        native_flag(tagged),
                        "",
                        "needs a trunk port with a native VLAN",
                    ));
                }
            }
        }
        match &mut port {
            PortVlans::Tunnel { cvlans, .. } => {
                if let Some(list) = &self.tunnel_cvlans {
                    *cvlans = Some(list.clone());
                }
            }
            _ => {
                if let Some(list) = &self.tunnel_cvlans {
                    return Err(Error::invalid(
                        "--tunnel-cvlans",
                        list,
                        "needs a tunnel port (--tunnel SVID)",
                    ));
                }
            }
        }
        Ok(port)
    }
}

/// The option that asked for a native VLAN to be tagged or not.
fn native_flag(tagged: bool) -> &'static str {
    if tagged {
        "--native-tagged"
    } else {
        "--native-untagged"
    }
}

/// `--priority` only means something where macvswitch pushes tags.
fn check_priority(port: &PortVlans, priority: Option<Pcp>) -> Result<()> {
    match priority {
        Some(pcp) if !port.pushes_tags() => Err(Error::invalid(
            "--priority",
            pcp.get(),
            "this port pushes no tags; it needs --vlan, --native or --tunnel",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
