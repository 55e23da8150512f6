//! The one list of reasons a program drops a frame.
//!
//! The programs count drops per endpoint per reason, indexed by the
//! discriminant; `stats` prints them by `name()`. Add new reasons at the
//! end and never renumber: counters in pinned maps outlive the binary.

macro_rules! drop_reasons {
    ($($variant:ident = $value:literal, $name:literal, $help:literal;)*) => {
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $(#[doc = $help] $variant = $value,)*
        }

        impl DropReason {
            /// Every reason, in counter-slot order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Stable, kebab-case name shown by `stats`.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One-line explanation for operators.
            pub const fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help,)* }
            }

            pub const fn from_u32(value: u32) -> Option<DropReason> {
                match value { $($value => Some(DropReason::$variant),)* _ => None }
            }
        }
    };
}

drop_reasons! {
    Runt = 1, "runt",
        "frame shorter than an Ethernet header, or a VLAN tag cut short";
    GuestTagged = 2, "guest-tagged",
        "the guest sent a frame that already carries a VLAN tag (VLAN hopping)";
    SpoofedSource = 3, "spoofed-source",
        "the guest sent from a source MAC that is not the endpoint's";
    WrongVlan = 4, "wrong-vlan",
        "tagged with a VLAN the endpoint is not on (or not allowed on its trunk)";
    Untagged = 5, "untagged",
        "untagged (or priority-tagged) frame where the port needs a VLAN tag";
    TaggedOnUntaggedPort = 6, "tagged-on-untagged-port",
        "tagged frame towards an endpoint without a VLAN";
    ForeignTpid = 7, "foreign-tpid",
        "outer tag of the wrong kind: 802.1ad on a customer port, 802.1Q on a tunnel";
    StackedTag = 8, "stacked-tag",
        "a second VLAN tag under the endpoint's own";
    HelperFailed = 9, "helper-failed",
        "the kernel refused to push or pop the tag";
    CvlanNotAllowed = 10, "cvlan-not-allowed",
        "a customer VLAN outside the tunnel's --tunnel-cvlans";
    Isolation = 11, "isolation",
        "from a local endpoint the private-VLAN policy keeps apart (--isolated, --community)";
    OwnFrame = 12, "own-frame",
        "the endpoint's own frame, come back (from a hairpin switch)";
    IpSpoofed = 13, "ip-spoofed",
        "an IPv4 or IPv6 source outside the endpoint's --ip list";
    ArpSpoofed = 14, "arp-spoofed",
        "ARP whose sender address or MAC is not the endpoint's (--ip)";
    NdSpoofed = 15, "nd-spoofed",
        "neighbour advertisement for an address or MAC not the endpoint's (--ip)";
    DhcpServer = 16, "dhcp-server",
        "a DHCP or DHCPv6 server message from a guest without --allow-dhcp-server";
    RouterAdvert = 17, "router-advert",
        "an IPv6 router advertisement or redirect from a guest without --allow-ra";
    Bpdu = 18, "bpdu",
        "a spanning-tree or slow-protocols (LACP) frame from a guest without --allow-bpdu";
    Storm = 19, "storm",
        "broadcast or multicast above the endpoint's --storm-limit";
    Unparsable = 20, "unparsable-header",
        "an IP header or IPv6 extension-header chain too short or too long for the guards to check";
}
