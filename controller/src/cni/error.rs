//! The CNI error form: `{"cniVersion","code","msg","details"}` on stdout
//! with a non-zero exit, and the spec's codes.

use serde::Serialize;

use crate::error::Error;

/// The spec's well-known error codes that this plugin gives (an IPAM
/// plugin's, 51 from its STATUS say, are passed on as they are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    PluginNotAvailable = 50,
    /// 100 and up are the plugin's own: a kernel or host failure.
    Internal = 100,
}

#[derive(Debug, Serialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

/// The configuration's name for an option the controller names as on its
/// command line: `--lower` is `master`, `--native-tagged` `nativeTagged`.
fn cni_field(option: &str) -> String {
    let option = option.trim_start_matches("--");
    if option == "lower" {
        return "master".to_string();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in option.chars() {
        match c {
            '-' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// A rule worded for the command line, in the config's terms: `(--trunk
/// VIDLIST)` becomes `(trunk VIDLIST)`, `--lower` `master`.
fn in_config_terms(rule: &str) -> String {
    rule.split(' ')
        .map(|word| {
            let start = word
                .find("--")
                .filter(|at| word[..*at].chars().all(|c| c == '('));
            match start {
                Some(at) => {
                    let end = word[at..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                        .map_or(word.len(), |n| at + n);
                    format!(
                        "{}{}{}",
                        &word[..at],
                        cni_field(&word[at..end]),
                        &word[end..]
                    )
                }
                None => word.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<Error> for CniError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid {
                option,
                value,
                allowed,
            } => {
                let allowed = in_config_terms(&allowed);
                let msg = if value.is_empty() {
                    format!("{}: {allowed}", cni_field(option))
                } else {
                    format!("{} {value}: {allowed}", cni_field(option))
                };
                CniError::new(Code::InvalidConfig, msg)
            }
            other => {
                let msg = other.to_string();
                let mut details = Vec::new();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    details.push(cause.to_string());
                    source = cause.source();
                }
                CniError::new(Code::Internal, msg).details(details.join(": "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_named_as_in_the_config() {
        assert_eq!(cni_field("--lower"), "master");
        assert_eq!(cni_field("--native-tagged"), "nativeTagged");
        assert_eq!(cni_field("--allow-mac-spoofing"), "allowMacSpoofing");
        assert_eq!(cni_field("vlan"), "vlan");
        assert_eq!(
            in_config_terms("needs a trunk port (--trunk VIDLIST), not --native-tagged."),
            "needs a trunk port (trunk VIDLIST), not nativeTagged."
        );
        assert_eq!(in_config_terms("see --lower"), "see master");
    }
}
