//! Command-line interface: verbs grouped by object, `--json` on every read.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::types::{IfName, Mac, Mode, Mtu, Vid};

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
        default_value = "/var/lib/macvswitch"
    )]
    pub state_dir: PathBuf,

    /// A directory on a bpffs for the pins (mounted if it is not on one).
    #[arg(
        long,
        global = true,
        env = "MACVSWITCH_BPFFS",
        default_value = "/sys/fs/bpf/macvswitch"
    )]
    pub bpffs: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, remove and inspect endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Packet, byte and drop counters per endpoint.
    Stats {
        /// Only this endpoint.
        name: Option<IfName>,
        #[arg(long)]
        json: bool,
    },
    /// Remove every endpoint, program, link and pin macvswitch created.
    Reset,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Create a macvtap endpoint on a lower device and attach the programs.
    #[command(after_help = "Example:\n  macvswitch endpoint add vm1 --lower eth0 --vlan 10")]
    Add(AddArgs),
    /// Remove an endpoint: its macvtap, links, pins and tap node.
    Del { name: IfName },
    /// List endpoints.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one endpoint, including the path of its tap device node.
    Show {
        name: IfName,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name of the macvtap link to create (at most 15 bytes).
    pub name: IfName,
    /// The device the macvtap sits on, usually a NIC cabled to a switch.
    #[arg(long)]
    pub lower: IfName,
    /// How the kernel switches between endpoints on the same lower device.
    #[arg(long, value_enum, default_value_t = Mode::Bridge)]
    pub mode: Mode,
    /// Guest MAC (unicast); default: derived from NAME, stable.
    #[arg(long)]
    pub mac: Option<Mac>,
    /// Access VLAN (1..=4094); without it the port is untagged.
    #[arg(long)]
    pub vlan: Option<Vid>,
    /// MTU of the endpoint; default: the lower device's.
    #[arg(long)]
    pub mtu: Option<Mtu>,
    /// Let the guest send from any source MAC.
    #[arg(long)]
    pub allow_mac_spoofing: bool,
}
