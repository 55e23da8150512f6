//! Private character-device nodes for the macvtap tap fds.
//!
//! The kernel names the node `/dev/tapN` after the macvtap's ifindex *in its
//! own namespace*, but `/dev` is global: namespaces collide, and one
//! namespace deleting its link removes the node another uses. So we make
//! our own node from the device number sysfs reports for this namespace.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Reads `MAJOR:MINOR` of the macvtap's tap device from sysfs.
pub fn device_number(ifname: &str, ifindex: u32) -> Result<(u32, u32)> {
    let path = format!("/sys/class/net/{ifname}/macvtap/tap{ifindex}/dev");
    let text = fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    let parse = || {
        let (major, minor) = text.trim().split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    parse().ok_or_else(|| {
        Error::io(
            format!("parsing {path}"),
            std::io::Error::new(std::io::ErrorKind::InvalidData, text.trim().to_string()),
        )
    })
}

/// Creates (or replaces) `dir/ifname` as the tap node of the macvtap.
pub fn create_node(dir: &Path, ifname: &str, ifindex: u32) -> Result<PathBuf> {
    let (major, minor) = device_number(ifname, ifindex)?;
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(ifname);
    remove_node(&path)?;
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: valid NUL-terminated path; mknod only reads it.
    let rc = unsafe {
        libc::mknod(
            c_path.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("creating tap node {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(path)
}

pub fn remove_node(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}
