//! Finding, or mounting, the bpffs that holds the pins.
//!
//! A bpffs mounted inside a private mount namespace (as `ip netns exec`
//! makes) vanishes with the command, and with it every pinned link: the
//! data path would silently detach. So we mount only in the initial mount
//! namespace and refuse elsewhere.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The conventional bpffs mount point; it lives on sysfs until mounted.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// Whether `path` exists and lives on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    rc == 0 && buf.f_type as i64 == BPF_FS_MAGIC
}

/// Whether this process shares the mount namespace of PID 1.
fn in_initial_mount_namespace() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(mine), Ok(init)) => mine == init,
        _ => false,
    }
}

/// Makes sure `dir` is a directory on a bpffs, mounting one if needed.
pub fn prepare(dir: &Path) -> Result<()> {
    if is_bpffs(dir) {
        return Ok(());
    }
    let mount_point: PathBuf = if dir.starts_with(SYS_FS_BPF) && !is_bpffs(Path::new(SYS_FS_BPF)) {
        SYS_FS_BPF.into()
    } else if dir.parent().is_some_and(is_bpffs) {
        // A fresh subdirectory of a bpffs: just create it.
        fs::create_dir(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        return Ok(());
    } else {
        dir.into()
    };
    if !in_initial_mount_namespace() {
        return Err(Error::invalid(
            "--bpffs",
            dir.display(),
            format!(
                "not on a bpffs, and this process runs in a private mount namespace (as under \
                 `ip netns exec`), where a bpffs mounted now would vanish with the pinned data \
                 path when the command exits; mount one from the host first \
                 (`mount -t bpf bpf {}`) and pass it with --bpffs",
                mount_point.display()
            ),
        ));
    }
    fs::create_dir_all(&mount_point)
        .map_err(|e| Error::io(format!("creating {}", mount_point.display()), e))?;
    mount_bpffs(&mount_point)?;
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    Ok(())
}

fn mount_bpffs(at: &Path) -> Result<()> {
    let target = CString::new(at.as_os_str().as_bytes()).expect("path without NUL");
    let fstype = c"bpf";
    let options = c"mode=0700";
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("mounting a bpffs on {}", at.display()),
            std::io::Error::last_os_error(),
        ));
    }
    log::info!("mounted a bpffs on {}", at.display());
    Ok(())
}
