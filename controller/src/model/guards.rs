//! An endpoint's access-port guards: the addresses its guest may use
//! (`--ip`), the server and router messages and bridge protocols it may
//! send (`--allow-dhcp-server`, `--allow-ra`, `--allow-bpdu`), and how much
//! broadcast and multicast (`--storm-limit`). The checks themselves are
//! `macvswitch_common::guard`'s, in the programs.

use std::{fmt, net::IpAddr, str::FromStr};

use macvswitch_common::{
    EndpointPolicy, MAX_STORM_PPS, POLICY_ALLOW_BPDU, POLICY_ALLOW_DHCP_SERVER, POLICY_ALLOW_RA,
    POLICY_GUARD_IP,
    guard::{MAX_GUARD_V4, MAX_GUARD_V6, Prefix4, Prefix6},
};
use serde::{Deserialize, Serialize};

use crate::model::is_false;

/// An address (`192.0.2.10`) or prefix (`198.51.100.0/24`,
/// `2001:db8::/64`) a guest may send from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl IpPrefix {
    pub const ALLOWED: &str = "an IPv4 or IPv6 address or prefix, e.g. 192.0.2.10, \
                               198.51.100.0/24 or 2001:db8::10/128 (prefix at most 32 for IPv4, \
                               128 for IPv6; not multicast)";

    fn max_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || Self::ALLOWED.to_string();
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = Self::max_len(addr);
        let len = match len {
            Some(len) => len.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if len > max || addr.is_multicast() {
            return Err(bad());
        }
        Ok(Self { addr, len })
    }
}

/// A whole address prints without its length.
impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == Self::max_len(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// `--ip`: the addresses and prefixes a guest may use, as many per family
/// as the policy has room for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpList(Vec<IpPrefix>);

impl IpList {
    pub fn allowed() -> String {
        format!(
            "a comma-separated list of at most {MAX_GUARD_V4} IPv4 and {MAX_GUARD_V6} IPv6 \
             addresses or prefixes per endpoint, e.g. 192.0.2.10,2001:db8::10"
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &IpPrefix> {
        self.0.iter()
    }
}

impl FromStr for IpList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut list: Vec<IpPrefix> = Vec::new();
        for item in s.split(',').filter(|item| !item.trim().is_empty()) {
            let prefix: IpPrefix = item.parse().map_err(|allowed: String| {
                format!("{item:?} is not {}", allowed.trim_start_matches("an "))
            })?;
            if !list.contains(&prefix) {
                list.push(prefix);
            }
        }
        if list.is_empty() {
            return Err(Self::allowed());
        }
        let v4 = list.iter().filter(|prefix| prefix.addr.is_ipv4()).count();
        let v6 = list.len() - v4;
        if v4 > MAX_GUARD_V4 || v6 > MAX_GUARD_V6 {
            return Err(format!("{} (got {v4} IPv4, {v6} IPv6)", Self::allowed()));
        }
        Ok(Self(list))
    }
}

serde_as_text!(IpList);

impl fmt::Display for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(IpPrefix::to_string).collect();
        f.pad(&items.join(","))
    }
}

/// `--storm-limit`: broadcast and multicast frames per second from a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct StormLimit(u32);

impl StormLimit {
    pub fn allowed() -> String {
        format!("frames per second, a number in 1..={MAX_STORM_PPS}")
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Nanoseconds between frames at the limit: the bucket's step.
    pub fn interval_ns(self) -> u32 {
        1_000_000_000 / self.0
    }
}

impl TryFrom<u32> for StormLimit {
    type Error = String;

    fn try_from(pps: u32) -> Result<Self, String> {
        if (1..=MAX_STORM_PPS).contains(&pps) {
            Ok(Self(pps))
        } else {
            Err(Self::allowed())
        }
    }
}

impl From<StormLimit> for u32 {
    fn from(limit: StormLimit) -> u32 {
        limit.0
    }
}

impl FromStr for StormLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<u32>()
            .map_err(|_| Self::allowed())
            .and_then(Self::try_from)
    }
}

impl fmt::Display for StormLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An endpoint's guards. The default is what a new endpoint gets: no
/// address checks, DHCP-server, RA and BPDU guards on, no storm limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guards {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpList>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_dhcp_server: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_ra: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_bpdu: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_limit: Option<StormLimit>,
}

impl Guards {
    /// No guard at all: the host port, whose stack is the operator's own.
    pub fn none() -> Self {
        Self {
            ip: None,
            allow_dhcp_server: true,
            allow_ra: true,
            allow_bpdu: true,
            storm_limit: None,
        }
    }

