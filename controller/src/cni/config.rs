//! The network configuration on stdin: the spec's keys, macvswitch's port
//! options in the config's camelCase, each checked into the model's typed
//! values with a one-line error naming the key, the value and the rule.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{CniError, Code};
use crate::model::{
    guards::{Guards, IpList, StormLimit},
    isolation::Isolation,
    policy::{Pcp, PortOptions, PortVlans, VidList},
    spec::EndpointSpec,
    state::{CniAttachment, Device},
    types::{IfName, Mac, Mode, Mtu, Vid},
};

/// The keys this plugin reads; others (the runtime's, another plugin's in
/// a chain) are left alone, as the spec asks.
pub const PORT_KEYS: [&str; 20] = [
    "master",
    "device",
    "mode",
    "mac",
    "mtu",
    "vlan",
    "trunk",
    "native",
    "nativeTagged",
    "tunnel",
    "tunnelCvlans",
    "priority",
    "allowMacSpoofing",
    "isolated",
    "community",
    "ip",
    "allowDhcpServer",
    "allowRa",
    "allowBpdu",
    "stormLimit",
];

/// A parsed network configuration.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub raw: Map<String, Value>,
}

fn invalid(key: &str, value: &Value, rule: impl std::fmt::Display) -> CniError {
    CniError::new(Code::InvalidConfig, format!("{key} {value}: {rule}"))
}

