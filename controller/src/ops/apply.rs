//! `apply`: the fewest changes that take the host from its state to a
//! configuration file, printed as a plan and then carried out in one
//! session. Things macvswitch does not manage are never touched.

use std::fmt;

use crate::{
    error::Result,
    kernel::netlink::{Link, Netlink},
    model::{
        config::Config,
        isolation::Isolation,
        policy::Pcp,
        spec::{EndpointSpec, HostPortSpec},
        state::{EndpointRecord, HostPortRecord, State},
        types::{IfName, Mode},
    },
    ops::{
        instance::Instance, requests::UplinkSetRequest, session::Session, validate::validate_config,
    },
};

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddEndpoint(EndpointSpec),
    /// VLANs, priority, isolation or spoofing: a map update, no relink.
    UpdateEndpoint {
        from: EndpointRecord,
        to: EndpointSpec,
    },
    /// Lower device, mode, MAC or MTU: the macvtap is made anew.
    ReplaceEndpoint {
        from: EndpointRecord,
        to: EndpointSpec,
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
        port: HostPortSpec,
    },
    /// An uplink the file no longer lists: relay off, host port removed.
    ForgetUplink(IfName),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddEndpoint(to) => {
                write!(f, "+ endpoint {} on {}: {}", to.name, to.lower, to.vlans)?;
                // Every setting the file gives that is not the default.
                if to.mode != Mode::default() {
                    write!(f, ", mode {}", to.mode)?;
                }
                if let Some(mac) = to.mac {
                    write!(f, ", mac {mac}")?;
                }
                if let Some(mtu) = to.mtu {
                    write!(f, ", mtu {}", mtu.0)?;
                }
                if let Some(priority) = to.priority {
                    write!(f, ", priority {}", priority.get())?;
                }
                if to.isolation != Isolation::Open {
                    write!(f, ", {}", to.isolation)?;
                }
                if to.allow_mac_spoofing {
                    write!(f, ", mac spoofing allowed")?;
                }
                let guards = to.guards.describe();
                if !guards.is_empty() {
                    write!(f, ", {guards}")?;
                }
                Ok(())
            }
            Change::UpdateEndpoint { from, to } => {
                write!(f, "~ endpoint {}:", to.name)?;
                if from.vlans != to.vlans {
                    write!(f, " {} -> {}", from.vlans, to.vlans)?;
                }
                if from.priority != to.priority {
                    let text = |p: Option<Pcp>| {
                        p.map_or("the guest's".to_string(), |p| p.get().to_string())
                    };
                    write!(
                        f,
                        " priority {} -> {}",
                        text(from.priority),
                        text(to.priority)
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
                if from.guards != to.guards {
                    let text = |guards: &crate::model::guards::Guards| match guards.describe() {
                        text if text.is_empty() => "defaults".to_string(),
                        text => text,
                    };
                    write!(f, " guards {} -> {}", text(&from.guards), text(&to.guards))?;
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

/// The plan from `state` to `config`; checks the file against the host
/// (`links`) first, so a bad file changes nothing.
pub fn plan(state: &State, config: &Config, links: &[Link]) -> Result<Vec<Change>> {
    let desired = config.desired_endpoints()?;
    validate_config(state, config, &desired, links)?;

    let mut deletes = Vec::new();
    let mut replaces = Vec::new();
    let mut updates = Vec::new();
    let mut adds = Vec::new();
    // A CNI runtime's endpoints are its own: a file neither lists nor
    // deletes them.
    for record in state
        .endpoints
        .values()
        .filter(|record| record.cni.is_none())
    {
        if !desired.iter().any(|endpoint| endpoint.name == record.name) {
            deletes.push(Change::DeleteEndpoint(record.name.clone()));
        }
    }
    for endpoint in &desired {
        match state.endpoints.get(&endpoint.name) {
            None => adds.push(Change::AddEndpoint(endpoint.clone())),
            Some(record) => {
                if let Some(why) = record.recreate_reason(endpoint) {
                    replaces.push(Change::ReplaceEndpoint {
                        from: record.clone(),
                        to: endpoint.clone(),
                        why,
                    });
                } else if record.policy_differs(endpoint) {
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
            .map(HostPortRecord::spec);
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
            let links = Netlink::connect()?.links().await?;
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
            session.carry_out(change, &mut adds).await?;
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

impl Session<'_> {
    /// Carries out one change; an endpoint to add joins `adds`, which the
    /// caller makes in one batch once every other change is done (the plan
    /// lists adds last).
    async fn carry_out(&mut self, change: &Change, adds: &mut Vec<EndpointSpec>) -> Result<()> {
        match change {
            Change::AddEndpoint(to) => {
                adds.push(to.clone());
                Ok(())
            }
            Change::UpdateEndpoint { from, to } => {
                let mut updated = from.clone();
                updated.vlans = to.vlans.clone();
                updated.priority = to.priority;
                updated.isolation = to.isolation.clone();
                updated.allow_mac_spoofing = to.allow_mac_spoofing;
                updated.guards = to.guards.clone();
                self.update_in_place(from, updated).await.map(drop)
            }
            Change::ReplaceEndpoint { from, to, .. } => {
                self.del(&from.name, true).await?;
                self.add(to.clone()).await.map(drop)
            }
            Change::DeleteEndpoint(name) => self.del(name, true).await.map(drop),
            Change::SetRelay { lower, on } => self
                .uplink_set(UplinkSetRequest {
                    lower: lower.clone(),
                    reflective_relay: Some(*on),
                    host_port: None,
                    remove_host_port: false,
                    replace_host_port: false,
                })
                .await
                .map(drop),
            Change::RemoveHostPort { lower, .. } => self
                .uplink_set(UplinkSetRequest {
                    lower: lower.clone(),
                    reflective_relay: None,
                    host_port: None,
                    remove_host_port: true,
                    replace_host_port: false,
                })
                .await
                .map(drop),
            Change::AddHostPort { lower, port } => self
                .uplink_set(UplinkSetRequest {
                    lower: lower.clone(),
                    reflective_relay: None,
                    host_port: Some(port.clone()),
                    remove_host_port: false,
                    replace_host_port: false,
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
