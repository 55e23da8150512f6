//! User input, validated once into typed values. Everything downstream takes
//! these types and never re-checks.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::hash::fnv1a64;

/// A VLAN id that can only hold 1..=4094.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vid(u16);

impl Vid {
    pub const ALLOWED: &str = "VLAN id must be a number in 1..=4094";

    pub fn new(vid: u16) -> Option<Self> {
        (1..=4094).contains(&vid).then_some(Self(vid))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for Vid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<u16>()
            .ok()
            .and_then(Vid::new)
            .ok_or_else(|| Self::ALLOWED.to_string())
    }
}

impl fmt::Display for Vid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Vid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Vid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = u16::deserialize(d)?;
        Vid::new(raw).ok_or_else(|| serde::de::Error::custom(Self::ALLOWED))
    }
}

/// A unicast Ethernet address that is not all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac([u8; 6]);

impl Mac {
    pub const ALLOWED: &str =
        "MAC must be six hex octets like 02:00:00:00:00:01, unicast and not all zeros";

    pub fn new(octets: [u8; 6]) -> Option<Self> {
        let unicast = octets[0] & 1 == 0;
        let zero = octets == [0; 6];
        (unicast && !zero).then_some(Self(octets))
    }

    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// A stable, locally administered unicast address derived from `name`,
    /// so a re-created endpoint keeps the MAC its guest was configured with.
    pub fn derived_from(name: &str) -> Self {
        let mut hash = fnv1a64(name.as_bytes());
        // splitmix64's finalizer: similar names get unrelated addresses.
        hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        let b = hash.to_be_bytes();
        // Locally administered (bit 1 set), unicast (bit 0 clear).
        Self([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(Self::ALLOWED.to_string());
        }
        let mut octets = [0u8; 6];
        for (octet, part) in octets.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(Self::ALLOWED.to_string());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| Self::ALLOWED.to_string())?;
        }
        Mac::new(octets).ok_or_else(|| Self::ALLOWED.to_string())
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        f.pad(&format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}"))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A Linux interface name: 1..=15 bytes, no '/', ':' or whitespace, not
/// "." or "..".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    pub const ALLOWED: &str = "interface name must be 1..=15 bytes without '/', ':' or whitespace";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if valid {
            Ok(Self(name))
        } else {
            Err(Self::ALLOWED.to_string())
        }
    }
}

impl From<IfName> for String {
    fn from(name: IfName) -> String {
        name.0
    }
}

impl FromStr for IfName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_string())
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// The macvtap mode: how the kernel switches between endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Bridge,
    Vepa,
    Private,
    Passthru,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Vepa => "vepa",
            Mode::Private => "private",
            Mode::Passthru => "passthru",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a device's programs are attached: a TCX link (Linux >= 6.6, pinned
/// in bpffs) or a `bpf` filter on a clsact qdisc (netlink, lives with the
/// device). Recorded per device; one hook never carries both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Tcx,
    Clsact,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Clsact => "clsact",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which attach mode new attachments use (`--attach`,
/// `MACVSWITCH_ATTACH`): `auto` tries TCX and falls back to clsact when the
/// kernel answers that it has no TCX; `tcx` and `clsact` force one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachChoice {
    #[default]
    Auto,
    Tcx,
    Clsact,
}

impl FromStr for AttachChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" | "" => Ok(Self::Auto),
            "tcx" => Ok(Self::Tcx),
            "clsact" => Ok(Self::Clsact),
            _ => Err("must be auto, tcx or clsact".to_string()),
        }
    }
}

/// MTU of an endpoint: the Ethernet minimum up to what a link can carry;
/// the lower device's own MTU is checked at `add` time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mtu(pub u32);

impl Mtu {
    pub const MIN: u32 = 68;
    pub const MAX: u32 = 65535;
}

impl FromStr for Mtu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<u32>()
            .ok()
            .filter(|mtu| (Self::MIN..=Self::MAX).contains(mtu))
            .map(Mtu)
            .ok_or_else(|| format!("MTU must be a number in {}..={}", Self::MIN, Self::MAX))
    }
}

/// An interface address with its prefix length: `192.0.2.1/24`,
/// `2001:db8::1/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub const ALLOWED: &str = "address must be ADDRESS/PREFIX, e.g. 192.0.2.1/24 or 2001:db8::1/64";
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || Self::ALLOWED.to_string();
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max || addr.is_unspecified() || addr.is_multicast() {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

serde_as_text!(Cidr);

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}/{}", self.addr, self.prefix))
    }
}

/// How a `--mark-mask` must look, for the one-line error.
pub fn mark_mask_rule(error: macvswitch_common::carriage::MaskError) -> String {
    use macvswitch_common::carriage::MaskError;
    let why = match error {
        MaskError::TagFieldNotContiguous => "its lowest 17 set bits are not contiguous",
        MaskError::TooFewPatternBits => "it has fewer than 25 bits",
    };
    format!(
        "a mask whose lowest 17 set bits are contiguous (they carry the tag) with at least 8 \
         more (a random pattern), e.g. 0xffffffff or 0xffffff80; {why}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vid_bounds() {
        assert!("0".parse::<Vid>().is_err());
        assert!("4095".parse::<Vid>().is_err());
        assert!("abc".parse::<Vid>().is_err());
        assert!("-1".parse::<Vid>().is_err());
        assert_eq!("1".parse::<Vid>().unwrap().get(), 1);
        assert_eq!("4094".parse::<Vid>().unwrap().get(), 4094);
    }

    #[test]
    fn mac_must_be_unicast_and_nonzero() {
        assert!("01:00:5e:00:00:01".parse::<Mac>().is_err());
        assert!("00:00:00:00:00:00".parse::<Mac>().is_err());
        assert!("ff:ff:ff:ff:ff:ff".parse::<Mac>().is_err());
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert!("02:00:00:00:00:0g".parse::<Mac>().is_err());
        let mac: Mac = "02:AB:cd:00:00:01".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:cd:00:00:01");
    }

    #[test]
    fn derived_mac_is_stable_local_unicast() {
        let a = Mac::derived_from("vm1");
        assert_eq!(a, Mac::derived_from("vm1"));
        assert_ne!(a, Mac::derived_from("vm2"));
        assert_eq!(a.octets()[0] & 0x03, 0x02);
    }

    #[test]
    fn cidr_rules() {
        assert_eq!("192.0.2.1/24".parse::<Cidr>().unwrap().prefix, 24);
        assert!("2001:db8::1/64".parse::<Cidr>().is_ok());
        for bad in [
            "192.0.2.1",
            "192.0.2.1/33",
            "0.0.0.0/0",
            "224.0.0.1/4",
            "x/1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ifname_rules() {
        assert!("".parse::<IfName>().is_err());
        assert!("sixteen-bytes-xx".parse::<IfName>().is_err());
        assert!("a/b".parse::<IfName>().is_err());
        assert!("a b".parse::<IfName>().is_err());
        assert!("fifteen-bytes-x".parse::<IfName>().is_ok());
    }
}
