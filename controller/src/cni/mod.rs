//! The `macvswitch-cni` plugin (CNI 1.1): the network configuration on
//! stdin, the verb and the attachment in the environment, a result or an
//! error in the spec's JSON on stdout. Endpoints are made and removed by
//! the controller's own verbs (`ops`), in the same state and pins as the
//! CLI's, so `macvswitch endpoint list`, `restore` and the daemon see them.

pub mod config;
pub mod error;
pub mod ipam;
pub mod result;
pub mod verbs;
pub mod version;

use std::{io::Read as _, path::PathBuf, process::ExitCode};

use serde_json::{Value, json};

use self::{
    config::NetConf,
    error::{CniError, Code},
};

/// The runtime's environment, as the spec names it.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: String,
    pub path: String,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Self {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS").map(PathBuf::from),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS").unwrap_or_default(),
            path: var("CNI_PATH").unwrap_or_default(),
        }
    }

    /// A variable the verb needs (code 4 if it is missing).
    pub fn require<'a, T: ?Sized>(
        &self,
        name: &str,
        value: Option<&'a T>,
    ) -> Result<&'a T, CniError> {
        value.ok_or_else(|| {
            CniError::new(
                Code::InvalidEnvironment,
                format!("{name}: missing; {} needs it", self.command),
            )
        })
    }
}

/// Runs one invocation: what a runtime sees is the exit status and stdout.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let env = Env::from_process();
    let mut stdin = String::new();
    let read = std::io::stdin().read_to_string(&mut stdin);
    let outcome = match read {
        Ok(_) => run(&env, &stdin),
        Err(e) => Err(CniError::new(Code::Io, format!("reading stdin: {e}"))),
    };
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(answer)) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(mut error) => {
            if error.cni_version.is_empty() {
                error.cni_version = version_of(&stdin);
            }
            println!(
                "{}",
                serde_json::to_string(&error).unwrap_or_else(|_| error.msg.clone())
            );
            ExitCode::FAILURE
        }
    }
}

/// The version an error is written in: the network's if it speaks one we
/// know, else the newest.
fn version_of(stdin: &str) -> String {
    serde_json::from_str::<Value>(stdin)
        .ok()
        .and_then(|conf| conf.get("cniVersion")?.as_str().map(String::from))
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::SUPPORTED[version::SUPPORTED.len() - 1].to_string())
}

/// One verb, its answer (if it has one) or its error.
pub fn run(env: &Env, stdin: &str) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": version_of(stdin),
            "supportedVersions": version::SUPPORTED,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    version::check(&conf.cni_version)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(Code::Internal, format!("starting a runtime: {e}")))?;
    let verb = match env.command.as_str() {
        "ADD" => verbs::Verb::Add,
        "DEL" => verbs::Verb::Del,
        "CHECK" => verbs::Verb::Check,
        "STATUS" => verbs::Verb::Status,
        "GC" => verbs::Verb::Gc,
        "" => {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                "CNI_COMMAND: missing; one of ADD, DEL, CHECK, STATUS, GC, VERSION",
            ));
        }
        other => {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_COMMAND {other}: must be ADD, DEL, CHECK, STATUS, GC or VERSION"),
            ));
        }
    };
    runtime.block_on(verbs::run(verb, env, &conf))
}
