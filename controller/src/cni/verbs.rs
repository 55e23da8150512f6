//! ADD, DEL, CHECK, STATUS and GC, each on the controller's own verbs.

use serde_json::Value;

use super::{
    Env,
    config::NetConf,
    error::{CniError, Code},
    ipam::Ipam,
    result::{self, Addressing, Interface},
    version,
};
use crate::{
    kernel::{
        datapath::{Datapath, PinLayout},
        netlink::Netlink,
        netns,
    },
    model::{state::CniAttachment, types::IfName},
    ops::{instance::Instance, progress::Reporter, store::StateDir},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

pub async fn run(verb: Verb, env: &Env, conf: &NetConf) -> Result<Option<Value>, CniError> {
    let instance = instance(conf)?;
    // As the CLI does: a verb that fails leaves the state directory as it
    // found it, with no lock file or directory made for nothing.
    let found = instance.state_dir.found();
    let outcome = run_verb(verb, env, conf, &instance).await;
    if outcome.is_err() {
        instance.state_dir.leave_as_found(found);
    }
    outcome
}

async fn run_verb(
    verb: Verb,
    env: &Env,
    conf: &NetConf,
    instance: &Instance,
) -> Result<Option<Value>, CniError> {
    let needs = |at_least: &str, what: &str| {
        if version::at_least(&conf.cni_version, at_least) {
            Ok(())
        } else {
            Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "cniVersion {}: {what} needs cniVersion {at_least} or later",
                    conf.cni_version
                ),
            ))
        }
    };
    match verb {
        Verb::Add => add(env, conf, instance).await.map(Some),
        Verb::Del => del(env, conf, instance).await.map(|()| None),
        Verb::Check => {
            needs("0.4.0", "CHECK")?;
            check(env, conf, instance).await.map(|()| None)
        }
        Verb::Status => {
            needs("1.1.0", "STATUS")?;
            status(env, conf, instance).await.map(|()| None)
        }
        Verb::Gc => {
            needs("1.1.0", "GC")?;
            gc(env, conf, instance).await.map(|()| None)
        }
    }
}

/// The instance the network's endpoints belong to: the CLI's unless the
/// configuration or the environment says otherwise.
fn instance(conf: &NetConf) -> Result<Instance, CniError> {
    Ok(Instance {
        state_dir: StateDir::new(conf.state_dir()?),
        pins: PinLayout::new(conf.bpffs()?),
        mark_mask: None,
        progress: Reporter::default(),
    })
}

/// The attachment the environment names: container ID, interface name
/// and (for ADD and CHECK) namespace.
fn attachment(env: &Env, conf: &NetConf, with_netns: bool) -> Result<CniAttachment, CniError> {
    let container_id = env.require("CNI_CONTAINERID", env.container_id.as_deref())?;
    let ifname = env.require("CNI_IFNAME", env.ifname.as_deref())?;
    let ifname: IfName = ifname.parse().map_err(|rule| {
        CniError::new(
            Code::InvalidEnvironment,
            format!("CNI_IFNAME {ifname}: {rule}"),
        )
    })?;
    let netns = if with_netns {
        let path = env.require("CNI_NETNS", env.netns.as_deref())?;
        if !netns::exists(path) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "CNI_NETNS {}: not a network namespace that can be opened",
                    path.display()
                ),
            ));
        }
        path.to_path_buf()
    } else {
        env.netns.clone().unwrap_or_default()
    };
    Ok(CniAttachment {
        container_id: container_id.to_string(),
        network: conf.name.clone(),
        ifname,
        netns,
    })
}

