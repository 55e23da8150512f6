//! Ethernet frame builders and parsers for tests.
//!
//! Every test frame carries a [`Marker`] in its payload so a test recognises
//! its own frames among stray kernel traffic (ND, MLD, ...).

use std::sync::atomic::{AtomicU64, Ordering};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
/// 802.1Q C-tag TPID.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad S-tag TPID.
pub const TPID_8021AD: u16 = 0x88a8;
/// IEEE "local experimental" ethertype: no kernel protocol handler reacts.
pub const ETHERTYPE_TEST: u16 = 0x88b5;
/// Minimum Ethernet frame length without FCS.
pub const MIN_FRAME: usize = 60;

/// A locally administered unicast test MAC `02:00:5e:99:00:<n>`.
pub const fn test_mac(n: u8) -> Mac {
    [0x02, 0x00, 0x5e, 0x99, 0x00, n]
}

/// Formats a MAC as lowercase `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// 16 bytes unique per process and call: `MSWT` + pid + counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker(pub [u8; 16]);

static MARKER_COUNTER: AtomicU64 = AtomicU64::new(1);

impl Marker {
    pub fn new() -> Marker {
        let mut m = [0u8; 16];
        m[..4].copy_from_slice(b"MSWT");
        m[4..8].copy_from_slice(&std::process::id().to_be_bytes());
        let n = MARKER_COUNTER.fetch_add(1, Ordering::Relaxed);
        m[8..].copy_from_slice(&n.to_be_bytes());
        Marker(m)
    }

    /// Whether `frame` contains this marker anywhere.
    pub fn is_in(&self, frame: &[u8]) -> bool {
        frame.windows(self.0.len()).any(|w| w == self.0)
    }
}

impl Default for Marker {
    fn default() -> Self {
        Self::new()
    }
}

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < MIN_FRAME {
        f.resize(MIN_FRAME, 0);
    }
    f
}

/// Untagged frame, padded to 60 bytes.
pub fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    pad(f)
}

/// Frame with one inline VLAN tag (`tpid`, `tci`), padded to 60 bytes.
pub fn tagged(dst: Mac, src: Mac, tpid: u16, tci: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    pad(f)
}

/// Frame with two inline tags: outer (`outer_tpid`, `outer_tci`) then inner
/// (`inner_tpid`, `inner_tci`), padded to 60 bytes.
pub fn double_tagged(
    dst: Mac,
    src: Mac,
    outer: (u16, u16),
    inner: (u16, u16),
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(22 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, tci) in [outer, inner] {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    pad(f)
}

/// Untagged test frame (ethertype [`ETHERTYPE_TEST`]) carrying `marker`.
pub fn marked(dst: Mac, src: Mac, marker: &Marker) -> Vec<u8> {
    eth(dst, src, ETHERTYPE_TEST, &marker.0)
}

/// Test frame with one 802.1Q tag for `vid` carrying `marker`.
pub fn marked_tagged(dst: Mac, src: Mac, vid: u16, marker: &Marker) -> Vec<u8> {
    tagged(dst, src, TPID_8021Q, vid, ETHERTYPE_TEST, &marker.0)
}

fn is_tpid(t: u16) -> bool {
    matches!(t, TPID_8021Q | TPID_8021AD | 0x9100)
}

/// A parsed view of an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub dst: Mac,
    pub src: Mac,
    /// Inline tags, outermost first, as (tpid, tci).
    pub tags: Vec<(u16, u16)>,
    /// Ethertype after all inline tags.
    pub ethertype: u16,
    pub payload: &'a [u8],
}

/// Parses a frame; `None` if shorter than an Ethernet header (or a tag).
pub fn parse(f: &[u8]) -> Option<Parsed<'_>> {
    if f.len() < 14 {
        return None;
    }
    let dst: Mac = f[0..6].try_into().ok()?;
    let src: Mac = f[6..12].try_into().ok()?;
    let mut off = 12;
    let mut tags = Vec::new();
    loop {
        let t = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
        if is_tpid(t) {
            let tci = u16::from_be_bytes([*f.get(off + 2)?, *f.get(off + 3)?]);
            tags.push((t, tci));
            off += 4;
        } else {
            return Some(Parsed {
                dst,
                src,
                tags,
                ethertype: t,
                payload: &f[off + 2..],
            });
        }
    }
}

/// The bytes at 12..14 (outer ethertype / TPID) of a frame.
pub fn outer_ethertype(f: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(12)?, *f.get(13)?]))
}

/// VID part (low 12 bits) of a TCI.
pub const fn vid(tci: u16) -> u16 {
    tci & 0x0fff
}

