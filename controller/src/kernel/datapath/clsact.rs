//! The clsact path: our `bpf` filters and the clsact qdisc, through a
//! small synchronous route-netlink socket (the rest of the data path is
//! synchronous, and aya 0.14 can neither list filters nor create-or-replace
//! one in a single request).
//!
//! Identity: on every hook, our filter is the `bpf` filter with priority
//! [`PRIORITY`], handle [`handle`] of that hook and a name starting with
//! [`NAME_PREFIX`]. It is written with `NLM_F_CREATE` and without
//! `NLM_F_EXCL`, so the kernel creates it the first time and afterwards
//! swaps the program of that very filter in place (`cls_bpf_change`
//! replaces the filter in the list under RCU): every frame meets the old
//! program or the new one, never none or both, and a restarted controller
//! can never add a second filter.

use std::{io, os::fd::RawFd};

use aya::programs::TcAttachType;
use rtnetlink::{
    packet_core::{
        DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader,
        NetlinkMessage, NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
        tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};

/// tc priority ("pref") of our filters on every hook: 0x4d53 ("MS"), below
/// the priorities the kernel hands out by itself (49152 and down), so ours
/// run before filters added without one, and rare enough not to collide
/// with hand-numbered ones.
pub const PRIORITY: u16 = 0x4d53;

/// Prefix of the names of our filters (`macvswitch:from_guest`, ...).
pub const NAME_PREFIX: &str = "macvswitch:";

/// The handle of our filter on a hook: 0x4d530001 on ingress, 0x4d530002 on
/// egress.
pub fn handle(hook: TcAttachType) -> u32 {
    match hook {
        TcAttachType::Egress => 0x4d53_0002,
        _ => 0x4d53_0001,
    }
}

/// The filter name for program `program`.
pub fn filter_name(program: &str) -> String {
    format!("{NAME_PREFIX}{program}")
}

/// `htons(ETH_P_ALL)`, as the kernel keeps it in `tcm_info`.
const PROTOCOL_ALL: u32 = (libc::ETH_P_ALL as u16).to_be() as u32;
const CLSACT_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

fn parent(hook: TcAttachType) -> TcHandle {
    TcHandle {
        major: 0xffff,
        minor: match hook {
            TcAttachType::Egress => TcHandle::MIN_EGRESS,
            _ => TcHandle::MIN_INGRESS,
        },
    }
}

/// One filter on a hook, as the kernel lists it.
#[derive(Clone, Debug)]
pub struct Filter {
    pub priority: u16,
    pub handle: u32,
    pub kind: String,
    pub name: Option<String>,
    pub prog_id: Option<u32>,
}

impl Filter {
    /// Whether this is a filter of an older macvswitch, which attached
    /// through aya with a priority and handle the kernel picked and named
    /// the filter after the program: left behind (and stacked by every
    /// reload) on kernels without TCX, removed once ours is in place.
    pub fn is_legacy(&self, hook: TcAttachType, programs: &[&str]) -> bool {
        self.kind == "bpf"
            && !self.is_ours(hook)
            && self
                .name
                .as_deref()
                .is_some_and(|name| programs.contains(&name))
    }

    /// Whether this is our filter on `hook`.
    pub fn is_ours(&self, hook: TcAttachType) -> bool {
        self.priority == PRIORITY
            && self.handle == handle(hook)
            && self.kind == "bpf"
            && self
                .name
                .as_deref()
                .is_some_and(|name| name.starts_with(NAME_PREFIX))
    }
}

/// What the kernel answered a request with.
pub enum Answer {
    Done(Vec<TcMessage>),
    /// errno (positive).
    Refused(i32),
}

fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<Answer> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut replies = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < bytes.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(Answer::Done(replies)),
                NetlinkPayload::Error(error) => {
                    return Ok(match error.code {
                        None => Answer::Done(replies),
                        Some(code) => Answer::Refused(-code.get()),
                    });
                }
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewTrafficFilter(message)
                    | RouteNetlinkMessage::NewQueueDiscipline(message),
                ) => replies.push(message),
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += (length + 3) & !3;
        }
    }
}

