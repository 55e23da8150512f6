//! Lower-device settings: reflective-relay emulation and the host port.

use macvswitch_common::{
    EndpointPolicy, POLICY_PROMISCUOUS, UplinkConfig, isolation::UPLINK_REFLECTIVE_RELAY,
};

use crate::{
    bpffs,
    datapath::{Datapath, Maps},
    endpoint::Instance,
    error::{Error, Result},
    isolation::source_info,
    netlink::{Netlink, Stacked},
    policy::PortVlans,
    state::{HostPortRecord, State, UplinkRecord},
    types::{Cidr, IfName, Mac, Mode, Vid},
};

/// `uplink set DEV ...`.
#[derive(Clone, Debug)]
pub struct UplinkSetRequest {
    pub lower: IfName,
    pub reflective_relay: Option<bool>,
    pub host_port: Option<HostPortRequest>,
    pub remove_host_port: bool,
}

#[derive(Clone, Debug)]
pub struct HostPortRequest {
    pub name: IfName,
    pub vlan: Option<Vid>,
    pub addresses: Vec<Cidr>,
}

impl HostPortRecord {
    /// The host port reaches every local endpoint, isolated ones included,
    /// like a promiscuous port of a private VLAN.
    pub fn policy(&self, lower: u32) -> EndpointPolicy {
        let mut policy = self.vlans.to_policy(self.mac, None, false);
        policy.lower = lower;
        policy.flags |= POLICY_PROMISCUOUS;
        policy
    }
}

impl Instance {
    pub fn uplinks(&self) -> Result<Vec<UplinkRecord>> {
        Ok(self.state_dir.load()?.uplinks.into_values().collect())
    }

    pub fn uplink(&self, lower: &IfName) -> Result<UplinkRecord> {
        self.state_dir.load()?.uplinks.remove(lower).ok_or_else(|| {
            Error::invalid(
                "DEV",
                lower,
                "has no uplink settings (see `macvswitch uplink list`)",
            )
        })
    }

    pub async fn uplink_set(&self, request: UplinkSetRequest) -> Result<UplinkRecord> {
        let lock = self.state_dir.lock()?;
        let mut state = self.state_dir.load()?;
        let netlink = Netlink::connect()?;
        let links = netlink.links().await?;
        let lower = links
            .iter()
            .find(|link| link.name == request.lower.as_str())
            .ok_or_else(|| {
                Error::invalid(
                    "DEV",
                    &request.lower,
                    "no such device in this network namespace",
                )
            })?;
        if lower.is_macvlan_family() {
            return Err(Error::invalid(
                "DEV",
                &request.lower,
                "is itself a macvlan/macvtap; give the device it sits on",
            ));
        }
        if let Some(host_port) = &request.host_port {
            let taken = links
                .iter()
                .any(|link| link.name == host_port.name.as_str())
                || state.endpoints.contains_key(&host_port.name);
            if taken {
                return Err(Error::invalid(
                    "--host-port",
                    &host_port.name,
                    "an interface of that name exists; pick a free name",
                ));
            }
        }
        let mut record = state
            .uplinks
            .get(&request.lower)
            .cloned()
            .unwrap_or(UplinkRecord {
                name: request.lower.clone(),
                ifindex: lower.index,
                reflective_relay: false,
                host_port: None,
            });
        record.ifindex = lower.index;

        bpffs::prepare(self.pins.root())?;
        let mut datapath = Datapath::open_or_load(self.pins.clone())?;
        if datapath.fresh {
            self.reattach(&mut datapath, &state).await?;
        }
        if let Some(relay) = request.reflective_relay {
            if relay {
                let config = UplinkConfig {
                    flags: UPLINK_REFLECTIVE_RELAY,
                };
                datapath.maps.set_uplink(record.ifindex, Some(config))?;
                datapath.attach_uplink(record.name.as_str())?;
            } else {
                Datapath::detach_uplink(&self.pins, record.name.as_str())?;
                datapath.maps.set_uplink(record.ifindex, None)?;
            }
            record.reflective_relay = relay;
        }
        if request.remove_host_port || request.host_port.is_some() {
            if let Some(old) = record.host_port.take() {
                self.unwire_host_port(&netlink, Some(&mut datapath.maps), &record, &old)
                    .await;
            }
        }
        if let Some(host_port) = request.host_port {
            let mtu = lower.mtu.unwrap_or(1500);
            let link = netlink
                .create_stacked(
                    Stacked::Macvlan,
                    host_port.name.as_str(),
                    record.ifindex,
                    Mode::Bridge,
                    Mac::derived_from(host_port.name.as_str()),
                    mtu,
                )
                .await?;
            let port = HostPortRecord {
                mac: Mac::derived_from(host_port.name.as_str()),
                name: host_port.name,
                vlans: match host_port.vlan {
                    Some(vlan) => PortVlans::Access { vlan },
                    None => PortVlans::Untagged,
                },
                addresses: host_port.addresses,
                ifindex: link.index,
            };
            let wired = async {
                wire_host_port(&mut datapath, record.ifindex, &port)?;
                netlink.bring_up(port.ifindex).await?;
                for cidr in &port.addresses {
                    netlink.add_address(port.ifindex, *cidr).await?;
                }
                Ok::<(), Error>(())
            }
            .await;
            if let Err(error) = wired {
                self.unwire_host_port(&netlink, Some(&mut datapath.maps), &record, &port)
                    .await;
                return Err(error);
            }
            record.host_port = Some(port);
        }
        state.uplinks.insert(record.name.clone(), record.clone());
        self.state_dir.save(&lock, &state)?;
        Ok(record)
    }

