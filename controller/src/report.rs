//! What `endpoint list|show` and `stats` print, as text or JSON.

use std::path::PathBuf;

use macvswitch_common::{DropReason, EndpointCounters, UplinkCounters};
use serde_json::{Value, json};

use crate::{
    model::{
        guards::Guards,
        isolation::Isolation,
        policy::PortVlans,
        state::{EndpointRecord, UplinkRecord},
        types::AttachMode,
    },
    ops::instance::{Instance, LiveStatus},
};

/// The endpoint's tap node if it can be opened now: its macvtap is there
/// (programs on it or not: the status says) and so is the node.
fn usable_tap(instance: &Instance, record: &EndpointRecord, status: LiveStatus) -> Option<PathBuf> {
    let tap = instance.tap_path(&record.name);
    let live = matches!(status, LiveStatus::Ready | LiveStatus::NotAttached);
    (live && tap.exists()).then_some(tap)
}

pub fn endpoint_json(instance: &Instance, record: &EndpointRecord) -> Value {
    let status = instance.live_status(record);
    let mut value = json!({
        "name": record.name,
        "lower": record.lower,
        "mode": record.mode,
        "mac": record.mac,
        "ifindex": record.ifindex,
        "policy": record.vlans.kind(),
        "status": status.as_str(),
        "vlan": null,
        "priority": record.priority,
        "mtu": record.mtu,
        "allow_mac_spoofing": record.allow_mac_spoofing,
        "isolation": record.isolation.to_string(),
        "isolated": matches!(record.isolation, Isolation::Isolated),
        "community": match &record.isolation {
            Isolation::Community(name) => Some(name),
            _ => None,
        },
        "tap": usable_tap(instance, record, status),
        "attach": record.attach,
        "guards": guards_json(&record.guards),
        "device": record.device,
    });
    if let Some(cni) = &record.cni {
        value["container_id"] = json!(cni.container_id);
        value["network"] = json!(cni.network);
        value["ifname"] = json!(cni.ifname);
        value["netns"] = json!(cni.netns);
    }
    match &record.vlans {
        PortVlans::Untagged => {}
        PortVlans::Access { vlan } => value["vlan"] = json!(vlan),
        PortVlans::Trunk {
            vlans,
            native,
            native_tagged,
        } => {
            value["trunk"] = json!(vlans);
            value["native"] = json!(native);
            value["native_tagged"] = json!(native_tagged);
        }
        PortVlans::Tunnel { svlan, cvlans } => {
            value["tunnel"] = json!(svlan);
            value["tunnel_cvlans"] = json!(cvlans);
        }
    }
    value
}

pub fn endpoint_table(instance: &Instance, records: &[EndpointRecord]) -> String {
    let mut out = format!(
        "{:<15} {:<15} {:<8} {:<17} {:>7}  {:<12}  {}\n",
        "NAME", "LOWER", "MODE", "MAC", "IFINDEX", "STATUS", "VLANS"
    );
    for r in records {
        // A CNI endpoint's row ends with whose it is.
        let owner = r.cni.as_ref().map_or(String::new(), |cni| {
            format!(
                "  container {} network {} as {}",
                cni.container_id, cni.network, cni.ifname
            )
        });
        out += &format!(
            "{:<15} {:<15} {:<8} {:<17} {:>7}  {:<12}  {}{owner}\n",
            r.name,
            r.lower,
            r.mode,
            r.mac,
            r.ifindex,
            instance.live_status(r).as_str(),
            r.vlans
        );
    }
    out
}

