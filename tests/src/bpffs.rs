//! Private bpffs mounts and state directories, one per test.
//!
//! The bpffs is mounted in the test process's (root) mount namespace on
//! purpose: `ip netns exec` gives each command a private mount namespace, and
//! a bpffs mounted in there would vanish (with its pins, detaching the data
//! path) when the command exits. One mounted beforehand is visible inside.
//! Every mount is a separate bpffs instance, so tests cannot see each
//! other's pins.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Creates a fresh directory `<tmp>/msw-<prefix>-XXXXXX` with mkdtemp.
fn make_temp_dir(prefix: &str) -> PathBuf {
    let template = std::env::temp_dir().join(format!("msw-{prefix}-XXXXXX"));
    let mut buf = template.as_os_str().as_bytes().to_vec();
    buf.push(0);
    // SAFETY: buf is a NUL-terminated writable template ending in XXXXXX.
    let p = unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) };
    assert!(
        !p.is_null(),
        "mkdtemp {}: {}",
        template.display(),
        std::io::Error::last_os_error()
    );
    buf.pop();
    PathBuf::from(std::ffi::OsStr::from_bytes(&buf))
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// A temporary directory with a fresh bpffs mounted on it.
#[derive(Debug)]
pub struct BpffsGuard {
    dir: PathBuf,
    /// Entries a fresh bpffs already has (with CONFIG_BPF_PRELOAD the kernel
    /// populates `maps.debug` and `progs.debug`); they are not pins.
    preloaded: Vec<PathBuf>,
}

impl BpffsGuard {
    pub fn new() -> BpffsGuard {
        let dir = make_temp_dir("bpffs");
        let (src, target, fstype) = (c"bpf", cpath(&dir), c"bpf");
        // SAFETY: all pointers are valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            panic!("mount -t bpf bpf {}: {err}", dir.display());
        }
        let mut preloaded = Vec::new();
        walk(&dir, &mut preloaded);
        BpffsGuard { dir, preloaded }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Every non-directory entry (pins) under the mount, recursively,
    /// except the kernel's preloaded ones.
    pub fn pinned_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out.retain(|p| !self.preloaded.contains(p));
        out
    }
}

impl Default for BpffsGuard {
    fn default() -> Self {
        Self::new()
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            _ => out.push(p),
        }
    }
}

impl Drop for BpffsGuard {
    fn drop(&mut self) {
        let target = cpath(&self.dir);
        // MNT_DETACH: never fail because something still holds the mount;
        // unpinned objects are freed once their last user goes away.
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "warning: umount {}: {}",
                self.dir.display(),
                std::io::Error::last_os_error()
            );
            return; // don't rmdir a still-mounted bpffs
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A temporary directory (controller state, tap nodes) removed on drop.
#[derive(Debug)]
pub struct TempStateDir {
    dir: PathBuf,
}

impl TempStateDir {
    pub fn new() -> TempStateDir {
        TempStateDir {
            dir: make_temp_dir("state"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Default for TempStateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempStateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
