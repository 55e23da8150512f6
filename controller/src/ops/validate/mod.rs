//! Every check of a request against the state and the host, made before
//! anything changes: what `endpoint add`, `endpoint set`, `uplink set` and
//! `apply` refuse, in one place.

use crate::{
    error::{Error, Result},
    kernel::netlink::Link,
    model::{
        config::Config,
        isolation::Isolation,
        spec::EndpointSpec,
        state::{EndpointRecord, State},
        types::{IfName, Mac, Mode, Mtu},
    },
    ops::requests::UplinkSetRequest,
};

mod lower;

pub(crate) use lower::lower_device;
use lower::{check_lower_carries, endpoint_mtu, lower_for, mac_owner};

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
pub(crate) fn validate_add<'a>(
    spec: &EndpointSpec,
    state: &State,
    links: &'a [Link],
) -> Result<(&'a Link, Mac, u32)> {
    let name = &spec.name;
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
    let lower = lower_for("--lower", &spec.lower, links)?;
    check_lower_carries(
        "--lower",
        spec.lower.as_str(),
        lower,
        links,
        spec.mode,
        state,
    )?;
    let mtu = endpoint_mtu(spec.mtu, lower).map_err(|lower_mtu| {
        Error::invalid(
            "--mtu",
            spec.mtu.map_or(lower_mtu, |mtu| mtu.0),
            format!(
                "must be in {}..={lower_mtu} (the MTU of {})",
                Mtu::MIN,
                spec.lower
            ),
        )
    })?;
    let mac = spec.mac();
    if let Some(owner) = mac_owner(links, lower, mac, |_| false) {
        let how = if spec.mac.is_some() {
            ""
        } else {
            " (derived from NAME)"
        };
        return Err(Error::invalid(
            "--mac",
            mac,
            format!(
                "already used{how} by {} on {}; the MAC must be unique on the lower device",
                owner.name, spec.lower
            ),
        ));
    }
    Ok((lower, mac, mtu))
}

/// A new endpoint's MAC against the others recorded, or about to be made
/// in the same batch, on its lower device.
pub(crate) fn check_mac_twin(planned: &State, record: &EndpointRecord) -> Result<()> {
    match planned
        .endpoints
        .values()
        .find(|other| other.lower_ifindex == record.lower_ifindex && other.mac == record.mac)
    {
        Some(twin) => Err(Error::invalid(
            "--mac",
            record.mac,
            format!("already used by {} on {}", twin.name, record.lower),
        )),
        None => Ok(()),
    }
}

/// Checks an `uplink set` against the host; returns the lower device.
pub(crate) fn validate_uplink_set<'a>(
    request: &UplinkSetRequest,
    state: &State,
    links: &'a [Link],
) -> Result<&'a Link> {
    let lower = lower_for("LOWER", &request.lower, links)?;
    if let Some(host_port) = &request.host_port {
        check_lower_carries(
            "--host-port",
            host_port.name.as_str(),
            lower,
            links,
            Mode::Bridge,
            state,
        )?;
        // The lower device's own host port is changed in place.
        let current = state
            .uplinks
            .get(&request.lower)
            .and_then(|uplink| uplink.host_port.as_ref())
            .is_some_and(|port| port.name == host_port.name);
        let taken = !current
            && (links
                .iter()
                .any(|link| link.name == host_port.name.as_str())
                || state.endpoints.contains_key(&host_port.name));
        if taken {
            return Err(Error::invalid(
                "--host-port",
                &host_port.name,
                "an interface of that name exists; pick a free name",
            ));
        }
        let other = state
            .uplinks
            .get(&request.lower)
            .and_then(|uplink| uplink.host_port.as_ref())
            .filter(|port| port.name != host_port.name);
        if let Some(old) = other
            && !request.replace_host_port
            && !request.remove_host_port
        {
            return Err(Error::invalid(
                "--host-port",
                &host_port.name,
                format!(
                    "{} already has host port {}; add --replace to delete {} and create {}, or \
                     remove it first with `macvswitch uplink set {} --no-host-port`",
                    request.lower, old.name, old.name, host_port.name, request.lower
                ),
            ));
        }
    }
    Ok(lower)
}

/// Checks a configuration file against the host before `apply` plans:
/// lower devices exist, names are free or ours, and every macvtap the plan
/// makes (new or recreated) passes what `endpoint add` checks of its MTU
/// and MAC.
pub(crate) fn validate_config(
    state: &State,
    config: &Config,
    desired: &[EndpointSpec],
    links: &[Link],
) -> Result<()> {
    const NO_LOWER: &str = "no such device in this network namespace (or it is a macvlan/macvtap)";
    let mut lowers = Vec::with_capacity(desired.len());
    for endpoint in desired {
        let lower = lower_device(links, endpoint.lower.as_str()).ok_or_else(|| {
            Error::invalid(
                "endpoint",
                format!("{}: lower {}", endpoint.name, endpoint.lower),
                NO_LOWER,
            )
        })?;
        let unmanaged = !state.endpoints.contains_key(&endpoint.name)
            && links.iter().any(|link| link.name == endpoint.name.as_str());
        if unmanaged {
            return Err(Error::invalid(
                "endpoint",
                &endpoint.name,
                "an interface macvswitch does not manage has that name",
            ));
        }
        lowers.push(lower);
    }
    for (endpoint, lower) in desired.iter().zip(lowers) {
        let made_anew = state
            .endpoints
            .get(&endpoint.name)
            .is_none_or(|record| record.recreate_reason(endpoint).is_some());
        if made_anew {
            check_new_macvtap(state, endpoint, lower, links)?;
        }
    }
    for uplink in &config.uplinks {
        if lower_device(links, uplink.name.as_str()).is_none() {
            return Err(Error::invalid("uplink", &uplink.name, NO_LOWER));
        }
    }
    Ok(())
}