impl NetConf {
    /// Decodes stdin: JSON (else code 6) with `cniVersion` and `name`
    /// (else code 7).
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let raw: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("network configuration: not a JSON object: {e}"),
            )
        })?;
        let string = |key: &str| match raw.get(key) {
            Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
            Some(other) => Err(invalid(key, other, "must be a non-empty string")),
            None => Err(CniError::new(
                Code::InvalidConfig,
                format!("{key}: missing from the network configuration"),
            )),
        };
        let cni_version = string("cniVersion")?;
        let name = string("name")?;
        Ok(Self {
            cni_version,
            name,
            raw,
        })
    }

    /// Key `key` as a `T`, `None` if absent or null.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CniError> {
        match self.raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|e| invalid(key, value, e)),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, CniError> {
        Ok(self.get::<bool>(key)?.unwrap_or(false))
    }

    /// `stateDir`: where the state is, else `MACVSWITCH_STATE_DIR`, else
    /// the CLI's default.
    pub fn state_dir(&self) -> Result<PathBuf, CniError> {
        Ok(self.get::<PathBuf>("stateDir")?.unwrap_or_else(|| {
            std::env::var_os("MACVSWITCH_STATE_DIR")
                .map_or_else(|| PathBuf::from("/var/lib/macvswitch"), PathBuf::from)
        }))
    }

    /// `bpffs`: where the pins are, else `MACVSWITCH_BPFFS`, else the
    /// CLI's default.
    pub fn bpffs(&self) -> Result<PathBuf, CniError> {
        Ok(self.get::<PathBuf>("bpffs")?.unwrap_or_else(|| {
            std::env::var_os("MACVSWITCH_BPFFS")
                .map_or_else(|| PathBuf::from("/sys/fs/bpf/macvswitch"), PathBuf::from)
        }))
    }

    /// `master`: the lower device, required.
    pub fn master(&self) -> Result<IfName, CniError> {
        self.get::<IfName>("master")?.ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                "master: missing; name the host interface the endpoints sit on",
            )
        })
    }

    /// `device`: `macvtap` (the default, for VM launchers) or `macvlan`
    /// (for containers).
    pub fn device(&self) -> Result<Device, CniError> {
        match self.raw.get("device") {
            None | Some(Value::Null) => Ok(Device::Macvtap),
            Some(Value::String(kind)) if kind == "macvtap" => Ok(Device::Macvtap),
            Some(Value::String(kind)) if kind == "macvlan" => Ok(Device::Macvlan),
            Some(other) => Err(invalid(
                "device",
                other,
                "must be \"macvtap\" or \"macvlan\"",
            )),
        }
    }

    /// The IPAM section, if any, with its plugin type.
    pub fn ipam(&self) -> Result<Option<(String, Value)>, CniError> {
        match self.raw.get("ipam") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(ipam)) if ipam.is_empty() => Ok(None),
            Some(section @ Value::Object(ipam)) => match ipam.get("type") {
                Some(Value::String(kind)) if !kind.is_empty() && !kind.contains('/') => {
                    Ok(Some((kind.clone(), section.clone())))
                }
                other => Err(invalid(
                    "ipam.type",
                    other.unwrap_or(&Value::Null),
                    "must name an IPAM plugin in CNI_PATH",
                )),
            },
            Some(other) => Err(invalid("ipam", other, "must be an object")),
        }
    }

    /// The MAC asked for: `runtimeConfig.mac` over `MAC` in `CNI_ARGS`
    /// over `mac`, as the reference plugins take it.
    fn mac(&self, cni_args: &str) -> Result<Option<Mac>, CniError> {
        let runtime = self
            .raw
            .get("runtimeConfig")
            .and_then(|config| config.get("mac"))
            .cloned();
        if let Some(value) = runtime {
            return serde_json::from_value::<Mac>(value.clone())
                .map(Some)
                .map_err(|e| invalid("runtimeConfig.mac", &value, e));
        }
        let from_args = cni_args.split(';').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == "MAC").then(|| value.trim().to_string())
        });
        if let Some(text) = from_args {
            return text.parse::<Mac>().map(Some).map_err(|rule| {
                CniError::new(
                    Code::InvalidEnvironment,
                    format!("CNI_ARGS MAC={text}: {rule}"),
                )
            });
        }
        self.get::<Mac>("mac")
    }

    /// The endpoint this network makes for an attachment: the port options
    /// resolved by the model as the CLI's are.
    pub fn endpoint_spec(
        &self,
        attachment: CniAttachment,
        cni_args: &str,
    ) -> Result<EndpointSpec, CniError> {
        let options = PortOptions {
            vlan: self.get::<Vid>("vlan")?,
            trunk: self.get::<VidList>("trunk")?,
            native: self.get::<Vid>("native")?,
            native_tagged: self.flag("nativeTagged")?.then_some(true),
            tunnel: self.get::<Vid>("tunnel")?,
            tunnel_cvlans: self.get::<VidList>("tunnelCvlans")?,
            ..PortOptions::default()
        };
        let kinds = [
            options.vlan.is_some(),
            options.trunk.is_some(),
            options.tunnel.is_some(),
        ];
        if kinds.iter().filter(|set| **set).count() > 1 {
            return Err(CniError::new(
                Code::InvalidConfig,
                "vlan/trunk/tunnel: give at most one of them",
            ));
        }
        let priority = self.get::<Pcp>("priority")?;
        let vlans = options
            .port(&PortVlans::Untagged, priority)
            .map_err(CniError::from)?;
        let isolation = match (self.flag("isolated")?, self.get::<String>("community")?) {
            (true, Some(_)) => {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    "isolated/community: give at most one of them",
                ));
            }
            (true, None) => Isolation::Isolated,
            (false, Some(name)) => Isolation::Community(name),
            (false, None) => Isolation::Open,
        };
        let mtu = match self.get::<u32>("mtu")? {
            None => None,
            Some(mtu) => Some(
                mtu.to_string()
                    .parse::<Mtu>()
                    .map_err(|rule| invalid("mtu", &Value::from(mtu), rule))?,
            ),
        };
        let name = crate::ops::cni::endpoint_name(
            &self.name,
            &attachment.container_id,
            attachment.ifname.as_str(),
        );
        Ok(EndpointSpec {
            name,
            lower: self.master()?,
            mode: self.get::<Mode>("mode")?.unwrap_or_default(),
            mac: self.mac(cni_args)?,
            vlans,
            priority,
            mtu,
            allow_mac_spoofing: self.flag("allowMacSpoofing")?,
            isolation,
            guards: Guards {
                ip: self.get::<IpList>("ip")?,
                allow_dhcp_server: self.flag("allowDhcpServer")?,
                allow_ra: self.flag("allowRa")?,
                allow_bpdu: self.flag("allowBpdu")?,
                storm_limit: self.get::<StormLimit>("stormLimit")?,
            },
            device: self.device()?,
            cni: Some(attachment),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_are_network_options() {
        let conf = conf(r#","ip":"192.0.2.10,2001:db8::10","allowRa":true,"stormLimit":500"#);
        let attachment = CniAttachment {
            container_id: "c1".into(),
            network: "n".into(),
            ifname: "net1".parse().unwrap(),
            netns: "/run/netns/x".into(),
        };
        let spec = conf.endpoint_spec(attachment, "").unwrap();
        assert_eq!(
            spec.guards.describe(),
            "ip 192.0.2.10,2001:db8::10, storm 500/s, allow ra"
        );
        let bad = NetConf::parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"macvswitch-cni","master":"eth0","stormLimit":0}"#,
        )
        .unwrap();
        let attachment = CniAttachment {
            container_id: "c1".into(),
            network: "n".into(),
            ifname: "net1".parse().unwrap(),
            netns: "/run/netns/x".into(),
        };
        let error = bad.endpoint_spec(attachment, "").unwrap_err();
        assert!(error.msg.contains("stormLimit"), "{}", error.msg);
    }

    fn conf(extra: &str) -> NetConf {
        NetConf::parse(&format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"macvswitch-cni","master":"eth0"{extra}}}"#
        ))
        .unwrap()
    }

    fn attachment() -> CniAttachment {
        CniAttachment {
            container_id: "c1".into(),
            network: "n".into(),
            ifname: "net1".parse().unwrap(),
            netns: "/run/netns/x".into(),
        }
    }

    fn refusal(extra: &str, args: &str) -> CniError {
        conf(extra).endpoint_spec(attachment(), args).unwrap_err()
    }

    #[test]
    fn a_bad_value_names_its_key_and_the_rule() {
        let error = refusal(r#","vlan":4095"#, "");
        assert_eq!(error.code, Code::InvalidConfig as u32);
        assert!(error.msg.starts_with("vlan 4095: "), "{}", error.msg);
        assert!(error.msg.contains("1..=4094"), "{}", error.msg);
        let error = refusal(r#","trunk":"10,9000""#, "");
        assert!(
            error.msg.starts_with("trunk \"10,9000\": "),
            "{}",
            error.msg
        );
        let error = refusal(r#","device":"tun""#, "");
        assert!(
            error.msg.contains("\"macvtap\" or \"macvlan\""),
            "{}",
            error.msg
        );
        let error = refusal(r#","isolated":true,"community":"web""#, "");
        assert!(error.msg.starts_with("isolated/community"), "{}", error.msg);
        let error = refusal(r#","native":5"#, "");
        assert!(error.msg.starts_with("native"), "{}", error.msg);
        let error = NetConf::parse(r#"{"cniVersion":"1.1.0"}"#).unwrap_err();
        assert_eq!(error.code, Code::InvalidConfig as u32);
        assert!(error.msg.starts_with("name: missing"), "{}", error.msg);
        let error = NetConf::parse("[1]").unwrap_err();
        assert_eq!(error.code, Code::Decode as u32);
    }

    #[test]
    fn the_port_model_is_the_clis() {
        let spec = conf(r#","trunk":"10,20","native":10,"priority":5,"community":"web""#)
            .endpoint_spec(attachment(), "")
            .unwrap();
        assert_eq!(spec.vlans.to_string(), "trunk 10,20 native 10");
        assert_eq!(spec.isolation, Isolation::Community("web".into()));
        assert_eq!(spec.device, Device::Macvtap);
        assert_eq!(spec.lower.as_str(), "eth0");
        // The endpoint's name is the attachment's, the same every time.
        let again = conf("").endpoint_spec(attachment(), "").unwrap();
        assert_eq!(spec.name, again.name);
    }

    #[test]
    fn runtime_config_mac_wins_over_cni_args_over_config() {
        let spec = |extra: &str, args: &str| conf(extra).endpoint_spec(attachment(), args).unwrap();
        let mac = |text: &str| Some(text.parse::<Mac>().unwrap());
        let config = r#","mac":"02:00:00:00:00:01""#;
        assert_eq!(spec(config, "").mac, mac("02:00:00:00:00:01"));
        let args = "IgnoreUnknown=1;MAC=02:00:00:00:00:02";
        assert_eq!(spec(config, args).mac, mac("02:00:00:00:00:02"));
        let runtime = r#","mac":"02:00:00:00:00:01","runtimeConfig":{"mac":"02:00:00:00:00:03"}"#;
        assert_eq!(spec(runtime, args).mac, mac("02:00:00:00:00:03"));
        assert_eq!(spec("", "").mac, None);
    }
}