pub fn endpoint_details(instance: &Instance, r: &EndpointRecord) -> String {
    let priority = r
        .priority
        .map_or("kept from the guest".to_string(), |p| p.get().to_string());
    let status = instance.live_status(r);
    let (tap, qemu) = match usable_tap(instance, r, status) {
        // Its tap, if any, is opened inside the container.
        None if r.cni.is_some() => (
            format!("{} in the container", r.device.as_str()),
            "by the VM launcher in the container".to_string(),
        ),
        Some(tap) => (tap.display().to_string(), qemu_fragment(r)),
        None if matches!(status, LiveStatus::Ready | LiveStatus::NotAttached) => (
            format!(
                "none: its node {} is gone",
                instance.tap_path(&r.name).display()
            ),
            "not until the tap is there".to_string(),
        ),
        None => (
            "none until the endpoint is ready".to_string(),
            "not until the endpoint is ready".to_string(),
        ),
    };
    let owner = r.cni.as_ref().map_or(String::new(), |cni| {
        format!(
            "  container: {} network {} as {} in {}\n",
            cni.container_id,
            cni.network,
            cni.ifname,
            cni.netns.display()
        )
    });
    let details = format!(
        "{}: lower {} mode {} mac {} ifindex {}\n  status: {}\n  vlans: {}\n  isolation: {}\n  priority: {priority}\n  mtu: {}\n  mac spoofing: {}\n  guards: {}\n  tap: {tap}\n  attach: {}\n  qemu: {qemu}\n",
        r.name,
        r.lower,
        r.mode,
        r.mac,
        r.ifindex,
        status.explained(),
        r.vlans,
        r.isolation,
        r.mtu,
        if r.allow_mac_spoofing {
            "allowed"
        } else {
            "dropped"
        },
        guards_text(&r.guards),
        attach_text(r.attach),
    );
    details + &owner
}

/// The guards with every key present, so scripts can rely on them.
pub fn guards_json(guards: &Guards) -> Value {
    json!({
        "ip": guards.ip.as_ref().map(|list| list.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "allow_dhcp_server": guards.allow_dhcp_server,
        "allow_ra": guards.allow_ra,
        "allow_bpdu": guards.allow_bpdu,
        "storm_limit": guards.storm_limit,
    })
}

/// The guards of `endpoint show`: each on or off, in words.
fn guards_text(guards: &Guards) -> String {
    let guard = |allowed: bool, name: &str| {
        format!("{name} {}", if allowed { "allowed" } else { "dropped" })
    };
    format!(
        "ip {}; {}; {}; {}; storm {}",
        guards
            .ip
            .as_ref()
            .map_or("any (no --ip)".to_string(), ToString::to_string),
        guard(guards.allow_dhcp_server, "dhcp-server"),
        guard(guards.allow_ra, "ra"),
        guard(guards.allow_bpdu, "bpdu"),
        guards
            .storm_limit
            .map_or("unlimited".to_string(), |limit| format!("{limit}/s")),
    )
}

/// An attach mode for text output; `unknown` for records older than the
/// clsact path.
fn attach_text(mode: Option<AttachMode>) -> &'static str {
    mode.map_or("unknown", |mode| mode.as_str())
}

/// Every drop reason by name, zeros included, so scripts can rely on keys.
fn drops_json(counters: &EndpointCounters) -> Value {
    let map: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|reason| {
            (
                reason.name().to_string(),
                json!(counters.drops[*reason as usize]),
            )
        })
        .collect();
    Value::Object(map)
}

/// Counters of one endpoint; per VLAN on trunk and tunnel ports (the
/// customer VLAN in a tunnel, 0 for untagged customer frames).
pub struct StatsRow {
    pub name: String,
    pub counters: EndpointCounters,
    pub vlans: Option<Vec<(u16, EndpointCounters)>>,
}

/// The counters of `records` from the pinned maps (all zero before the
/// data path was ever loaded): what `stats` prints and `/metrics` serves.
pub fn stats_rows(
    instance: &Instance,
    records: &[EndpointRecord],
) -> crate::error::Result<Vec<StatsRow>> {
    let maps = instance.maps()?;
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let (counters, vlans) = match &maps {
            Some(maps) => (
                maps.counters(record.slot)?,
                maps.vlan_counters(record.ifindex)?,
            ),
            None => (EndpointCounters::ZERO, Vec::new()),
        };
        let per_vlan = matches!(
            record.vlans,
            PortVlans::Trunk { .. } | PortVlans::Tunnel { .. }
        );
        rows.push(StatsRow {
            name: record.name.to_string(),
            counters,
            vlans: per_vlan.then_some(vlans),
        });
    }
    Ok(rows)
}

fn counters_json(counters: &EndpointCounters) -> Value {
    json!({
        "to_guest": { "packets": counters.to_guest_packets, "bytes": counters.to_guest_bytes },
        "from_guest": { "packets": counters.from_guest_packets, "bytes": counters.from_guest_bytes },
        "drops": drops_json(counters),
    })
}

