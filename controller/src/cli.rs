//! Command-line interface: verbs grouped by object, `--json` on every read.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{
    error::Result,
    model::{
        frame::{EthAddr, EtherType, HexFrame, TagVid, Tpid},
        guards::{Guards, IpList, StormLimit},
        isolation::Isolation,
        policy::{Pcp, PortOptions, PortVlans, VidList},
        spec::{EndpointSpec, HostPortSpec},
        types::{AttachChoice, Cidr, IfName, Mac, Mode, Mtu, Vid, mark_mask_rule},
    },
    ops::requests::{GuardChanges, SetRequest, UplinkSetRequest},
};

/// Put virtual machines on VLANs over macvtap, with TC eBPF doing the
/// tagging in the kernel.
#[derive(Debug, Parser)]
#[command(
    name = "macvswitch",
    version,
    after_help = "Example:\n  macvswitch endpoint add vm1 --lower eth0 --vlan 10\n  macvswitch stats vm1"
)]
pub struct Cli {
    /// Where the state file and private tap nodes live.
    #[arg(
        long,
        global = true,
        env = "MACVSWITCH_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/macvswitch"
    )]
    pub state_dir: PathBuf,

    /// A directory on a bpffs for the pins (mounted if it is not on one).
    #[arg(
        long,
        global = true,
        env = "MACVSWITCH_BPFFS",
        value_name = "DIR",
        default_value = "/sys/fs/bpf/macvswitch"
    )]
    pub bpffs: PathBuf,

    /// The bits of skb->mark macvswitch may use to carry VLAN tags between
    /// local endpoints (hex or decimal; default 0xffffffff). Its lowest 17
    /// set bits must be contiguous and it needs at least 8 more. Set it to
    /// keep clear of marks that netfilter, policy routing or another CNI
    /// use on the lower device; changing it needs `reset` first.
    #[arg(
        long,
        global = true,
        env = "MACVSWITCH_MARK_MASK",
        value_name = "MASK",
        value_parser = parse_mark_mask
    )]
    pub mark_mask: Option<u32>,

    /// How programs are attached to devices that carry none of ours yet:
    /// `auto` tries a TCX link and uses a clsact qdisc and filter where the
    /// kernel has no TCX; `clsact` forces the latter (to test it, or for
    /// bulk work: see BENCHMARKS.md); `tcx` fails where there is no TCX.
    /// A device keeps the mode it was attached with.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "auto|tcx|clsact",
        env = "MACVSWITCH_ATTACH",
        default_value_t = AttachChoice::Auto
    )]
    pub attach: AttachChoice,

    /// Print nothing on success where a command would say what it changed.
    #[arg(long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, remove and inspect endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// A lower device's settings: reflective-relay emulation, host port.
    #[command(subcommand)]
    Uplink(UplinkCommand),
    /// Packet, byte and drop counters per endpoint.
    #[command(after_help = "Examples:\n  macvswitch stats\n  macvswitch stats vm1 --json")]
    Stats {
        /// Only this endpoint.
        #[arg(value_name = "NAME")]
        name: Option<IfName>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The whole switch as a tree: each lower device with its relay
    /// setting and host port, its endpoints grouped by VLAN; `!` marks an
    /// endpoint whose kernel state is not as recorded.
    #[command(after_help = "Examples:\n  macvswitch show\n  macvswitch show --json")]
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Frames, bytes and drops per second per endpoint, live (s: sort,
    /// q: quit), or one sample for scripts.
    #[command(
        after_help = "Examples:\n  macvswitch top\n  macvswitch top --once --json --interval 2"
    )]
    Top {
        /// Print one sample over the interval and exit.
        #[arg(long)]
        once: bool,
        /// Print JSON instead of text (with --once).
        #[arg(long, requires = "once")]
        json: bool,
        /// Seconds between samples.
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
        interval: f64,
    },
    /// A live stream of the frames the programs drop, one line each:
    /// time, endpoint, direction, reason, MACs, VLAN tags, ethertype, IP
    /// addresses, length. The programs publish only while a monitor runs.
    #[command(
        after_help = "Examples:\n  macvswitch monitor\n  macvswitch monitor --endpoint vm1 --reason wrong-vlan --json\n  macvswitch monitor --all --sample 100 --vlan 10\n\nThe programs publish at most 1000 events per second per CPU; losses (to that limit or to a full ring buffer) are reported each second. Up to 4 monitors run at once. A ready line (on stderr, or the first JSON line) says when events will be seen."
    )]
    Monitor(MonitorArgs),
    /// A frame's fate in an endpoint's program, as Open vSwitch's
    /// ofproto/trace tells it: the policy, each decision step, the verdict,
    /// the tag pushed or popped, the drop reason. The real program runs the
    /// frame (BPF_PROG_TEST_RUN) against the live policy with private
    /// counters: no counter changes and nothing is sent.
    #[command(
        after_help = "Examples:\n  macvswitch trace vm1 --from-guest\n  macvswitch trace vm1 --from-guest --vlan 20 --json\n  macvswitch trace vm1 --to-guest --vlan 10 --src-ip 192.0.2.7\n  macvswitch trace vm1 --to-guest --vlan 300,10 --tpid 802.1ad\n  macvswitch trace vm1 --from-guest --hex ffffffffffff0200000000010800...\n\nWithout --src/--dst a frame from the guest goes from its MAC to broadcast, a frame to the guest from 00:00:5e:00:53:01 (documentation range) to its MAC; IP addresses default to 192.0.2.1 > 192.0.2.2 or 2001:db8::1 > 2001:db8::2."
    )]
    Trace(TraceArgs),
    /// Remove every endpoint, program, link and pin macvswitch created.
    #[command(
        after_help = "Examples:\n  macvswitch reset\n  macvswitch reset --force   # also endpoints whose tap a guest holds"
    )]
    Reset {
        /// Also remove endpoints whose tap a process (a guest) holds open.
        #[arg(long)]
        force: bool,
    },
    /// Converge the host to a configuration file, with the fewest changes;
    /// prints the plan.
    #[command(
        after_help = "Example:\n  macvswitch apply /etc/macvswitch.toml --dry-run\n  macvswitch apply /etc/macvswitch.toml"
    )]
    Apply {
        /// The configuration file (TOML; see `macvswitch export`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the current state as a configuration file `apply` accepts.
    #[command(after_help = "Example:\n  macvswitch export > /etc/macvswitch.toml")]
    Export,
    /// Load a fresh copy of this binary's programs and swap every endpoint's
    /// links to it atomically (a new binary does this by itself).
    #[command(after_help = "Example:\n  macvswitch reload")]
    Reload,
    /// Converge the kernel to the state file: recreate after a reboot or
    /// a lower device's return, take over endpoints recreated by hand,
    /// forget endpoints deleted by hand.
    #[command(
        after_help = "Example (after a reboot; the systemd unit runs it at boot):\n  macvswitch restore"
    )]
    Restore,
    /// Keep the kernel in line with the state: clean up endpoints deleted
    /// out of band, bring endpoints back with their lower device, re-adopt
    /// macvtaps recreated by hand. SIGTERM or
    /// SIGINT stops it; the data path keeps forwarding.
    #[command(
        after_help = "Examples:\n  RUST_LOG=info macvswitch daemon\n  macvswitch daemon --metrics 127.0.0.1:9748\n\nThe log level comes from RUST_LOG (default: info). The programs do not log: `macvswitch monitor` shows their drops."
    )]
    Daemon {
        /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Run a command (QEMU) with the endpoint's tap open as fd 3 (or
    /// --fd), one open per queue, as libvirt hands a macvtap to QEMU.
    #[command(
        after_help = "Examples:\n  macvswitch exec vm1 -- qemu-system-x86_64 -m 1G -hda disk.img \\\n    -netdev tap,id=n0,fd=3,vhost=off -device virtio-net-pci,netdev=n0,mac=MAC\n  macvswitch exec vm1 --queues 4 -- qemu-system-x86_64 … \\\n    -netdev tap,id=n0,fds=3:4:5:6,vhost=off -device virtio-net-pci,mq=on,vectors=10,netdev=n0,mac=MAC\n\nMAC is the endpoint's (`macvswitch endpoint show NAME`); with another MAC every frame is dropped as spoofed-source."
    )]
    Exec(ExecArgs),
    /// Print the libvirt `<interface>` element that attaches a domain to
    /// the endpoint (`virsh attach-device DOMAIN FILE --config`, or paste it
    /// with `virsh edit DOMAIN`).
    #[command(
        name = "libvirt-xml",
        after_help = "Example:\n  macvswitch libvirt-xml vm1 > vm1-net.xml\n  virsh attach-device guest1 vm1-net.xml --config"
    )]
    LibvirtXml {
        /// The endpoint.
        name: IfName,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or
    /// powershell).
    #[command(
        after_help = "Examples:\n  macvswitch completions bash > /etc/bash_completion.d/macvswitch\n  macvswitch completions zsh > \"${fpath[1]}/_macvswitch\"\n  macvswitch completions fish > ~/.config/fish/completions/macvswitch.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write man pages for the command and every subcommand into DIR
    /// (`cargo xtask man` writes them to target/man).
    #[command(hide = true)]
    Man {
        /// Where the pages go (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Only this endpoint's frames (repeat for more).
    #[arg(long = "endpoint", value_name = "NAME")]
    pub endpoints: Vec<IfName>,
    /// Only drops for this reason (repeat for more).
    #[arg(
        long = "reason",
        value_name = "REASON",
        value_parser = clap::builder::PossibleValuesParser::new(
            macvswitch_common::DropReason::ALL.iter().map(|r| r.name())
        )
    )]
    pub reasons: Vec<String>,
    /// Only frames of this VLAN: tagged with it, or of a port on it.
    #[arg(long, value_name = "VID")]
    pub vlan: Option<Vid>,
    /// Also passed frames, 1 in --sample per CPU.
    #[arg(long)]
    pub all: bool,
    /// With --all: of passed frames, show 1 in N per CPU (default 100).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub sample: Option<u32>,
    /// One JSON object per line; the first says the monitor is ready.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("way").required(true).args(["from_guest", "to_guest"])))]
