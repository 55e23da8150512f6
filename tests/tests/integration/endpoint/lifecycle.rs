//! Endpoint lifetime: deletion and reset clean up links, tap nodes and pins;
//! the pinned data path outlives the controller process.

use std::path::Path;

use macvswitch_tests::expect::{at_guest, on_wire};
use macvswitch_tests::frame::{Marker, marked, marked_tagged};
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::{LOWER, SWITCH_MAC};

#[test]
fn del_and_reset_leave_no_links_pins_or_tap_nodes() {
    let h = root_harness!();
    let e0 = h.add("ep0", &["--vlan", "10"]);
    let e1 = h.add("ep1", &["--vlan", "20"]);
    let e2 = h.add("ep2", &[]);
    assert_eq!(h.names(), ["ep0", "ep1", "ep2"]);
    for e in [&e0, &e1, &e2] {
        assert!(e.tap.exists(), "tap node {} missing", e.tap.display());
    }
    let pins_before = h.bpffs.pinned_files();
    assert!(
        !pins_before.is_empty(),
        "no pins under {}",
        h.bpffs.path().display()
    );

    h.ctl.ok(&["endpoint", "del", "ep0"]);
    assert_eq!(h.topo.host.link_names(), ["lo", LOWER, "ep1", "ep2"]);
    assert!(
        !e0.tap.exists(),
        "tap node {} left after del",
        e0.tap.display()
    );
    assert_eq!(h.names(), ["ep1", "ep2"]);
    let pins_after = h.bpffs.pinned_files();
    let ep0_pins = h.bpffs.path().join("links").join("ep0");
    assert!(
        pins_after.iter().all(|p| !p.starts_with(&ep0_pins)),
        "del left ep0's link pins: {pins_after:?}"
    );
    // TCX links are pinned per endpoint; clsact filters went with the
    // macvtap (clsact forced, or a kernel without TCX).
    if e0.raw["attach"] == "tcx" {
        assert!(
            pins_after.len() < pins_before.len(),
            "del removed no pins: before {pins_before:?}, after {pins_after:?}"
        );
    }
    // ep0 is really gone from the controller's view.
    assert!(
        !h.ctl
            .run(&["endpoint", "show", "ep0", "--json"])
            .status
            .success()
    );

    h.ctl.ok(&["reset"]);
    assert_eq!(h.topo.host.link_names(), ["lo", LOWER]);
    assert_eq!(h.names(), Vec::<String>::new());
    for e in [&e1, &e2] {
        assert!(
            !e.tap.exists(),
            "tap node {} left after reset",
            e.tap.display()
        );
    }
    let pins = h.bpffs.pinned_files();
    assert!(pins.is_empty(), "pins left after reset: {pins:?}");
    // Reset is idempotent.
    h.ctl.ok(&["reset"]);
}

#[test]
fn data_path_outlives_the_controller_process() {
    let h = root_harness!();
    // `endpoint add` has exited when h.add returns; nothing else runs.
    let ep = h.add("ep0", &["--vlan", "10"]);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();

    const N: u64 = 3;
    // Byte counters are compared with what was actually written/read: a
    // wire frame shrinks by the 4-byte tag the kernel moves to metadata.
    let (mut sent_bytes, mut got_bytes) = (0u64, 0u64);
    for _ in 0..N {
        let m = Marker::new();
        let f = marked(SWITCH_MAC, ep.mac, &m);
        tap.write(&f);
        sent_bytes += f.len() as u64;
        let w = on_wire(
            &wire,
            &m,
            "guest frame not forwarded after the controller exited",
        );
        assert_eq!(w.vid(), Some(10));
    }
    for _ in 0..N {
        let m = Marker::new();
        wire.send(&marked_tagged(ep.mac, SWITCH_MAC, 10, &m));
        let f = at_guest(
            &tap,
            &m,
            "wire frame not delivered after the controller exited",
        );
        got_bytes += f.len() as u64;
    }

    // A second, independent invocation sees the counters.
    let s = h.stats("ep0");
    let get = |dir: &str, k: &str| {
        s[dir][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{dir}.{k}: {s}"))
    };
    assert!(get("from_guest", "packets") >= N, "stats: {s}");
    assert!(get("to_guest", "packets") >= N, "stats: {s}");
    assert!(
        get("from_guest", "bytes") >= sent_bytes,
        "sent {sent_bytes} B, stats: {s}"
    );
    assert!(
        get("to_guest", "bytes") >= got_bytes,
        "read {got_bytes} B, stats: {s}"
    );
    // `stats` without a name lists every endpoint.
    let all = h.ctl.json(&["stats", "--json"]);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "stats --json: {all}");
    // The endpoint is still known to a new process.
    assert_eq!(h.show("ep0").mac, ep.mac);
    assert!(Path::new(&ep.tap).exists());
}
