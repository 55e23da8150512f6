//! The throughput topology: two guests made by macvswitch (access ports on
//! VLAN 10) and two bare macvtaps made by hand, all in bridge mode on the
//! same lower device, side by side in the same namespaces; and next to
//! them the alternative an operator would pick, a Linux bridge with two
//! taps and its own veth to the wire (untagged: this kernel has no bridge
//! VLAN filtering and no 8021q). For the VEPA rows, added after the others
//! are done: two more macvswitch guests in VEPA mode on VLAN 10 and
//! reflective-relay emulation on lower0. For the guard cases, one more
//! macvswitch guest each with all guards on and with all guards off (VLAN
//! 10, bridge mode): guardon, guardoff.
//!
//! ```text
//!   [host netns]  mswa, mswb (macvswitch)   barea, bareb (ip link)     brtapa, brtapb (tap)
//!                 guardon, guardoff (macvswitch)                              |
//!                 [vepaa, vepab (macvswitch, VEPA)]                          |
//!                   \__________ lower0 ____________/                     br0 -- lowerbr
//!                                 ||  veth                                      || veth
//!   [switch netns]               sw0 (bench_push_tag on egress)               swbr (same)
//! ```

use std::os::fd::{AsRawFd, OwnedFd};

use aya::programs::TcAttachType;
use std::time::{Duration, Instant};

use macvswitch_tests::{
    Harness, TempStateDir,
    frame::{Mac, Marker, TPID_8021Q, fmt_mac, marked, outer_ethertype, test_mac},
    harness::{ABSENT, ARRIVE},
    tap::{Tap, make_node},
    topology::{LOWER, SWITCH_MAC, SWITCH_PORT},
    wire::WireSocket,
};

use crate::attached::{Attached, PROG_BENCH_PUSH_TAG};
use crate::guards::{self, GUEST_V4, Guarding, SPOOFED_V4};
use crate::loadgen::{self, Queues, VNET_HDR_LEN, with_vnet_hdr};
use crate::throughput::GATEWAY_MAC;

/// The VLAN of the macvswitch guests.
pub const VLAN: u16 = 10;
/// The Linux bridge's devices (host namespace; swbr in the switch's).
pub const BRIDGE: &str = "br0";
pub const BRIDGE_LOWER: &str = "lowerbr";
pub const BRIDGE_WIRE: &str = "swbr";

/// One guest's side of an endpoint.
#[derive(Clone, Debug)]
pub struct Guest {
    pub ifname: String,
    pub mac: Mac,
    pub queues: Queues,
}

/// Bare macvtap, macvswitch or Linux bridge: two guests and how the wire
/// sees them.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub a: Guest,
    pub b: Guest,
    /// The VLAN the wire carries this variant's frames on.
    pub wire_vid: Option<u16>,
    /// The wire-side veth peer of this variant's lower device (switch ns).
    pub wire_port: &'static str,
}

