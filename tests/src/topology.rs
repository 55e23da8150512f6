//! The standard test topology:
//!
//! ```text
//!   [host netns]  lower0 (fixed MAC) ==veth== sw0  [switch netns]
//! ```
//!
//! The controller creates macvtap endpoints on `lower0`; the "switch" side
//! (`sw0`) plays the 802.1Q trunk peer, observed with an AF_PACKET socket.

use crate::frame::Mac;
use crate::netns::NetNs;

/// Name of the lower device inside the host namespace.
pub const LOWER: &str = "lower0";
/// Name of the wire-side peer inside the switch namespace.
pub const SWITCH_PORT: &str = "sw0";
/// Fixed, locally administered MAC of `lower0`.
pub const LOWER_MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
/// Fixed MAC of `sw0` (source of wire frames built by tests).
pub const SWITCH_MAC: Mac = [0x02, 0x00, 0x5e, 0x20, 0x00, 0x01];

/// Two namespaces joined by a veth pair. Fields drop in declaration order:
/// host first (which also destroys the veth pair), then switch.
pub struct Topology {
    pub host: NetNs,
    pub switch: NetNs,
}

impl Topology {
    pub fn new() -> Topology {
        let host = NetNs::new("h");
        let switch = NetNs::new("s");
        // IPv6 autoconfiguration (RS, ND, MLD) on lower0, sw0 and on the
        // macvtaps would put stray frames on the wire; disable it before any
        // link exists so new links inherit it via `default`.
        for ns in [&host, &switch] {
            ns.exec_ok(&[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            ns.ip_ok(&["link", "set", "lo", "up"]);
        }
        let topo = Topology { host, switch };
        topo.cable();
        topo
    }

    /// The veth pair lower0 (host) -- sw0 (switch), both up; also to plug
    /// the lower device back in after a test removed it.
    pub fn cable(&self) {
        let (host, switch) = (&self.host, &self.switch);
        // Create both ends in the host ns, then move the peer: neither step
        // touches the root namespace.
        host.ip_ok(&[
            "link",
            "add",
            LOWER,
            "address",
            &crate::frame::fmt_mac(&LOWER_MAC),
            "type",
            "veth",
            "peer",
            "name",
            SWITCH_PORT,
            "address",
            &crate::frame::fmt_mac(&SWITCH_MAC),
        ]);
        host.ip_ok(&["link", "set", SWITCH_PORT, "netns", switch.name()]);
        host.ip_ok(&["link", "set", LOWER, "up"]);
        switch.ip_ok(&["link", "set", SWITCH_PORT, "up"]);
    }

    /// A macvtap `name` with `mac` on the lower device in bridge mode, made
    /// by hand as an operator would without macvswitch (left down).
    pub fn bare_macvtap(&self, name: &str, mac: &Mac) {
        self.host.ip_ok(&[
            "link",
            "add",
            name,
            "link",
            LOWER,
            "address",
            &crate::frame::fmt_mac(mac),
            "type",
            "macvtap",
            "mode",
            "bridge",
        ]);
    }

    /// An AF_PACKET socket on `sw0`: what the trunk switch sees.
    pub fn wire(&self) -> crate::wire::WireSocket {
        crate::wire::WireSocket::open(&self.switch, SWITCH_PORT)
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}
