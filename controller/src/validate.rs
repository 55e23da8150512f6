//! Checks of endpoint requests against the state and the host, made before
//! anything changes.

use crate::{
    endpoint::AddRequest,
    error::{Error, Result},
    isolation::Isolation,
    netlink::Link,
    state::State,
    types::{IfName, Mac, Mtu},
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
