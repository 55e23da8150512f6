//! `macvswitch show`: the whole switch at a glance, as `ovs-vsctl show` and
//! `bridge vlan show` give it: each lower device with its relay setting and
//! host port, its endpoints grouped by the VLANs they carry, each endpoint's
//! kernel state checked (a `!` marks one that is not as recorded).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::{
    error::Result,
    model::{
        policy::PortVlans,
        state::{EndpointRecord, UplinkRecord},
        types::Vid,
    },
    ops::instance::{Instance, LiveStatus},
};

/// A trunk lists at most this many of its VLANs as groups; the rest show
/// on its own line (a trunk of 100-199 would otherwise fill the screen).
const TRUNK_GROUPS: usize = 32;

/// One endpoint as the tree shows it.
struct Leaf {
    record: EndpointRecord,
    status: LiveStatus,
}

impl Leaf {
    /// How the endpoint carries `vlan` (or what it is, untagged).
    fn role(&self, vlan: Option<Vid>) -> String {
        match (&self.record.vlans, vlan) {
            (PortVlans::Access { .. }, _) => "access".into(),
            (
                PortVlans::Trunk {
                    native,
                    native_tagged,
                    ..
                },
                Some(vid),
            ) if *native == Some(vid) => {
                if *native_tagged {
                    "trunk, native tagged".into()
                } else {
                    "trunk, native".into()
                }
            }
            (PortVlans::Trunk { .. }, _) => "trunk".into(),
            (PortVlans::Tunnel { cvlans, .. }, _) => match cvlans {
                Some(list) => format!("tunnel, customer VLANs {list}"),
                None => "tunnel".into(),
            },
            (PortVlans::Untagged, _) => "untagged".into(),
        }
    }

    fn line(&self, vlan: Option<Vid>) -> String {
        let r = &self.record;
        let marker = if matches!(self.status, LiveStatus::Ready) {
            ""
        } else {
            "! "
        };
        let mut line = format!(
            "{marker}{} ({}; {} mode, mac {}, {}",
            r.name,
            self.role(vlan),
            r.mode,
            r.mac,
            r.isolation
        );
        if r.allow_mac_spoofing {
            line += ", mac spoofing allowed";
        }
        let guards = r.guards.describe();
        if !guards.is_empty() {
            line += &format!(", {guards}");
        }
        if !matches!(self.status, LiveStatus::Ready) {
            line += &format!(", {}", self.status);
        }
        line + ")"
    }

    fn json(&self, vlan: Option<Vid>) -> Value {
        let r = &self.record;
        json!({
            "name": r.name,
            "port": self.role(vlan),
            "mode": r.mode,
            "mac": r.mac.to_string(),
            "isolation": r.isolation.to_string(),
            "allow_mac_spoofing": r.allow_mac_spoofing,
            "guards": crate::report::guards_json(&r.guards),
            "status": self.status.as_str(),
        })
    }
}

/// The VLANs an endpoint is grouped under (none: untagged).
fn groups(vlans: &PortVlans) -> Vec<Vid> {
    match vlans {
        PortVlans::Untagged => Vec::new(),
        PortVlans::Access { vlan } => vec![*vlan],
        PortVlans::Trunk { vlans, native, .. } => {
            let mut all: BTreeSet<Vid> = vlans.iter().take(TRUNK_GROUPS).collect();
            all.extend(*native);
            all.into_iter().collect()
        }
        PortVlans::Tunnel { svlan, .. } => vec![*svlan],
    }
}

/// One lower device's part of the tree.
struct Lower<'a> {
    name: String,
    uplink: Option<&'a UplinkRecord>,
    by_vlan: BTreeMap<u16, Vec<&'a Leaf>>,
    untagged: Vec<&'a Leaf>,
    /// Trunks with VLANs beyond the groups shown.
    more: Vec<&'a Leaf>,
}

