//! The declarative configuration: `apply FILE.toml` converges the host to
//! it with the fewest changes; `export` prints the current state in it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    model::guards::{Guards, IpList, StormLimit},
    model::is_false,
    model::isolation::Isolation,
    model::policy::{Pcp, PortOptions, PortVlans, VidList},
    model::spec::{EndpointSpec, HostPortSpec},
    model::state::{EndpointRecord, State, UplinkRecord},
    model::types::{IfName, Mac, Mode, Mtu, Vid},
};

/// A whole host: lower devices and endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "uplink", skip_serializing_if = "Vec::is_empty")]
    pub uplinks: Vec<UplinkConfig>,
    #[serde(default, rename = "endpoint", skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointConfig>,
}

/// `[[endpoint]]`: the options of `endpoint add`, as fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub name: IfName,
    pub lower: IfName,
    #[serde(default)]
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trunk: Option<VidList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native: Option<Vid>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub native_tagged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Vid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_cvlans: Option<VidList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Pcp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_mac_spoofing: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub isolated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community: Option<String>,
    /// Port security (see `model::guards`), under the CLI's names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpList>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_dhcp_server: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_ra: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_bpdu: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm_limit: Option<StormLimit>,
}

/// `[[uplink]]`: a lower device's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    pub name: IfName,
    #[serde(default, skip_serializing_if = "is_false")]
    pub reflective_relay: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<HostPortSpec>,
}

impl Config {
    /// Reads and checks a file. Errors name the file, and for syntax and
    /// schema errors the line and column.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid("FILE", path.display(), format!("cannot be read: {e}")))?;
        Self::parse(&text).map_err(|error| match error {
            Error::Invalid {
                option,
                value,
                allowed,
            } => Error::Invalid {
                option,
                value: format!("{} {value}", path.display()).trim().to_string(),
                allowed,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            Error::invalid(
                "FILE",
                format!("line {line} column {column}"),
                error.message().trim().replace('\n', " "),
            )
        })
    }

    /// The endpoints, resolved and checked against each other.
    pub fn desired_endpoints(&self) -> Result<Vec<EndpointSpec>> {
        let mut desired: Vec<EndpointSpec> = Vec::new();
        for endpoint in &self.endpoints {
            let context = |error: Error| in_endpoint(&endpoint.name, error);
            let options = PortOptions {
                vlan: endpoint.vlan,
                trunk: endpoint.trunk.clone(),
                native: endpoint.native,
                native_tagged: endpoint.native_tagged.then_some(true),
                tunnel: endpoint.tunnel,
                tunnel_cvlans: endpoint.tunnel_cvlans.clone(),
                ..PortOptions::default()
            };
            let kinds = [
                endpoint.vlan.is_some(),
                endpoint.trunk.is_some(),
                endpoint.tunnel.is_some(),
            ];
            if kinds.iter().filter(|set| **set).count() > 1 {
                return Err(context(Error::invalid(
                    "vlan/trunk/tunnel",
                    "",
                    "give at most one of them",
                )));
            }
            let vlans = options
                .port(&PortVlans::Untagged, endpoint.priority)
                .map_err(context)?;
            let isolation = match (endpoint.isolated, &endpoint.community) {
                (true, Some(_)) => {
                    return Err(context(Error::invalid(
                        "isolated/community",
                        "",
                        "give at most one of them",
                    )));
                }
                (true, None) => Isolation::Isolated,
                (false, Some(name)) => Isolation::Community(name.clone()),
                (false, None) => Isolation::Open,
            };
            let mtu = endpoint
                .mtu
                .map(|mtu| mtu.to_string().parse::<Mtu>())
                .transpose()
                .map_err(|allowed| {
                    context(Error::invalid("mtu", endpoint.mtu.unwrap_or(0), allowed))
                })?;
            let want = EndpointSpec {
                name: endpoint.name.clone(),
                lower: endpoint.lower.clone(),
                mode: endpoint.mode,
                mac: endpoint.mac,
                vlans,
                priority: endpoint.priority,
                mtu,
                allow_mac_spoofing: endpoint.allow_mac_spoofing,
                isolation,
                guards: Guards {
                    ip: endpoint.ip.clone(),
                    allow_dhcp_server: endpoint.allow_dhcp_server,
                    allow_ra: endpoint.allow_ra,
                    allow_bpdu: endpoint.allow_bpdu,
                    storm_limit: endpoint.storm_limit,
                },
                device: crate::model::state::Device::Macvtap,
                cni: None,
            };
            if let Some(twin) = desired.iter().find(|other| other.name == want.name) {
                return Err(Error::invalid(
                    "[[endpoint]]",
                    &twin.name,
                    "is declared twice",
                ));
            }
            if let Some(twin) = desired
                .iter()
                .find(|other| other.lower == want.lower && other.mac() == want.mac())
            {
                return Err(context(Error::invalid(
                    "mac",
                    want.mac(),
                    format!("is also {}'s on {}", twin.name, want.lower),
                )));
            }
            desired.push(want);
        }
        for uplink in &self.uplinks {
            if self
                .uplinks
                .iter()
                .filter(|u| u.name == uplink.name)
                .count()
                > 1
            {
                return Err(Error::invalid(
                    "[[uplink]]",
                    &uplink.name,
                    "is declared twice",
                ));
            }
            if let Some(port) = &uplink.host_port
                && desired.iter().any(|endpoint| endpoint.name == port.name)
            {
                return Err(Error::invalid(
                    "host_port",
                    &port.name,
                    "is also the name of an endpoint",
                ));
            }
        }
        Ok(desired)
    }

