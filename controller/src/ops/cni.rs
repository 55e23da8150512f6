//! Endpoints a CNI runtime asks for: found by their attachment (network,
//! container ID, interface name), checked against the kernel inside the
//! container's namespace, and collected when the runtime no longer lists
//! them. Adding and deleting are `endpoint.rs`'s `add` and `del`: a CNI
//! endpoint is an endpoint whose device `wiring.rs` moves into a container.

use std::path::Path;

use crate::{
    error::{Error, Result},
    kernel::{datapath::Datapath, netlink::Netlink, netns},
    model::{
        state::{CniAttachment, EndpointRecord},
        types::{Cidr, IfName},
    },
    ops::{instance::Instance, session::Session},
};

/// The name an attachment's endpoint has in the state, its pins and, until
/// it moves, the host's namespace: derived from the attachment, so a DEL
/// after a failed or interrupted ADD finds what the ADD made.
pub fn endpoint_name(network: &str, container_id: &str, ifname: &str) -> IfName {
    let key = format!("{network}\0{container_id}\0{ifname}");
    let hash = crate::model::hash::fnv1a64(key.as_bytes());
    format!("mvc{:012x}", hash & 0xffff_ffff_ffff)
        .parse()
        .expect("mvc and 12 hex digits make a valid interface name")
}

impl Instance {
    /// The endpoint of an attachment, as recorded (whatever its status).
    pub fn cni_record(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<EndpointRecord>> {
        Ok(self
            .state_dir
            .load()?
            .endpoints
            .into_values()
            .find(|record| {
                record
                    .cni
                    .as_ref()
                    .is_some_and(|cni| cni.is(network, container_id, ifname))
            }))
    }

    /// Differences between a CNI endpoint and the kernel: its device in the
    /// container (ifindex, MAC, MTU, up), its programs and its policy in
    /// the maps. Empty when all is as recorded.
    pub async fn cni_differences(&self, record: &EndpointRecord) -> Result<Vec<String>> {
        let cni = cni_of(record)?;
        let mut differences = Vec::new();
        if !netns::exists(&cni.netns) {
            return Ok(vec![format!("namespace {} is gone", cni.netns.display())]);
        }
        let inside = Netlink::connect_in(&cni.netns)?;
        let Some(link) = inside.link_by_name(cni.ifname.as_str()).await? else {
            return Ok(vec![format!(
                "interface {} is not in {}",
                cni.ifname,
                cni.netns.display()
            )]);
        };
        if link.index != record.ifindex {
            differences.push(format!(
                "interface {}: ifindex {}, recorded {}",
                cni.ifname, link.index, record.ifindex
            ));
        }
        if link.mac != Some(record.mac.octets()) {
            let mac = link.mac.map_or("none".to_string(), |octets| {
                octets.map(|b| format!("{b:02x}")).join(":")
            });
            differences.push(format!("mac {mac}, expected {}", record.mac));
        }
        if link.mtu != Some(record.mtu) {
            differences.push(format!(
                "mtu {}, expected {}",
                link.mtu.unwrap_or(0),
                record.mtu
            ));
        }
        if link.lower != Some(record.lower_ifindex) {
            differences.push(format!("interface {} is on another master", cni.ifname));
        }
        if !link.up {
            differences.push(format!("interface {} is down", cni.ifname));
        }
        let (name, ifname) = (record.name.as_str(), cni.ifname.as_str());
        let attached = netns::run_in(&cni.netns, || {
            Ok(Datapath::is_attached_as(&self.pins, name, ifname))
        })?;
        if !attached {
            differences.push(format!(
                "programs: not both attached to {} (ingress and egress)",
                cni.ifname
            ));
        }
        let state = self.state_dir.load()?;
        let expected = state.policy_of(record);
        match self.maps()? {
            None => differences.push("policy: no data path is loaded".to_string()),
            Some(maps) => match maps.policy(record.ifindex)? {
                None => differences.push(format!(
                    "policy: no entry for ifindex {} in the policy map",
                    record.ifindex
                )),
                Some(policy) if policy != expected => differences.push(format!(
                    "policy: the map entry for ifindex {} differs from the recorded {} port",
                    record.ifindex,
                    record.vlans.kind()
                )),
                Some(_) => {}
            },
        }
        Ok(differences)
    }

    /// The addresses on a CNI endpoint's interface in its container.
    pub async fn cni_addresses(&self, record: &EndpointRecord) -> Result<Vec<Cidr>> {
        let cni = cni_of(record)?;
        Netlink::connect_in(&cni.netns)?
            .addresses(record.ifindex)
            .await
    }
}

fn cni_of(record: &EndpointRecord) -> Result<&CniAttachment> {
    record
        .cni
        .as_ref()
        .ok_or_else(|| Error::Refused(format!("{}: not a CNI endpoint", record.name)))
}

impl Session<'_> {
    /// Gives a CNI endpoint's interface its addresses and routes (what the
    /// IPAM plugin handed out), inside the container.
    pub async fn cni_configure(
        &self,
        record: &EndpointRecord,
        addresses: &[Cidr],
        routes: &[(Cidr, Option<std::net::IpAddr>)],
    ) -> Result<()> {
        let cni = cni_of(record)?;
        let inside = Netlink::connect_in(&cni.netns)?;
        for cidr in addresses {
            inside.add_address(record.ifindex, *cidr).await?;
        }
        for (destination, gateway) in routes {
            inside
                .add_route(record.ifindex, *destination, *gateway)
                .await?;
        }
        Ok(())
    }

    /// Deletes every endpoint of `network` whose attachment `valid` does
    /// not list; endpoints of other networks and of the CLI stay. Goes on
    /// past failures and returns them, one line each, with what it removed.
    pub async fn cni_gc(
        &mut self,
        network: &str,
        valid: &[(String, String)],
    ) -> (Vec<EndpointRecord>, Vec<String>) {
        let stale: Vec<IfName> = self
            .state
            .endpoints
            .values()
            .filter(|record| {
                record.cni.as_ref().is_some_and(|cni| {
                    cni.network == network
                        && !valid.iter().any(|(id, ifname)| cni.is(network, id, ifname))
                })
            })
            .map(|record| record.name.clone())
            .collect();
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for name in stale {
            match self.del(&name, true).await {
                Ok(record) => removed.push(record),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        (removed, errors)
    }
}

/// Whether a CNI endpoint's device is still in its container, as recorded.
pub(crate) async fn cni_device_present(cni: &CniAttachment, record: &EndpointRecord) -> bool {
    if !netns::exists(&cni.netns) {
        return false;
    }
    let Ok(inside) = Netlink::connect_in(&cni.netns) else {
        return false;
    };
    matches!(
        inside.link_by_name(cni.ifname.as_str()).await,
        Ok(Some(link)) if link.index == record.ifindex && link.mac == Some(record.mac.octets())
    )
}

/// `sys::is_live` for a device in another namespace.
pub fn is_live_in(netns_path: &Path, ifname: &str, ifindex: u32) -> bool {
    netns::run_in(netns_path, || {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| Error::Refused(format!("{ifname}: not a name")))?;
        // SAFETY: a NUL-terminated string that outlives the call.
        Ok(unsafe { libc::if_nametoindex(name.as_ptr()) } == ifindex)
    })
    .unwrap_or(false)
}
