//! The throughput topology: two guests made by macvswitch (access ports on
//! VLAN 10) and two bare macvtaps made by hand, all in bridge mode on the
//! same lower device, side by side in the same namespaces. For the VEPA
//! rows, added after the others are done: two more macvswitch guests in
//! VEPA mode on VLAN 10 and reflective-relay emulation on lower0.
//!
//! ```text
//!   [host netns]  mswa, mswb (macvswitch)   barea, bareb (ip link)
//!                 [vepaa, vepab (macvswitch, VEPA)]
//!                   \__________ lower0 ____________/
//!                                 ||  veth
//!   [switch netns]               sw0
//! ```

use std::path::PathBuf;
use std::time::Duration;

use macvswitch_tests::{
    Harness, TempStateDir,
    frame::{Mac, Marker, fmt_mac, marked, test_mac},
    harness::{ABSENT, ARRIVE},
    tap::{Tap, make_node},
    topology::{LOWER, SWITCH_MAC},
};

use crate::loadgen::{open_queue, with_vnet_hdr};

/// The VLAN of the macvswitch guests.
pub const VLAN: u16 = 10;

/// One guest's side of an endpoint.
#[derive(Clone, Debug)]
pub struct Guest {
    pub ifname: String,
    pub mac: Mac,
    pub node: PathBuf,
}

/// Bare macvtap or macvswitch: two guests and how the wire sees them.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub a: Guest,
    pub b: Guest,
    /// The VLAN the wire carries this variant's frames on.
    pub wire_vid: Option<u16>,
}

/// Fields drop in order: the namespaces (and every link) first, then the
/// bpffs mount and the directories.
pub struct Setup {
    pub harness: Harness,
    _bare_nodes: TempStateDir,
    pub bare: Variant,
    pub msw: Variant,
    /// The VEPA guests, once [`Setup::add_vepa`] made them.
    pub vepa: Option<Variant>,
}

impl Setup {
    pub fn new() -> Setup {
        let harness = Harness::new();
        let vlan = VLAN.to_string();
        let msw_guest = |name: &str| {
            let ep = harness.add(name, &["--vlan", &vlan, "--mode", "bridge"]);
            Guest {
                ifname: ep.name,
                mac: ep.mac,
                node: ep.tap,
            }
        };
        let msw = Variant {
            name: "macvswitch",
            a: msw_guest("mswa"),
            b: msw_guest("mswb"),
            wire_vid: Some(VLAN),
        };
        let bare_nodes = TempStateDir::new();
        let host = &harness.topo.host;
        let bare_guest = |name: &str, mac: Mac| {
            host.ip_ok(&[
                "link",
                "add",
                name,
                "link",
                LOWER,
                "address",
                &fmt_mac(&mac),
                "type",
                "macvtap",
                "mode",
                "bridge",
            ]);
            // As `endpoint add` does.
            host.ip_ok(&["link", "set", name, "allmulticast", "on", "up"]);
            Guest {
                ifname: name.to_string(),
                mac,
                node: make_node(host, name, bare_nodes.path()),
            }
        };
        let bare = Variant {
            name: "bare macvtap",
            a: bare_guest("barea", test_mac(0xa1)),
            b: bare_guest("bareb", test_mac(0xb1)),
            wire_vid: None,
        };
        Setup {
            harness,
            _bare_nodes: bare_nodes,
            bare,
            msw,
            vepa: None,
        }
    }

    /// Two VEPA guests on VLAN 10 and `uplink set lower0 --reflective-relay
    /// on`; checks that a unicast from A reaches B and not the wire. Done
    /// after the bridge-mode rows: VEPA endpoints on lower0 make every
    /// endpoint there look senders up (`POLICY_CHECK_SENDERS`), and the
    /// relay program runs on every frame lower0 sends, the bare guests'
    /// too; neither belongs in the other rows.
    pub fn add_vepa(&mut self) {
        let vlan = VLAN.to_string();
        let guest = |name: &str| {
            let ep = self.harness.add(name, &["--vlan", &vlan, "--mode", "vepa"]);
            Guest {
                ifname: ep.name,
                mac: ep.mac,
                node: ep.tap,
            }
        };
        let (a, b) = (guest("vepaa"), guest("vepab"));
        self.harness
            .ctl
            .ok(&["uplink", "set", LOWER, "--reflective-relay", "on"]);
        let wire = self.harness.topo.wire();
        let (ta, tb) = (Tap::open(&a.node), Tap::open(&b.node));
        let marker = Marker::new();
        ta.write(&marked(b.mac, a.mac, &marker));
        assert!(
            tb.read_matching(ARRIVE, |f| marker.is_in(f)).is_some(),
            "VEPA + relay: unicast A -> B not delivered"
        );
        assert!(
            wire.recv_matching(ABSENT, |f| marker.is_in(&f.bytes))
                .is_none(),
            "VEPA + relay: the relayed unicast also reached the wire"
        );
        drop((wire, ta, tb));
        std::thread::sleep(Duration::from_millis(50));
        self.vepa = Some(Variant {
            name: "macvswitch VEPA",
            a,
            b,
            wire_vid: Some(VLAN),
        });
    }

    /// Relayed unicast frames lower0 counted (`uplink show`).
    pub fn relayed_unicast(&self) -> u64 {
        let u = self.harness.ctl.json(&["uplink", "show", LOWER, "--json"]);
        u["relayed"]["unicast"]
            .as_u64()
            .unwrap_or_else(|| panic!("uplink show --json lacks relayed.unicast: {u}"))
    }

    /// One frame from guest A of each variant reaches the wire, tagged
    /// with the variant's VLAN: the two really differ by macvswitch.
    pub fn check_wire(&self) {
        let wire = self.harness.topo.wire();
        for v in [&self.bare, &self.msw] {
            let marker = Marker::new();
            let fd = open_queue(&v.a.node);
            let buf = with_vnet_hdr(&marked(SWITCH_MAC, v.a.mac, &marker));
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe {
                libc::write(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    buf.as_ptr().cast(),
                    buf.len(),
                )
            };
            assert_eq!(n, buf.len() as isize, "write to {}", v.a.ifname);
            let got = wire
                .recv_matching(ARRIVE, |f| marker.is_in(&f.bytes))
                .unwrap_or_else(|| panic!("{}: frame never reached sw0", v.name));
            assert_eq!(got.vid(), v.wire_vid, "{}: VLAN on the wire", v.name);
        }
        // The socket goes before timing starts: it would copy every frame.
        drop(wire);
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Packets counted by macvswitch for `name` in `dir` (`from_guest`,
    /// `to_guest`).
    pub fn counted(&self, name: &str, dir: &str) -> u64 {
        self.harness.packets(name, dir)
    }
}
