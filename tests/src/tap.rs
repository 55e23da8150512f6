//! Plain-frame access to a macvtap character device, as a guest would have.
//!
//! A fresh macvtap fd has IFF_VNET_HDR set (10-byte virtio-net header on
//! every read and write). TUNSETIFF with IFF_TAP|IFF_NO_PI clears it, so
//! reads and writes carry bare Ethernet frames. macvtap ignores the ifreq
//! name on TUNSETIFF, only the flags matter.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::expect::Receive;
use crate::netns::NetNs;
use crate::wire::poll_in;

// From <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const TUNGETIFF: libc::c_ulong = 0x8004_54d2; // _IOR('T', 210, unsigned int)
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

/// `struct ifreq` restricted to what TUN ioctls use (name + flags).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// An open macvtap queue.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    path: PathBuf,
}

impl Tap {
    /// Opens the char node and switches it to plain frames.
    pub fn open(path: impl AsRef<Path>) -> Tap {
        let path = path.as_ref().to_path_buf();
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        assert!(
            raw >= 0,
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        // SAFETY: fresh owned fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tap = Tap { fd, path };
        let mut ifr = tap.get_ifreq();
        ifr.flags = IFF_TAP | IFF_NO_PI;
        // SAFETY: ifr is a valid ifreq-sized buffer.
        let rc = unsafe { libc::ioctl(raw, TUNSETIFF as _, &mut ifr as *mut IfReq) };
        assert_eq!(
            rc,
            0,
            "TUNSETIFF(IFF_TAP|IFF_NO_PI) on {}: {}",
            tap.path.display(),
            std::io::Error::last_os_error()
        );
        // Verify: a lingering vnet header would shift every frame by 10 bytes.
        let flags = tap.get_ifreq().flags;
        assert_eq!(
            flags & IFF_VNET_HDR,
            0,
            "{}: IFF_VNET_HDR still set (flags {flags:#x})",
            tap.path.display()
        );
        tap
    }

    fn get_ifreq(&self) -> IfReq {
        let mut ifr = IfReq {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: ifr is a valid ifreq-sized out-buffer.
        let rc =
            unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNGETIFF as _, &mut ifr as *mut IfReq) };
        assert_eq!(
            rc,
            0,
            "TUNGETIFF on {}: {}",
            self.path.display(),
            std::io::Error::last_os_error()
        );
        ifr
    }

    /// Current TUN flags (IFF_*) of this queue.
    pub fn flags(&self) -> i16 {
        self.get_ifreq().flags
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one frame as the guest; goes through the macvtap's transmit
    /// path (TC egress of the macvtap device).
    pub fn write(&self, frame: &[u8]) {
        // SAFETY: buffer valid for frame.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        assert!(
            n == frame.len() as isize,
            "write to {}: {} ({n})",
            self.path.display(),
            std::io::Error::last_os_error()
        );
    }

    /// Writes one frame as the guest if the queue takes it now; `false`
    /// when its send buffer is full (the fd is non-blocking).
    pub fn try_write(&self, frame: &[u8]) -> bool {
        // SAFETY: buffer valid for frame.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        n == frame.len() as isize
    }

    /// Next frame delivered to the guest within `timeout`.
    pub fn read_timeout(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !poll_in(self.fd.as_raw_fd(), left) {
                return None;
            }
            let mut buf = vec![0u8; 65536];
            // SAFETY: buffer valid for buf.len() bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Some(buf);
            }
            let e = std::io::Error::last_os_error();
            assert!(
                e.kind() == std::io::ErrorKind::WouldBlock,
                "read from {}: {e}",
                self.path.display()
            );
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Everything delivered during `window`.
    pub fn read_all(&self, window: Duration) -> Vec<Vec<u8>> {
        self.all_within(window)
    }

    /// First frame satisfying `pred` within `timeout`.
    pub fn read_matching(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        self.first_matching(timeout, |f| pred(f))
    }
}

/// Creates a private char node `dir/<ifname>` for the macvtap `ifname` in
/// `ns`. The kernel's `/dev/tapN` is global while N is a per-namespace
/// ifindex, so tests never use it. The major:minor is read through
/// `ip netns exec`, whose private `/sys` shows the namespace's devices.
pub fn make_node(ns: &NetNs, ifname: &str, dir: &Path) -> PathBuf {
    let out = ns.exec_ok(&[
        "sh",
        "-c",
        &format!("cat /sys/class/net/{ifname}/macvtap/tap*/dev"),
    ]);
    let (major, minor) = out
        .trim()
        .split_once(':')
        .unwrap_or_else(|| panic!("unexpected dev for {ifname}: {out:?}"));
    let (major, minor): (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
    let path = dir.join(ifname);
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path; S_IFCHR node with a device number.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    path
}