fn tc_message(ifindex: u32, handle: TcHandle, parent: TcHandle, info: u32) -> TcMessage {
    let mut message = TcMessage::default();
    message.header = TcHeader {
        index: ifindex as i32,
        handle,
        parent,
        info,
        ..TcHeader::default()
    };
    message
}

fn filter_info() -> u32 {
    (u32::from(PRIORITY) << 16) | PROTOCOL_ALL
}

/// Every filter on `hook` of `ifindex` (none without a clsact qdisc).
pub fn filters(ifindex: u32, hook: TcAttachType) -> io::Result<Vec<Filter>> {
    let message = tc_message(ifindex, TcHandle::UNSPEC, parent(hook), 0);
    let replies = match request(RouteNetlinkMessage::GetTrafficFilter(message), NLM_F_DUMP)? {
        Answer::Done(replies) => replies,
        // No qdisc there, or no such device: nothing of ours either.
        Answer::Refused(libc::EINVAL | libc::ENOENT | libc::ENODEV) => Vec::new(),
        Answer::Refused(errno) => return Err(io::Error::from_raw_os_error(errno)),
    };
    Ok(replies
        .into_iter()
        // The dump lists each priority once more without a handle.
        .filter(|message| u32::from(message.header.handle) != 0)
        .map(|message| {
            let mut filter = Filter {
                priority: (message.header.info >> 16) as u16,
                handle: message.header.handle.into(),
                kind: String::new(),
                name: None,
                prog_id: None,
            };
            for attribute in message.attributes {
                match attribute {
                    TcAttribute::Kind(kind) => filter.kind = kind,
                    TcAttribute::Options(options) => {
                        for option in options {
                            match option {
                                TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => {
                                    filter.name = Some(name);
                                }
                                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => {
                                    filter.prog_id = Some(id);
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            filter
        })
        .collect())
}

/// Creates our filter on `hook`, or swaps the program of the one there in
/// place (see the module's comment). Returns the errno of a refusal.
pub fn create_or_replace(
    ifindex: u32,
    hook: TcAttachType,
    prog_fd: RawFd,
    program: &str,
) -> io::Result<Result<(), i32>> {
    let mut message = tc_message(
        ifindex,
        TcHandle::from(handle(hook)),
        parent(hook),
        filter_info(),
    );
    message.attributes = vec![
        TcAttribute::Kind("bpf".to_string()),
        TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd as u32)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(filter_name(program))),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]),
    ];
    create_filter(message)
}

/// Sends a create-or-replace of the filter `message`; the errno of a
/// refusal.
fn create_filter(message: TcMessage) -> io::Result<Result<(), i32>> {
    Ok(
        match request(
            RouteNetlinkMessage::NewTrafficFilter(message),
            NLM_F_ACK | NLM_F_CREATE,
        )? {
            Answer::Done(_) => Ok(()),
            Answer::Refused(errno) => Err(errno),
        },
    )
}

/// Adds a classic-BPF `bpf` filter that matches nothing (no program fd
/// needed): proves the kernel has the bpf classifier. Returns the errno
/// of a refusal.
pub fn add_classic_probe(ifindex: u32) -> io::Result<Result<(), i32>> {
    const TCA_BPF_OPS_LEN: u16 = 4;
    const TCA_BPF_OPS: u16 = 5;
    // One instruction: `ret #0` (BPF_RET | BPF_K), i.e. no match.
    let mut insn = Vec::with_capacity(8);
    insn.extend_from_slice(&6u16.to_ne_bytes());
    insn.extend_from_slice(&[0, 0]);
    insn.extend_from_slice(&0u32.to_ne_bytes());
    let mut message = tc_message(
        ifindex,
        TcHandle::from(1),
        parent(TcAttachType::Ingress),
        filter_info(),
    );
    message.attributes = vec![
        TcAttribute::Kind("bpf".to_string()),
        TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
                TCA_BPF_OPS_LEN,
                1u16.to_ne_bytes().to_vec(),
            ))),
            TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(TCA_BPF_OPS, insn))),
        ]),
    ];
    create_filter(message)
}