/// What `endpoint add` would refuse of a macvtap `apply` makes: an MTU
/// above the lower device's, a MAC another device on it has.
fn check_new_macvtap(
    state: &State,
    endpoint: &EndpointSpec,
    lower: &Link,
    links: &[Link],
) -> Result<()> {
    if let Some(mtu) = endpoint.mtu
        && let Err(lower_mtu) = endpoint_mtu(Some(mtu), lower)
    {
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
    let managed = |link: &Link| state.endpoints.keys().any(|n| n.as_str() == link.name);
    if let Some(owner) = mac_owner(links, lower, endpoint.mac(), managed) {
        return Err(Error::invalid(
            "endpoint",
            format!("{}: mac {}", endpoint.name, endpoint.mac()),
            format!("already used by {} on {}", owner.name, endpoint.lower),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::InfoKind;

    use super::*;
    use crate::model::policy::PortVlans;

    fn link(index: u32, name: &str, kind: Option<InfoKind>, lower: Option<u32>) -> Link {
        Link {
            index,
            name: name.to_string(),
            kind,
            lower,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: Some(1500),
            ethernet: true,
            master: None,
            passthru: false,
            up: true,
        }
    }

    fn host() -> Vec<Link> {
        vec![
            link(2, "eth0", None, None),
            link(3, "tap0", Some(InfoKind::MacVtap), Some(2)),
        ]
    }

    fn spec(name: &str, lower: &str) -> EndpointSpec {
        EndpointSpec {
            name: name.parse().unwrap(),
            lower: lower.parse().unwrap(),
            mode: Mode::Bridge,
            mac: None,
            vlans: PortVlans::Untagged,
            priority: None,
            mtu: None,
            allow_mac_spoofing: false,
            isolation: Isolation::Open,
            guards: Default::default(),
            device: crate::model::state::Device::Macvtap,
            cni: None,
        }
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn one_lower_device_rule_everywhere() {
        let links = host();
        assert_eq!(lower_device(&links, "eth0").map(|l| l.index), Some(2));
        assert!(lower_device(&links, "tap0").is_none());
        assert!(lower_device(&links, "nope").is_none());
        let state = State::default();
        assert_eq!(
            message(validate_add(&spec("vm1", "tap0"), &state, &links)),
            "--lower tap0: is itself a macvlan/macvtap; give the device it sits on"
        );
        assert_eq!(
            message(validate_add(&spec("vm1", "nope"), &state, &links)),
            "--lower nope: no such device in this network namespace"
        );
        let request = UplinkSetRequest {
            lower: "tap0".parse().unwrap(),
            reflective_relay: Some(true),
            host_port: None,
            remove_host_port: false,
            replace_host_port: false,
        };
        assert_eq!(
            message(validate_uplink_set(&request, &state, &links)),
            "LOWER tap0: is itself a macvlan/macvtap; give the device it sits on"
        );
        let config = Config::parse("[[endpoint]]\nname = \"vm1\"\nlower = \"tap0\"\n").unwrap();
        let desired = config.desired_endpoints().unwrap();
        assert_eq!(
            message(validate_config(&state, &config, &desired, &links)),
            "endpoint vm1: lower tap0: no such device in this network namespace (or it is a \
             macvlan/macvtap)"
        );
    }

    #[test]
    fn mtu_and_mac_as_add_and_apply_word_them() {
        let links = host();
        let state = State::default();
        let mut big = spec("vm1", "eth0");
        big.mtu = Some(Mtu(9000));
        assert_eq!(
            message(validate_add(&big, &state, &links)),
            "--mtu 9000: must be in 68..=1500 (the MTU of eth0)"
        );
        let config = Config {
            uplinks: Vec::new(),
            endpoints: Vec::new(),
        };
        assert_eq!(
            message(validate_config(&state, &config, &[big], &links)),
            "endpoint vm1: mtu 9000: must be at most 1500 (the MTU of eth0)"
        );
        let mut taken = spec("vm1", "eth0");
        taken.mac = Mac::new([2, 0, 0, 0, 0, 3]);
        assert_eq!(
            message(validate_add(&taken, &state, &links)),
            "--mac 02:00:00:00:00:03: already used by tap0 on eth0; the MAC must be unique on \
             the lower device"
        );
        assert_eq!(
            message(validate_config(&state, &config, &[taken.clone()], &links)),
            "endpoint vm1: mac 02:00:00:00:00:03: already used by tap0 on eth0"
        );
        let (lower, mac, mtu) = validate_add(&spec("vm1", "eth0"), &state, &links).unwrap();
        assert_eq!((lower.index, mtu), (2, 1500));
        assert_eq!(mac, Mac::derived_from("vm1"));
    }
}