    /// The current state as a file `apply` accepts: every value concrete,
    /// so that applying it changes nothing.
    pub fn from_state(state: &State) -> Self {
        Self {
            uplinks: state.uplinks.values().map(uplink_config).collect(),
            endpoints: state
                .endpoints
                .values()
                .filter(|record| record.cni.is_none())
                .map(endpoint_config)
                .collect(),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serializes")
    }
}

fn endpoint_config(record: &EndpointRecord) -> EndpointConfig {
    let mut config = EndpointConfig {
        name: record.name.clone(),
        lower: record.lower.clone(),
        mode: record.mode,
        mac: Some(record.mac),
        vlan: None,
        trunk: None,
        native: None,
        native_tagged: false,
        tunnel: None,
        tunnel_cvlans: None,
        priority: record.priority,
        mtu: Some(record.mtu),
        allow_mac_spoofing: record.allow_mac_spoofing,
        isolated: record.isolation == Isolation::Isolated,
        community: match &record.isolation {
            Isolation::Community(name) => Some(name.clone()),
            _ => None,
        },
        ip: record.guards.ip.clone(),
        allow_dhcp_server: record.guards.allow_dhcp_server,
        allow_ra: record.guards.allow_ra,
        allow_bpdu: record.guards.allow_bpdu,
        storm_limit: record.guards.storm_limit,
    };
    match &record.vlans {
        PortVlans::Untagged => {}
        PortVlans::Access { vlan } => config.vlan = Some(*vlan),
        PortVlans::Trunk {
            vlans,
            native,
            native_tagged,
        } => {
            config.trunk = Some(vlans.clone());
            config.native = *native;
            config.native_tagged = *native_tagged;
        }
        PortVlans::Tunnel { svlan, cvlans } => {
            config.tunnel = Some(*svlan);
            config.tunnel_cvlans = cvlans.clone();
        }
    }
    config
}

fn uplink_config(record: &UplinkRecord) -> UplinkConfig {
    UplinkConfig {
        name: record.name.clone(),
        reflective_relay: record.reflective_relay,
        host_port: record.host_port.as_ref().map(|port| port.spec()),
    }
}

/// Prefixes an input error with the endpoint it is about, and names the
/// file's field rather than the command-line option.
fn in_endpoint(name: &IfName, error: Error) -> Error {
    match error {
        Error::Invalid {
            option,
            value,
            allowed,
        } => Error::Invalid {
            option: "[[endpoint]]",
            value: format!(
                "{name}: {}{}",
                toml_field(option),
                if value.is_empty() {
                    String::new()
                } else {
                    format!(" = {value}")
                }
            ),
            allowed: in_toml_terms(&allowed),
        },
        other => other,
    }
}

/// The file's name for a CLI option: `--native-tagged` is `native_tagged`.
fn toml_field(option: &str) -> String {
    option.trim_start_matches("--").replace('-', "_")
}

/// A rule worded for the command line, in the file's terms: `(--trunk
/// VIDLIST)` becomes `(trunk = "VIDLIST")`, `--native VID` becomes
/// `native = VID`, `--isolated` becomes `isolated`.
fn in_toml_terms(rule: &str) -> String {
    let mut out = String::new();
    let mut words = rule.split(' ').peekable();
    let mut first = true;
    while let Some(word) = words.next() {
        if !first {
            out.push(' ');
        }
        first = false;
        let Some(option) = word.strip_prefix('(').unwrap_or(word).strip_prefix("--") else {
            out += word;
            continue;
        };
        if word.starts_with('(') {
            out.push('(');
        }
        let (name, tail) = option.split_at(
            option
                .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .unwrap_or(option.len()),
        );
        out += &toml_field(name);
        // A metavariable after the option is its value.
        let metavar = |w: &str| {
            let bare = w.trim_end_matches([')', ',', ';', '.']);
            !bare.is_empty() && bare.chars().all(|c| c.is_ascii_uppercase())
        };
        if tail.is_empty()
            && let Some(next) = words.peek()
            && metavar(next)
        {
            let next = words.next().unwrap_or_default();
            let bare = next.trim_end_matches([')', ',', ';', '.']);
            let quoted = if bare.ends_with("LIST") {
                format!("\"{bare}\"")
            } else {
                bare.to_string()
            };
            out += &format!(" = {quoted}{}", &next[bare.len()..]);
        } else {
            out += tail;
        }
    }
    out
}

/// 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod wording_tests {
    use super::in_toml_terms;

