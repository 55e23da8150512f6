//! Expectations the integration tests share: a marked frame arrives at the
//! guest ([`at_guest`]) or on the wire ([`on_wire`]), marked frames do not
//! arrive anywhere ([`absent`], [`all_absent`]), an endpoint counted exactly these drops
//! ([`assert_drops`]), and tables of frames a port must refuse
//! ([`Refused`], [`send_refused`]).
//!
//! The wire is sw0, the switch's side of the lower device; the guest is an
//! endpoint's tap. Both are a [`Receive`], so that one `absent` serves
//! either direction.

use std::borrow::Borrow;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::Harness;
use crate::frame::{self, Mac, Marker, marked};
use crate::harness::{ABSENT, ARRIVE};
use crate::tap::Tap;
use crate::topology::SWITCH_MAC;
use crate::wire::{WireFrame, WireSocket};

/// Where frames arrive: a guest's tap or the wire.
pub trait Receive {
    type Frame: Debug;
    /// For messages: "the guest", "the wire".
    const PLACE: &'static str;

    /// The next frame within `timeout`, if any.
    fn next_within(&self, timeout: Duration) -> Option<Self::Frame>;

    fn bytes(f: &Self::Frame) -> &[u8];

    /// Everything that arrives during `window`.
    fn all_within(&self, window: Duration) -> Vec<Self::Frame> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(f) = self.next_within(deadline.saturating_duration_since(Instant::now())) {
            out.push(f);
        }
        out
    }

    /// The first frame satisfying `pred` within `timeout`.
    fn first_matching(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Self::Frame) -> bool,
    ) -> Option<Self::Frame> {
        let deadline = Instant::now() + timeout;
        while let Some(f) = self.next_within(deadline.saturating_duration_since(Instant::now())) {
            if pred(&f) {
                return Some(f);
            }
        }
        None
    }
}

impl<T: Receive> Receive for &T {
    type Frame = T::Frame;
    const PLACE: &'static str = T::PLACE;

    fn next_within(&self, timeout: Duration) -> Option<T::Frame> {
        (*self).next_within(timeout)
    }

    fn bytes(f: &T::Frame) -> &[u8] {
        T::bytes(f)
    }
}

impl Receive for Tap {
    type Frame = Vec<u8>;
    const PLACE: &'static str = "the guest";

    fn next_within(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.read_timeout(timeout)
    }

    fn bytes(f: &Vec<u8>) -> &[u8] {
        f
    }
}

impl Receive for WireSocket {
    type Frame = WireFrame;
    const PLACE: &'static str = "the wire (sw0)";

    fn next_within(&self, timeout: Duration) -> Option<WireFrame> {
        self.recv_timeout(timeout)
    }

    fn bytes(f: &WireFrame) -> &[u8] {
        &f.bytes
    }
}

/// The frame carrying `m`, which must reach the guest within [`ARRIVE`].
pub fn at_guest(tap: &Tap, m: &Marker, what: &str) -> Vec<u8> {
    arrives(tap, m, what)
}

/// The frame carrying `m`, which must show on the wire within [`ARRIVE`].
pub fn on_wire(wire: &WireSocket, m: &Marker, what: &str) -> WireFrame {
    arrives(wire, m, what)
}

/// Sends a marked, untagged frame from the guest at `tap` (MAC `mac`) to
/// the switch; it must show on the wire within [`ARRIVE`] (`what` says
/// which frame, if not).
pub fn sent_to_wire(tap: &Tap, mac: Mac, wire: &WireSocket, what: &str) -> WireFrame {
    let m = Marker::new();
    tap.write(&marked(SWITCH_MAC, mac, &m));
    on_wire(wire, &m, what)
}

/// The frame carrying `m`, which must reach `rx` within [`ARRIVE`].
pub fn arrives<R: Receive>(rx: &R, m: &Marker, what: &str) -> R::Frame {
    rx.first_matching(ARRIVE, |f| m.is_in(R::bytes(f)))
        .unwrap_or_else(|| panic!("{what}: did not reach {}", R::PLACE))
}

/// How many frames carrying `m` reach `rx` within `window`.
pub fn copies<R: Receive>(rx: &R, m: &Marker, window: Duration) -> usize {
    rx.all_within(window)
        .iter()
        .filter(|f| m.is_in(R::bytes(f)))
        .count()
}

/// The VLAN ids (`None`: untagged) of the frames in `frames` that carry
/// `m`, in order: one entry per copy on the wire.
pub fn vids_of(frames: &[WireFrame], m: &Marker) -> Vec<Option<u16>> {
    frames
        .iter()
        .filter(|f| m.is_in(&f.bytes))
        .map(|f| f.vid())
        .collect()
}

