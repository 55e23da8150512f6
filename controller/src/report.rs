//! What `endpoint list|show` and `stats` print, as text or JSON.

use macvswitch_common::{DropReason, EndpointCounters};
use serde_json::{Value, json};

use crate::{endpoint::Instance, state::EndpointRecord};

pub fn endpoint_json(instance: &Instance, record: &EndpointRecord) -> Value {
    json!({
        "name": record.name,
        "lower": record.lower,
        "mode": record.mode,
        "mac": record.mac,
        "ifindex": record.ifindex,
        "vlan": record.vlan,
        "policy": if record.vlan.is_some() { "access" } else { "untagged" },
        "mtu": record.mtu,
        "allow_mac_spoofing": record.allow_mac_spoofing,
        "tap": instance.tap_path(&record.name),
    })
}

pub fn endpoint_table(records: &[EndpointRecord]) -> String {
    let mut out = format!(
        "{:<15} {:<15} {:<8} {:<17} {:<6} {:>7}\n",
        "NAME", "LOWER", "MODE", "MAC", "VLAN", "IFINDEX"
    );
    for r in records {
        let vlan = r.vlan.map_or("-".to_string(), |v| v.to_string());
        out += &format!(
            "{:<15} {:<15} {:<8} {:<17} {:<6} {:>7}\n",
            r.name, r.lower, r.mode, r.mac, vlan, r.ifindex
        );
    }
    out
}

pub fn endpoint_details(instance: &Instance, r: &EndpointRecord) -> String {
    let vlan = r
        .vlan
        .map_or("untagged port".to_string(), |v| format!("access {v}"));
    format!(
        "{}: lower {} mode {} mac {} ifindex {}\n  vlan: {vlan}\n  mtu: {}\n  mac spoofing: {}\n  tap: {}\n",
        r.name,
        r.lower,
        r.mode,
        r.mac,
        r.ifindex,
        r.mtu,
        if r.allow_mac_spoofing {
            "allowed"
        } else {
            "dropped"
        },
        instance.tap_path(&r.name).display(),
    )
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

pub fn stats_json(name: &str, counters: &EndpointCounters) -> Value {
    json!({
        "name": name,
        "to_guest": { "packets": counters.to_guest_packets, "bytes": counters.to_guest_bytes },
        "from_guest": { "packets": counters.from_guest_packets, "bytes": counters.from_guest_bytes },
        "drops": drops_json(counters),
    })
}

pub fn stats_text(name: &str, c: &EndpointCounters) -> String {
    let mut out = format!(
        "{name}\n  to guest:   {} packets {} bytes\n  from guest: {} packets {} bytes\n",
        c.to_guest_packets, c.to_guest_bytes, c.from_guest_packets, c.from_guest_bytes
    );
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|reason| c.drops[**reason as usize] != 0)
        .map(|reason| format!("{} {}", reason.name(), c.drops[*reason as usize]))
        .collect();
    if drops.is_empty() {
        out += "  drops:      none\n";
    } else {
        out += &format!("  drops:      {}\n", drops.join(", "));
    }
    out
}