pub struct TraceArgs {
    /// The endpoint.
    #[arg(value_name = "NAME")]
    pub name: IfName,
    /// The frame comes from the guest (the macvtap's egress program).
    #[arg(long)]
    pub from_guest: bool,
    /// The frame goes to the guest (the macvtap's ingress program).
    #[arg(long)]
    pub to_guest: bool,
    /// Source MAC (default: the endpoint's from the guest, 00:00:5e:00:53:01 to it).
    #[arg(long, value_name = "MAC")]
    pub src: Option<EthAddr>,
    /// Destination MAC (default: broadcast from the guest, the endpoint's to it).
    #[arg(long, value_name = "MAC")]
    pub dst: Option<EthAddr>,
    /// VLAN tags in the frame's bytes, outermost first (0: a priority tag).
    #[arg(long, value_name = "V[,V]", value_delimiter = ',')]
    pub vlan: Vec<TagVid>,
    /// TPID of each --vlan tag: 802.1q (default) or 802.1ad.
    #[arg(long, value_name = "TPID[,TPID]", value_delimiter = ',')]
    pub tpid: Vec<Tpid>,
    /// What the frame carries (default: ipv4, or ipv6 for IPv6 addresses).
    #[arg(long, value_name = "ipv4|ipv6|arp|N")]
    pub ethertype: Option<EtherType>,
    /// Source IP address (IPv4, IPv6 or ARP frames).
    #[arg(long, value_name = "IP")]
    pub src_ip: Option<std::net::IpAddr>,
    /// Destination IP address.
    #[arg(long, value_name = "IP")]
    pub dst_ip: Option<std::net::IpAddr>,
    /// The whole frame as hex bytes instead of the options above.
    #[arg(
        long,
        value_name = "HEX",
        conflicts_with_all = ["src", "dst", "vlan", "tpid", "ethertype", "src_ip", "dst_ip"]
    )]
    pub hex: Option<HexFrame>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The endpoint whose tap the command gets.
    pub name: IfName,
    /// The fd number of the first queue.
    #[arg(long = "fd", value_name = "N", default_value_t = 3)]
    pub fd: i32,
    /// Open the tap this many times, as fds N..N+Q-1: one queue each (QEMU's
    /// `fds=3:4:…` with `mq=on`).
    #[arg(long, value_name = "Q", default_value_t = 1)]
    pub queues: u32,
    /// Run the command as this user (a name or uid), after opening the
    /// tap as root: QEMU needs no access to the tap node itself.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Create a macvtap endpoint on a lower device and attach the programs.
    #[command(after_help = "Example:\n  macvswitch endpoint add vm1 --lower eth0 --vlan 10")]
    Add(AddArgs),
    /// Change an endpoint's policy in place (no relink; the tap fd stays
    /// open): exactly the options given change, every other setting stays
    /// (native VLAN, native tagging, customer VLANs, priority, isolation,
    /// MAC spoofing). A new port kind (--vlan, --trunk on a non-trunk,
    /// --tunnel on a non-tunnel, --untagged) starts that kind afresh.
    #[command(
        after_help = "Examples:\n  macvswitch endpoint set vm1 --trunk 10,20,100-199 --native 10\n  macvswitch endpoint set vm1 --trunk 10,30        # keeps native 10\n  macvswitch endpoint set vm1 --native-tagged\n  macvswitch endpoint set vm1 --no-native --no-priority\n  macvswitch endpoint set vm1 --vlan 30 --priority 5"
    )]
    Set(SetArgs),
    /// Remove an endpoint: its macvtap, links, pins and tap node.
    #[command(
        after_help = "Examples:\n  macvswitch endpoint del vm1\n  macvswitch endpoint del vm1 --force   # even while a guest holds its tap"
    )]
    Del {
        /// The endpoint.
        #[arg(value_name = "NAME")]
        name: IfName,
        /// Delete it even if a process (a guest) holds its tap open.
        #[arg(long)]
        force: bool,
    },
    /// List endpoints.
    #[command(
        after_help = "Examples:\n  macvswitch endpoint list\n  macvswitch endpoint list --json"
    )]
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one endpoint, including the path of its tap device node and a
    /// QEMU command line for it.
    #[command(after_help = "Example:\n  macvswitch endpoint show vm1 --json")]
    Show {
        /// The endpoint.
        #[arg(value_name = "NAME")]
        name: IfName,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name of the macvtap link to create (at most 15 bytes).
    #[arg(value_name = "NAME")]
    pub name: IfName,
    /// The lower device the macvtap sits on, usually a NIC cabled to a
    /// switch.
    #[arg(long, value_name = "LOWER")]
    pub lower: IfName,
    /// How the kernel switches between endpoints on the same lower device.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Mode::Bridge)]
    pub mode: Mode,
    /// Guest MAC (unicast); default: derived from NAME, stable.
    #[arg(long, value_name = "MAC")]
    pub mac: Option<Mac>,
    #[command(flatten)]
    pub port: PortArgs,
    /// MTU of the endpoint; default: the lower device's.
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub mtu: Option<Mtu>,
    /// Let the guest send from any source MAC (this also lets it evade
    /// --isolated and --community by posing as the wire).
    #[arg(long)]
    pub allow_mac_spoofing: bool,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    #[command(flatten)]
    pub guards: GuardArgs,
}

