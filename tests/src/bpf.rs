//! Raw bpf(2), just enough for tests to look at pinned maps and to leave
//! one behind as another build would have: read a value, read a map's
//! layout, pin a new map of a given layout. (The test library does not
//! depend on aya, so that building the tests needs no eBPF toolchain.)

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;

/// `union bpf_attr`, as far as the commands here read it.
type Attr = [u8; 128];

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: the kernel reads (and for some commands writes) at most
    // `attr.len()` bytes of attr, which lives for the call; the pointers
    // the callers put in it (paths, keys, values) outlive the call too.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn put_u32(attr: &mut Attr, at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut Attr, at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("a path has no NUL")
}

/// The object pinned at `path`.
fn obj_get(path: &Path) -> OwnedFd {
    let c = cpath(path);
    let mut attr = [0u8; 128];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)
        .unwrap_or_else(|e| panic!("BPF_OBJ_GET {}: {e}", path.display()));
    // SAFETY: a fresh fd the kernel just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// The value at `key` of the map pinned at `path`.
pub fn pinned_map_value(path: &Path, key: u32, value_size: usize) -> Vec<u8> {
    let fd = obj_get(path);
    let mut value = vec![0u8; value_size];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u64(&mut attr, 8, (&key as *const u32) as u64);
    put_u64(&mut attr, 16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)
        .unwrap_or_else(|e| panic!("lookup in {}: {e}", path.display()));
    value
}

/// What fdinfo says about a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// The layout of the map pinned at `path`.
pub fn pinned_layout(path: &Path) -> MapLayout {
    let fd = obj_get(path);
    let info =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).expect("fdinfo");
    let field = |name: &str| -> u32 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in fdinfo:\n{info}"))
    };
    MapLayout {
        map_type: field("map_type:"),
        key_size: field("key_size:"),
        value_size: field("value_size:"),
        max_entries: field("max_entries:"),
    }
}

/// The id of the program pinned at `path`, or of the program a pinned
/// link at `path` runs (fdinfo says `prog_id` for both).
pub fn pinned_prog_id(path: &Path) -> u32 {
    let fd = obj_get(path);
    let info =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).expect("fdinfo");
    info.lines()
        .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no prog_id in the fdinfo of {}:\n{info}", path.display()))
}

/// Replaces the map pinned at `path` by a new, empty one with `layout`.
pub fn pin_map(path: &Path, name: &str, layout: MapLayout) {
    // Kernels before 5.11 charge maps to RLIMIT_MEMLOCK (64 KiB by default
    // before 5.16); aya lifts it for the controller, this raw call must too.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for the call's duration.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, layout.map_type);
    put_u32(&mut attr, 4, layout.key_size);
    put_u32(&mut attr, 8, layout.value_size);
    put_u32(&mut attr, 12, layout.max_entries);
    let n = name.len().min(15);
    attr[28..28 + n].copy_from_slice(&name.as_bytes()[..n]);
    let fd =
        bpf(BPF_MAP_CREATE, &mut attr).unwrap_or_else(|e| panic!("BPF_MAP_CREATE {layout:?}: {e}"));
    // SAFETY: a fresh fd the kernel just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("unpinning {}: {e}", path.display()));
    let c = cpath(path);
    let mut attr = [0u8; 128];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    put_u32(&mut attr, 8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).unwrap_or_else(|e| panic!("BPF_OBJ_PIN {}: {e}", path.display()));
}
