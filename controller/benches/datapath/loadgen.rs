//! Load generators and counters with minimal per-frame work: writers on a
//! tap fd (the guest sending), a reader on a tap fd (the guest receiving),
//! an AF_PACKET `sendmmsg` sender on the switch port, and the switch
//! port's own kernel counters.
//!
//! Tap fds (macvtap queues and TUN/TAP queues alike) are set up as QEMU
//! sets them up: IFF_VNET_HDR, a 10-byte virtio-net header (all zero: no
//! offloads) before every frame, and `TUNSETSNDBUF` INT_MAX (with the
//! default send buffer a writer can wait for good on a lost write-space
//! wake-up). The reader never sleeps: a reader that blocks makes the sender
//! pay for waking it, which would feed back into the ratios.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use macvswitch_tests::NetNs;

/// `struct virtio_net_hdr` without offloads.
pub const VNET_HDR_LEN: usize = 10;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETSNDBUF: libc::c_ulong = 0x4004_54d4;
const TUNSETQUEUE: libc::c_ulong = 0x4004_54d9;
const IFF_TAP: i16 = 0x0002;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_DETACH_QUEUE: i16 = 0x0400;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
/// The flags QEMU opens a multi-queue tap with.
const TAP_FLAGS: i16 = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
/// Frames per `sendmmsg` call.
const BATCH: usize = 64;
/// A reader that has seen no frame for this long after the generators
/// stopped has drained its queue.
const DRAIN_IDLE: Duration = Duration::from_millis(20);

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Where a guest's queues come from.
#[derive(Clone, Debug)]
pub enum Queues {
    /// A macvtap's char node: every open is one more queue.
    Macvtap(std::path::PathBuf),
    /// A multi-queue TUN/TAP device `ifname` in network namespace `netns`
    /// (by name): `TUNSETIFF` on a fresh /dev/net/tun fd attaches a queue.
    Tap { netns: String, ifname: String },
}

impl Queues {
    /// Opens one queue (non-blocking), as QEMU would.
    pub fn open(&self) -> OwnedFd {
        match self {
            Queues::Macvtap(node) => open_queue(node),
            Queues::Tap { netns, ifname } => {
                macvswitch_tests::netns::in_netns(netns, || open_tap(ifname))
            }
        }
    }
}