/// Port security: what the guest may send beyond its VLAN and MAC.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// The IPv4/IPv6 addresses or prefixes the guest may use (comma list,
    /// at most 16 of each family); ARP, IP sources and neighbour
    /// advertisements outside it are dropped. Default: no address checks.
    #[arg(long, value_name = "LIST")]
    pub ip: Option<IpList>,
    /// Let the guest send DHCP/DHCPv6 server messages (a DHCP-server VM).
    #[arg(long)]
    pub allow_dhcp_server: bool,
    /// Let the guest send IPv6 router advertisements and redirects (a
    /// router VM).
    #[arg(long)]
    pub allow_ra: bool,
    /// Let the guest send STP and LACP frames (a bridge or bond in the
    /// guest).
    #[arg(long)]
    pub allow_bpdu: bool,
    /// Broadcast and multicast frames per second the guest may send
    /// (1..=1000000; a second of it as burst). Default: no limit.
    #[arg(long, value_name = "PPS")]
    pub storm_limit: Option<StormLimit>,
}

impl GuardArgs {
    fn guards(self) -> Guards {
        Guards {
            ip: self.ip,
            allow_dhcp_server: self.allow_dhcp_server,
            allow_ra: self.allow_ra,
            allow_bpdu: self.allow_bpdu,
            storm_limit: self.storm_limit,
        }
    }
}

