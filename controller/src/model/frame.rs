//! Ethernet frames as `trace` describes and builds them and as `trace` and
//! `monitor` show them: addresses, tag stack, ethertype and, for IPv4 and
//! IPv6, the addresses and protocol.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use macvswitch_common::{TPID_8021AD, TPID_8021Q, Tag, is_tpid};
use serde_json::{Value, json};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// The shortest frame on the wire, without its FCS: builders pad to it.
const MIN_FRAME: usize = 60;
/// The longest frame `--hex` takes (a jumbo frame and its tags).
pub const MAX_FRAME: usize = 9216 + 8;

/// Any Ethernet address, group addresses included (a frame's destination
/// may be one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthAddr(pub [u8; 6]);

impl EthAddr {
    pub const ALLOWED: &str = "Ethernet address must be six hex octets like 02:00:00:00:00:01";
    pub const BROADCAST: Self = Self([0xff; 6]);
}

impl FromStr for EthAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let mut octets = [0u8; 6];
        if parts.len() != 6 {
            return Err(Self::ALLOWED.into());
        }
        for (octet, part) in octets.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(Self::ALLOWED.into());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| Self::ALLOWED.to_string())?;
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for EthAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// `--ethertype`: a name or a number of at least 0x0600 that is no TPID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtherType(pub u16);

impl EtherType {
    pub const ALLOWED: &str = "ethertype must be ipv4, ipv6, arp or a number 0x0600..=0xffff that is no VLAN TPID (tags go in --vlan)";
}

impl FromStr for EtherType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let value = match s.to_ascii_lowercase().as_str() {
            "ipv4" => ETHERTYPE_IPV4,
            "ipv6" => ETHERTYPE_IPV6,
            "arp" => ETHERTYPE_ARP,
            other => match other.strip_prefix("0x") {
                Some(hex) => u16::from_str_radix(hex, 16),
                None => other.parse(),
            }
            .map_err(|_| Self::ALLOWED.to_string())?,
        };
        if value < 0x0600 || is_tpid(value) {
            return Err(Self::ALLOWED.into());
        }
        Ok(Self(value))
    }
}

/// `--tpid`: which kind of tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tpid(pub u16);

impl Tpid {
    pub const ALLOWED: &str =
        "TPID must be 802.1q, 802.1ad or a VLAN TPID in hex (0x8100, 0x88a8, 0x9100)";
}

impl FromStr for Tpid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let value = match s.to_ascii_lowercase().as_str() {
            "802.1q" | "q" => TPID_8021Q,
            "802.1ad" | "ad" => TPID_8021AD,
            other => other
                .strip_prefix("0x")
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                .filter(|tpid| is_tpid(*tpid))
                .ok_or_else(|| Self::ALLOWED.to_string())?,
        };
        Ok(Self(value))
    }
}

/// `--vlan` of a described frame: a VLAN id or 0 for a priority tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagVid(pub u16);

impl TagVid {
    pub const ALLOWED: &str = "VLAN id must be a number in 0..=4094 (0: a priority tag)";
}

impl FromStr for TagVid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<u16>()
            .ok()
            .filter(|vid| *vid <= 4094)
            .map(Self)
            .ok_or_else(|| Self::ALLOWED.to_string())
    }
}

/// A frame given as hex bytes (`--hex`), separators allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HexFrame(pub Vec<u8>);

impl HexFrame {
    pub const ALLOWED: &str =
        "frame must be 1..=9224 bytes as hex digits (spaces, ':' and '-' between bytes allowed)";
}

impl FromStr for HexFrame {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'\n' | b'\t'))
            .collect();
        if digits.is_empty() || !digits.len().is_multiple_of(2) || digits.len() / 2 > MAX_FRAME {
            return Err(Self::ALLOWED.into());
        }
        digits
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(|| Self::ALLOWED.to_string())
            })
            .collect::<Result<Vec<u8>, String>>()
            .map(Self)
    }
}

/// A frame described field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub dst: EthAddr,
    pub src: EthAddr,
    /// Outermost first.
    pub tags: Vec<Tag>,
    pub ethertype: u16,
    /// Source and destination, for IPv4, IPv6 and ARP.
    pub ips: Option<(IpAddr, IpAddr)>,
}

