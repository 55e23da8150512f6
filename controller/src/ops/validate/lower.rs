//! What makes a device a lower device, and what the kernel lets one
//! carry: checked here the way the kernel would decide, so that its bare
//! EINVAL or EBUSY never reaches the operator.

use rtnetlink::packet_route::link::InfoKind;

use crate::{
    error::{Error, Result},
    kernel::netlink::Link,
    model::{
        state::{RecordStatus, State},
        types::{IfName, Mac, Mode, Mtu},
    },
};

/// Why a name gives no usable lower device.
enum NoLower {
    /// No link of that name in this network namespace.
    Missing,
    /// A macvlan or macvtap, which cannot carry others.
    Stacked,
}

impl NoLower {
    fn allowed(&self) -> &'static str {
        match self {
            NoLower::Missing => "no such device in this network namespace",
            NoLower::Stacked => "is itself a macvlan/macvtap; give the device it sits on",
        }
    }
}

/// The link called `name` if it can be a lower device.
fn find_lower<'a>(links: &'a [Link], name: &str) -> Result<&'a Link, NoLower> {
    let link = links
        .iter()
        .find(|link| link.name == name)
        .ok_or(NoLower::Missing)?;
    if link.is_macvlan_family() {
        return Err(NoLower::Stacked);
    }
    Ok(link)
}

/// The usable lower device called `name`, if there is one.
pub(crate) fn lower_device<'a>(links: &'a [Link], name: &str) -> Option<&'a Link> {
    find_lower(links, name).ok()
}

/// The lower device named by `option`, or the error that says why not.
pub(super) fn lower_for<'a>(
    option: &'static str,
    name: &IfName,
    links: &'a [Link],
) -> Result<&'a Link> {
    find_lower(links, name.as_str()).map_err(|why| Error::invalid(option, name, why.allowed()))
}

/// The MTU an endpoint gets on `lower`: the one asked for, else the lower
/// device's. `Err` holds the lower device's MTU when it is out of range.
pub(super) fn endpoint_mtu(requested: Option<Mtu>, lower: &Link) -> Result<u32, u32> {
    let lower_mtu = lower.mtu.unwrap_or(1500);
    let mtu = requested.map_or(lower_mtu, |mtu| mtu.0);
    if (Mtu::MIN..=lower_mtu).contains(&mtu) {
        Ok(mtu)
    } else {
        Err(lower_mtu)
    }
}

/// A device on `lower` (it or a device stacked on it) that has `mac`,
/// leaving out those `keeps_none` says will not keep theirs.
pub(super) fn mac_owner<'a>(
    links: &'a [Link],
    lower: &Link,
    mac: Mac,
    keeps_none: impl Fn(&Link) -> bool,
) -> Option<&'a Link> {
    links
        .iter()
        .filter(|link| link.index == lower.index || link.lower == Some(lower.index))
        .filter(|link| !keeps_none(link))
        .find(|link| link.mac == Some(mac.octets()))
}

/// Whether `lower` can carry one more macvlan/macvtap in `mode`, decided
/// the way the kernel would, so that its refusal (a bare EINVAL or EBUSY)
/// never reaches the operator. `option` and `value` name what the
/// operator asked for; `planned` holds the endpoints recorded or about to
/// be made in the same batch.
pub(super) fn check_lower_carries(
    option: &'static str,
    value: &str,
    lower: &Link,
    links: &[Link],
    mode: Mode,
    planned: &State,
) -> Result<()> {
    let name = &lower.name;
    if !lower.ethernet {
        return Err(Error::invalid(
            option,
            value,
            format!(
                "{name} is not an Ethernet device and cannot carry macvtaps; give a NIC, a veth or a bond"
            ),
        ));
    }
    // A bridge, bond or team port hands its frames to its master (the
    // kernel's rx_handler slot is taken: EBUSY); so does an ipvlan's lower.
    if let Some(master) = lower
        .master
        .and_then(|m| links.iter().find(|l| l.index == m))
        && matches!(
            &master.kind,
            Some(InfoKind::Bridge | InfoKind::Bond | InfoKind::Team)
        )
    {
        return Err(Error::invalid(
            option,
            value,
            format!(
                "{name} is a port of {}, which takes its frames; put the endpoints on {} or on a free device",
                master.name, master.name
            ),
        ));
    }
    if let Some(ipvlan) = links.iter().find(|l| {
        l.lower == Some(lower.index) && matches!(l.kind, Some(InfoKind::IpVlan | InfoKind::IpVtap))
    }) {
        return Err(Error::invalid(
            option,
            value,
            format!(
                "{name} carries the ipvlan {}, and a device carries either ipvlans or macvtaps",
                ipvlan.name
            ),
        ));
    }
    // The kernel allows a passthru macvlan/macvtap only as the single one
    // on its lower device.
    let mut stacked: Vec<&str> = links
        .iter()
        .filter(|l| l.lower == Some(lower.index) && l.is_macvlan_family())
        .map(|l| l.name.as_str())
        .collect();
    let mut passthru: Vec<&str> = links
        .iter()
        .filter(|l| l.lower == Some(lower.index) && l.passthru)
        .map(|l| l.name.as_str())
        .collect();
    for record in planned
        .endpoints
        .values()
        .filter(|r| r.lower_ifindex == lower.index && r.status != RecordStatus::Deleting)
    {
        if !stacked.contains(&record.name.as_str()) {
            stacked.push(record.name.as_str());
        }
        if record.mode == Mode::Passthru && !passthru.contains(&record.name.as_str()) {
            passthru.push(record.name.as_str());
        }
    }
    if let Some(first) = passthru.first() {
        return Err(Error::invalid(
            option,
            value,
            format!(
                "{name} carries {first} in passthru mode, which must be the only macvlan/macvtap on its lower device"
            ),
        ));
    }
    if mode == Mode::Passthru && !stacked.is_empty() {
        return Err(Error::invalid(
            "--mode",
            "passthru",
            format!(
                "a passthru endpoint must be the only macvlan/macvtap on its lower device, and {name} carries {}",
                stacked.join(", ")
            ),
        ));
    }
    Ok(())
}