/// `endpoint set`'s guard options: each given one changes, the others stay.
#[derive(Debug, Args)]
pub struct GuardSetArgs {
    /// Replace the addresses the guest may use (see `endpoint add --ip`).
    #[arg(long, value_name = "LIST", conflicts_with = "no_ip")]
    pub ip: Option<IpList>,
    /// Stop checking addresses.
    #[arg(long)]
    pub no_ip: bool,
    /// Let the guest send DHCP/DHCPv6 server messages.
    #[arg(long, conflicts_with = "no_allow_dhcp_server")]
    pub allow_dhcp_server: bool,
    /// Drop DHCP server messages again (the default).
    #[arg(long)]
    pub no_allow_dhcp_server: bool,
    /// Let the guest send router advertisements and redirects.
    #[arg(long, conflicts_with = "no_allow_ra")]
    pub allow_ra: bool,
    /// Drop router advertisements again (the default).
    #[arg(long)]
    pub no_allow_ra: bool,
    /// Let the guest send STP and LACP frames.
    #[arg(long, conflicts_with = "no_allow_bpdu")]
    pub allow_bpdu: bool,
    /// Drop BPDUs again (the default).
    #[arg(long)]
    pub no_allow_bpdu: bool,
    /// Change the broadcast/multicast limit (frames per second).
    #[arg(long, value_name = "PPS", conflicts_with = "no_storm_limit")]
    pub storm_limit: Option<StormLimit>,
    /// Remove the broadcast/multicast limit.
    #[arg(long)]
    pub no_storm_limit: bool,
}

