//! The few rtnetlink operations macvswitch needs: find links, create and
//! delete macvtaps, bring them up.

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkMacVlan, LinkMacVtap, LinkUnspec,
    packet_core::ErrorMessage,
    packet_route::address::AddressAttribute,
    packet_route::link::{
        InfoData, InfoKind, InfoMacVlan, InfoMacVtap, LinkAttribute, LinkFlags, LinkInfo,
        LinkLayerType, LinkMessage, MacVlanMode,
    },
};

use crate::{
    error::{Error, Result},
    model::types::{Cidr, Mac, Mode},
};

/// The stacked devices macvswitch creates on a lower device.
#[derive(Clone, Copy, Debug)]
pub enum Stacked {
    /// A guest endpoint, with a tap character device.
    Macvtap,
    /// The host port: a plain interface for the host's own stack.
    Macvlan,
}

/// What we need to know about a link.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    /// Ifindex of the lower device, for stacked links.
    pub lower: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// An Ethernet device (not loopback), the only kind a macvtap can sit
    /// on.
    pub ethernet: bool,
    /// Ifindex of the bridge, bond, team or VRF it is enslaved to.
    pub master: Option<u32>,
    /// A macvlan or macvtap in passthru mode.
    pub passthru: bool,
    /// Administratively up.
    pub up: bool,
}

impl Link {
    fn from_message(message: LinkMessage) -> Self {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            kind: None,
            lower: None,
            mac: None,
            mtu: None,
            ethernet: message.header.link_layer_type == LinkLayerType::Ether,
            master: None,
            passthru: false,
            up: message.header.flags.contains(LinkFlags::Up),
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Link(index) => link.lower = Some(index),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                LinkAttribute::Address(bytes) => link.mac = bytes.try_into().ok(),
                LinkAttribute::Controller(index) => link.master = Some(index),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind),
                            LinkInfo::Data(InfoData::MacVlan(data)) => {
                                link.passthru |= data.iter().any(|d| {
                                    matches!(d, InfoMacVlan::Mode(MacVlanMode::Passthrough))
                                });
                            }
                            LinkInfo::Data(InfoData::MacVtap(data)) => {
                                link.passthru |= data.iter().any(|d| {
                                    matches!(d, InfoMacVtap::Mode(MacVlanMode::Passthrough))
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    pub fn is_macvlan_family(&self) -> bool {
        matches!(self.kind, Some(InfoKind::MacVlan | InfoKind::MacVtap))
    }
}

pub struct Netlink {
    handle: Handle,
}

fn is_no_such_device(error: &rtnetlink::Error) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(ErrorMessage { code: Some(code), .. })
        if code.get() == -libc::ENODEV)
}

impl Netlink {
    /// Opens a route-netlink socket in the current network namespace.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::io("opening a route netlink socket", e))?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Opens a route-netlink socket in the network namespace at `path`: a
    /// socket stays in the namespace it was made in.
    pub fn connect_in(path: &std::path::Path) -> Result<Self> {
        crate::kernel::netns::run_in(path, Self::connect)
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(found) => Ok(found.map(Link::from_message)),
            Err(e) if is_no_such_device(&e) => Ok(None),
            Err(e) => Err(Error::netlink(format!("looking up link {index}"), e)),
        }
    }