/// Documentation addresses (RFC 5737, RFC 3849) for frames described
/// without any.
pub fn default_ips(ethertype: u16) -> Option<(IpAddr, IpAddr)> {
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_ARP => Some((
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(192, 0, 2, 2).into(),
        )),
        ETHERTYPE_IPV6 => Some((
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
        )),
        _ => None,
    }
}

impl FrameSpec {
    /// The frame's bytes, tags inline, padded to 60 bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(MIN_FRAME + 40);
        bytes.extend_from_slice(&self.dst.0);
        bytes.extend_from_slice(&self.src.0);
        for tag in &self.tags {
            bytes.extend_from_slice(&tag.tpid.to_be_bytes());
            bytes.extend_from_slice(&tag.tci.to_be_bytes());
        }
        bytes.extend_from_slice(&self.ethertype.to_be_bytes());
        let udp = |payload_len: usize| {
            let mut udp = Vec::new();
            udp.extend_from_slice(&49152u16.to_be_bytes());
            // The discard port: nothing would answer.
            udp.extend_from_slice(&9u16.to_be_bytes());
            udp.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
            // No checksum: none of the switch's business.
            udp.extend_from_slice(&[0, 0]);
            udp
        };
        const PAYLOAD: &[u8] = b"macvswitch trace";
        match (self.ethertype, self.ips) {
            (ETHERTYPE_IPV4, Some((IpAddr::V4(src), IpAddr::V4(dst)))) => {
                let total = 20 + 8 + PAYLOAD.len();
                let mut header = vec![0x45, 0];
                header.extend_from_slice(&(total as u16).to_be_bytes());
                header.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
                header.extend_from_slice(&src.octets());
                header.extend_from_slice(&dst.octets());
                let sum = ipv4_checksum(&header);
                header[10..12].copy_from_slice(&sum.to_be_bytes());
                bytes.extend_from_slice(&header);
                bytes.extend_from_slice(&udp(PAYLOAD.len()));
                bytes.extend_from_slice(PAYLOAD);
            }
            (ETHERTYPE_IPV6, Some((IpAddr::V6(src), IpAddr::V6(dst)))) => {
                bytes.extend_from_slice(&[0x60, 0, 0, 0]);
                bytes.extend_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
                bytes.extend_from_slice(&[17, 64]);
                bytes.extend_from_slice(&src.octets());
                bytes.extend_from_slice(&dst.octets());
                bytes.extend_from_slice(&udp(PAYLOAD.len()));
                bytes.extend_from_slice(PAYLOAD);
            }
            (ETHERTYPE_ARP, Some((IpAddr::V4(src), IpAddr::V4(dst)))) => {
                // A request: who has dst, tell src.
                bytes.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
                bytes.extend_from_slice(&self.src.0);
                bytes.extend_from_slice(&src.octets());
                bytes.extend_from_slice(&[0; 6]);
                bytes.extend_from_slice(&dst.octets());
            }
            _ => {}
        }
        bytes.resize(bytes.len().max(MIN_FRAME), 0);
        bytes
    }
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where a tag of a frame was: carried in the mark by another endpoint,
/// in skb metadata, or in the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagPlace {
    Mark,
    Metadata,
    Inline,
}

impl TagPlace {
    fn as_str(self) -> &'static str {
        match self {
            Self::Mark => "mark",
            Self::Metadata => "metadata",
            Self::Inline => "inline",
        }
    }
}

/// What a frame's first bytes say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The frame's length in bytes (an offloaded tag not counted).
    pub len: u32,
    pub dst: EthAddr,
    pub src: EthAddr,
    /// Outermost first.
    pub tags: Vec<(Tag, TagPlace)>,
    pub ethertype: u16,
    /// Source, destination and protocol of an IPv4 or IPv6 packet whose
    /// header was captured.
    pub ip: Option<(IpAddr, IpAddr, u8)>,
}

