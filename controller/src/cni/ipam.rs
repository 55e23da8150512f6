//! Delegation to the IPAM plugin named by `ipam.type`, found in
//! `CNI_PATH`, in the newest version both it and the network speak (so a
//! 1.1.0 network works with Debian 12's host-local, which stops at 1.0.0).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

use super::{
    config::NetConf,
    error::{CniError, Code},
    version,
};

/// An IPAM plugin and the version to speak to it.
pub struct Ipam {
    pub kind: String,
    binary: PathBuf,
    section: Value,
    /// What it lists on VERSION.
    pub versions: Vec<String>,
}

impl Ipam {
    /// The network's IPAM plugin, if it has one.
    pub fn of(conf: &NetConf, cni_path: &str) -> Result<Option<Self>, CniError> {
        let Some((kind, section)) = conf.ipam()? else {
            return Ok(None);
        };
        let binary = std::env::split_paths(cni_path)
            .map(|dir| dir.join(&kind))
            .find(|path| path.is_file())
            .ok_or_else(|| {
                CniError::new(
                    Code::InvalidConfig,
                    format!("ipam.type {kind:?}: no such plugin in CNI_PATH {cni_path:?}"),
                )
            })?;
        let answer = run(
            &binary,
            "VERSION",
            &[],
            &serde_json::json!({"cniVersion": conf.cni_version}),
        )
        .map_err(|e| e.prefixed(&kind))?;
        let versions = answer
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Self {
            kind,
            binary,
            section,
            versions,
        }))
    }

    /// The version to speak for a network of version `wanted`.
    pub fn version_for(&self, wanted: &str) -> Result<String, CniError> {
        version::best(wanted, &self.versions).ok_or_else(|| {
            CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "ipam {}: speaks {}, none of them at most cniVersion {wanted}",
                    self.kind,
                    self.versions.join(", ")
                ),
            )
        })
    }

    /// Whether it speaks `version` (STATUS and GC need 1.1.0).
    pub fn speaks(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Runs `command` with the network configuration `conf` (its
    /// `cniVersion` set to `version`) and `env` on top of ours.
    pub fn call(
        &self,
        command: &str,
        conf: &NetConf,
        version: &str,
        extra: &[(&str, Value)],
        env: &[(&str, &str)],
    ) -> Result<Value, CniError> {
        let mut stdin = conf.raw.clone();
        stdin.insert("cniVersion".into(), Value::from(version));
        stdin.insert("ipam".into(), self.section.clone());
        for (key, value) in extra {
            stdin.insert((*key).into(), value.clone());
        }
        run(&self.binary, command, env, &Value::Object(stdin)).map_err(|e| e.prefixed(&self.kind))
    }
}

impl CniError {
    fn prefixed(mut self, plugin: &str) -> Self {
        self.msg = format!("ipam {plugin}: {}", self.msg);
        self
    }
}

/// Runs a plugin binary as a runtime does; its error form is passed on.
fn run(
    binary: &Path,
    command: &str,
    env: &[(&str, &str)],
    stdin: &Value,
) -> Result<Value, CniError> {
    let io = |what: &str, e: std::io::Error| {
        CniError::new(Code::Io, format!("{what} {}: {e}", binary.display()))
    };
    let mut child = Command::new(binary)
        .env("CNI_COMMAND", command)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io("running", e))?;
    if let Some(mut pipe) = child.stdin.take() {
        match pipe.write_all(stdin.to_string().as_bytes()) {
            // It answered without reading all of it (host-local's VERSION
            // may): its answer tells.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.map_err(|e| io("writing to", e))?,
        }
    }
    let output = child.wait_with_output().map_err(|e| io("waiting for", e))?;
    let answer: Option<Value> = serde_json::from_slice(&output.stdout).ok();
    if output.status.success() {
        return Ok(answer.unwrap_or(Value::Null));
    }
    let code = answer
        .as_ref()
        .and_then(|a| a.get("code"))
        .and_then(Value::as_u64)
        .map_or(Code::Internal as u32, |c| c as u32);
    let msg = answer
        .as_ref()
        .and_then(|a| a.get("msg"))
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_string());
    let details = answer
        .as_ref()
        .and_then(|a| a.get("details"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Err(CniError {
        cni_version: String::new(),
        code,
        msg: format!("{command}: {msg}"),
        details,
    })
}