async fn add(env: &Env, conf: &NetConf, instance: &Instance) -> Result<Value, CniError> {
    let attachment = attachment(env, conf, true)?;
    if instance
        .cni_record(
            &conf.name,
            &attachment.container_id,
            attachment.ifname.as_str(),
        )?
        .is_some()
    {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "container {} already has {} on network {}; DEL it first",
                attachment.container_id, attachment.ifname, conf.name
            ),
        ));
    }
    let ipam = Ipam::of(conf, &env.path)?;
    let spec = conf.endpoint_spec(attachment.clone(), &env.args)?;
    let record = instance.add(spec).await?;
    let undo = |error: CniError| async {
        if let Err(e) = instance.del(&record.name, true).await {
            log::warn!("{}: undoing a failed ADD: {e}", record.name);
        }
        error
    };
    let mut addressing = Addressing::default();
    if let Some(ipam) = &ipam {
        let answered = ipam
            .version_for(&conf.cni_version)
            .and_then(|version| ipam.call("ADD", conf, &version, &[], &[]))
            .and_then(|answer| Addressing::from_result(&answer));
        addressing = match answered {
            Ok(addressing) => addressing,
            Err(error) => return Err(undo(error).await),
        };
        let addresses: Vec<_> = addressing.ips.iter().map(|(cidr, _)| *cidr).collect();
        let configured = instance
            .session()
            .await?
            .cni_configure(&record, &addresses, &addressing.routes_with_gateways())
            .await;
        if let Err(error) = configured {
            release(ipam, conf, &attachment);
            return Err(undo(error.into()).await);
        }
    }
    let interface = Interface {
        name: attachment.ifname.to_string(),
        mac: record.mac.to_string(),
        mtu: record.mtu,
        sandbox: attachment.netns.display().to_string(),
    };
    Ok(result::render(&conf.cni_version, &interface, &addressing))
}

/// Releases an attachment's addresses; best effort, for undoing an ADD.
fn release(ipam: &Ipam, conf: &NetConf, attachment: &CniAttachment) {
    let released = ipam
        .version_for(&conf.cni_version)
        .and_then(|version| ipam.call("DEL", conf, &version, &[], &ipam_env(attachment)));
    if let Err(e) = released {
        log::warn!(
            "{}: releasing addresses: {}",
            attachment.container_id,
            e.msg
        );
    }
}

fn ipam_env(attachment: &CniAttachment) -> [(&str, &str); 3] {
    [
        ("CNI_CONTAINERID", attachment.container_id.as_str()),
        ("CNI_IFNAME", attachment.ifname.as_str()),
        ("CNI_NETNS", ""),
    ]
}

/// Removes the attachment's endpoint and addresses. Idempotent: nothing
/// recorded (a second DEL, a failed ADD) and a namespace already gone are
/// not errors.
async fn del(env: &Env, conf: &NetConf, instance: &Instance) -> Result<(), CniError> {
    let attachment = attachment(env, conf, false)?;
    if let Some(record) = instance.cni_record(
        &conf.name,
        &attachment.container_id,
        attachment.ifname.as_str(),
    )? {
        // The runtime is tearing the container down: whoever holds the
        // tap open goes with it.
        instance.del(&record.name, true).await?;
    }
    if let Some(ipam) = Ipam::of(conf, &env.path)? {
        let version = ipam.version_for(&conf.cni_version)?;
        ipam.call("DEL", conf, &version, &[], &[])?;
    }
    Ok(())
}

/// Verifies the attachment against the configuration, the kernel and the
/// previous result; the first message names every difference.
async fn check(env: &Env, conf: &NetConf, instance: &Instance) -> Result<(), CniError> {
    let attachment = attachment(env, conf, true)?;
    let Some(record) = instance.cni_record(
        &conf.name,
        &attachment.container_id,
        attachment.ifname.as_str(),
    )?
    else {
        return Err(CniError::new(
            Code::UnknownContainer,
            format!(
                "container {} has no {} on network {}",
                attachment.container_id, attachment.ifname, conf.name
            ),
        ));
    };
    let mut differences = Vec::new();
    let spec = conf.endpoint_spec(attachment.clone(), &env.args)?;
    if record.device != spec.device {
        differences.push(format!(
            "device {}, configured {}",
            record.device.as_str(),
            spec.device.as_str()
        ));
    }
    if let Some(why) = record.recreate_reason(&spec) {
        differences.push(format!("configured {why}"));
    }
    if record.vlans != spec.vlans {
        differences.push(format!(
            "vlans: recorded {}, configured {}",
            record.vlans, spec.vlans
        ));
    }
    if record.isolation != spec.isolation || record.priority != spec.priority {
        differences.push("isolation or priority differs from the configuration".to_string());
    }
    if record.allow_mac_spoofing != spec.allow_mac_spoofing {
        differences.push("allowMacSpoofing differs from the configuration".to_string());
    }
    differences.extend(instance.cni_differences(&record).await?);
    let prev = conf.get::<Value>("prevResult")?.ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "prevResult: missing; CHECK needs the ADD result",
        )
    })?;
    let expected = Addressing::from_result(&prev)?;
    let present = instance.cni_addresses(&record).await?;
    for (cidr, _) in &expected.ips {
        if !present.contains(cidr) {
            differences.push(format!(
                "address {cidr} of prevResult is not on {}",
                attachment.ifname
            ));
        }
    }
    let named = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|iface| {
            iface.get("name").and_then(Value::as_str) == Some(attachment.ifname.as_str())
                && iface.get("mac").and_then(Value::as_str) == Some(&record.mac.to_string())
        });
    if !named {
        differences.push(format!(
            "prevResult names no interface {} with mac {}",
            attachment.ifname, record.mac
        ));
    }
    if !differences.is_empty() {
        return Err(CniError::new(
            Code::Internal,
            format!("CHECK of {}: {}", attachment.ifname, differences.join("; ")),
        ));
    }
    if let Some(ipam) = Ipam::of(conf, &env.path)? {
        let version = ipam.version_for(&conf.cni_version)?;
        ipam.call("CHECK", conf, &version, &[], &[])?;
    }
    Ok(())
}

