//! A switch port with reflective relay ("hairpin"), emulated on the switch
//! side: a thread with an AF_PACKET socket on the switch port sends every
//! frame it receives straight back out of that port.
//!
//! The kernel hands AF_PACKET a received frame's 802.1Q tag only as
//! metadata (`PACKET_AUXDATA`), so the thread re-inserts the tag inline
//! before sending; the receiving lower device moves it back into metadata.
//! The thread is bounded in time and frame count and stops (and is joined)
//! on [`Hairpin::stop`] or drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::topology::{SWITCH_PORT, Topology};
use crate::wire::{WireFrame, WireSocket};

/// Default upper bound on how long a hairpin runs.
pub const LIFETIME: Duration = Duration::from_secs(60);
/// Default upper bound on how many frames a hairpin reflects.
pub const MAX_FRAMES: u64 = 10_000;
/// How often the thread looks at the stop flag while idle.
const TICK: Duration = Duration::from_millis(20);

/// The frame as it was on the wire: `f`'s metadata tag, if any, back inline
/// after the MAC addresses.
pub fn with_inline_tag(f: &WireFrame) -> Vec<u8> {
    match f.vlan {
        Some((tpid, tci)) if f.bytes.len() >= 12 => {
            let mut out = Vec::with_capacity(f.bytes.len() + 4);
            out.extend_from_slice(&f.bytes[..12]);
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
            out.extend_from_slice(&f.bytes[12..]);
            out
        }
        _ => f.bytes.clone(),
    }
}

/// A running hairpin switch port.
#[derive(Debug)]
pub struct Hairpin {
    stop: Arc<AtomicBool>,
    reflected: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Hairpin {
    /// Reflects on the topology's switch port (`sw0`) with the default
    /// bounds.
    pub fn start(topo: &Topology) -> Hairpin {
        Self::start_on(&topo.switch, SWITCH_PORT, LIFETIME, MAX_FRAMES)
    }

    /// Reflects on `ifname` in `ns` until stopped, for at most `lifetime`
    /// and `max_frames` frames. The socket is bound before this returns,
    /// so every frame arriving afterwards is reflected.
    pub fn start_on(ns: &NetNs, ifname: &str, lifetime: Duration, max_frames: u64) -> Hairpin {
        let socket = WireSocket::open(ns, ifname);
        let stop = Arc::new(AtomicBool::new(false));
        let reflected = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, reflected) = (Arc::clone(&stop), Arc::clone(&reflected));
            std::thread::Builder::new()
                .name(format!("hairpin-{ifname}"))
                .spawn(move || {
                    let deadline = Instant::now() + lifetime;
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && reflected.load(Ordering::Relaxed) < max_frames
                    {
                        // recv skips our own (outgoing) copies.
                        if let Some(f) = socket.recv_timeout(TICK) {
                            socket.send(&with_inline_tag(&f));
                            reflected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn hairpin thread")
        };
        Hairpin {
            stop,
            reflected,
            thread: Some(thread),
        }
    }

    /// Frames sent back so far.
    pub fn reflected(&self) -> u64 {
        self.reflected.load(Ordering::Relaxed)
    }

    /// Stops and joins the thread; returns how many frames it reflected.
    /// Panics if the thread panicked (e.g. a failed send).
    pub fn stop(mut self) -> u64 {
        self.halt().unwrap_or_else(|e| std::panic::resume_unwind(e));
        self.reflected()
    }

    fn halt(&mut self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join(),
            None => Ok(()),
        }
    }
}

impl Drop for Hairpin {
    fn drop(&mut self) {
        // Never panic in drop (it may run during unwinding).
        if self.halt().is_err() {
            eprintln!("warning: hairpin thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_goes_back_inline() {
        let bytes: Vec<u8> = (0u8..20).collect();
        let f = WireFrame {
            bytes: bytes.clone(),
            vlan: Some((0x8100, 0x200a)),
        };
        let out = with_inline_tag(&f);
        assert_eq!(&out[..12], &bytes[..12]);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0x20, 0x0a]);
        assert_eq!(&out[16..], &bytes[12..]);
        let plain = WireFrame { bytes, vlan: None };
        assert_eq!(with_inline_tag(&plain), plain.bytes);
    }
}
