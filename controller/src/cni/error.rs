//! The CNI error form: `{"cniVersion","code","msg","details"}` on stdout
//! with a non-zero exit, and the spec's codes.

use serde::Serialize;

use crate::error::Error;

/// The spec's well-known error codes that this plugin gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    LimitedConnectivity = 51,
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

impl From<Error> for CniError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid {
                option,
                value,
                allowed,
            } => {
                // Rules worded for the command line, in the config's terms.
                let allowed = allowed.replace("--lower", "master");
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
    }
}