    #[test]
    fn command_line_rules_read_in_the_files_terms() {
        assert_eq!(
            in_toml_terms("needs a trunk port (--trunk VIDLIST)"),
            "needs a trunk port (trunk = \"VIDLIST\")"
        );
        assert_eq!(
            in_toml_terms("needs a tunnel port (--tunnel SVID)"),
            "needs a tunnel port (tunnel = SVID)"
        );
        assert_eq!(
            in_toml_terms("needs a native VLAN (--native VID)"),
            "needs a native VLAN (native = VID)"
        );
        assert_eq!(
            in_toml_terms("this port pushes no tags; it needs --vlan, --native or --tunnel"),
            "this port pushes no tags; it needs vlan, native or tunnel"
        );
        assert_eq!(in_toml_terms("must be in 1..=4094"), "must be in 1..=4094");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[uplink]]
name = "eth0"
reflective_relay = true
host_port = { name = "host0", vlan = 10, addresses = ["192.0.2.1/24"] }

[[endpoint]]
name = "vm1"
lower = "eth0"
vlan = 10

[[endpoint]]
name = "vm2"
lower = "eth0"
mode = "vepa"
trunk = "10,20,100-199"
native = 10
native_tagged = true
priority = 5
community = "blue"
"#;

    #[test]
    fn example_parses_and_resolves() {
        let config = Config::parse(EXAMPLE).unwrap();
        let desired = config.desired_endpoints().unwrap();
        assert_eq!(desired.len(), 2);
        assert_eq!(desired[1].vlans.kind(), "trunk");
        assert_eq!(desired[1].isolation, Isolation::Community("blue".into()));
        assert!(config.uplinks[0].reflective_relay);
    }

    #[test]
    fn syntax_and_schema_errors_give_line_and_column() {
        for (text, line) in [
            (
                "[[endpoint]]\nname = \"vm1\"\nlower = \"eth0\"\nvlan = 4095\n",
                4,
            ),
            ("[[endpoint]]\nname = \"vm1\"\nlower = eth0\n", 3),
            (
                "[[endpoint]]\nname = \"vm1\"\nlower = \"eth0\"\ncolour = 1\n",
                4,
            ),
            (
                "[[endpoint]]\nname = \"this-name-is-too-long\"\nlower = \"eth0\"\n",
                2,
            ),
        ] {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(error.contains(&format!("line {line} ")), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn conflicts_name_the_endpoint_and_field() {
        let text = "[[endpoint]]\nname = \"vm1\"\nlower = \"eth0\"\nvlan = 10\ntrunk = \"20\"\n";
        let error = Config::parse(text)
            .unwrap()
            .desired_endpoints()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("[[endpoint]] vm1: vlan/trunk/tunnel"),
            "{error}"
        );
        let text = "[[endpoint]]\nname = \"vm1\"\nlower = \"eth0\"\nnative = 10\n";
        let error = Config::parse(text)
            .unwrap()
            .desired_endpoints()
            .unwrap_err();
        assert!(
            error.to_string()
                == "[[endpoint]] vm1: native = 10: needs a trunk port (trunk = \"VIDLIST\")",
            "{error}"
        );
    }
}