fn lowers<'a>(leaves: &'a [Leaf], uplinks: &'a [UplinkRecord]) -> Vec<Lower<'a>> {
    let mut names: BTreeSet<String> = leaves.iter().map(|l| l.record.lower.to_string()).collect();
    names.extend(uplinks.iter().map(|u| u.name.to_string()));
    names
        .into_iter()
        .map(|name| {
            let mut lower = Lower {
                uplink: uplinks.iter().find(|u| u.name.as_str() == name),
                name,
                by_vlan: BTreeMap::new(),
                untagged: Vec::new(),
                more: Vec::new(),
            };
            for leaf in leaves
                .iter()
                .filter(|l| l.record.lower.as_str() == lower.name)
            {
                let vids = groups(&leaf.record.vlans);
                if vids.is_empty() {
                    lower.untagged.push(leaf);
                }
                for vid in vids {
                    lower.by_vlan.entry(vid.get()).or_default().push(leaf);
                }
                if let PortVlans::Trunk { vlans, .. } = &leaf.record.vlans
                    && vlans.iter().count() > TRUNK_GROUPS
                {
                    lower.more.push(leaf);
                }
            }
            lower
        })
        .collect()
}

fn leaves(instance: &Instance) -> Result<(Vec<Leaf>, Vec<UplinkRecord>)> {
    let leaves = instance
        .list()?
        .into_iter()
        .map(|record| Leaf {
            status: instance.live_status(&record),
            record,
        })
        .collect();
    Ok((leaves, instance.uplinks()?))
}

fn relay_text(uplink: Option<&UplinkRecord>) -> &'static str {
    if uplink.is_some_and(|u| u.reflective_relay) {
        "on"
    } else {
        "off"
    }
}

/// The tree as text.
pub fn text(instance: &Instance) -> Result<String> {
    let (leaves, uplinks) = leaves(instance)?;
    let mut out = String::new();
    for lower in lowers(&leaves, &uplinks) {
        out += &format!("{}\n", lower.name);
        out += &format!("    reflective relay: {}\n", relay_text(lower.uplink));
        if let Some(port) = lower.uplink.and_then(|u| u.host_port.as_ref()) {
            let addresses: Vec<String> = port.addresses.iter().map(|a| a.to_string()).collect();
            out += &format!(
                "    host port {}: {}{}\n",
                port.name,
                port.vlans,
                if addresses.is_empty() {
                    String::new()
                } else {
                    format!(", {}", addresses.join(" "))
                }
            );
        }
        for (vid, members) in &lower.by_vlan {
            out += &format!("    vlan {vid}\n");
            for leaf in members {
                out += &format!("        {}\n", leaf.line(Vid::new(*vid)));
            }
        }
        if !lower.untagged.is_empty() {
            out += "    untagged\n";
            for leaf in &lower.untagged {
                out += &format!("        {}\n", leaf.line(None));
            }
        }
        for leaf in &lower.more {
            out += &format!(
                "    (trunk {} also carries {})\n",
                leaf.record.name, leaf.record.vlans
            );
        }
    }
    if out.is_empty() {
        out = "no endpoints and no lower device settings\n".into();
    }
    Ok(out)
}

/// The same tree as JSON.
pub fn json(instance: &Instance) -> Result<Value> {
    let (leaves, uplinks) = leaves(instance)?;
    let lowers: Vec<Value> = lowers(&leaves, &uplinks)
        .iter()
        .map(|lower| {
            json!({
                "name": lower.name,
                "reflective_relay": lower.uplink.is_some_and(|u| u.reflective_relay),
                "host_port": lower.uplink.and_then(|u| u.host_port.as_ref()).map(|p| json!({
                    "name": p.name,
                    "vlans": p.vlans.to_string(),
                    "addresses": p.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                })),
                "vlans": lower.by_vlan.iter().map(|(vid, members)| json!({
                    "vlan": vid,
                    "endpoints": members.iter().map(|l| l.json(Vid::new(*vid))).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "untagged": lower.untagged.iter().map(|l| l.json(None)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "lowers": lowers }))
}