/// The frame carrying `m` (`what`) does not reach `rx` within [`ABSENT`].
pub fn absent<R: Receive>(rx: &R, m: &Marker, what: &str) {
    all_absent(rx, &[(m, what)]);
}

/// None of the `sent` markers reaches `rx` within [`ABSENT`]; returns every
/// frame that did arrive meanwhile (for a control frame sent last).
pub fn all_absent<R: Receive, M: Borrow<Marker>>(rx: &R, sent: &[(M, &str)]) -> Vec<R::Frame> {
    let got = rx.all_within(ABSENT);
    for f in &got {
        for (m, what) in sent {
            assert!(
                !m.borrow().is_in(R::bytes(f)),
                "{what} reached {}: {f:02x?}",
                R::PLACE
            );
        }
    }
    got
}

/// `endpoint` counted exactly `n` drops for each `(reason, n)`; `stats`
/// must show the reason, also where `n` is 0.
pub fn assert_drops(h: &Harness, endpoint: &str, expected: &[(&str, u64)]) {
    let s = h.stats(endpoint);
    for (reason, n) in expected {
        assert_eq!(
            s["drops"][reason].as_u64(),
            Some(*n),
            "{endpoint}: drops.{reason}: stats {s}"
        );
    }
}

/// `endpoint` counted at least `n` drops for each `(reason, n)` (where the
/// kernel's own frames may add to the count).
pub fn assert_drops_at_least(h: &Harness, endpoint: &str, expected: &[(&str, u64)]) {
    let s = h.stats(endpoint);
    for (reason, n) in expected {
        let got = s["drops"][reason].as_u64().unwrap_or(0);
        assert!(
            got >= *n,
            "{endpoint}: drops.{reason} = {got} < {n}: stats {s}"
        );
    }
}

/// `endpoint`'s per-VLAN counters: `(vid, dir, n)` for `vlans[vid].<dir>
/// .packets == n`, dir being "to_guest" or "from_guest" (0 where `stats`
/// has no row for the VID).
pub fn assert_vlan_packets(h: &Harness, endpoint: &str, expected: &[(u16, &str, u64)]) {
    let s = h.stats(endpoint);
    let rows = s["vlans"]
        .as_array()
        .unwrap_or_else(|| panic!("stats {endpoint}: no vlans array: {s}"));
    for (vid, dir, n) in expected {
        let got = rows
            .iter()
            .find(|v| v["vid"].as_u64() == Some(u64::from(*vid)))
            .map_or(0, |v| v[dir]["packets"].as_u64().unwrap_or(0));
        assert_eq!(got, *n, "{endpoint}: vlans[{vid}].{dir}.packets: stats {s}");
    }
}

/// One row of a table of frames a port must refuse: what the frame is,
/// the drop reason it counts under, and its inline tags, (TPID, TCI)
/// outermost first, around a marker ([`frame::with_tags`]).
pub struct Refused {
    pub what: &'static str,
    pub reason: &'static str,
    pub tags: &'static [(u16, u16)],
}

impl Refused {
    pub const fn new(
        what: &'static str,
        reason: &'static str,
        tags: &'static [(u16, u16)],
    ) -> Refused {
        Refused { what, reason, tags }
    }
}

/// Sends every row of `table` (from `src` to `dst`) through `send`; returns
/// the markers with what each frame is, for [`all_absent`].
pub fn send_refused(
    table: &[Refused],
    dst: Mac,
    src: Mac,
    mut send: impl FnMut(&[u8]),
) -> Vec<(Marker, &'static str)> {
    table
        .iter()
        .map(|r| {
            let m = Marker::new();
            send(&frame::with_tags(dst, src, r.tags, &m));
            (m, r.what)
        })
        .collect()
}

/// Which way a table of refused frames goes.
#[derive(Clone, Copy, Debug)]
pub enum Way {
    GuestToWire,
    WireToGuest,
}

/// Sends every row of `table` between the guest (`tap`, whose MAC is
/// `mac`) and the wire, the given way, and checks that none arrives.
pub fn refused(tap: &Tap, mac: Mac, wire: &WireSocket, way: Way, table: &[Refused]) {
    match way {
        Way::WireToGuest => {
            let sent = send_refused(table, mac, SWITCH_MAC, |f| wire.send(f));
            all_absent(tap, &sent);
        }
        Way::GuestToWire => {
            let sent = send_refused(table, SWITCH_MAC, mac, |f| tap.write(f));
            all_absent(wire, &sent);
        }
    }
}

/// The drops a table must add up to: one per row, by reason.
pub fn drops_of(table: &[Refused]) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    for r in table {
        match out.iter_mut().find(|(reason, _)| *reason == r.reason) {
            Some((_, n)) => *n += 1,
            None => out.push((r.reason, 1)),
        }
    }
    out
}

/// A refused command: exit status 2 and one line on stderr containing
/// `needle`.
pub fn assert_refused(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
}