/// Asks the kernel to make a macvtap on ifindex 0 (no device): one that
/// knows macvtaps looks for the lower device and answers ENODEV, one that
/// does not answers EOPNOTSUPP. Returns the errno, or 0 if it made one.
pub fn macvtap_probe() -> io::Result<i32> {
    let mut message = LinkMessage::default();
    message.attributes = vec![
        LinkAttribute::Link(0),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::MacVtap)]),
    ];
    Ok(
        match request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )? {
            Answer::Done(_) => 0,
            Answer::Refused(errno) => errno,
        },
    )
}

/// Deletes our filter on `hook`; one that is not there is fine.
pub fn delete(ifindex: u32, hook: TcAttachType) -> io::Result<()> {
    delete_at(ifindex, hook, PRIORITY, handle(hook))
}

/// Deletes the `bpf` filter with `priority` and `handle` on `hook`; one
/// that is not there is fine.
pub fn delete_at(ifindex: u32, hook: TcAttachType, priority: u16, handle: u32) -> io::Result<()> {
    let mut message = tc_message(
        ifindex,
        TcHandle::from(handle),
        parent(hook),
        (u32::from(priority) << 16) | PROTOCOL_ALL,
    );
    message.attributes = vec![TcAttribute::Kind("bpf".to_string())];
    match request(RouteNetlinkMessage::DelTrafficFilter(message), NLM_F_ACK)? {
        Answer::Done(_) | Answer::Refused(libc::ENOENT | libc::EINVAL | libc::ENODEV) => Ok(()),
        Answer::Refused(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// The kinds of the qdiscs at the clsact/ingress slot of `ifindex`
/// (`clsact`, `ingress`), if any.
pub fn ingress_qdisc(ifindex: u32) -> io::Result<Option<String>> {
    let message = tc_message(0, TcHandle::UNSPEC, TcHandle::UNSPEC, 0);
    let replies = match request(RouteNetlinkMessage::GetQueueDiscipline(message), NLM_F_DUMP)? {
        Answer::Done(replies) => replies,
        Answer::Refused(errno) => return Err(io::Error::from_raw_os_error(errno)),
    };
    Ok(replies
        .into_iter()
        .filter(|m| m.header.index == ifindex as i32 && m.header.parent == TcHandle::CLSACT)
        .find_map(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                TcAttribute::Kind(kind) => Some(kind),
                _ => None,
            })
        }))
}

/// Adds a clsact qdisc. `Ok(Ok(true))` if this call made it, `Ok(Ok(false))`
/// if one was there already, `Ok(Err(errno))` if the kernel refused.
pub fn add_qdisc(ifindex: u32) -> io::Result<Result<bool, i32>> {
    let mut message = tc_message(ifindex, CLSACT_HANDLE, TcHandle::CLSACT, 0);
    message.attributes = vec![TcAttribute::Kind("clsact".to_string())];
    Ok(
        match request(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )? {
            Answer::Done(_) => Ok(true),
            Answer::Refused(libc::EEXIST) => Ok(false),
            Answer::Refused(errno) => Err(errno),
        },
    )
}

/// Deletes the clsact qdisc of `ifindex`; none there is fine.
pub fn delete_qdisc(ifindex: u32) -> io::Result<()> {
    let mut message = tc_message(ifindex, CLSACT_HANDLE, TcHandle::CLSACT, 0);
    message.attributes = vec![TcAttribute::Kind("clsact".to_string())];
    match request(RouteNetlinkMessage::DelQueueDiscipline(message), NLM_F_ACK)? {
        Answer::Done(_) | Answer::Refused(libc::ENOENT | libc::EINVAL | libc::ENODEV) => Ok(()),
        Answer::Refused(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}