impl Summary {
    /// Reads the first bytes of a frame (`bytes`, maybe fewer than `len`)
    /// under the tags held outside them; `None` if the Ethernet header is
    /// not all there.
    pub fn read(len: u32, bytes: &[u8], outside: &[(Tag, TagPlace)]) -> Option<Self> {
        let addr = |at: usize| -> Option<EthAddr> {
            Some(EthAddr(bytes.get(at..at + 6)?.try_into().ok()?))
        };
        let be = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
        };
        let (dst, src) = (addr(0)?, addr(6)?);
        let mut tags = outside.to_vec();
        let mut at = 12;
        let mut ethertype = be(at)?;
        while is_tpid(ethertype) && tags.len() < 8 {
            let Some(tci) = be(at + 2) else { break };
            tags.push((
                Tag {
                    tpid: ethertype,
                    tci,
                },
                TagPlace::Inline,
            ));
            at += 4;
            match be(at) {
                Some(next) => ethertype = next,
                None => break,
            }
        }
        let l3 = bytes.get(at + 2..).unwrap_or_default();
        let ip = match ethertype {
            ETHERTYPE_IPV4 if l3.len() >= 20 && l3[0] >> 4 == 4 => {
                let v4 = |at: usize| -> IpAddr {
                    Ipv4Addr::new(l3[at], l3[at + 1], l3[at + 2], l3[at + 3]).into()
                };
                Some((v4(12), v4(16), l3[9]))
            }
            ETHERTYPE_IPV6 if l3.len() >= 40 && l3[0] >> 4 == 6 => {
                let v6 = |at: usize| -> IpAddr {
                    let octets: [u8; 16] = l3[at..at + 16].try_into().expect("16 bytes");
                    Ipv6Addr::from(octets).into()
                };
                Some((v6(8), v6(24), l3[6]))
            }
            _ => None,
        };
        Some(Self {
            len,
            dst,
            src,
            tags,
            ethertype,
            ip,
        })
    }

    pub fn json(&self) -> Value {
        let mut value = json!({
            "len": self.len,
            "src": self.src.to_string(),
            "dst": self.dst.to_string(),
            "tags": self.tags.iter().map(|(tag, place)| tag_json(tag, Some(*place))).collect::<Vec<_>>(),
            "ethertype": format!("0x{:04x}", self.ethertype),
        });
        if let Some((src, dst, protocol)) = self.ip {
            value["src_ip"] = json!(src.to_string());
            value["dst_ip"] = json!(dst.to_string());
            value["protocol"] = json!(protocol_name(protocol));
        }
        value
    }
}

/// `02:.. > ff:.. 802.1Q vid 10 ipv4 192.0.2.1 > 192.0.2.2 udp len 60`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", self.src, self.dst)?;
        for (tag, place) in &self.tags {
            write!(f, " {}", tag_text(tag))?;
            if *place != TagPlace::Inline {
                write!(f, " ({})", place.as_str())?;
            }
        }
        write!(f, " {}", ethertype_name(self.ethertype))?;
        if let Some((src, dst, protocol)) = self.ip {
            write!(f, " {src} > {dst} {}", protocol_name(protocol))?;
        }
        write!(f, " len {}", self.len)
    }
}

/// `802.1Q vid 10` (with `pcp N` when set).
pub fn tag_text(tag: &Tag) -> String {
    let kind = match tag.tpid {
        TPID_8021Q => "802.1Q".to_string(),
        TPID_8021AD => "802.1ad".to_string(),
        other => format!("0x{other:04x}"),
    };
    let pcp = tag.tci >> 13;
    if pcp == 0 {
        format!("{kind} vid {}", tag.vid())
    } else {
        format!("{kind} vid {} pcp {pcp}", tag.vid())
    }
}

pub fn tag_json(tag: &Tag, place: Option<TagPlace>) -> Value {
    let mut value = json!({
        "tpid": format!("0x{:04x}", tag.tpid),
        "vid": tag.vid(),
        "pcp": tag.tci >> 13,
    });
    if let Some(place) = place {
        value["where"] = json!(place.as_str());
    }
    value
}

pub fn ethertype_name(ethertype: u16) -> String {
    match ethertype {
        ETHERTYPE_IPV4 => "ipv4".into(),
        ETHERTYPE_IPV6 => "ipv6".into(),
        ETHERTYPE_ARP => "arp".into(),
        other => format!("0x{other:04x}"),
    }
}

pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        other => format!("proto {other}"),
    }
}

#[cfg(test)]
mod tests;
