//! What the controller attached, seen from the kernel: TCX link pins in the
//! test's bpffs, or our `bpf` filters on a clsact qdisc (listed with
//! `tc -j filter show`). The tests run with `MACVSWITCH_ATTACH` passed
//! through to the binary, so the same test covers either mode.

use std::path::Path;

use serde_json::Value;

use crate::NetNs;

/// The tc priority ("pref") of macvswitch's filters.
pub const PRIORITY: u64 = 0x4d53;
/// The prefix of the names of macvswitch's filters.
pub const NAME_PREFIX: &str = "macvswitch:";

/// The attach mode the binary is forced to, if any (`MACVSWITCH_ATTACH`).
pub fn forced() -> Option<String> {
    std::env::var("MACVSWITCH_ATTACH")
        .ok()
        .filter(|v| v == "clsact" || v == "tcx")
}

/// Whether this run forces clsact.
pub fn clsact_forced() -> bool {
    forced().as_deref() == Some("clsact")
}

/// Every filter on `hook` ("ingress" or "egress") of `dev` in `ns`, as
/// `tc -j` prints them, without the per-priority header entries. Empty
/// when the device has no clsact qdisc (or is gone).
pub fn filters(ns: &NetNs, dev: &str, hook: &str) -> Vec<Value> {
    let out = ns.exec(&["tc", "-j", "filter", "show", "dev", dev, hook]);
    if !out.status.success() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let all: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Array(Vec::new()));
    all.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.get("options").is_some())
        .collect()
}

/// Whether a filter `tc -j` printed is one of macvswitch's.
pub fn is_ours(filter: &Value) -> bool {
    filter["pref"].as_u64() == Some(PRIORITY)
        && filter["kind"] == "bpf"
        && filter["options"]["bpf_name"]
            .as_str()
            .is_some_and(|n| n.starts_with(NAME_PREFIX))
}

/// macvswitch's filters on `hook` of `dev`.
pub fn ours(ns: &NetNs, dev: &str, hook: &str) -> Vec<Value> {
    filters(ns, dev, hook).into_iter().filter(is_ours).collect()
}

/// The kinds of the qdiscs of `dev` ("noqueue", "clsact", ...).
pub fn qdiscs(ns: &NetNs, dev: &str) -> Vec<String> {
    let out = ns.exec_ok(&["tc", "-j", "qdisc", "show", "dev", dev]);
    let all: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Array(Vec::new()));
    all.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|q| q["kind"].as_str().map(str::to_string))
        .collect()
}

/// Why endpoint (or host port) `name` is not attached the way its mode
/// says: both TCX link pins under `<bpffs>/links/NAME`, or exactly one of
/// our filters on each hook and no pins. Empty when it is.
pub fn endpoint_problems(ns: &NetNs, bpffs: &Path, name: &str, mode: &str) -> Vec<String> {
    let dir = bpffs.join("links").join(name);
    let pins = ["egress", "ingress"].map(|hook| dir.join(hook).exists());
    let mut problems = Vec::new();
    for (hook, pinned) in ["egress", "ingress"].iter().zip(pins) {
        let ours = ours(ns, name, hook).len();
        match mode {
            "clsact" => {
                if ours != 1 {
                    problems.push(format!("{name} {hook}: {ours} macvswitch filters, want 1"));
                }
                if pinned {
                    problems.push(format!("{name} {hook}: a TCX pin on a clsact device"));
                }
            }
            _ => {
                if !pinned {
                    problems.push(format!("{name}: link pin {hook} missing"));
                }
                if ours != 0 {
                    problems.push(format!(
                        "{name} {hook}: {ours} clsact filters on a TCX device"
                    ));
                }
            }
        }
    }
    problems
}

/// Whether endpoint `name` carries our programs in either mode.
pub fn attached(ns: &NetNs, bpffs: &Path, name: &str) -> bool {
    let dir = bpffs.join("links").join(name);
    ["egress", "ingress"]
        .iter()
        .all(|hook| dir.join(hook).exists() || ours(ns, name, hook).len() == 1)
}
