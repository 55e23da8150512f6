//! Odd and hostile frames on each port type, both ways: priority tags
//! (VID 0), truncated tags, stacked tags. Short on purpose: the property
//! test covers the combinatorics; these check the real data path.
//! Root-only: each test builds its own namespaces and bpffs.

use macvswitch_tests::expect::{absent, at_guest, on_wire};
use macvswitch_tests::frame::{self, ETHERTYPE_TEST, Marker, TPID_8021AD, TPID_8021Q};
use macvswitch_tests::frame::{q_frame, tags};
use macvswitch_tests::harness::ABSENT;
use macvswitch_tests::root_harness;
use macvswitch_tests::topology::SWITCH_MAC;

#[test]
fn priority_tagged_guest_frames_get_the_port_tag_with_the_guest_pcp() {
    let h = root_harness!();
    let a = h.add("a", &["--vlan", "10"]);
    let ap = h.add("ap", &["--vlan", "10", "--priority", "2"]);
    let u = h.add("u", &[]);
    let n = h.add("n", &["--trunk", "20", "--native", "30"]);
    let wire = h.topo.wire();

    // (endpoint, expected metadata tag on the wire) for a PCP 5 + DEI
    // priority tag (TCI 0xb000) from the guest.
    let cases = [
        (&a, Some((TPID_8021Q, 0xb00a))),
        (&ap, Some((TPID_8021Q, 0x400a))),
        (&u, None),
        (&n, Some((TPID_8021Q, 0xb01e))),
    ];
    for (ep, expect) in cases {
        let tap = h.tap(ep);
        let m = Marker::new();
        tap.write(&q_frame(SWITCH_MAC, ep.mac, 0xb000, &m));
        let f = on_wire(
            &wire,
            &m,
            &format!("{}: priority-tagged guest frame not on the wire", ep.name),
        );
        assert_eq!(f.vlan, expect, "{}: {f:?}", ep.name);
        assert!(
            tags(&f.bytes).is_empty(),
            "{}: the priority tag was not replaced: {f:?}",
            ep.name
        );
    }

    // A trunk without a native VLAN has nowhere to put it.
    let t = h.add("t", &["--trunk", "20"]);
    let tap = h.tap(&t);
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, t.mac, 0xb000, &m));
    absent(
        &wire,
        &m,
        "priority-tagged frame left a trunk without native",
    );
    assert_eq!(h.drops("t", "untagged"), 1, "stats: {}", h.stats("t"));
}

/// README, "Hostile and odd frames": a tunnel is the exception to priority
/// tags being replaced: customer frames are opaque, so the guest's priority
/// tag stays inline under the S-tag and lends it its priority.
#[test]
fn priority_tagged_guest_frame_into_a_tunnel_keeps_it_under_the_s_tag() {
    let h = root_harness!();
    let q = h.add("q", &["--tunnel", "100"]);
    let tap = h.tap(&q);
    let wire = h.topo.wire();
    let m = Marker::new();
    tap.write(&q_frame(SWITCH_MAC, q.mac, 0xb000, &m));
    let f = on_wire(&wire, &m, "priority-tagged guest frame not on the wire");
    assert_eq!(f.vlan, Some((TPID_8021AD, 0xb064)), "S-tag: {f:?}");
    assert_eq!(
        tags(&f.bytes),
        vec![(0x8100, 0xb000)],
        "the customer's priority tag is not kept under the S-tag: {f:?}"
    );
}

#[test]
fn priority_tagged_wire_frames_reach_only_untagged_ports_stripped() {
    let h = root_harness!();
    let u = h.add("u", &[]);
    let a = h.add("a", &["--vlan", "10"]);
    let t = h.add("t", &["--trunk", "10", "--native", "30"]);
    let (tu, ta, tt) = (h.tap(&u), h.tap(&a), h.tap(&t));
    let wire = h.topo.wire();

    let m = Marker::new();
    let sent = q_frame(u.mac, SWITCH_MAC, 0x6000, &m);
    wire.send(&sent);
    let f = at_guest(
        &tu,
        &m,
        "priority-tagged wire frame not delivered to the untagged port",
    );
    let stripped = [&sent[..12], &sent[16..]].concat();
    assert_eq!(f, stripped, "priority tag not stripped: {f:02x?}");

    for (tap, ep) in [(&ta, &a), (&tt, &t)] {
        let m = Marker::new();
        wire.send(&q_frame(ep.mac, SWITCH_MAC, 0x6000, &m));
        assert!(
            tap.read_matching(ABSENT, |f| m.is_in(f)).is_none(),
            "{}: priority-tagged wire frame delivered to a VLAN port",
            ep.name
        );
        assert_eq!(
            h.drops(&ep.name, "untagged"),
            1,
            "stats: {}",
            h.stats(&ep.name)
        );
    }
}

#[test]
fn truncated_and_stacked_tags_are_dropped_by_reason() {
    let h = root_harness!();
    let a = h.add("a", &["--vlan", "10"]);
    let t = h.add("t", &["--trunk", "10,20"]);
    let q = h.add("q", &["--tunnel", "100"]);
    let (ta, tt, tq) = (h.tap(&a), h.tap(&t), h.tap(&q));
    let wire = h.topo.wire();

    // A tag cut short: the frame ends inside the TCI / before the inner type.
    for (tap, ep) in [(&ta, &a), (&tt, &t), (&tq, &q)] {
        let mut runt = SWITCH_MAC.to_vec();
        runt.extend_from_slice(&ep.mac);
        runt.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tap.write(&runt);
        let mut runt = SWITCH_MAC.to_vec();
        runt.extend_from_slice(&ep.mac);
        runt.extend_from_slice(&[0x81, 0x00, 0x00]);
        tap.write(&runt);
    }
    // Stacked tags from the wire: under a trunk VLAN, under the S-tag.
    let send_stacked = |dst, outer, inner| {
        let m = Marker::new();
        wire.send(&frame::double_tagged(
            dst,
            SWITCH_MAC,
            outer,
            inner,
            ETHERTYPE_TEST,
            &m.0,
        ));
        m
    };
    let mt = send_stacked(t.mac, (TPID_8021Q, 10), (TPID_8021Q, 20));
    let mq = send_stacked(q.mac, (TPID_8021AD, 100), (TPID_8021AD, 7));
    absent(&tt, &mt, "double-tagged 10/20 delivered to a trunk");
    absent(&tq, &mq, "S100 over an 802.1ad tag delivered to a tunnel");
    for name in ["a", "t", "q"] {
        assert_eq!(h.drops(name, "runt"), 2, "{name}: stats {}", h.stats(name));
    }
    assert_eq!(h.drops("t", "stacked-tag"), 1, "stats: {}", h.stats("t"));
    assert_eq!(h.drops("q", "stacked-tag"), 1, "stats: {}", h.stats("q"));
}