/// Test frame carrying `m` under one inline 802.1Q tag with the full TCI
/// (PCP, DEI, VID).
pub fn q_frame(dst: Mac, src: Mac, tci: u16, m: &Marker) -> Vec<u8> {
    tagged(dst, src, TPID_8021Q, tci, ETHERTYPE_TEST, &m.0)
}

/// Test frame carrying `m` under one inline 802.1ad tag.
pub fn ad_frame(dst: Mac, src: Mac, tci: u16, m: &Marker) -> Vec<u8> {
    tagged(dst, src, TPID_8021AD, tci, ETHERTYPE_TEST, &m.0)
}

/// Test frame carrying `m` under two inline tags, `outer` then `inner`,
/// each (TPID, TCI).
pub fn stacked(dst: Mac, src: Mac, outer: (u16, u16), inner: (u16, u16), m: &Marker) -> Vec<u8> {
    double_tagged(dst, src, outer, inner, ETHERTYPE_TEST, &m.0)
}

/// Test frame carrying `m` under the inline `tags`, (TPID, TCI) outermost
/// first: untagged, one tag or two.
pub fn with_tags(dst: Mac, src: Mac, tags: &[(u16, u16)], m: &Marker) -> Vec<u8> {
    match tags {
        [] => marked(dst, src, m),
        [(tpid, tci)] => tagged(dst, src, *tpid, *tci, ETHERTYPE_TEST, &m.0),
        [outer, inner] => stacked(dst, src, *outer, *inner, m),
        _ => panic!("a test frame has at most two tags: {tags:x?}"),
    }
}

/// The inline tags of `f`, (TPID, TCI) outermost first.
pub fn tags(f: &[u8]) -> Vec<(u16, u16)> {
    parse(f)
        .unwrap_or_else(|| panic!("unparsable frame {f:02x?}"))
        .tags
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = test_mac(1);
    const B: Mac = test_mac(2);

    #[test]
    fn eth_pads_to_minimum_and_lays_out_header() {
        let f = eth(A, B, 0x0800, b"hi");
        assert_eq!(f.len(), MIN_FRAME);
        assert_eq!(&f[0..6], &A);
        assert_eq!(&f[6..12], &B);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14..16], b"hi");
        assert!(f[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn long_payload_is_not_padded_or_truncated() {
        let payload = vec![0xab; 100];
        let f = eth(A, B, ETHERTYPE_TEST, &payload);
        assert_eq!(f.len(), 114);
    }

    #[test]
    fn tagged_and_parse_roundtrip() {
        let m = Marker::new();
        let f = tagged(A, B, TPID_8021Q, 0x200a, ETHERTYPE_TEST, &m.0);
        assert_eq!(f.len(), MIN_FRAME);
        assert_eq!(outer_ethertype(&f), Some(TPID_8021Q));
        let p = parse(&f).unwrap();
        assert_eq!(p.dst, A);
        assert_eq!(p.src, B);
        assert_eq!(p.tags, vec![(TPID_8021Q, 0x200a)]);
        assert_eq!(vid(p.tags[0].1), 10);
        assert_eq!(p.ethertype, ETHERTYPE_TEST);
        assert!(m.is_in(p.payload));
    }

    #[test]
    fn double_tagged_parses_outer_first() {
        let f = double_tagged(
            BROADCAST,
            A,
            (TPID_8021AD, 100),
            (TPID_8021Q, 10),
            0x0806,
            b"x",
        );
        let p = parse(&f).unwrap();
        assert_eq!(p.tags, vec![(TPID_8021AD, 100), (TPID_8021Q, 10)]);
        assert_eq!(p.ethertype, 0x0806);
        assert_eq!(p.payload[0], b'x');
    }

    #[test]
    fn parse_rejects_truncated() {
        assert!(parse(&[0u8; 13]).is_none());
        // tag announced but cut short
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert!(parse(&f).is_none());
    }

    #[test]
    fn markers_are_unique_and_found() {
        let a = Marker::new();
        let b = Marker::new();
        assert_ne!(a, b);
        let f = marked(A, B, &a);
        assert!(a.is_in(&f));
        assert!(!b.is_in(&f));
    }

    #[test]
    fn mac_format_and_parse() {
        let m = [0x02, 0xab, 0x00, 0x01, 0xff, 0x10];
        assert_eq!(fmt_mac(&m), "02:ab:00:01:ff:10");
        assert_eq!(parse_mac("02:AB:00:01:ff:10"), Some(m));
        assert_eq!(parse_mac("02:ab:00:01:ff"), None);
        assert_eq!(parse_mac("02:ab:00:01:ff:10:00"), None);
        assert_eq!(parse_mac("2:ab:00:01:ff:10"), None);
        // test MACs are locally administered unicast
        assert_eq!(test_mac(7)[0] & 0x03, 0x02);
    }
}