/// Fields drop in order: the wire program and the taps' anchor queues,
/// then the namespaces (and every link), then the bpffs mount and the
/// directories.
pub struct Setup {
    /// `bench_push_tag` on sw0's and swbr's egress.
    _tagger: Attached,
    /// One detached queue per bridge tap keeps each device (and its
    /// carrier) alive between runs without taking frames.
    _tap_anchors: Vec<OwnedFd>,
    pub harness: Harness,
    _bare_nodes: TempStateDir,
    pub bare: Variant,
    pub msw: Variant,
    pub bridge: Variant,
    /// One guest with [`Guarding::All`], one with [`Guarding::Off`]; `b`
    /// is `a` again: only the guest→wire guard cases use them.
    pub guards_on: Variant,
    pub guards_off: Variant,
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
                queues: Queues::Macvtap(ep.tap),
            }
        };
        let msw = Variant {
            name: "macvswitch",
            a: msw_guest("mswa"),
            b: msw_guest("mswb"),
            wire_vid: Some(VLAN),
            wire_port: SWITCH_PORT,
        };
        let guarded = |name: &'static str, ifname: &str, guarding: Guarding| {
            let mut args = vec!["--vlan", &vlan, "--mode", "bridge"];
            let flags = guarding.args();
            args.extend(flags.iter().map(String::as_str));
            let ep = harness.add(ifname, &args);
            let a = Guest {
                ifname: ep.name,
                mac: ep.mac,
                queues: Queues::Macvtap(ep.tap),
            };
            Variant {
                name,
                b: a.clone(),
                a,
                wire_vid: Some(VLAN),
                wire_port: SWITCH_PORT,
            }
        };
        let guards_on = guarded("macvswitch, all guards on", "guardon", Guarding::All);
        let guards_off = guarded("macvswitch, all guards off", "guardoff", Guarding::Off);
        let bare_nodes = TempStateDir::new();
        let host = &harness.topo.host;
        let bare_guest = |name: &str, mac: Mac| {
            harness.topo.bare_macvtap(name, &mac);
            // As `endpoint add` does.
            host.ip_ok(&["link", "set", name, "allmulticast", "on", "up"]);
            Guest {
                ifname: name.to_string(),
                mac,
                queues: Queues::Macvtap(make_node(host, name, bare_nodes.path())),
            }
        };
        let bare = Variant {
            name: "bare macvtap",
            a: bare_guest("barea", test_mac(0xa1)),
            b: bare_guest("bareb", test_mac(0xb1)),
            wire_vid: None,
            wire_port: SWITCH_PORT,
        };
        let (bridge, tap_anchors) = make_bridge(&harness);
        let mut tagger = Attached::load(PROG_BENCH_PUSH_TAG);
        tagger.attach(
            &harness.topo.switch,
            &[
                (SWITCH_PORT, TcAttachType::Egress),
                (BRIDGE_WIRE, TcAttachType::Egress),
            ],
        );
        Setup {
            _tagger: tagger,
            _tap_anchors: tap_anchors,
            harness,
            _bare_nodes: bare_nodes,
            bare,
            msw,
            bridge,
            guards_on,
            guards_off,
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
                queues: Queues::Macvtap(ep.tap),
            }
        };
        let (a, b) = (guest("vepaa"), guest("vepab"));
        self.harness
            .ctl
            .ok(&["uplink", "set", LOWER, "--reflective-relay", "on"]);
        let wire = self.harness.topo.wire();
        let node = |g: &Guest| match &g.queues {
            Queues::Macvtap(node) => node.clone(),
            Queues::Tap { .. } => unreachable!("VEPA guests are macvtaps"),
        };
        let (ta, tb) = (Tap::open(node(&a)), Tap::open(node(&b)));
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
            wire_port: SWITCH_PORT,
        });
    }

    /// Relayed unicast frames lower0 counted (`uplink show`).
    pub fn relayed_unicast(&self) -> u64 {
        let u = self.harness.ctl.json(&["uplink", "show", LOWER, "--json"]);
        u["relayed"]["unicast"]
            .as_u64()
            .unwrap_or_else(|| panic!("uplink show --json lacks relayed.unicast: {u}"))
    }

    /// Both directions work for every variant before anything is timed:
    /// a frame from guest A reaches the wire tagged with the variant's VLAN
    /// (the variants really differ by macvswitch), and a frame from the
    /// wire, sent as the timed runs send it (tag pushed into metadata by
    /// `bench_push_tag`), reaches guest A untagged.
    pub fn check_wire(&self) {
        let switch = &self.harness.topo.switch;
        for v in [&self.bare, &self.msw, &self.bridge] {
            let wire = WireSocket::open(switch, v.wire_port);
            let marker = Marker::new();
            let fd = v.a.queues.open();
            write_frame(&fd, &with_vnet_hdr(&marked(SWITCH_MAC, v.a.mac, &marker)));
            let got = wire
                .recv_matching(ARRIVE, |f| marker.is_in(&f.bytes))
                .unwrap_or_else(|| panic!("{}: frame never reached {}", v.name, v.wire_port));
            assert_eq!(got.vid(), v.wire_vid, "{}: VLAN on the wire", v.name);
            // The socket goes before timing starts: it would copy every frame.
            drop(wire);

            let marker = Marker::new();
            let sender =
                loadgen::packet_sender(switch, v.wire_port, u32::from(v.wire_vid.unwrap_or(0)));
            let frame = marked(v.a.mac, SWITCH_MAC, &marker);
            // SAFETY: frame is valid for frame.len() bytes.
            let n =
                unsafe { libc::send(sender.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(n, frame.len() as isize, "send on {}", v.wire_port);
            let got = read_matching(&fd, ARRIVE, |f| marker.is_in(f))
                .unwrap_or_else(|| panic!("{}: wire frame never reached {}", v.name, v.a.ifname));
            assert_ne!(
                outer_ethertype(&got),
                Some(TPID_8021Q),
                "{}: guest got a tagged frame",
                v.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    /// The guard endpoints really differ before anything is timed: an
    /// honest IPv4 UDP frame, as the timed runs send it, reaches the wire on
    /// VLAN 10 from both; a DHCP server's reply passes all guards off and is
    /// dropped all guards on (`dhcp-server`), and so is a spoofed source
    /// (`ip-spoofed`).
    pub fn check_guards(&self) {
        let switch = &self.harness.topo.switch;
        let send = |v: &Variant, source: [u8; 4], ports: (u16, u16), arrives: bool, what: &str| {
            let wire = WireSocket::open(switch, v.wire_port);
            let marker = Marker::new();
            let frame = guards::udp4_with(GATEWAY_MAC, v.a.mac, source, ports, &marker.0, 60);
            let fd = v.a.queues.open();
            write_frame(&fd, &with_vnet_hdr(&frame));
            let timeout = if arrives { ARRIVE } else { ABSENT };
            let got = wire.recv_matching(timeout, |f| marker.is_in(&f.bytes));
            match got {
                Some(got) if arrives => {
                    assert_eq!(
                        got.vid(),
                        v.wire_vid,
                        "{}: {what}: VLAN on the wire",
                        v.name
                    );
                }
                None if arrives => panic!("{}: {what} never reached the wire", v.name),
                Some(_) => panic!("{}: {what} reached the wire", v.name),
                None => {}
            }
        };
        let (on, off) = (&self.guards_on, &self.guards_off);
        for v in [on, off] {
            send(v, GUEST_V4, guards::UDP_PORTS, true, "honest IPv4 UDP");
        }
        send(
            off,
            GUEST_V4,
            guards::DHCP_SERVER_PORTS,
            true,
            "DHCP server reply",
        );
        send(
            on,
            GUEST_V4,
            guards::DHCP_SERVER_PORTS,
            false,
            "DHCP server reply",
        );
        send(
            on,
            SPOOFED_V4,
            guards::UDP_PORTS,
            false,
            "spoofed IPv4 source",
        );
        let name = &on.a.ifname;
        for reason in ["dhcp-server", "ip-spoofed"] {
            let n = self.harness.drops(name, reason);
            assert_eq!(n, 1, "{name}: {reason} drops");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Every drop counted on the guard endpoints, all reasons.
    pub fn guard_drops(&self) -> u64 {
        [&self.guards_on, &self.guards_off]
            .iter()
            .map(|v| {
                let s = self.harness.stats(&v.a.ifname);
                s["drops"]
                    .as_object()
                    .map_or(0, |d| d.values().filter_map(|n| n.as_u64()).sum())
            })
            .sum()
    }

    /// Packets counted by macvswitch for `name` in `dir` (`from_guest`,
    /// `to_guest`).
    pub fn counted(&self, name: &str, dir: &str) -> u64 {
        self.harness.packets(name, dir)
    }
}

/// br0 with lowerbr (veth to swbr in the switch namespace) and two
/// multi-queue taps opened as QEMU opens them; static FDB entries for the
/// guests and the wire, so that no run floods while the bridge learns.
fn make_bridge(harness: &Harness) -> (Variant, Vec<OwnedFd>) {
    let (host, switch) = (&harness.topo.host, &harness.topo.switch);
    host.ip_ok(&[
        "link",
        "add",
        BRIDGE_LOWER,
        "type",
        "veth",
        "peer",
        "name",
        BRIDGE_WIRE,
        "address",
        &fmt_mac(&SWITCH_MAC),
    ]);
    host.ip_ok(&["link", "set", BRIDGE_WIRE, "netns", switch.name()]);
    switch.ip_ok(&["link", "set", BRIDGE_WIRE, "up"]);
    host.ip_ok(&[
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ]);
    host.ip_ok(&["link", "set", BRIDGE_LOWER, "master", BRIDGE, "up"]);
    host.ip_ok(&["link", "set", BRIDGE, "up"]);
    let fdb = |mac: &Mac, dev: &str| {
        host.exec_ok(&[
            "bridge",
            "fdb",
            "replace",
            &fmt_mac(mac),
            "dev",
            dev,
            "master",
            "static",
        ]);
    };
    fdb(&SWITCH_MAC, BRIDGE_LOWER);
    let mut anchors = Vec::new();
    let mut guest = |ifname: &str, mac: Mac| {
        let anchor = host.enter_and(|| loadgen::open_tap(ifname));
        loadgen::detach_tap_queue(&anchor, ifname);
        anchors.push(anchor);
        host.ip_ok(&["link", "set", ifname, "master", BRIDGE, "up"]);
        fdb(&mac, ifname);
        Guest {
            ifname: ifname.to_string(),
            mac,
            queues: Queues::Tap {
                netns: host.name().to_string(),
                ifname: ifname.to_string(),
            },
        }
    };
    let a = guest("brtapa", test_mac(0xc1));
    let b = guest("brtapb", test_mac(0xd1));
    let variant = Variant {
        name: "Linux bridge + tap",
        a,
        b,
        wire_vid: None,
        wire_port: BRIDGE_WIRE,
    };
    (variant, anchors)
}

fn write_frame(fd: &OwnedFd, buf: &[u8]) {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    assert_eq!(
        n,
        buf.len() as isize,
        "write to a tap: {}",
        std::io::Error::last_os_error()
    );
}

/// The first frame (without its virtio-net header) read from the
/// non-blocking tap queue `fd` within `timeout` that `matches`.
fn read_matching(
    fd: &OwnedFd,
    timeout: Duration,
    matches: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < timeout {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > VNET_HDR_LEN as isize {
            let frame = &buf[VNET_HDR_LEN..n as usize];
            if matches(frame) {
                return Some(frame.to_vec());
            }
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    None
}
