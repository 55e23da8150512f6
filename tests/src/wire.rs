//! AF_PACKET view of a link: what a trunk switch port sees.
//!
//! The kernel keeps 802.1Q tags in skb metadata (not in the bytes) both for
//! tags pushed by eBPF and for tags stripped on receive, so the VID is only
//! visible through PACKET_AUXDATA control messages.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::expect::Receive;
use crate::netns::NetNs;

// From <linux/if_packet.h>; defined here so the pure parser is testable
// without depending on libc's layout of tpacket_auxdata.
pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_OUTGOING: u8 = 4;
const ETH_P_ALL: u16 = 0x0003;

/// `struct tpacket_auxdata` (20 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TpacketAuxdata {
    pub tp_status: u32,
    pub tp_len: u32,
    pub tp_snaplen: u32,
    pub tp_mac: u16,
    pub tp_net: u16,
    pub tp_vlan_tci: u16,
    pub tp_vlan_tpid: u16,
}

impl TpacketAuxdata {
    /// Decodes the cmsg payload (native endianness, as the kernel wrote it).
    pub fn from_bytes(b: &[u8]) -> Option<TpacketAuxdata> {
        if b.len() < std::mem::size_of::<TpacketAuxdata>() {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let u16_at = |o: usize| u16::from_ne_bytes(b[o..o + 2].try_into().unwrap());
        Some(TpacketAuxdata {
            tp_status: u32_at(0),
            tp_len: u32_at(4),
            tp_snaplen: u32_at(8),
            tp_mac: u16_at(12),
            tp_net: u16_at(14),
            tp_vlan_tci: u16_at(16),
            tp_vlan_tpid: u16_at(18),
        })
    }

    /// The VLAN tag held in skb metadata, as (tpid, tci). Old kernels did not
    /// report the TPID; then it can only have been 802.1Q.
    pub fn vlan(&self) -> Option<(u16, u16)> {
        if self.tp_status & TP_STATUS_VLAN_VALID == 0 {
            return None;
        }
        let tpid = if self.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
            self.tp_vlan_tpid
        } else {
            0x8100
        };
        Some((tpid, self.tp_vlan_tci))
    }
}

/// One received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// Frame bytes as AF_PACKET delivers them (metadata tag not inline).
    pub bytes: Vec<u8>,
    /// (tpid, tci) from PACKET_AUXDATA, if the skb carried a tag.
    pub vlan: Option<(u16, u16)>,
}

impl WireFrame {
    pub fn vid(&self) -> Option<u16> {
        self.vlan.map(|(_, tci)| tci & 0x0fff)
    }
}

/// Raw AF_PACKET socket bound to one interface.
#[derive(Debug)]
pub struct WireSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn cvt(rc: libc::c_int, what: &str) -> libc::c_int {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
    rc
}

impl WireSocket {
    /// Opens a socket on `ifname` inside `ns`.
    pub fn open(ns: &NetNs, ifname: &str) -> WireSocket {
        let ifname = ifname.to_string();
        ns.enter_and(move || Self::open_here(&ifname))
    }

    /// Opens a socket on `ifname` in the calling thread's namespace.
    pub fn open_here(ifname: &str) -> WireSocket {
        let cname = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {ifname}");
        // Protocol 0 first: the socket receives nothing until bound to the
        // interface, so no frames from other links sneak into the queue.
        // SAFETY: plain socket(2) call.
        let raw = cvt(
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
            "socket(AF_PACKET)",
        );
        // SAFETY: raw is a fresh, owned fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: option value points to a c_int of the given size.
        cvt(
            unsafe {
                libc::setsockopt(
                    raw,
                    libc::SOL_PACKET,
                    PACKET_AUXDATA,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            },
            "setsockopt(PACKET_AUXDATA)",
        );
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the given length.
        cvt(
            unsafe {
                libc::bind(
                    raw,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            },
            &format!("bind(AF_PACKET, {ifname})"),
        );
        WireSocket { fd, ifindex }
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Gives every frame sent from now on `skb->mark = mark` (SO_MARK).
    pub fn set_mark(&self, mark: u32) {
        // SAFETY: option value points to a u32 of the given size.
        cvt(
            unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&mark as *const u32).cast(),
                    std::mem::size_of::<u32>() as libc::socklen_t,
                )
            },
            "setsockopt(SO_MARK)",
        );
    }

