//! Root-only checks of the support library itself against a hand-made
//! macvtap (no controller involved): if these fail, integration-test
//! failures say nothing about macvswitch.

use std::time::Duration;

use crate::frame::{self, ETHERTYPE_TEST, Marker, TPID_8021Q, fmt_mac, test_mac};
use crate::topology::{LOWER_MAC, SWITCH_MAC};
use crate::{TempStateDir, Topology, tap};

const T: Duration = Duration::from_secs(2);

fn handmade_macvtap(topo: &Topology, mac: frame::Mac) {
    topo.bare_macvtap("mvt0", &mac);
    topo.host.ip_ok(&["link", "set", "mvt0", "up"]);
}

#[test]
fn topology_has_only_expected_links_and_lower_mac() {
    require_root!();
    let topo = Topology::new();
    assert_eq!(topo.host.link_names(), vec!["lo", "lower0"]);
    assert_eq!(topo.switch.link_names(), vec!["lo", "sw0"]);
    let mac = topo.host.exec_ok(&["cat", "/sys/class/net/lower0/address"]);
    assert_eq!(mac.trim(), fmt_mac(&LOWER_MAC));
    let name = topo.host.name().to_string();
    drop(topo);
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
}

#[test]
fn bpffs_guard_mounts_a_fresh_bpffs() {
    require_root!();
    let g = crate::BpffsGuard::new();
    let p = g.path().to_path_buf();
    // statfs magic BPF_FS_MAGIC = 0xcafe4a11
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: zeroed statfs is a valid out-buffer; c is a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_type as u64, 0xcafe4a11);
    assert!(g.pinned_files().is_empty());
    drop(g);
    assert!(!p.exists());
}

#[test]
fn tap_and_wire_helpers_work_on_a_plain_macvtap() {
    require_root!();
    let topo = Topology::new();
    let dir = TempStateDir::new();
    let guest = test_mac(0x42);
    handmade_macvtap(&topo, guest);
    let node = tap::make_node(&topo.host, "mvt0", dir.path());
    let tap = tap::Tap::open(&node);
    let wire = topo.wire();

    // guest -> wire, untagged: plain frame (no vnet header) and no VLAN.
    let m = Marker::new();
    tap.write(&frame::marked(SWITCH_MAC, guest, &m));
    let f = wire
        .recv_matching(T, |f| m.is_in(&f.bytes))
        .expect("guest frame on sw0");
    assert_eq!(f.vlan, None);
    assert_eq!(&f.bytes[0..6], &SWITCH_MAC);
    assert_eq!(&f.bytes[6..12], &guest);
    assert_eq!(frame::outer_ethertype(&f.bytes), Some(ETHERTYPE_TEST));

    // guest -> wire, inline tag: sw0's receive path moves the tag into
    // metadata, so AF_PACKET reports it via PACKET_AUXDATA only.
    let m = Marker::new();
    tap.write(&frame::marked_tagged(SWITCH_MAC, guest, 10, &m));
    let f = wire
        .recv_matching(T, |f| m.is_in(&f.bytes))
        .expect("tagged guest frame on sw0");
    assert_eq!(f.vlan, Some((TPID_8021Q, 10)));
    assert_eq!(f.vid(), Some(10));
    assert_eq!(frame::outer_ethertype(&f.bytes), Some(ETHERTYPE_TEST));

    // wire -> guest, untagged.
    let m = Marker::new();
    wire.send(&frame::marked(guest, SWITCH_MAC, &m));
    let f = tap
        .read_matching(T, |f| m.is_in(f))
        .expect("wire frame on tap");
    assert_eq!(frame::outer_ethertype(&f), Some(ETHERTYPE_TEST));

    // wire -> guest, tagged, no eBPF: the tap read puts the tag back inline.
    let m = Marker::new();
    wire.send(&frame::marked_tagged(guest, SWITCH_MAC, 10, &m));
    let f = tap
        .read_matching(T, |f| m.is_in(f))
        .expect("tagged wire frame on tap");
    let p = frame::parse(&f).unwrap();
    assert_eq!(p.tags, vec![(TPID_8021Q, 10)]);

    // Nothing of ours shows up twice; outgoing copies are filtered.
    let m = Marker::new();
    wire.send(&frame::marked(guest, SWITCH_MAC, &m));
    assert!(
        wire.recv_matching(Duration::from_millis(200), |f| m.is_in(&f.bytes))
            .is_none()
    );
}
