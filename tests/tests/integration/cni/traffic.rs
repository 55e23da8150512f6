//! Frames through an interface the plugin made: the container is on its
//! VLAN, and isolated as configured, also when its interface got a new
//! ifindex in the container.

use std::time::Duration;

use std::net::Ipv4Addr;

use macvswitch_tests::{
    NetNs,
    expect::on_wire,
    frame::{Marker, TPID_8021Q, eth, marked, parse_mac, tagged},
    require_root,
    topology::SWITCH_MAC,
    wire::{WireFrame, WireSocket},
};

const BROADCAST: [u8; 6] = [0xff; 6];
const ETHERTYPE_ARP: u16 = 0x0806;
use serde_json::{Value, json};

use super::{Cni, container, link};

/// An ARP request for `ip` from the switch (192.0.2.1), tagged `vid`
/// (`None`: untagged).
fn who_has(ip: Ipv4Addr, vid: Option<u16>) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&SWITCH_MAC);
    arp.extend_from_slice(&[192, 0, 2, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&ip.octets());
    match vid {
        Some(vid) => tagged(BROADCAST, SWITCH_MAC, TPID_8021Q, vid, ETHERTYPE_ARP, &arp),
        None => eth(BROADCAST, SWITCH_MAC, ETHERTYPE_ARP, &arp),
    }
}

/// The container's ARP reply for `ip` on the wire, if one comes.
fn arp_reply(wire: &WireSocket, ip: Ipv4Addr, within: Duration) -> Option<WireFrame> {
    wire.recv_matching(within, |f| {
        let b = &f.bytes;
        b.len() >= 42
            && b[12..14] == [0x08, 0x06]
            && b[20..22] == [0, 2]
            && b[28..32] == ip.octets()
    })
}

/// What the container sends leaves tagged with its VLAN; its own stack
/// answers on its VLAN only: an ARP request on another VLAN or untagged
/// never reaches it. (A packet socket in the container would see frames
/// before the TC ingress program judges them, so the stack is the judge.)
fn assert_on_vlan(cni: &Cni, pod: &NetNs, ifname: &str, result: &Value, vid: u16) {
    let mac = parse_mac(result["interfaces"][0]["mac"].as_str().unwrap()).unwrap();
    let ip: Ipv4Addr = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let wire = cni.h.topo.wire();
    let inside = WireSocket::open(pod, ifname);
    wire.drain();
    let m = Marker::new();
    inside.send(&marked(SWITCH_MAC, mac, &m));
    let got = on_wire(&wire, &m, "from the container");
    assert_eq!(got.vid(), Some(vid), "the container's frame on the wire");

    for other in [Some(vid + 1), None] {
        wire.send(&who_has(ip, other));
        assert!(
            arp_reply(&wire, ip, Duration::from_millis(700)).is_none(),
            "{ip} answered an ARP request on VLAN {other:?}"
        );
    }
    wire.send(&who_has(ip, Some(vid)));
    let reply = arp_reply(&wire, ip, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{ip} did not answer an ARP request on VLAN {vid}"));
    assert_eq!(reply.vid(), Some(vid), "its ARP reply's VLAN");
}

#[test]
fn the_container_is_on_its_vlan() {
    require_root!();
    let cni = Cni::new();
    let pod = container("pod");
    let result = cni.add(&pod, "c1", "net1", &cni.conf(json!({})));
    assert_on_vlan(&cni, &pod, "net1", &result, 100);

    // The container's own stack: its ARP for a neighbour it has not heard
    // from leaves on VLAN 100.
    let wire = cni.h.topo.wire();
    wire.drain();
    let _ = pod.exec(&["ping", "-c", "1", "-W", "1", "192.0.2.254"]);
    let arp = wire
        .recv_matching(Duration::from_secs(2), |f| {
            f.bytes.len() > 14 && f.bytes[12..14] == [0x08, 0x06]
        })
        .expect("the container's ARP request on the wire");
    assert_eq!(arp.vid(), Some(100), "its ARP request's VLAN");
}

/// Two containers on the network ping each other while open or in one
/// community, not while isolated or in different communities (bridge-mode
/// deliveries between them never reach the wire: only the programs keep
/// them apart).
#[test]
fn isolation_applies_between_containers() {
    require_root!();
    let cases = [
        ("open", json!({}), json!({}), true),
        (
            "isolated",
            json!({"isolated": true}),
            json!({"isolated": true}),
            false,
        ),
        (
            "one community",
            json!({"community": "web"}),
            json!({"community": "web"}),
            true,
        ),
        (
            "two communities",
            json!({"community": "web"}),
            json!({"community": "db"}),
            false,
        ),
    ];
    for (what, conf_a, conf_b, reaches) in cases {
        let cni = Cni::new();
        let (a, b) = (container("a"), container("b"));
        cni.add(&a, "ca", "net1", &cni.conf(conf_a));
        let rb = cni.add(&b, "cb", "net1", &cni.conf(conf_b));
        let ip_b = rb["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let ping = a.exec(&["ping", "-c", "2", "-W", "1", &ip_b]);
        assert_eq!(
            ping.status.success(),
            reaches,
            "{what}: ping from a to b: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        // Each still reaches the wire on its VLAN.
        assert_on_vlan(&cni, &b, "net1", &rb, 100);
    }
}

/// Takes ifindexes 2..=41 in `pod`: a device the host's namespace made
/// (index < 10 there) cannot keep its index in it.
fn crowd(pod: &NetNs) {
    for n in 0..20 {
        pod.ip_ok(&[
            "link",
            "add",
            &format!("fill{n}a"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("fill{n}b"),
        ]);
    }
}

/// The interface gets a new ifindex in a container whose indexes are
/// taken: the policy is keyed by the new one, and frames follow it. A
/// second crowded container, whose next free index is the first one's
/// key, gets another: each keeps its own VLAN.
#[test]
fn the_policy_follows_a_new_ifindex() {
    require_root!();
    let cni = Cni::new();
    let (a, b) = (container("a"), container("b"));
    crowd(&a);
    crowd(&b);
    let ra = cni.add(&a, "ca", "net1", &cni.conf(json!({"vlan": 300})));
    let rb = cni.add(
        &b,
        "cb",
        "net1",
        &cni.conf(json!({"name": "vlan400", "vlan": 400})),
    );
    let (index_a, index_b) = (
        link(&a, "net1")["ifindex"].as_u64().unwrap(),
        link(&b, "net1")["ifindex"].as_u64().unwrap(),
    );
    assert!(
        index_a > 41 && index_b > 41,
        "a low ifindex kept: {index_a} {index_b}"
    );
    assert_ne!(index_a, index_b, "two endpoints share a policy key");
    for (index, id) in [(index_a, "ca"), (index_b, "cb")] {
        let listed = cni
            .endpoints()
            .into_iter()
            .find(|e| e["container_id"] == id)
            .unwrap();
        assert_eq!(listed["ifindex"], index, "the policy's key: {listed}");
    }
    assert_on_vlan(&cni, &a, "net1", &ra, 300);
    assert_on_vlan(&cni, &b, "net1", &rb, 400);
}
