//! Policy updates no frame sees half-done: an endpoint flips thousands of
//! times between two disjoint policies while wire frames stream in from
//! two CPUs, and no frame that neither policy allows reaches the guest.
//!
//! The two policies are chosen so that a mix of their fields would let
//! frames through that neither does: a tunnel on S-VLAN 100 (802.1ad VID
//! 100 only) and an access port on VLAN 200 (802.1Q VID 200 only). The kind
//! of one with the VLAN of the other passes 802.1ad VID 200 or 802.1Q VID
//! 100, which are sent alongside the allowed frames.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use macvswitch::kernel::datapath::{Maps, PinLayout};
use macvswitch_common::{PORT_ACCESS, TPID_8021AD, TPID_8021Q, VidSet};
use macvswitch_tests::frame::{ETHERTYPE_TEST, Marker, tagged};
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::{SWITCH_MAC, SWITCH_PORT};
use macvswitch_tests::wire::WireSocket;

/// Flips (each waits for an RCU grace period, about 10 ms here).
fn flips() -> u32 {
    std::env::var("MACVSWITCH_STRESS_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn no_frame_is_judged_by_a_mix_of_two_policies() {
    let h = root_harness!();
    let ep = h.add("ep0", &["--tunnel", "100"]);
    let ifindex = ep.ifindex as u32;
    let mut maps = Maps::open(&PinLayout::new(h.bpffs.path()))
        .expect("opening the pinned maps")
        .expect("the data path is loaded");
    let tunnel = maps
        .policy(ifindex)
        .expect("reading the policy")
        .expect("ep0 has a policy");
    let access = macvswitch_common::EndpointPolicy {
        kind: PORT_ACCESS,
        vlan: 200,
        flags: 0,
        vids: VidSet::EMPTY,
        ..tunnel
    };
    let tap = h.tap(&ep);

    // Markers: allowed by the tunnel, by the access port, by neither.
    let allowed = [
        (Marker::new(), TPID_8021AD, 100),
        (Marker::new(), TPID_8021Q, 200),
    ];
    let forbidden = [
        (Marker::new(), TPID_8021AD, 200),
        (Marker::new(), TPID_8021Q, 100),
    ];
    let frames: Vec<Vec<u8>> = allowed
        .iter()
        .chain(forbidden.iter())
        .map(|(marker, tpid, vid)| {
            tagged(ep.mac, SWITCH_MAC, *tpid, *vid, ETHERTYPE_TEST, &marker.0)
        })
        .collect();

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (mut delivered, mut leaked) = (0u64, 0u64);
    let flips = flips();
    let started = Instant::now();
    thread::scope(|s| {
        // Two senders, so frames are judged on both CPUs (each sender's
        // frames are received on the CPU it runs on).
        for _ in 0..2 {
            let (stop, sent, frames) = (&stop, &sent, &frames);
            let socket = WireSocket::open(&h.topo.switch, SWITCH_PORT);
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let (mut n, mut rounds) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 20_000_000 {
                    // Never blocks: the reader stops before the senders.
                    let accepted = frames.iter().filter(|f| socket.try_send(f)).count();
                    n += accepted as u64;
                    rounds += 1;
                    if accepted == 0 || rounds.is_multiple_of(64) {
                        // Leave the reader room: the tap queue is bounded.
                        thread::yield_now();
                    }
                }
                sent.fetch_add(n, Ordering::Relaxed);
            });
        }
        let reader = s.spawn(|| {
            let (mut delivered, mut leaked) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                for frame in tap.read_all(Duration::from_millis(20)) {
                    if forbidden.iter().any(|(m, _, _)| m.is_in(&frame)) {
                        leaked += 1;
                    } else if allowed.iter().any(|(m, _, _)| m.is_in(&frame)) {
                        delivered += 1;
                    }
                }
            }
            (delivered, leaked)
        });
        for i in 0..flips {
            let policy = if i % 2 == 0 { &access } else { &tunnel };
            maps.set_policy(ifindex, policy)
                .expect("switching policies");
        }
        stop.store(true, Ordering::Relaxed);
        (delivered, leaked) = reader.join().expect("reader");
    });
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "{flips} policy flips in {:.1} s under {sent} frames: {delivered} allowed frames \
         delivered, {leaked} frames neither policy allows",
        started.elapsed().as_secs_f64()
    );
    assert!(
        delivered > u64::from(flips) / 10,
        "too few frames reached the guest ({delivered}) for the run to mean anything"
    );
    assert_eq!(leaked, 0, "frames judged by a mix of two policies");
}
