//! `endpoint set` changes a live endpoint's policy in place: same macvtap
//! (ifindex), same tap fd, same pinned links, and a stream on a VLAN the
//! change does not touch loses nothing while it happens.
//! Root-only: each test builds its own namespaces and bpffs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use macvswitch_tests::expect::{absent, assert_drops_at_least, at_guest, on_wire, sent_to_wire};
use macvswitch_tests::frame::{self, ETHERTYPE_TEST, Marker, TPID_8021Q, marked};
use macvswitch_tests::topology::SWITCH_MAC;
use macvswitch_tests::{OnePort, root_port};

/// Frames in the stream at least; it runs on until `AFTER_CHANGE` frames
/// were sent after the last `set`, and never beyond `MAX_FRAMES`.
const MIN_FRAMES: usize = 1500;
const AFTER_CHANGE: usize = 300;
const MAX_FRAMES: usize = 10_000;
/// Stream pacing: one frame per millisecond.
const PACE: Duration = Duration::from_millis(1);

fn q_frame(dst: frame::Mac, src: frame::Mac, tci: u16, payload: &[u8]) -> Vec<u8> {
    frame::tagged(dst, src, TPID_8021Q, tci, ETHERTYPE_TEST, payload)
}

/// A wire tag as PACKET_AUXDATA reports it: (TPID, TCI).
type Tag = (u16, u16);

/// Sequence number of a stream frame (marker followed by a u32), if it is one.
fn stream_seq(stream: &Marker, bytes: &[u8]) -> Option<usize> {
    let at = bytes.windows(16).position(|w| w == stream.0)?;
    let n = bytes.get(at + 16..at + 20)?;
    Some(u32::from_be_bytes(n.try_into().unwrap()) as usize)
}

