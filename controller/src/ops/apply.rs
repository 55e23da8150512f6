//! `apply`: the fewest changes that take the host from its state to a
//! configuration file, printed as a plan and then carried out in one
//! session. Things macvswitch does not manage are never touched.

use std::fmt;

use crate::{
    error::{Error, Result},
    kernel::netlink::Link,
    model::config::{Config, DesiredEndpoint, HostPortConfig, host_port_config},
    model::policy::{PortOptions, PortVlans},
    model::state::{EndpointRecord, State},
    model::types::IfName,
    ops::endpoint::{AddRequest, Instance},
    ops::session::Session,
    ops::uplink::{HostPortRequest, UplinkSetRequest},
    report::vlans_text,
};

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddEndpoint(DesiredEndpoint),
    /// VLANs, priority, isolation or spoofing: a map update, no relink.
    UpdateEndpoint {
        from: EndpointRecord,
        to: DesiredEndpoint,
    },
    /// Lower device, mode, MAC or MTU: the macvtap is made anew.
    ReplaceEndpoint {
        from: EndpointRecord,
        to: DesiredEndpoint,
        why: String,
    },
    DeleteEndpoint(IfName),
    SetRelay {
        lower: IfName,
        on: bool,
    },
    RemoveHostPort {
        lower: IfName,
        name: IfName,
    },
    AddHostPort {
        lower: IfName,
        port: HostPortConfig,
    },
    /// An uplink the file no longer lists: relay off, host port removed.
    ForgetUplink(IfName),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddEndpoint(to) => write!(
                f,
                "+ endpoint {} on {}: {}",
                to.name,
                to.lower,
                vlans_text(&to.vlans)
            ),
            Change::UpdateEndpoint { from, to } => {
                write!(f, "~ endpoint {}:", to.name)?;
                if from.vlans != to.vlans {
                    write!(
                        f,
                        " {} -> {}",
                        vlans_text(&from.vlans),
                        vlans_text(&to.vlans)
                    )?;
                }
                if from.priority != to.priority {
                    write!(
                        f,
                        " priority {:?} -> {:?}",
                        from.priority.map(|p| p.get()),
                        to.priority.map(|p| p.get())
                    )?;
                }
                if from.isolation != to.isolation {
                    write!(f, " isolation {} -> {}", from.isolation, to.isolation)?;
                }
                if from.allow_mac_spoofing != to.allow_mac_spoofing {
                    write!(
                        f,
                        " mac spoofing allowed {} -> {}",
                        from.allow_mac_spoofing, to.allow_mac_spoofing
                    )?;
                }
                Ok(())
            }
            Change::ReplaceEndpoint { to, why, .. } => {
                write!(f, "± endpoint {}: recreated ({why})", to.name)
            }
            Change::DeleteEndpoint(name) => write!(f, "- endpoint {name}"),
            Change::SetRelay { lower, on } => write!(
                f,
                "~ uplink {lower}: reflective relay {}",
                if *on { "on" } else { "off" }
            ),
            Change::RemoveHostPort { lower, name } => write!(f, "- host port {name} on {lower}"),
            Change::AddHostPort { lower, port } => {
                write!(f, "+ host port {} on {lower}", port.name)
            }
            Change::ForgetUplink(lower) => write!(f, "- uplink {lower}"),
        }
    }
}

/// Why an endpoint must be recreated rather than updated, if it must.
fn replace_reason(from: &EndpointRecord, to: &DesiredEndpoint) -> Option<String> {
    if from.lower != to.lower {
        return Some(format!("lower {} -> {}", from.lower, to.lower));
    }
    if from.mode != to.mode {
        return Some(format!("mode {} -> {}", from.mode, to.mode));
    }
    if from.mac != to.mac() {
        return Some(format!("mac {} -> {}", from.mac, to.mac()));
    }
    match to.mtu {
        Some(mtu) if mtu.0 != from.mtu => Some(format!("mtu {} -> {}", from.mtu, mtu.0)),
        _ => None,
    }
}

fn needs_update(from: &EndpointRecord, to: &DesiredEndpoint) -> bool {
    from.vlans != to.vlans
        || from.priority != to.priority
        || from.isolation != to.isolation
        || from.allow_mac_spoofing != to.allow_mac_spoofing
}