    /// Writes the guards into an endpoint's map value.
    pub fn apply(&self, policy: &mut EndpointPolicy) {
        for (allowed, flag) in [
            (self.allow_dhcp_server, POLICY_ALLOW_DHCP_SERVER),
            (self.allow_ra, POLICY_ALLOW_RA),
            (self.allow_bpdu, POLICY_ALLOW_BPDU),
        ] {
            if allowed {
                policy.flags |= flag;
            }
        }
        policy.storm_interval_ns = self.storm_limit.map_or(0, StormLimit::interval_ns);
        let Some(list) = &self.ip else {
            return;
        };
        policy.flags |= POLICY_GUARD_IP;
        let guard = &mut policy.addresses;
        for prefix in list.iter() {
            match prefix.addr {
                IpAddr::V4(addr) => {
                    guard.v4[guard.v4_count as usize] = Prefix4::new(addr.octets(), prefix.len);
                    guard.v4_count += 1;
                }
                IpAddr::V6(addr) => {
                    guard.v6[guard.v6_count as usize] = Prefix6::new(addr.octets(), prefix.len);
                    guard.v6_count += 1;
                }
            }
        }
    }

    /// The guards that differ from a new endpoint's, in a few words, for
    /// tables and trees: e.g. `ip 192.0.2.10, storm 1000/s, allow ra`.
    pub fn describe(&self) -> String {
        let mut words = Vec::new();
        if let Some(list) = &self.ip {
            words.push(format!("ip {list}"));
        }
        if let Some(limit) = self.storm_limit {
            words.push(format!("storm {limit}/s"));
        }
        let allowed: Vec<&str> = [
            (self.allow_dhcp_server, "dhcp-server"),
            (self.allow_ra, "ra"),
            (self.allow_bpdu, "bpdu"),
        ]
        .iter()
        .filter(|(allowed, _)| *allowed)
        .map(|(_, name)| *name)
        .collect();
        if !allowed.is_empty() {
            words.push(format!("allow {}", allowed.join(",")));
        }
        words.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_print() {
        let list: IpList = "192.0.2.10, 198.51.100.0/24,2001:db8::10/128,2001:db8:1::/48"
            .parse()
            .unwrap();
        assert_eq!(
            list.to_string(),
            "192.0.2.10,198.51.100.0/24,2001:db8::10,2001:db8:1::/48"
        );
        for bad in [
            "",
            "192.0.2.300",
            "192.0.2.1/33",
            "2001:db8::/129",
            "224.0.0.1",
            "ff02::1",
            "x",
        ] {
            assert!(bad.parse::<IpList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn at_most_what_the_policy_holds() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("192.0.2.{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(many(MAX_GUARD_V4).parse::<IpList>().is_ok());
        let error = many(MAX_GUARD_V4 + 1).parse::<IpList>().unwrap_err();
        assert!(error.contains("at most 16 IPv4"), "{error}");
    }

    #[test]
    fn storm_limits_are_bounded() {
        assert!("0".parse::<StormLimit>().is_err());
        assert!("1000001".parse::<StormLimit>().is_err());
        assert_eq!(
            "1000".parse::<StormLimit>().unwrap().interval_ns(),
            1_000_000
        );
    }

    #[test]
    fn policy_bits() {
        let mut policy = EndpointPolicy::untagged([2, 0, 0, 0, 0, 1]);
        Guards::default().apply(&mut policy);
        assert_eq!(policy.flags, 0, "guards on, no address check");
        let guards = Guards {
            ip: Some("192.0.2.10,2001:db8::/64".parse().unwrap()),
            allow_ra: true,
            storm_limit: Some(StormLimit(500)),
            ..Guards::default()
        };
        guards.apply(&mut policy);
        assert!(policy.has(POLICY_GUARD_IP) && policy.has(POLICY_ALLOW_RA));
        assert!(!policy.has(POLICY_ALLOW_DHCP_SERVER));
        assert_eq!(
            (policy.addresses.v4_count, policy.addresses.v6_count),
            (1, 1)
        );
        assert!(policy.addresses.allows_v4([192, 0, 2, 10]));
        assert!(!policy.addresses.allows_v4([192, 0, 2, 11]));
        assert_eq!(policy.storm_interval_ns, 2_000_000);
        assert_eq!(
            guards.describe(),
            "ip 192.0.2.10,2001:db8::/64, storm 500/s, allow ra"
        );
    }
}