    /// Sends one frame (bytes exactly as given, inline tags stay inline; the
    /// receiving device's stack moves them into metadata).
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: buffer valid for frame.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert!(
            n == frame.len() as isize,
            "send on ifindex {}: {} ({n})",
            self.ifindex,
            std::io::Error::last_os_error()
        );
    }

    /// Sends without blocking; `false` when the socket's send buffer is
    /// full. A frame queued at a tap nobody reads stays charged to the
    /// sender's buffer, so a blocking sender whose reader has stopped would
    /// wait for good.
    pub fn try_send(&self, frame: &[u8]) -> bool {
        // SAFETY: buffer valid for frame.len() bytes.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            return false;
        }
        assert!(
            n == frame.len() as isize,
            "send on ifindex {}: {} ({n})",
            self.ifindex,
            std::io::Error::last_os_error()
        );
        true
    }

    /// Next incoming frame (outgoing copies are skipped) within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<WireFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !poll_in(self.fd.as_raw_fd(), left) {
                return None;
            }
            // Outgoing copies are skipped; poll() ends the loop once the
            // queue is empty and the deadline has passed.
            if let Some(f) = self.recv_one() {
                return Some(f);
            }
        }
    }

    /// Everything incoming during `window`.
    pub fn recv_all(&self, window: Duration) -> Vec<WireFrame> {
        self.all_within(window)
    }

    /// First incoming frame satisfying `pred` within `timeout`.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        pred: impl FnMut(&WireFrame) -> bool,
    ) -> Option<WireFrame> {
        self.first_matching(timeout, pred)
    }

    /// Discards anything already queued.
    pub fn drain(&self) {
        while self.recv_timeout(Duration::ZERO).is_some() {}
    }

    /// Reads one queued frame; `None` if it was outgoing or nothing was
    /// there (non-blocking).
    fn recv_one(&self) -> Option<WireFrame> {
        let mut buf = vec![0u8; 65536];
        let mut cbuf = [0u64; 16]; // 128 bytes, 8-aligned for cmsghdr
        // SAFETY: zeroed sockaddr_ll is a valid out-buffer.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: zeroed msghdr, then all pointers set to live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: msg describes valid buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert!(
                e.kind() == std::io::ErrorKind::WouldBlock,
                "recvmsg on ifindex {}: {e}",
                self.ifindex
            );
            return None;
        }
        if sll.sll_pkttype == PACKET_OUTGOING {
            return None;
        }
        buf.truncate(n as usize);
        let mut vlan = None;
        // SAFETY: standard cmsg walk over the control buffer the kernel filled.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let data = libc::CMSG_DATA(c);
                    let len = (*c).cmsg_len - (data as usize - c as usize);
                    let bytes = std::slice::from_raw_parts(data, len);
                    vlan = TpacketAuxdata::from_bytes(bytes).and_then(|a| a.vlan());
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Some(WireFrame { bytes: buf, vlan })
    }
}

/// poll(2) for readability; true if readable before `timeout`.
pub(crate) fn poll_in(fd: libc::c_int, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
        return rc > 0 && p.revents & libc::POLLIN != 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: u32, tci: u16, tpid: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&status.to_ne_bytes());
        b.extend_from_slice(&60u32.to_ne_bytes());
        b.extend_from_slice(&60u32.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&14u16.to_ne_bytes());
        b.extend_from_slice(&tci.to_ne_bytes());
        b.extend_from_slice(&tpid.to_ne_bytes());
        b
    }

    #[test]
    fn auxdata_layout_matches_kernel() {
        assert_eq!(std::mem::size_of::<TpacketAuxdata>(), 20);
    }

    #[test]
    fn auxdata_without_vlan() {
        let a = TpacketAuxdata::from_bytes(&raw(1, 0, 0)).unwrap();
        assert_eq!(a.tp_len, 60);
        assert_eq!(a.tp_net, 14);
        assert_eq!(a.vlan(), None);
    }

    #[test]
    fn auxdata_with_vlan_and_tpid() {
        let st = TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID;
        let a = TpacketAuxdata::from_bytes(&raw(st, 0x600a, 0x88a8)).unwrap();
        assert_eq!(a.vlan(), Some((0x88a8, 0x600a)));
        let f = WireFrame {
            bytes: vec![],
            vlan: a.vlan(),
        };
        assert_eq!(f.vid(), Some(10));
    }

    #[test]
    fn auxdata_vlan_without_tpid_assumes_8021q() {
        let a = TpacketAuxdata::from_bytes(&raw(TP_STATUS_VLAN_VALID, 20, 0)).unwrap();
        assert_eq!(a.vlan(), Some((0x8100, 20)));
    }

    #[test]
    fn auxdata_too_short() {
        assert_eq!(TpacketAuxdata::from_bytes(&[0u8; 19]), None);
    }
}