#[test]
fn set_changes_policy_in_place_without_losing_untouched_vlans() {
    let OnePort { h, ep, tap, wire } = root_port!("t0", &["--trunk", "10,20"]);
    let pins_before = h.bpffs.pinned_files();

    // Warm-up: both VLANs pass before the change.
    for vid in [10, 20] {
        let m = Marker::new();
        tap.write(&q_frame(SWITCH_MAC, ep.mac, vid, &m.0));
        on_wire(
            &wire,
            &m,
            &format!("VLAN {vid} does not pass before the change"),
        );
    }

    let stream = Marker::new();
    let sent = AtomicUsize::new(0);
    let received = AtomicUsize::new(0);
    let stop_at = AtomicUsize::new(MAX_FRAMES);
    let sender_done = AtomicBool::new(false);
    let mut set_window = (0, 0);

    let seen = std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while n < MAX_FRAMES && (n < MIN_FRAMES || n < stop_at.load(Ordering::SeqCst)) {
                let mut payload = stream.0.to_vec();
                payload.extend_from_slice(&(n as u32).to_be_bytes());
                tap.write(&q_frame(SWITCH_MAC, ep.mac, 10, &payload));
                n += 1;
                sent.store(n, Ordering::SeqCst);
                std::thread::sleep(PACE);
            }
            sender_done.store(true, Ordering::SeqCst);
        });
        let receiver = s.spawn(|| {
            let mut seen = vec![false; MAX_FRAMES];
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match wire.recv_timeout(Duration::from_millis(200)) {
                    Some(f) => {
                        if let Some(seq) = stream_seq(&stream, &f.bytes) {
                            assert_eq!(f.vid(), Some(10), "stream frame {seq} left as {f:?}");
                            assert!(!seen[seq], "stream frame {seq} seen twice");
                            seen[seq] = true;
                            received.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Nothing for 200 ms after the last frame went out.
                    None if sender_done.load(Ordering::SeqCst) => break,
                    None => {}
                }
            }
            seen
        });

        // Let the stream get going, then change the policy twice mid-stream.
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::SeqCst) < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            received.load(Ordering::SeqCst) >= 200,
            "the stream does not reach the wire"
        );
        let first = sent.load(Ordering::SeqCst);
        h.ctl.ok(&["endpoint", "set", "t0", "--trunk", "10,30"]);
        h.ctl.ok(&[
            "endpoint", "set", "t0", "--trunk", "10,30", "--native", "40",
        ]);
        let last = sent.load(Ordering::SeqCst);
        set_window = (first, last);
        stop_at.store(last + AFTER_CHANGE, Ordering::SeqCst);
        receiver.join().unwrap()
    });

    let total = sent.load(Ordering::SeqCst);
    let (first, last) = set_window;
    assert!(
        total >= last + AFTER_CHANGE && first > 0,
        "the changes did not happen mid-stream: frames {first}..{last} of {total}"
    );
    let lost: Vec<usize> = (0..total).filter(|&i| !seen[i]).collect();
    assert!(
        lost.is_empty(),
        "{} of {total} VLAN 10 frames lost (changes applied while frames {first}..{last} \
         were sent); first lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );

    // Same device, same fd, same pinned links.
    let after = h.show("t0");
    assert_eq!(after.ifindex, ep.ifindex, "relinked: {}", after.raw);
    assert_eq!(after.raw["trunk"], "10,30", "show: {}", after.raw);
    assert_eq!(after.raw["native"], 40, "show: {}", after.raw);
    assert_eq!(after.tap, ep.tap);
    assert_eq!(
        h.bpffs.pinned_files(),
        pins_before,
        "pins changed: the programs were re-attached"
    );
    assert!(
        h.topo.host.link_names().contains(&"t0".to_string()),
        "the macvtap is gone"
    );

    // The new policy, through the very same fd: 20 dropped, 30 passes,
    // untagged goes to native 40; and the same towards the guest.
    let m20 = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 20, &m20.0));
    let m30 = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, ep.mac, 30, &m30.0));
    let m40 = Marker::new();
    tap.write(&marked(SWITCH_MAC, ep.mac, &m40));
    let f = on_wire(&wire, &m30, "VLAN 30 from the guest blocked after set");
    assert_eq!(f.vid(), Some(30), "{f:?}");
    let f = on_wire(
        &wire,
        &m40,
        "untagged frame not sent on native 40 after set",
    );
    assert_eq!(f.vlan, Some((TPID_8021Q, 40)), "{f:?}");
    absent(&wire, &m20, "VLAN 20 still leaves after set --trunk 10,30");
    assert_drops_at_least(&h, "t0", &[("wrong-vlan", 1)]);

    let w20 = Marker::new();
    wire.send(&q_frame(ep.mac, SWITCH_MAC, 20, &w20.0));
    let w30 = Marker::new();
    wire.send(&q_frame(ep.mac, SWITCH_MAC, 30, &w30.0));
    let w40 = Marker::new();
    wire.send(&q_frame(ep.mac, SWITCH_MAC, 40, &w40.0));
    let f = at_guest(&tap, &w30, "VLAN 30 not delivered after set");
    assert_eq!(frame::parse(&f).unwrap().tags, [(TPID_8021Q, 30)]);
    let f = at_guest(&tap, &w40, "native 40 not delivered after set");
    assert!(frame::parse(&f).unwrap().tags.is_empty(), "{f:02x?}");
    absent(
        &tap,
        &w20,
        "VLAN 20 still delivered after set --trunk 10,30",
    );

    // The stream's VLAN kept its counter row; 20's row is gone.
    let s = h.stats("t0");
    assert!(
        h.vlan_packets("t0", 10, "from_guest") >= 1,
        "VLAN 10 counters: {s}"
    );
    assert!(h.vlan_stats("t0", 20).is_none(), "VLAN 20 row left: {s}");
}

#[test]
fn set_switches_port_kinds_on_the_same_fd() {
    let OnePort { h, ep, tap, wire } = root_port!("e0", &["--vlan", "10"]);

    // access 10 -> tunnel 100 -> untagged -> access 20 with priority 3.
    let steps: [(&[&str], Option<Tag>); 4] = [
        (&[], Some((TPID_8021Q, 10))),
        (&["--tunnel", "100"], Some((frame::TPID_8021AD, 100))),
        (&["--untagged"], None),
        (
            &["--vlan", "20", "--priority", "3"],
            Some((TPID_8021Q, 0x6014)),
        ),
    ];
    for (args, expect) in steps {
        if !args.is_empty() {
            let mut cmd = vec!["endpoint", "set", "e0"];
            cmd.extend_from_slice(args);
            h.ctl.ok(&cmd);
        }
        let f = sent_to_wire(
            &tap,
            ep.mac,
            &wire,
            &format!("after set {args:?}: untagged guest frame not on the wire"),
        );
        assert_eq!(f.vlan, expect, "after set {args:?}: {f:?}");
        assert_eq!(h.show("e0").ifindex, ep.ifindex, "after set {args:?}");
    }
    let show = h.show("e0");
    assert_eq!(show.raw["policy"], "access", "{}", show.raw);
    assert_eq!(show.vlan, Some(20), "{}", show.raw);
    assert_eq!(show.raw["priority"], 3, "{}", show.raw);
}
