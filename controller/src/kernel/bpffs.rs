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

/// The mount namespace of `pid` ("self" or a number), if we may read it.
fn mount_namespace_of(pid: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// The parent of `pid`, from `/proc/PID/stat` (0 past the top).
fn parent_of(pid: &str) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces: fields follow the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a bpffs mounted now would vanish when this command exits: this
/// process runs in a mount namespace of its own (as `ip netns exec` makes).
///
/// PID 1's namespace is the host's (or the container's): when we can read
/// it, it decides. When we cannot (hardened hosts, some containers), our
/// ancestors decide: one in another mount namespace means ours was made
/// below it for this command; if every ancestor we can read shares ours,
/// nothing says it is private.
fn in_private_mount_namespace() -> bool {
    let Some(mine) = mount_namespace_of("self") else {
        // Not even our own: nothing is known, so nothing is refused.
        return false;
    };
    let ancestors = std::iter::successors(parent_of("self"), |&pid| parent_of(&pid.to_string()))
        .take_while(|&pid| pid > 0)
        .take(64)
        .map(|pid| mount_namespace_of(&pid.to_string()));
    is_private(&mine, mount_namespace_of("1").as_ref(), ancestors)
}

/// The decision of [`in_private_mount_namespace`], from what could be read:
/// PID 1's namespace, and each ancestor's from the parent up (`None`
/// where it could not be read).
fn is_private(
    mine: &Path,
    init: Option<&PathBuf>,
    ancestors: impl IntoIterator<Item = Option<PathBuf>>,
) -> bool {
    if let Some(init) = init {
        return init != mine;
    }
    ancestors
        .into_iter()
        .map_while(|ns| ns)
        .any(|ns| ns != mine)
}

/// Where the refusal tells the operator to mount a bpffs: outside `/sys`,
/// which `ip netns exec` replaces with a fresh sysfs (and so hides a bpffs
/// mounted on `/sys/fs/bpf`), in a directory `ip netns exec` keeps; the
/// README's example uses the same.
pub const SUGGESTED_MOUNT: &str = "/run/msw/bpffs";

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
    if in_private_mount_namespace() {
        return Err(Error::invalid(
            "--bpffs",
            dir.display(),
            format!(
                "not on a bpffs, and this process runs in a private mount namespace (as under \
                 `ip netns exec`), where a bpffs mounted now would vanish with the pinned data \
                 path when the command exits; from the host's mount namespace run `mkdir -p \
                 {SUGGESTED_MOUNT} && mount -t bpf bpf {SUGGESTED_MOUNT}` (not /sys/fs/bpf: \
                 `ip netns exec` mounts a fresh /sys over it), then pass --bpffs \
                 {SUGGESTED_MOUNT}"
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::is_private;

    fn ns(id: u32) -> Option<PathBuf> {
        Some(PathBuf::from(format!("mnt:[{id}]")))
    }

    #[test]
    fn pid_1_decides_when_readable() {
        let mine = Path::new("mnt:[7]");
        assert!(!is_private(mine, ns(7).as_ref(), [ns(9)]));
        assert!(is_private(mine, ns(1).as_ref(), [ns(7), ns(7)]));
    }

    #[test]
    fn without_pid_1_the_ancestors_decide() {
        let mine = Path::new("mnt:[7]");
        // `ip netns exec NS macvswitch …`: the shell above is on the host.
        assert!(is_private(mine, None, [ns(1), ns(1)]));
        // `ip netns exec NS sh -c 'macvswitch …'`: two levels up.
        assert!(is_private(mine, None, [ns(7), ns(1)]));
        // A container whose PID 1 we may not read: all ancestors share ours.
        assert!(!is_private(mine, None, [ns(7), ns(7)]));
        // Nothing readable above us: nothing says private.
        assert!(!is_private(mine, None, []));
        // An unreadable ancestor ends what is known.
        assert!(!is_private(mine, None, [ns(7), None, ns(1)]));
    }

    #[test]
    fn this_process_reads_its_own_ancestry() {
        // The test runner has a parent, and so a chain up to PID 1 or to
        // where /proc stops telling.
        assert!(super::parent_of("self").is_some_and(|pid| pid > 0));
    }
}
