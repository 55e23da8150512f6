//! VLAN carriage in `skb->mark`: tags between local endpoints travel in the
//! mark, the lower device's egress program puts them on the wire, and no
//! mark that lacks our random pattern puts a frame into a guest's VLAN.
//!
//! The mark survives only within one namespace (a veth into another one
//! scrubs it), so the sender here is a host process on a veth whose peer is
//! the lower device, both in the test's host namespace.

use macvswitch_common::{MarkCarriage, TPID_8021Q, Tag, names};
use macvswitch_tests::bpf::pinned_map_value;
use macvswitch_tests::expect::{absent, at_guest, on_wire};
use macvswitch_tests::frame::{self, Marker, marked, marked_tagged};
use macvswitch_tests::harness::Endpoint;
use macvswitch_tests::wire::WireSocket;
use macvswitch_tests::{Harness, root_harness};

/// A lower device whose peer stays in the host namespace.
const LOWER: &str = "lowerm";
const PEER: &str = "peerm";
const PEER_MAC: frame::Mac = [0x02, 0x00, 0x5e, 0x30, 0x00, 0x01];

fn add(h: &Harness, name: &str, extra: &[&str]) -> Endpoint {
    let mut args = vec!["endpoint", "add", name, "--lower", LOWER];
    args.extend_from_slice(extra);
    h.ctl.ok(&args);
    h.show(name)
}

/// The carriage the data path chose (mask and random pattern).
fn carriage(h: &Harness) -> MarkCarriage {
    let path = h.bpffs.path().join("maps").join(names::MAP_CARRIAGE);
    let bytes = pinned_map_value(&path, 0, std::mem::size_of::<MarkCarriage>());
    let word = |i: usize| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
    MarkCarriage {
        mask: word(0),
        pattern: word(1),
        shift: word(2),
        _pad: word(3),
    }
}

fn host_pair(h: &Harness) -> WireSocket {
    h.topo.host.ip_ok(&[
        "link",
        "add",
        LOWER,
        "type",
        "veth",
        "peer",
        "name",
        PEER,
        "address",
        &frame::fmt_mac(&PEER_MAC),
    ]);
    for dev in [LOWER, PEER] {
        h.topo.host.ip_ok(&["link", "set", dev, "up"]);
    }
    WireSocket::open(&h.topo.host, PEER)
}

#[test]
fn host_marks_without_the_pattern_cannot_put_a_frame_into_a_vlan() {
    let h = root_harness!();
    let peer = host_pair(&h);
    let a10 = add(&h, "a10", &["--vlan", "10"]);
    let plain = add(&h, "plain", &[]);
    let (ta, tp) = (h.tap(&a10), h.tap(&plain));
    let c = carriage(&h);
    assert_eq!(c.mask, u32::MAX, "default mask");
    let vlan10 = Tag {
        tpid: TPID_8021Q,
        tci: 10,
    };
    let ours = c.carry(0, vlan10);

    // Marks another tool might set, and ours with any random bit wrong.
    let mut foreign = vec![1, 0x4000, 0x8000, 0xdead_beef, c.cleared(ours) | 10];
    let fixed = 1u32 << (31 - c.pattern_bits().leading_zeros());
    for bit in 0..32 {
        let bit = 1u32 << bit;
        if c.pattern_bits() & bit != 0 && bit != fixed {
            foreign.push(ours ^ bit);
        }
    }
    foreign.push((ours & !c.pattern_bits()) | fixed);
    for mark in &foreign {
        peer.set_mark(*mark);
        // Untagged: an access port drops it, an untagged port takes it (a
        // wire frame, handled by its tag as always).
        let m = Marker::new();
        peer.send(&marked(a10.mac, PEER_MAC, &m));
        absent(
            &ta,
            &m,
            &format!("mark {mark:#010x} put an untagged frame into VLAN 10"),
        );
        let m = Marker::new();
        peer.send(&marked(plain.mac, PEER_MAC, &m));
        at_guest(
            &tp,
            &m,
            &format!("mark {mark:#010x}: untagged frame to the untagged port lost"),
        );
        // Tagged with VLAN 20: still VLAN 20.
        let m = Marker::new();
        peer.send(&marked_tagged(a10.mac, PEER_MAC, 20, &m));
        absent(
            &ta,
            &m,
            &format!("mark {mark:#010x} moved a VLAN 20 frame into VLAN 10"),
        );
    }
    assert!(h.drops("a10", "untagged") >= foreign.len() as u64);

    // The control: our exact pattern is believed (only a privileged process
    // in this namespace that read the map can do this), so the checks above
    // would have seen a leak.
    peer.set_mark(ours);
    let m = Marker::new();
    peer.send(&marked(a10.mac, PEER_MAC, &m));
    let f = at_guest(
        &ta,
        &m,
        "a frame carrying our pattern for VLAN 10 reaches the access port",
    );
    assert!(frame::parse(&f).unwrap().tags.is_empty(), "{f:02x?}");
}

#[test]
fn tags_travel_in_the_mark_and_leave_in_metadata() {
    let h = root_harness!();
    let peer = host_pair(&h);
    let a = add(&h, "a10", &["--vlan", "10", "--priority", "5"]);
    let b = add(&h, "b10", &["--vlan", "10"]);
    let t = add(&h, "t", &["--trunk", "10,20"]);
    let (ta, tb, tt) = (h.tap(&a), h.tap(&b), h.tap(&t));

    // Guest to guest on the same lower device: delivered untagged to the
    // access port and tagged (PCP kept) to the trunk.
    let m = Marker::new();
    ta.write(&marked(frame::BROADCAST, a.mac, &m));
    let f = at_guest(&tb, &m, "a10 -> b10");
    assert!(frame::parse(&f).unwrap().tags.is_empty(), "{f:02x?}");
    let f = at_guest(&tt, &m, "a10 -> t");
    let tags = frame::parse(&f).unwrap().tags;
    assert_eq!(tags.len(), 1, "{f:02x?}");
    assert_eq!(tags[0].1 & 0x0fff, 10, "{f:02x?}");
    assert_eq!(tags[0].1 >> 13, 5, "priority carried: {f:02x?}");

    // On the wire: tagged in metadata, as a NIC's offload would insert it
    // (AF_PACKET reports it through PACKET_AUXDATA).
    let wire = on_wire(&peer, &m, "the broadcast leaves on the wire");
    assert_eq!(wire.vid(), Some(10), "{wire:?}");
}