/// `--flag`/`--no-flag` as a change: `None` when neither is given.
fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

impl GuardSetArgs {
    fn changes(self) -> GuardChanges {
        GuardChanges {
            ip: match (self.ip, self.no_ip) {
                (Some(list), _) => Some(Some(list)),
                (None, true) => Some(None),
                (None, false) => None,
            },
            allow_dhcp_server: switch(self.allow_dhcp_server, self.no_allow_dhcp_server),
            allow_ra: switch(self.allow_ra, self.no_allow_ra),
            allow_bpdu: switch(self.allow_bpdu, self.no_allow_bpdu),
            storm_limit: match (self.storm_limit, self.no_storm_limit) {
                (Some(limit), _) => Some(Some(limit)),
                (None, true) => Some(None),
                (None, false) => None,
            },
        }
    }
}

impl AddArgs {
    /// The endpoint asked for, its VLAN options resolved.
    pub fn spec(self) -> Result<EndpointSpec> {
        Ok(EndpointSpec {
            vlans: self
                .port
                .options(false)
                .port(&PortVlans::Untagged, self.port.priority)?,
            isolation: self.isolation.isolation().unwrap_or_default(),
            device: crate::model::state::Device::Macvtap,
            cni: None,
            name: self.name,
            lower: self.lower,
            mode: self.mode,
            mac: self.mac,
            priority: self.port.priority,
            mtu: self.mtu,
            allow_mac_spoofing: self.allow_mac_spoofing,
            guards: self.guards.guards(),
        })
    }
}

/// Private-VLAN membership (RFC 5517); the wire is always reachable.
#[derive(Debug, Args)]
pub struct IsolationArgs {
    /// Exchange frames only with the wire, never with another local
    /// endpoint.
    #[arg(long, conflicts_with = "community")]
    pub isolated: bool,
    /// Reach only the local endpoints of this community (and the wire).
    #[arg(long, value_name = "NAME")]
    pub community: Option<String>,
}

