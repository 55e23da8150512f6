//! Checks of endpoint requests against the state and the host, made before
//! anything changes.

use rtnetlink::packet_route::link::InfoKind;

use crate::{
    error::{Error, Result},
    kernel::netlink::Link,
    model::isolation::Isolation,
    model::state::State,
    model::types::{IfName, Mac, Mode, Mtu},
    ops::endpoint::AddRequest,
};

/// Two community names must not share an id: they would merge.
pub(crate) fn check_community(state: &State, name: &IfName, isolation: &Isolation) -> Result<()> {
    let Isolation::Community(community) = isolation else {
        return Ok(());
    };
    let id = isolation.community_id();
    let clash = state
        .endpoints
        .values()
        .find_map(|other| match &other.isolation {
            Isolation::Community(theirs)
                if other.name != *name
                    && theirs != community
                    && other.isolation.community_id() == id =>
            {
                Some(theirs.clone())
            }
            _ => None,
        });
    match clash {
        Some(theirs) => Err(Error::invalid(
            "--community",
            community,
            format!("hashes like community {theirs}; pick another name"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn unknown_endpoint(name: &IfName) -> Error {
    Error::invalid(
        "NAME",
        name,
        "no such endpoint (see `macvswitch endpoint list`)",
    )
}

/// Checks an `add` against the host before anything changes. Returns the
/// lower link, the MAC and the MTU to use.
pub(crate) fn validate_add(
    request: &AddRequest,
    state: &State,
    links: &[Link],
) -> Result<(Link, Mac, u32)> {
    let name = &request.name;
    if state.endpoints.contains_key(name) {
        return Err(Error::invalid(
            "NAME",
            name,
            "an endpoint of that name exists",
        ));
    }
    if links.iter().any(|link| link.name == name.as_str()) {
        return Err(Error::invalid(
            "NAME",
            name,
            "an interface of that name exists; pick a free name",
        ));
    }
    let lower = links
        .iter()
        .find(|link| link.name == request.lower.as_str())
        .ok_or_else(|| {
            Error::invalid(
                "--lower",
                &request.lower,
                "no such device in this network namespace",
            )
        })?;
    if lower.is_macvlan_family() {
        return Err(Error::invalid(
            "--lower",
            &request.lower,
            "is itself a macvlan/macvtap; give the device it sits on",
        ));
    }
    check_lower_carries(
        "--lower",
        request.lower.as_str(),
        lower,
        links,
        request.mode,
        state,
    )?;
    let lower_mtu = lower.mtu.unwrap_or(1500);
    let mtu = request.mtu.map_or(lower_mtu, |mtu| mtu.0);
    if !(Mtu::MIN..=lower_mtu).contains(&mtu) {
        return Err(Error::invalid(
            "--mtu",
            mtu,
            format!(
                "must be in {}..={lower_mtu} (the MTU of {})",
                Mtu::MIN,
                request.lower
            ),
        ));
    }
    let mac = request
        .mac
        .unwrap_or_else(|| Mac::derived_from(name.as_str()));
    let owner = links
        .iter()
        .filter(|link| link.index == lower.index || link.lower == Some(lower.index))
        .find(|link| link.mac == Some(mac.octets()));
    if let Some(owner) = owner {
        let how = if request.mac.is_some() {
            ""
        } else {
            " (derived from NAME)"
        };
        return Err(Error::invalid(
            "--mac",
            mac,
            format!(
                "already used{how} by {} on {}; the MAC must be unique on the lower device",
                owner.name, request.lower
            ),
        ));
    }
    Ok((lower.clone(), mac, mtu))
}

/// Whether `lower` can carry one more macvlan/macvtap in `mode`, decided
/// the way the kernel would, so that its refusal (a bare EINVAL or EBUSY)
/// never reaches the operator. `option` and `value` name what the
/// operator asked for; `planned` holds the endpoints recorded or about to
/// be made in the same batch.
pub(crate) fn check_lower_carries(
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
    for record in planned.endpoints.values().filter(|r| {
        r.lower_ifindex == lower.index && r.status != crate::model::state::RecordStatus::Deleting
    }) {
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
