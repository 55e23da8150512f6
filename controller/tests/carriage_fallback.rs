//! Fail closed: tags travel in the mark only while the lower device's
//! egress program is there to put them on the wire. With its flag down the
//! endpoints push their tags themselves, so no frame leaves untagged; a
//! program removed behind macvswitch's back is noticed by `restore`, which
//! lowers the flag and puts the program back.

use macvswitch::kernel::datapath::{Maps, PinLayout};
use macvswitch_tests::frame::{self, BROADCAST, Marker, marked};
use macvswitch_tests::harness::ARRIVE;
use macvswitch_tests::topology::{LOWER, SWITCH_MAC};
use macvswitch_tests::{Harness, root_harness};

fn lower_ifindex(h: &Harness) -> u32 {
    h.topo
        .host
        .exec_ok(&["cat", &format!("/sys/class/net/{LOWER}/ifindex")])
        .trim()
        .parse()
        .expect("lower ifindex")
}

/// A broadcast from `a` reaches `b` untagged and the wire on VLAN 10 (in
/// metadata, with nothing inline).
fn assert_tagged_everywhere(h: &Harness, context: &str) {
    let (a, b) = (h.show("a10"), h.show("b10"));
    let (ta, tb) = (h.tap(&a), h.tap(&b));
    let wire = h.topo.wire();
    let m = Marker::new();
    ta.write(&marked(BROADCAST, a.mac, &m));
    let f = tb
        .read_matching(ARRIVE, |f| m.is_in(f))
        .unwrap_or_else(|| panic!("{context}: a10 -> b10 lost"));
    assert!(
        frame::parse(&f).unwrap().tags.is_empty(),
        "{context}: {f:02x?}"
    );
    let w = wire
        .recv_matching(ARRIVE, |f| m.is_in(&f.bytes))
        .unwrap_or_else(|| panic!("{context}: a10 -> wire lost"));
    assert_eq!(
        w.vid(),
        Some(10),
        "{context}: left untagged or wrong: {w:?}"
    );
    assert!(frame::parse(&w.bytes).unwrap().tags.is_empty(), "{context}");
    // And the wire's frames on VLAN 10 still reach the guest.
    let m = Marker::new();
    wire.send(&frame::marked_tagged(a.mac, SWITCH_MAC, 10, &m));
    assert!(
        ta.read_matching(ARRIVE, |f| m.is_in(f)).is_some(),
        "{context}: wire -> a10 lost"
    );
}

#[test]
fn without_the_lower_program_endpoints_push_their_tags_themselves() {
    let h = root_harness!();
    // TCX, so that removing the pin is removing the program.
    h.add("a10", &["--vlan", "10", "--attach", "tcx"]);
    h.add("b10", &["--vlan", "10", "--attach", "tcx"]);
    let lower = lower_ifindex(&h);
    let pins = PinLayout::new(h.bpffs.path());
    let mut maps = Maps::open(&pins).expect("maps").expect("loaded");
    assert!(maps.tags_from_mark(lower).unwrap(), "flag up after add");
    assert_tagged_everywhere(&h, "tags in the mark");

    // The flag down: the endpoints push, whether the program is there...
    maps.set_tags_from_mark(lower, false).unwrap();
    assert_tagged_everywhere(&h, "flag down, program attached");
    // ...or not.
    let pin = h.bpffs.path().join("uplinks").join(LOWER).join("egress");
    std::fs::remove_file(&pin).expect("removing the lower program's pin");
    assert_tagged_everywhere(&h, "flag down, program gone");

    // `restore` puts the program back and the flag up.
    h.ctl.ok(&["--attach", "tcx", "restore"]);
    assert!(pin.exists(), "restore did not put the program back");
    assert!(maps.tags_from_mark(lower).unwrap(), "flag up after restore");
    assert_tagged_everywhere(&h, "after restore");

    // Removed behind our back with the flag up: restore lowers it first.
    std::fs::remove_file(&pin).expect("removing the pin again");
    h.ctl.ok(&["--attach", "tcx", "restore"]);
    assert!(pin.exists() && maps.tags_from_mark(lower).unwrap());
    assert_tagged_everywhere(&h, "after the second restore");

    // The last endpoint gone: flag down, program gone.
    h.ctl.ok(&["endpoint", "del", "a10"]);
    h.ctl.ok(&["endpoint", "del", "b10"]);
    assert!(!maps.tags_from_mark(lower).unwrap(), "flag left up");
    assert!(!pin.exists(), "the lower program stayed without endpoints");
}
