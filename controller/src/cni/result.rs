//! Results in the version asked for: the IPAM plugin's addresses and
//! routes (in whatever version it answered) with this plugin's interface.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::{
    error::{CniError, Code},
    version,
};
use crate::model::types::Cidr;

/// What the IPAM plugin handed out, version-neutral.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Addressing {
    pub ips: Vec<(Cidr, Option<IpAddr>)>,
    pub routes: Vec<(Cidr, Option<IpAddr>)>,
    pub dns: Option<Value>,
}

fn bad(what: &str, value: &Value) -> CniError {
    CniError::new(
        Code::Decode,
        format!("IPAM result: {what} {value}: not understood"),
    )
}

/// `a.b.c.d/n`, where (unlike an interface address) `0.0.0.0/0` is fine.
fn prefix(value: &Value) -> Option<Cidr> {
    let (addr, prefix) = value.as_str()?.split_once('/')?;
    Some(Cidr {
        addr: addr.parse().ok()?,
        prefix: prefix.parse().ok()?,
    })
}

fn address(value: Option<&Value>) -> Option<IpAddr> {
    value?.as_str()?.parse().ok()
}

impl Addressing {
    /// Reads a result of any version from 0.3.0 on (they agree on these
    /// keys).
    pub fn from_result(result: &Value) -> Result<Self, CniError> {
        let mut addressing = Addressing::default();
        for ip in result
            .get("ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cidr = ip
                .get("address")
                .and_then(prefix)
                .ok_or_else(|| bad("ips[].address", ip))?;
            addressing.ips.push((cidr, address(ip.get("gateway"))));
        }
        for route in result
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let dst = route
                .get("dst")
                .and_then(prefix)
                .ok_or_else(|| bad("routes[].dst", route))?;
            addressing.routes.push((dst, address(route.get("gw"))));
        }
        addressing.dns = result.get("dns").filter(|dns| !dns.is_null()).cloned();
        Ok(addressing)
    }

    /// Routes as the interface gets them: one without a gateway goes via
    /// the gateway of its family, as the reference plugins do.
    pub fn routes_with_gateways(&self) -> Vec<(Cidr, Option<IpAddr>)> {
        self.routes
            .iter()
            .map(|(dst, gw)| {
                let gateway = gw.or_else(|| {
                    self.ips
                        .iter()
                        .filter_map(|(_, gw)| *gw)
                        .find(|gw| gw.is_ipv4() == dst.addr.is_ipv4())
                });
                (*dst, gateway)
            })
            .collect()
    }
}

/// The interface a result names: the one in the container.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub sandbox: String,
}

/// The ADD result in `cni_version`: 0.3.x and 0.4.0 mark each IP with its
/// family; 1.1.0 also gives the interface's MTU.
pub fn render(cni_version: &str, interface: &Interface, addressing: &Addressing) -> Value {
    let old = !version::at_least(cni_version, "1.0.0");
    let mut iface = json!({
        "name": interface.name,
        "mac": interface.mac,
        "sandbox": interface.sandbox,
    });
    if version::at_least(cni_version, "1.1.0") {
        iface["mtu"] = json!(interface.mtu);
    }
    let ips: Vec<Value> = addressing
        .ips
        .iter()
        .map(|(cidr, gateway)| {
            let mut ip = json!({"address": cidr.to_string(), "interface": 0});
            if let Some(gateway) = gateway {
                ip["gateway"] = json!(gateway.to_string());
            }
            if old {
                ip["version"] = json!(if cidr.addr.is_ipv4() { "4" } else { "6" });
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = addressing
        .routes
        .iter()
        .map(|(dst, gw)| match gw {
            Some(gw) => json!({"dst": dst.to_string(), "gw": gw.to_string()}),
            None => json!({"dst": dst.to_string()}),
        })
        .collect();
    let mut result = json!({
        "cniVersion": cni_version,
        "interfaces": [iface],
        "ips": ips,
    });
    if !routes.is_empty() {
        result["routes"] = json!(routes);
    }
    result["dns"] = addressing.dns.clone().unwrap_or_else(|| json!({}));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Interface, Addressing) {
        let host_local = json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "192.0.2.10/24", "gateway": "192.0.2.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let interface = Interface {
            name: "net1".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            sandbox: "/run/netns/x".into(),
        };
        (interface, Addressing::from_result(&host_local).unwrap())
    }

    #[test]
    fn answers_in_the_version_asked_for() {
        let (interface, addressing) = sample();
        let old = render("0.3.1", &interface, &addressing);
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = render("1.1.0", &interface, &addressing);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["interface"], 0);
        assert_eq!(new["interfaces"][0]["mtu"], 1500);
        assert_eq!(new["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(new["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn a_route_without_gateway_takes_its_familys() {
        let (_, addressing) = sample();
        let routes = addressing.routes_with_gateways();
        assert_eq!(routes[0].1, Some("192.0.2.1".parse().unwrap()));
    }
}