    /// Moves link `index` into the namespace `netns` (an open namespace
    /// fd) as `name`, asking for ifindex `new_index` there if given (the
    /// kernel refuses one that is taken).
    pub async fn move_to_netns(
        &self,
        index: u32,
        netns: std::os::fd::RawFd,
        name: &str,
        new_index: Option<u32>,
    ) -> Result<()> {
        let mut message = LinkUnspec::new_with_index(index)
            .setns_by_fd(netns)
            .name(name.to_string());
        if let Some(new_index) = new_index {
            message = message.append_extra_attribute(LinkAttribute::NewIfIndex(new_index as i32));
        }
        self.handle
            .link()
            .set(message.build())
            .execute()
            .await
            .map_err(|e| {
                Error::netlink(
                    format!("moving link {index} into another namespace as {name}"),
                    e,
                )
            })
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(Link::from_message)
            .try_collect()
            .await
            .map_err(|e| Error::netlink("listing links", e))
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(found) => Ok(found.map(Link::from_message)),
            Err(e) if is_no_such_device(&e) => Ok(None),
            Err(e) => Err(Error::netlink(format!("looking up {name}"), e)),
        }
    }

    /// Creates a macvtap or macvlan on `lower`, down, so that programs are
    /// attached before the first frame flows.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_stacked(
        &self,
        kind: Stacked,
        name: &str,
        lower: u32,
        mode: Mode,
        mac: Mac,
        mtu: u32,
    ) -> Result<Link> {
        let mode = match mode {
            Mode::Bridge => MacVlanMode::Bridge,
            Mode::Vepa => MacVlanMode::Vepa,
            Mode::Private => MacVlanMode::Private,
            Mode::Passthru => MacVlanMode::Passthrough,
        };
        let message = match kind {
            Stacked::Macvtap => LinkMacVtap::new(name, lower, mode)
                .address(mac.octets().to_vec())
                .mtu(mtu)
                .build(),
            Stacked::Macvlan => LinkMacVlan::new(name, lower, mode)
                .address(mac.octets().to_vec())
                .mtu(mtu)
                .build(),
        };
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("creating {kind:?} {name}"), e))?;
        self.link_by_name(name).await?.ok_or_else(|| {
            Error::Refused(format!(
                "macvtap {name} vanished right after it was created"
            ))
        })
    }

    /// Brings a link up, receiving all multicast: a macvtap otherwise gets
    /// only the groups in its filter list, which the guest cannot extend
    /// (IPv6 neighbour discovery needs its solicited-node groups). The
    /// programs still confine multicast to the port's VLANs.
    pub async fn bring_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .allmulticast(true)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("bringing up link {index}"), e))
    }

    pub async fn add_address(&self, index: u32, cidr: Cidr) -> Result<()> {
        self.handle
            .address()
            .add(index, cidr.addr, cidr.prefix)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("adding {cidr} to link {index}"), e))
    }

    /// The addresses on link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Cidr>> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink(format!("listing the addresses of link {index}"), e))?;
        Ok(messages
            .into_iter()
            .filter_map(|message| {
                let prefix = message.header.prefix_len;
                message
                    .attributes
                    .into_iter()
                    .find_map(|attribute| match attribute {
                        AddressAttribute::Address(addr) => Some(Cidr { addr, prefix }),
                        _ => None,
                    })
            })
            .collect())
    }

    /// Adds a route to `destination` via `gateway` on link `index`.
    pub async fn add_route(
        &self,
        index: u32,
        destination: Cidr,
        gateway: Option<std::net::IpAddr>,
    ) -> Result<()> {
        use std::net::IpAddr;
        let context = || format!("adding a route to {destination} on link {index}");
        let mut builder = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
            .output_interface(index)
            .destination_prefix(destination.addr, destination.prefix)
            .map_err(|e| Error::Refused(format!("{}: {e}", context())))?;
        if let Some(gateway) = gateway {
            builder = builder
                .gateway(gateway)
                .map_err(|e| Error::Refused(format!("{}: {e}", context())))?;
        }
        self.handle
            .route()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| Error::netlink(context(), e))
    }

    /// Removes address `cidr` from link `index`; one that is not there is
    /// not an error.
    pub async fn del_address(&self, index: u32, cidr: Cidr) -> Result<()> {
        let context = || format!("removing {cidr} from link {index}");
        let found: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(cidr.addr)
            .set_prefix_length_filter(cidr.prefix)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink(context(), e))?;
        for message in found {
            self.handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(|e| Error::netlink(context(), e))?;
        }
        Ok(())
    }

    /// Deletes a link; one that is already gone is not an error.
    pub async fn delete(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_no_such_device(&e) => Ok(()),
            Err(e) => Err(Error::netlink(format!("deleting link {index}"), e)),
        }
    }
}