impl IsolationArgs {
    /// `None` when neither option was given.
    pub fn isolation(&self) -> Option<Isolation> {
        if self.isolated {
            Some(Isolation::Isolated)
        } else {
            self.community.clone().map(Isolation::Community)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UplinkCommand {
    /// Turn reflective-relay emulation on or off, add or remove the host
    /// port.
    #[command(
        after_help = "Examples:\n  macvswitch uplink set eth0 --reflective-relay on\n  macvswitch uplink set eth0 --host-port host0 --vlan 10 --address 192.0.2.1/24\n  macvswitch uplink set eth0 --no-host-port"
    )]
    Set(UplinkSetArgs),
    /// List lower devices with settings.
    #[command(after_help = "Example:\n  macvswitch uplink list --json")]
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one lower device's settings and relay counters.
    #[command(after_help = "Example:\n  macvswitch uplink show eth0 --json")]
    Show {
        /// The lower device.
        #[arg(value_name = "LOWER")]
        dev: IfName,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct UplinkSetArgs {
    /// The lower device.
    #[arg(value_name = "LOWER")]
    pub dev: IfName,
    /// Send frames for local endpoints back in instead of onto the wire,
    /// as a switch with reflective relay (hairpin) would.
    #[arg(long, value_enum, value_name = "on|off")]
    pub reflective_relay: Option<OnOff>,
    /// Create a host-side interface on LOWER, under the same VLAN and
    /// isolation programs, so the host reaches its guests.
    #[arg(long, value_name = "NAME", conflicts_with = "no_host_port")]
    pub host_port: Option<IfName>,
    /// Access VLAN of the host port; without it, untagged.
    #[arg(
        long,
        value_name = "VID",
        requires = "host_port",
        allow_negative_numbers = true
    )]
    pub vlan: Option<Vid>,
    /// Address for the host port (repeatable).
    #[arg(long = "address", value_name = "CIDR", requires = "host_port")]
    pub addresses: Vec<Cidr>,
    /// Remove the host port.
    #[arg(long)]
    pub no_host_port: bool,
    /// Delete the lower device's host port of another name, then create NAME.
    #[arg(long, requires = "host_port")]
    pub replace: bool,
}

impl UplinkSetArgs {
    pub fn request(self) -> UplinkSetRequest {
        UplinkSetRequest {
            lower: self.dev,
            reflective_relay: self.reflective_relay.map(|v| matches!(v, OnOff::On)),
            host_port: self.host_port.map(|name| HostPortSpec {
                name,
                vlan: self.vlan,
                addresses: self.addresses,
            }),
            remove_host_port: self.no_host_port,
            replace_host_port: self.replace,
        }
    }
}

/// The VLAN policy of a port. Without any, the port is untagged.
#[derive(Debug, Args)]
#[group(id = "kind", multiple = false)]
pub struct PortKindArgs {
    /// Access port on this VLAN (1..=4094); the guest sees it untagged.
    #[arg(
        long,
        value_name = "VID",
        group = "kind",
        allow_negative_numbers = true
    )]
    pub vlan: Option<Vid>,
    /// Trunk port carrying these VLANs tagged, e.g. 10,20,100-199.
    #[arg(long, value_name = "VIDLIST", group = "kind")]
    pub trunk: Option<VidList>,
    /// dot1q-tunnel (QinQ): every guest frame goes into this service VLAN
    /// under an 802.1ad tag.
    #[arg(
        long,
        value_name = "SVID",
        group = "kind",
        allow_negative_numbers = true
    )]
    pub tunnel: Option<Vid>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    #[command(flatten)]
    pub kind: PortKindArgs,
    /// Trunk: untagged guest frames go to this VLAN, and it reaches the
    /// guest untagged.
    #[arg(long, value_name = "VID", allow_negative_numbers = true)]
    pub native: Option<Vid>,
    /// Trunk: the native VLAN reaches the guest tagged.
    #[arg(long, conflicts_with = "native_untagged")]
    pub native_tagged: bool,
    /// Trunk: the native VLAN reaches the guest untagged (the default).
    #[arg(long)]
    pub native_untagged: bool,
    /// Tunnel: carry only these customer VLANs.
    #[arg(long, value_name = "VIDLIST")]
    pub tunnel_cvlans: Option<VidList>,
    /// PCP (0..=7) of the tags macvswitch pushes (access, native, tunnel);
    /// default: the priority of the guest's own priority tag, else 0.
    #[arg(long, value_name = "PCP", allow_negative_numbers = true)]
    pub priority: Option<Pcp>,
}

