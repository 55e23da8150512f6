//! Errors of the controller library. `Invalid` is the user's to fix (exit
//! status 2); everything else is the system's (exit status 1).

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: names the option, the value and what is allowed.
    #[error("{option}{}: {allowed}", if value.is_empty() { String::new() } else { format!(" {value}") })]
    Invalid {
        option: &'static str,
        value: String,
        allowed: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: {context}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("eBPF: {context}")]
    Bpf {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("state file {path}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn invalid(option: &'static str, value: impl ToString, allowed: impl ToString) -> Self {
        Self::Invalid {
            option,
            value: value.to_string(),
            allowed: allowed.to_string(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn bpf(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Bpf {
            context: context.into(),
            source: source.into(),
        }
    }

    pub fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self::Netlink {
            context: context.into(),
            source,
        }
    }

    /// Exit status: 2 for input the user must fix, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