/// Opens one queue of a macvtap through its char node (non-blocking),
/// checking that it carries the virtio-net header.
pub fn open_queue(node: &Path) -> OwnedFd {
    let c = CString::new(node.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: valid C string.
    let raw = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(raw >= 0, "open {}: {}", node.display(), last_error());
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = [0u8; 40];
    // SAFETY: ifr is an ifreq-sized out-buffer.
    let rc = unsafe { libc::ioctl(raw, TUNGETIFF as _, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNGETIFF {}: {}", node.display(), last_error());
    let flags = i16::from_ne_bytes([ifr[16], ifr[17]]);
    assert_ne!(
        flags & IFF_VNET_HDR,
        0,
        "{}: a fresh macvtap fd should have IFF_VNET_HDR",
        node.display()
    );
    set_sndbuf(&fd, &node.display().to_string());
    fd
}

/// Attaches one queue of the multi-queue tap `ifname` in the calling
/// thread's namespace, creating the device if it does not exist.
pub fn open_tap(ifname: &str) -> OwnedFd {
    // SAFETY: a valid C string.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(raw >= 0, "open /dev/net/tun: {}", last_error());
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = [0u8; 40];
    assert!(ifname.len() < libc::IFNAMSIZ, "{ifname}: name too long");
    ifr[..ifname.len()].copy_from_slice(ifname.as_bytes());
    ifr[16..18].copy_from_slice(&TAP_FLAGS.to_ne_bytes());
    // SAFETY: ifr is an ifreq-sized buffer holding a name and flags.
    let rc = unsafe { libc::ioctl(raw, TUNSETIFF as _, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF {ifname}: {}", last_error());
    set_sndbuf(&fd, ifname);
    fd
}

/// Takes a tap queue out of service (`TUNSETQUEUE`, IFF_DETACH_QUEUE): it
/// gets no more frames, but keeps the device and its carrier up, so that
/// queues attached per run find the device as macvtap queues find theirs.
pub fn detach_tap_queue(fd: &OwnedFd, ifname: &str) {
    let mut ifr = [0u8; 40];
    ifr[16..18].copy_from_slice(&IFF_DETACH_QUEUE.to_ne_bytes());
    // SAFETY: ifr is an ifreq-sized buffer holding the flags.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETQUEUE as _, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETQUEUE detach {ifname}: {}", last_error());
}

/// `TUNSETSNDBUF` INT_MAX, as QEMU does on every tap fd.
fn set_sndbuf(fd: &OwnedFd, what: &str) {
    let sndbuf: libc::c_int = libc::c_int::MAX;
    // SAFETY: the ioctl reads one int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETSNDBUF as _, &sndbuf) };
    assert_eq!(rc, 0, "TUNSETSNDBUF {what}: {}", last_error());
}

/// `frame` behind a zero virtio-net header.
pub fn with_vnet_hdr(frame: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; VNET_HDR_LEN];
    buf.extend_from_slice(frame);
    buf
}

fn poll(fd: RawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    rc > 0 && p.revents & events != 0
}

/// What one generator thread did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub frames: u64,
    /// Calls refused for lack of buffer space (EAGAIN / ENOBUFS).
    pub refused: u64,
    pub elapsed: Duration,
}

impl Sent {
    /// A call (`what`, which returned `n`) refused for lack of buffer space
    /// is counted; any other failure stops the bench.
    fn count_refusal(&mut self, what: &str, n: i64) {
        let e = last_error();
        assert!(
            matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)),
            "{what}: {e} ({n})"
        );
        self.refused += 1;
    }
}

/// Writes `buf` (header + frame) to a tap fd until `run_time` has passed or
/// `max` frames went out.
pub fn write_tap(fd: RawFd, buf: &[u8], run_time: Duration, max: u64) -> Sent {
    let start = Instant::now();
    let mut sent = Sent::default();
    while sent.frames < max {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n == buf.len() as isize {
            sent.frames += 1;
        } else {
            sent.count_refusal("write to tap", n as i64);
            poll(fd, libc::POLLOUT, Duration::from_millis(1));
        }
        if sent.frames % 64 == 0 && start.elapsed() >= run_time {
            break;
        }
    }
    sent.elapsed = start.elapsed();
    sent
}

/// Counts frames read from a tap fd until `stop` is set and the queue has
/// been empty for [`DRAIN_IDLE`] (or `hard_limit` passed). Spins on
/// non-blocking reads: it never sleeps, so no writer pays a wake-up.
pub fn read_tap(fd: RawFd, stop: &AtomicBool, hard_limit: Duration) -> u64 {
    let start = Instant::now();
    let mut last_frame = start;
    let mut buf = vec![0u8; 65536];
    let mut frames = 0u64;
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > VNET_HDR_LEN as isize {
            frames += 1;
            // Clock reads only every 64 frames while frames flow.
            if frames.is_multiple_of(64) {
                last_frame = Instant::now();
            }
            continue;
        }
        if n < 0 {
            let e = last_error();
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "read from tap: {e}");
        }
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) && now - last_frame >= DRAIN_IDLE {
            return frames;
        }
        if now - start > hard_limit {
            return frames;
        }
        std::hint::spin_loop();
    }
}

/// An AF_PACKET socket for sending on `ifname` in `ns`; bound with protocol
/// 0, so it receives nothing. `mark` (SO_MARK) is the VID the wire's
/// `bench_push_tag` program pushes into skb metadata (0: none).
pub fn packet_sender(ns: &NetNs, ifname: &str, mark: u32) -> OwnedFd {
    let ifname = ifname.to_string();
    ns.enter_and(move || {
        let c = CString::new(ifname.as_str()).expect("name");
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {ifname}");
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0, "socket(AF_PACKET): {}", last_error());
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind(AF_PACKET, {ifname}): {}", last_error());
        // SAFETY: SO_MARK takes one u32.
        let rc = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&mark as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_MARK on {ifname}: {}", last_error());
        fd
    })
}

/// Sends `frame` in batches of 64 with `sendmmsg` until `run_time` has
/// passed or `max` frames went out.
pub fn send_packets(fd: RawFd, frame: &[u8], run_time: Duration, max: u64) -> Sent {
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: zeroed mmsghdrs are valid; each points at the one iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let start = Instant::now();
    let mut sent = Sent::default();
    while sent.frames < max && start.elapsed() < run_time {
        let want = (max - sent.frames).min(BATCH as u64) as libc::c_uint;
        // SAFETY: msgs holds `want` valid headers whose buffers outlive the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), want, 0) };
        if n > 0 {
            sent.frames += n as u64;
        } else {
            sent.count_refusal("sendmmsg", n as i64);
            std::thread::yield_now();
        }
    }
    sent.elapsed = start.elapsed();
    sent
}

/// The kernel's rx packet counter of `ifname` in `ns` (`ip -s -j`).
pub fn rx_packets(ns: &NetNs, ifname: &str) -> u64 {
    let out = ns.ip_ok(&["-s", "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rx packets for {ifname}: {out}"))
}