    /// Re-wires every recorded endpoint, relay and host port to freshly
    /// loaded programs and maps.
    pub(crate) async fn reattach(&self, datapath: &mut Datapath, state: &State) -> Result<()> {
        self.reattach_endpoints(datapath, state)?;
        for uplink in state.uplinks.values() {
            if uplink.reflective_relay {
                let config = UplinkConfig {
                    flags: UPLINK_REFLECTIVE_RELAY,
                };
                datapath.maps.set_uplink(uplink.ifindex, Some(config))?;
                datapath.attach_uplink(uplink.name.as_str())?;
            }
            if let Some(port) = &uplink.host_port {
                wire_host_port(datapath, uplink.ifindex, port)?;
            }
        }
        Ok(())
    }

    /// Undoes the relay and host port of an uplink (for `reset`).
    pub(crate) async fn unwire_uplink(
        &self,
        netlink: &Netlink,
        mut maps: Option<&mut Maps>,
        uplink: &UplinkRecord,
    ) {
        if let Err(e) = Datapath::detach_uplink(&self.pins, uplink.name.as_str()) {
            log::warn!("{}: {e}", uplink.name);
        }
        if let Some(maps) = maps.as_deref_mut()
            && let Err(e) = maps.set_uplink(uplink.ifindex, None)
        {
            log::warn!("{}: {e}", uplink.name);
        }
        if let Some(port) = &uplink.host_port {
            self.unwire_host_port(netlink, maps, uplink, port).await;
        }
    }

    async fn unwire_host_port(
        &self,
        netlink: &Netlink,
        maps: Option<&mut Maps>,
        uplink: &UplinkRecord,
        port: &HostPortRecord,
    ) {
        let name = port.name.as_str();
        if let Err(e) = Datapath::detach(&self.pins, name) {
            log::warn!("{name}: {e}");
        }
        match netlink.link_by_name(name).await {
            Ok(Some(link)) if link.index == port.ifindex => {
                if let Err(e) = netlink.delete(link.index).await {
                    log::warn!("{name}: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("{name}: {e}"),
        }
        if let Some(maps) = maps
            && let Err(e) = maps
                .remove(port.ifindex)
                .and_then(|()| maps.remove_source(uplink.ifindex, port.mac))
        {
            log::warn!("{name}: {e}");
        }
    }
}

fn wire_host_port(datapath: &mut Datapath, lower: u32, port: &HostPortRecord) -> Result<()> {
    let policy = port.policy(lower);
    datapath.maps.set_policy(port.ifindex, &policy)?;
    datapath.maps.reset_counters(port.ifindex)?;
    let source = source_info(port.ifindex, Mode::Bridge, 0, policy.flags);
    datapath.maps.set_source(lower, port.mac, &source)?;
    datapath.attach(port.name.as_str())
}