impl PortArgs {
    pub fn options(&self, untagged: bool) -> PortOptions {
        PortOptions {
            vlan: self.kind.vlan,
            trunk: self.kind.trunk.clone(),
            native: self.native,
            native_tagged: if self.native_tagged {
                Some(true)
            } else if self.native_untagged {
                Some(false)
            } else {
                None
            },
            tunnel: self.kind.tunnel,
            tunnel_cvlans: self.tunnel_cvlans.clone(),
            untagged,
            ..PortOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The endpoint.
    #[arg(value_name = "NAME")]
    pub name: IfName,
    #[command(flatten)]
    pub port: PortArgs,
    /// Make the port untagged.
    #[arg(long, conflicts_with_all = ["vlan", "trunk", "tunnel"])]
    pub untagged: bool,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    /// Leave any community and stop being isolated.
    #[arg(long, conflicts_with_all = ["isolated", "community"])]
    pub open: bool,
    /// Trunk: drop the native VLAN (untagged guest frames are dropped).
    #[arg(long, conflicts_with_all = ["native", "native_tagged", "native_untagged"])]
    pub no_native: bool,
    /// Tunnel: carry every customer VLAN again.
    #[arg(long, conflicts_with = "tunnel_cvlans")]
    pub all_cvlans: bool,
    /// Pushed tags take the guest's priority again (the default).
    #[arg(long, conflicts_with = "priority")]
    pub no_priority: bool,
    /// Let the guest send from any source MAC.
    #[arg(long, conflicts_with = "no_allow_mac_spoofing")]
    pub allow_mac_spoofing: bool,
    /// Drop frames from any source MAC but the endpoint's (the default).
    #[arg(long)]
    pub no_allow_mac_spoofing: bool,
    #[command(flatten)]
    pub guards: GuardSetArgs,
}

impl SetArgs {
    pub fn request(self) -> SetRequest {
        let mut port = self.port.options(self.untagged);
        port.no_native = self.no_native;
        port.all_cvlans = self.all_cvlans;
        SetRequest {
            port,
            priority: self.port.priority,
            clear_priority: self.no_priority,
            allow_mac_spoofing: switch(self.allow_mac_spoofing, self.no_allow_mac_spoofing),
            isolation: if self.open {
                Some(Isolation::Open)
            } else {
                self.isolation.isolation()
            },
            guards: self.guards.changes(),
            name: self.name,
        }
    }
}

/// `--mark-mask`: a u32 in hex (0x...) or decimal that can carry a tag.
fn parse_mark_mask(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    let mask = parsed.map_err(|_| "must be a 32-bit number, e.g. 0xffffff80".to_string())?;
    macvswitch_common::MarkCarriage::new(mask, 0)
        .map(|_| mask)
        .map_err(mark_mask_rule)
}

/// Writes `macvswitch.1` and one page per subcommand
/// (`macvswitch-endpoint-add.1`, …) into `dir`; returns the files written.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut command = Cli::command();
    command.build();
    write_man_page(dir, &command, "macvswitch", &mut written)?;
    Ok(written)
}

fn write_man_page(
    dir: &std::path::Path,
    command: &clap::Command,
    name: &str,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    if command.is_hide_set() {
        return Ok(());
    }
    let page = command.clone().name(name.to_string());
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page).render(&mut bytes)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, bytes)?;
    written.push(path);
    for sub in command.get_subcommands() {
        if sub.get_name() != "help" {
            write_man_page(dir, sub, &format!("{name}-{}", sub.get_name()), written)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