/// The plan from `state` to `config`; checks the file against the host
/// (`links`) first, so a bad file changes nothing.
pub fn plan(state: &State, config: &Config, links: &[Link]) -> Result<Vec<Change>> {
    let desired = config.desired_endpoints()?;
    let lower_ok = |name: &IfName| {
        links
            .iter()
            .any(|link| link.name == name.as_str() && !link.is_macvlan_family())
    };
    for endpoint in &desired {
        if !lower_ok(&endpoint.lower) {
            return Err(Error::invalid(
                "endpoint",
                format!("{}: lower {}", endpoint.name, endpoint.lower),
                "no such device in this network namespace (or it is a macvlan/macvtap)",
            ));
        }
        let unmanaged = !state.endpoints.contains_key(&endpoint.name)
            && links.iter().any(|link| link.name == endpoint.name.as_str());
        if unmanaged {
            return Err(Error::invalid(
                "endpoint",
                &endpoint.name,
                "an interface macvswitch does not manage has that name",
            ));
        }
    }
    check_new_macvtaps(state, &desired, links)?;
    for uplink in &config.uplinks {
        if !lower_ok(&uplink.name) {
            return Err(Error::invalid(
                "uplink",
                &uplink.name,
                "no such device in this network namespace (or it is a macvlan/macvtap)",
            ));
        }
    }

    let mut deletes = Vec::new();
    let mut replaces = Vec::new();
    let mut updates = Vec::new();
    let mut adds = Vec::new();
    for record in state.endpoints.values() {
        if !desired.iter().any(|endpoint| endpoint.name == record.name) {
            deletes.push(Change::DeleteEndpoint(record.name.clone()));
        }
    }
    for endpoint in &desired {
        match state.endpoints.get(&endpoint.name) {
            None => adds.push(Change::AddEndpoint(endpoint.clone())),
            Some(record) => {
                if let Some(why) = replace_reason(record, endpoint) {
                    replaces.push(Change::ReplaceEndpoint {
                        from: record.clone(),
                        to: endpoint.clone(),
                        why,
                    });
                } else if needs_update(record, endpoint) {
                    updates.push(Change::UpdateEndpoint {
                        from: record.clone(),
                        to: endpoint.clone(),
                    });
                }
            }
        }
    }

    let mut uplinks = Vec::new();
    for record in state.uplinks.values() {
        if !config
            .uplinks
            .iter()
            .any(|uplink| uplink.name == record.name)
        {
            uplinks.push(Change::ForgetUplink(record.name.clone()));
        }
    }
    for uplink in &config.uplinks {
        let record = state.uplinks.get(&uplink.name);
        let relay = record.is_some_and(|r| r.reflective_relay);
        if relay != uplink.reflective_relay {
            uplinks.push(Change::SetRelay {
                lower: uplink.name.clone(),
                on: uplink.reflective_relay,
            });
        }
        let current = record
            .and_then(|r| r.host_port.as_ref())
            .map(host_port_config);
        if current != uplink.host_port {
            if let Some(current) = &current {
                uplinks.push(Change::RemoveHostPort {
                    lower: uplink.name.clone(),
                    name: current.name.clone(),
                });
            }
            if let Some(port) = &uplink.host_port {
                uplinks.push(Change::AddHostPort {
                    lower: uplink.name.clone(),
                    port: port.clone(),
                });
            }
        }
    }
    // Deletions first free names and MACs for what comes after.
    Ok([deletes, uplinks, replaces, updates, adds].concat())
}

/// What `endpoint add` would refuse, checked for every macvtap the plan
/// makes (new or recreated) before anything changes: a MAC another device
/// on the lower device has, an MTU above the lower device's.
fn check_new_macvtaps(state: &State, desired: &[DesiredEndpoint], links: &[Link]) -> Result<()> {
    for endpoint in desired {
        let current = state.endpoints.get(&endpoint.name);
        let made_anew = match current {
            None => true,
            Some(record) => replace_reason(record, endpoint).is_some(),
        };
        if !made_anew {
            continue;
        }
        let lower = links
            .iter()
            .find(|link| link.name == endpoint.lower.as_str())
            .expect("lower devices are checked first");
        let lower_mtu = lower.mtu.unwrap_or(1500);
        if let Some(mtu) = endpoint.mtu.filter(|mtu| mtu.0 > lower_mtu) {
            return Err(Error::invalid(
                "endpoint",
                format!("{}: mtu {}", endpoint.name, mtu.0),
                format!(
                    "must be at most {lower_mtu} (the MTU of {})",
                    endpoint.lower
                ),
            ));
        }
        // Devices that keep their MAC: everything on the lower device but
        // macvswitch's endpoints, which the plan deletes, recreates or keeps
        // as the file says (and the file's MACs are checked against each
        // other).
        let managed = |name: &str| state.endpoints.keys().any(|n| n.as_str() == name);
        let owner = links
            .iter()
            .filter(|link| link.index == lower.index || link.lower == Some(lower.index))
            .filter(|link| !managed(&link.name))
            .find(|link| link.mac == Some(endpoint.mac().octets()));
        if let Some(owner) = owner {
            return Err(Error::invalid(
                "endpoint",
                format!("{}: mac {}", endpoint.name, endpoint.mac()),
                format!("already used by {} on {}", owner.name, endpoint.lower),
            ));
        }
    }
    Ok(())
}