pub fn stats_json(row: &StatsRow) -> Value {
    let mut value = counters_json(&row.counters);
    value["name"] = json!(row.name);
    if let Some(vlans) = &row.vlans {
        value["vlans"] = vlans
            .iter()
            .map(|(vid, counters)| {
                let mut entry = counters_json(counters);
                entry["vid"] = json!(vid);
                entry
            })
            .collect();
    }
    value
}

fn counters_text(c: &EndpointCounters, indent: &str) -> String {
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|reason| c.drops[**reason as usize] != 0)
        .map(|reason| format!("{} {}", reason.name(), c.drops[*reason as usize]))
        .collect();
    let drops = if drops.is_empty() {
        "none".to_string()
    } else {
        drops.join(", ")
    };
    format!(
        "{indent}to guest:   {} packets {} bytes\n{indent}from guest: {} packets {} bytes\n{indent}drops:      {drops}\n",
        c.to_guest_packets, c.to_guest_bytes, c.from_guest_packets, c.from_guest_bytes
    )
}

pub fn stats_text(row: &StatsRow) -> String {
    let mut out = format!("{}\n{}", row.name, counters_text(&row.counters, "  "));
    for (vid, counters) in row.vlans.iter().flatten() {
        out += &format!("  vlan {vid}\n{}", counters_text(counters, "    "));
    }
    out
}

pub fn uplink_json(record: &UplinkRecord, counters: Option<&UplinkCounters>) -> Value {
    let host_port = record.host_port.as_ref().map(|port| {
        json!({
            "name": port.name,
            "mac": port.mac,
            "ifindex": port.ifindex,
            "vlan": match port.vlans {
                PortVlans::Access { vlan } => Some(vlan),
                _ => None,
            },
            "addresses": port.addresses,
            "attach": port.attach,
        })
    });
    let counters = counters.copied().unwrap_or_default();
    json!({
        "name": record.name,
        "ifindex": record.ifindex,
        "reflective_relay": record.reflective_relay,
        "attach": record.attach,
        "own_clsact": record.own_clsact,
        "relayed": {
            "unicast": counters.relayed_unicast,
            "multicast": counters.relayed_multicast,
        },
        "host_port": host_port,
    })
}

pub fn uplink_text(record: &UplinkRecord, counters: Option<&UplinkCounters>) -> String {
    let mut out = format!(
        "{}: ifindex {}\n  reflective relay: {}\n",
        record.name,
        record.ifindex,
        if record.reflective_relay { "on" } else { "off" }
    );
    if record.reflective_relay {
        out += &format!("  attach: {}\n", attach_text(record.attach));
    }
    if let Some(c) = counters {
        out += &format!(
            "  relayed: {} unicast, {} multicast\n",
            c.relayed_unicast, c.relayed_multicast
        );
    }
    match &record.host_port {
        Some(port) => {
            let addresses: Vec<String> = port.addresses.iter().map(|a| a.to_string()).collect();
            out += &format!(
                "  host port: {} mac {} {} {} attach {}\n",
                port.name,
                port.mac,
                port.vlans,
                addresses.join(" "),
                attach_text(port.attach)
            );
        }
        None => out += "  host port: none\n",
    }
    out
}

/// A QEMU command line fragment for the endpoint, run under `exec`.
pub fn qemu_fragment(record: &EndpointRecord) -> String {
    format!(
        "macvswitch exec {name} -- qemu-system-x86_64 … -netdev tap,id=n0,fd=3,vhost=off \
         -device virtio-net-pci,netdev=n0,mac={mac}",
        name = record.name,
        mac = record.mac
    )
}

/// Progress of long operations as a bar on stderr, for a person at a
/// terminal (`main` uses it only when stdout is one).
pub struct TerminalBar(std::sync::Mutex<Option<indicatif::ProgressBar>>);

impl TerminalBar {
    pub fn new() -> Self {
        TerminalBar(std::sync::Mutex::new(None))
    }

    fn with(&self, f: impl FnOnce(&mut Option<indicatif::ProgressBar>)) {
        if let Ok(mut bar) = self.0.lock() {
            f(&mut bar);
        }
    }
}

impl Default for TerminalBar {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::ops::progress::Progress for TerminalBar {
    fn begin(&self, what: &str, total: usize) {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        self.with(|slot| *slot = Some(bar));
    }

    fn step(&self) {
        self.with(|slot| {
            if let Some(bar) = slot {
                bar.inc(1);
            }
        });
    }

    fn end(&self) {
        self.with(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}
