//! Checking a pinned map against what this build's object declares, before
//! reusing it (as cilium/ebpf's `MapSpec.Compatible` does): a map pinned by
//! an older build with another layout would be read as garbage.

use std::path::Path;

use aya::maps::MapInfo;

use crate::error::{Error, Result};

/// What the object declares about one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// The maps of an eBPF object, from its ELF.
pub fn expected_maps(object: &[u8]) -> Result<Vec<MapSpec>> {
    let parsed =
        aya_obj::Object::parse(object).map_err(|e| Error::bpf("parsing the eBPF object", e))?;
    let mut specs: Vec<MapSpec> = parsed
        .maps
        .iter()
        // Sections such as .bss/.data/.rodata are per-load, never pinned.
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, map)| MapSpec {
            name: name.clone(),
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
        })
        .collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

/// The maps of the embedded object, parsed once per process.
pub fn expected_maps_cached() -> Result<&'static [MapSpec]> {
    static SPECS: std::sync::OnceLock<Vec<MapSpec>> = std::sync::OnceLock::new();
    if let Some(specs) = SPECS.get() {
        return Ok(specs);
    }
    let specs = expected_maps(crate::EBPF_OBJECT)?;
    Ok(SPECS.get_or_init(|| specs))
}

/// Why the map pinned at `path` cannot be reused for `spec`; `None` if it
/// can, or if nothing is pinned there.
pub fn check_pinned(path: &Path, spec: &MapSpec) -> Option<String> {
    if !path.exists() {
        return None;
    }
    let info = match MapInfo::from_pin(path) {
        Ok(info) => info,
        Err(e) => return Some(format!("unreadable ({e})")),
    };
    let map_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    let checks = [
        ("type", map_type, spec.map_type),
        ("key size", info.key_size(), spec.key_size),
        ("value size", info.value_size(), spec.value_size),
        ("max entries", info.max_entries(), spec.max_entries),
    ];
    checks
        .iter()
        .find(|(_, pinned, wanted)| pinned != wanted)
        .map(|(what, pinned, wanted)| format!("{what} {pinned}, this build expects {wanted}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_declares_the_maps_the_controller_opens() {
        if crate::EBPF_OBJECT.is_empty() {
            return;
        }
        let specs = expected_maps(crate::EBPF_OBJECT).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        for name in super::super::maps::MAP_NAMES {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let policies = specs.iter().find(|s| s.name == "POLICIES").unwrap();
        assert_eq!(
            policies.value_size as usize,
            std::mem::size_of::<macvswitch_common::EndpointPolicy>()
        );
    }
}
