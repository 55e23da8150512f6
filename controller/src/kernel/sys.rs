//! Small questions to the kernel that need no socket: who we are, random
//! bytes, this boot, whether a link is there.

use std::fs;

use crate::error::{Error, Result};

/// Whether this process runs as root (tests that need the kernel skip
/// otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Four random bytes from the kernel.
pub fn random_u32() -> Result<u32> {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer,
    // which we own and which lives across the call.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        return Err(Error::io(
            "reading random bytes",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(u32::from_ne_bytes(bytes))
}

/// This boot of the kernel.
pub fn current_boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}

/// Whether this network namespace has link `name` with `ifindex`.
pub fn is_live(name: &str, ifindex: u32) -> bool {
    fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        == Some(ifindex)
}

/// Whether this network namespace has a link named `name`.
pub fn has_link(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}
