//! CNI specification versions: which this plugin speaks, and ordering.

use super::error::{CniError, Code};

/// What this plugin answers in (`VERSION` lists them).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A version as three numbers, for comparisons.
pub fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    let parsed = (
        parts.next()??,
        parts.next()??,
        parts.next().unwrap_or(Some(0))?,
    );
    parts.next().is_none().then_some(parsed)
}

/// Refuses a version this plugin does not speak (error code 1).
pub fn check(version: &str) -> Result<(), CniError> {
    if SUPPORTED.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        Code::IncompatibleVersion,
        format!(
            "cniVersion {version:?}: incompatible CNI version; supported: {}",
            SUPPORTED.join(", ")
        ),
    ))
}

/// Whether `version` is at least `at_least`.
pub fn at_least(version: &str, at_least: &str) -> bool {
    parse(version) >= parse(at_least)
}

/// The newest of `offered` that is not newer than `wanted`, if any.
pub fn best(wanted: &str, offered: &[String]) -> Option<String> {
    offered
        .iter()
        .filter(|version| parse(version).is_some() && parse(version) <= parse(wanted))
        .max_by_key(|version| parse(version))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_version_both_speak() {
        let host_local: Vec<String> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .map(String::from)
            .to_vec();
        assert_eq!(best("1.1.0", &host_local).as_deref(), Some("1.0.0"));
        assert_eq!(best("0.3.1", &host_local).as_deref(), Some("0.3.1"));
        assert_eq!(best("0.2.5", &["1.0.0".to_string()]), None);
        assert!(at_least("1.1.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(check("0.2.0").is_err());
        assert!(check("1.1.0").is_ok());
    }
}