impl Instance {
    /// Plans, prints (through `print`) and, unless `dry_run`, carries out.
    pub async fn apply(
        &self,
        config: &Config,
        dry_run: bool,
        mut print: impl FnMut(&str),
    ) -> Result<Vec<Change>> {
        if dry_run {
            // No session: a dry run repairs nothing and takes no lock.
            let state = self.state_dir.load()?.settled();
            let links = crate::kernel::netlink::Netlink::connect()?.links().await?;
            let changes = plan(&state, config, &links)?;
            print_plan(&changes, &mut print);
            return Ok(changes);
        }
        let mut session = self.session().await?;
        session.restore().await?;
        let links = session.netlink.links().await?;
        let changes = plan(&session.state, config, &links)?;
        print_plan(&changes, &mut print);
        // Adds go last and in one batch: one state write for all their
        // intents, one at the end.
        let mut adds = Vec::new();
        for change in &changes {
            match change {
                Change::AddEndpoint(to) => adds.push(add_request(to)),
                other => session.carry_out(other).await?,
            }
        }
        if !adds.is_empty() {
            session.add_many(adds).await?;
        }
        Ok(changes)
    }
}

fn print_plan(changes: &[Change], print: &mut impl FnMut(&str)) {
    if changes.is_empty() {
        print("no changes");
    }
    for change in changes {
        print(&change.to_string());
    }
}

fn add_request(to: &DesiredEndpoint) -> AddRequest {
    let mut port = PortOptions::default();
    match &to.vlans {
        PortVlans::Untagged => {}
        PortVlans::Access { vlan } => port.vlan = Some(*vlan),
        PortVlans::Trunk {
            vlans,
            native,
            native_tagged,
        } => {
            port.trunk = Some(vlans.clone());
            port.native = *native;
            port.native_tagged = native.map(|_| *native_tagged);
        }
        PortVlans::Tunnel { svlan, cvlans } => {
            port.tunnel = Some(*svlan);
            port.tunnel_cvlans = cvlans.clone();
        }
    }
    AddRequest {
        name: to.name.clone(),
        lower: to.lower.clone(),
        mode: to.mode,
        mac: to.mac,
        port,
        priority: to.priority,
        mtu: to.mtu,
        allow_mac_spoofing: to.allow_mac_spoofing,
        isolation: to.isolation.clone(),
    }
}

impl Session<'_> {
    async fn carry_out(&mut self, change: &Change) -> Result<()> {
        match change {
            Change::AddEndpoint(to) => self.add(add_request(to)).await.map(drop),
            Change::UpdateEndpoint { from, to } => {
                let mut updated = from.clone();
                updated.vlans = to.vlans.clone();
                updated.priority = to.priority;
                updated.isolation = to.isolation.clone();
                updated.allow_mac_spoofing = to.allow_mac_spoofing;
                self.update_in_place(from, updated).await.map(drop)
            }
            Change::ReplaceEndpoint { from, to, .. } => {
                self.del(&from.name).await?;
                self.add(add_request(to)).await.map(drop)
            }
            Change::DeleteEndpoint(name) => self.del(name).await,
            Change::SetRelay { lower, on } => self
                .uplink_set(UplinkSetRequest {
                    lower: lower.clone(),
                    reflective_relay: Some(*on),
                    host_port: None,
                    remove_host_port: false,
                })
                .await
                .map(drop),
            Change::RemoveHostPort { lower, .. } => self
                .uplink_set(UplinkSetRequest {
                    lower: lower.clone(),
                    reflective_relay: None,
                    host_port: None,
                    remove_host_port: true,
                })
                .await
                .map(drop),
            Change::AddHostPort { lower, port } => self
                .uplink_set(UplinkSetRequest {
                    lower: lower.clone(),
                    reflective_relay: None,
                    host_port: Some(HostPortRequest {
                        name: port.name.clone(),
                        vlan: port.vlan,
                        addresses: port.addresses.clone(),
                    }),
                    remove_host_port: false,
                })
                .await
                .map(drop),
            Change::ForgetUplink(lower) => {
                if let Some(mut uplink) = self.state.uplinks.get(lower).cloned() {
                    self.mark_host_port_deleting(&mut uplink)?;
                    self.unwire_uplink(&uplink).await;
                    self.state.uplinks.remove(lower);
                    self.save()?;
                }
                Ok(())
            }
        }
    }
}