/// Whether ADDs can succeed now: the master is there and up, the programs
/// are loaded (or loadable, before the first ADD), the IPAM plugin says so.
async fn status(env: &Env, conf: &NetConf, instance: &Instance) -> Result<(), CniError> {
    let unavailable = |msg: String| CniError::new(Code::PluginNotAvailable, msg);
    let master = conf.master()?;
    let netlink = Netlink::connect()?;
    match netlink.link_by_name(master.as_str()).await? {
        None => return Err(unavailable(format!("master {master}: no such interface"))),
        Some(link) if !link.up => return Err(unavailable(format!("master {master}: down"))),
        Some(_) => {}
    }
    let recorded = instance.list()?.iter().any(|record| {
        record
            .cni
            .as_ref()
            .is_some_and(|cni| cni.network == conf.name)
    });
    let loaded = instance.maps()?.is_some();
    if !loaded && recorded {
        return Err(unavailable(format!(
            "programs: not loaded under {} while this network has endpoints; `macvswitch restore` \
             loads them",
            instance.pins.root().display()
        )));
    }
    if !loaded {
        Datapath::check_kernel()
            .map_err(|e| unavailable(format!("programs: cannot be loaded: {e}")))?;
    }
    if let Some(ipam) = Ipam::of(conf, &env.path)? {
        // A plugin older than STATUS cannot say; that is not a failure.
        if ipam.speaks("1.1.0") {
            ipam.call("STATUS", conf, "1.1.0", &[], &[])?;
        }
    }
    Ok(())
}

/// Removes this network's attachments the runtime no longer lists and
/// their addresses; other networks' and the CLI's endpoints stay. Goes on
/// past failures and reports them all at the end.
async fn gc(env: &Env, conf: &NetConf, instance: &Instance) -> Result<(), CniError> {
    let valid: Vec<(String, String)> = conf
        .get::<Vec<Value>>("cni.dev/valid-attachments")?
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            let field = |key: &str| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| {
                        CniError::new(
                            Code::InvalidConfig,
                            format!("cni.dev/valid-attachments entry {entry}: needs string {key}"),
                        )
                    })
            };
            Ok((field("containerID")?, field("ifname")?))
        })
        .collect::<Result<_, CniError>>()?;
    let (removed, mut errors) = instance.session().await?.cni_gc(&conf.name, &valid).await;
    match Ipam::of(conf, &env.path) {
        Err(e) => errors.push(e.msg),
        Ok(None) => {}
        Ok(Some(ipam)) if ipam.speaks("1.1.0") => {
            if let Err(e) = ipam.call("GC", conf, "1.1.0", &[], &[]) {
                errors.push(e.msg);
            }
        }
        // Too old for GC: the removed attachments' addresses go one by one.
        Ok(Some(ipam)) => {
            for record in &removed {
                let Some(cni) = &record.cni else { continue };
                let released = ipam
                    .version_for(&conf.cni_version)
                    .and_then(|version| ipam.call("DEL", conf, &version, &[], &ipam_env(cni)));
                if let Err(e) = released {
                    errors.push(format!("{}: {}", cni.container_id, e.msg));
                }
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        Code::Internal,
        format!("GC: {} failure(s): {}", errors.len(), errors.join("; ")),
    ))
}
