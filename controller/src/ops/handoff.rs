//! Handing an endpoint to a guest: its tap fds to a command, exactly as
//! libvirt hands a macvtap to QEMU, or an `<interface>` element with which
//! libvirt opens the tap itself.
//!
//! Each open of a macvtap's tap device is one queue of the device, and
//! frames are spread over the open queues: a second opener silently takes
//! part of the first guest's frames. So both refuse a tap someone holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    fs,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{fs::FileTypeExt as _, fs::MetadataExt as _, process::CommandExt as _},
    },
    path::Path,
    process::Command,
};

use crate::{
    error::{Error, Result},
    kernel::tapdev,
    model::{state::EndpointRecord, types::IfName},
};

/// Highest `--queues`: the kernel's limit of queues per macvtap
/// (`MAX_TAP_QUEUES`).
pub const MAX_QUEUES: u32 = 256;
/// Highest `--fd`: leaves room below the usual soft limit of open files.
pub const MAX_FD: i32 = 1000;

/// A process that has the tap device open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} ({})", self.pid, self.command)
    }
}

/// Processes with an open fd on the character device `dev`, found by
/// following every `/proc/PID/fd/N` (processes we may not inspect are
/// skipped; as root that is none in our PID namespace).
pub fn holders(dev: (u32, u32)) -> Vec<Holder> {
    holders_of(&[dev]).remove(&dev).unwrap_or_default()
}

/// The processes holding each of `devs`, in one walk of `/proc` (as
/// `holders`; `reset` asks about every endpoint at once).
pub fn holders_of(devs: &[(u32, u32)]) -> BTreeMap<(u32, u32), Vec<Holder>> {
    let mut found: BTreeMap<(u32, u32), Vec<Holder>> = BTreeMap::new();
    let wanted: BTreeMap<libc::dev_t, (u32, u32)> = devs
        .iter()
        .map(|dev| (libc::makedev(dev.0, dev.1), *dev))
        .collect();
    if wanted.is_empty() {
        return found;
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let held: BTreeSet<(u32, u32)> = fds
            .flatten()
            .filter_map(|fd| {
                let m = fs::metadata(fd.path()).ok()?;
                // A node no longer linked anywhere is a deleted macvtap's:
                // its device number may since be another macvtap's.
                if !m.file_type().is_char_device() || m.nlink() == 0 {
                    return None;
                }
                wanted.get(&m.rdev()).copied()
            })
            .collect();
        if held.is_empty() {
            continue;
        }
        let command = fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        for dev in held {
            found.entry(dev).or_default().push(Holder {
                pid,
                command: command.clone(),
            });
        }
    }
    found
}

/// Processes other than this one that hold the endpoint's tap open; none
/// when its macvtap is not in this network namespace.
pub fn tap_holders(record: &EndpointRecord) -> Vec<Holder> {
    tap_holders_of(std::slice::from_ref(record))
        .pop()
        .map(|(_, holders)| holders)
        .unwrap_or_default()
}

/// The endpoints among `records` whose tap another process holds open,
/// with those processes, in one walk of `/proc`.
pub fn tap_holders_of(records: &[EndpointRecord]) -> Vec<(IfName, Vec<Holder>)> {
    let devs: Vec<(IfName, (u32, u32))> = records
        .iter()
        .filter_map(|r| {
            let dev = tapdev::device_number(r.name.as_str(), r.ifindex).ok()?;
            Some((r.name.clone(), dev))
        })
        .collect();
    let wanted: Vec<(u32, u32)> = devs.iter().map(|(_, dev)| *dev).collect();
    let mut by_dev = holders_of(&wanted);
    devs.into_iter()
        .filter_map(|(name, dev)| {
            let holders = others(by_dev.remove(&dev)?);
            (!holders.is_empty()).then_some((name, holders))
        })
        .collect()
}

/// `holders` but this process (which may hold the tap itself).
fn others(holders: Vec<Holder>) -> Vec<Holder> {
    let me = std::process::id();
    holders.into_iter().filter(|h| h.pid != me).collect()
}

/// Holders as one phrase: `process 12 (qemu), process 14 (qemu)`.
pub fn holders_text(holders: &[Holder]) -> String {
    let names: Vec<String> = holders.iter().map(Holder::to_string).collect();
    names.join(", ")
}

/// Refuses when a process other than this one holds the endpoint's tap.
fn refuse_if_held(record: &EndpointRecord, dev: (u32, u32)) -> Result<()> {
    let holders = others(holders(dev));
    if holders.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        "NAME",
        &record.name,
        format!(
            "its tap is already open in {}; a second opener would take part of that guest's \
             frames (stop it first)",
            holders_text(&holders)
        ),
    ))
}

/// The tap device number of the endpoint's macvtap, as this network
/// namespace's sysfs reports it.
fn device(record: &EndpointRecord) -> Result<(u32, u32)> {
    tapdev::device_number(record.name.as_str(), record.ifindex).map_err(|_| {
        Error::Refused(format!(
            "{}: its macvtap is not in this network namespace (status: run `macvswitch \
             endpoint show {}`)",
            record.name, record.name
        ))
    })
}

/// Checks `--fd` and `--queues`.
pub fn check_fds(first_fd: i32, queues: u32) -> Result<()> {
    if !(3..=MAX_FD).contains(&first_fd) {
        return Err(Error::invalid(
            "--fd",
            first_fd,
            format!(
                "must be in 3..={MAX_FD} (0, 1 and 2 are the command's stdin, stdout and stderr)"
            ),
        ));
    }
    if !(1..=MAX_QUEUES).contains(&queues) {
        return Err(Error::invalid(
            "--queues",
            queues,
            format!("must be in 1..={MAX_QUEUES} (the kernel's limit of queues per macvtap)"),
        ));
    }
    if i64::from(first_fd) + i64::from(queues) - 1 > i64::from(MAX_FD) {
        return Err(Error::invalid(
            "--queues",
            queues,
            format!("fds {first_fd}.. would pass {MAX_FD}; lower --fd or --queues"),
        ));
    }
    Ok(())
}

/// Opens the endpoint's tap node `queues` times as fds `first_fd..` and
/// replaces this process with `command`. Returns only on failure.
pub fn exec(
    record: &EndpointRecord,
    tap: &Path,
    first_fd: i32,
    queues: u32,
    user: Option<&str>,
    command: &[OsString],
) -> Result<std::convert::Infallible> {
    check_fds(first_fd, queues)?;
    let user = user.map(lookup_user).transpose()?;
    let Some((program, args)) = command.split_first() else {
        return Err(Error::invalid(
            "COMMAND",
            "",
            "give the command to run after `--`",
        ));
    };
    let dev = device(record)?;
    check_node(tap, dev)?;
    refuse_if_held(record, dev)?;
    // Opened close-on-exec above every target fd, then duplicated onto the
    // targets in the child (dup2 clears close-on-exec on the copy).
    let above = first_fd + queues as i32;
    let mut opened = Vec::with_capacity(queues as usize);
    for _ in 0..queues {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tap)
            .map_err(|e| Error::io(format!("opening {}", tap.display()), e))?;
        // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new fd or -1.
        let raw = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above) };
        if raw < 0 {
            return Err(Error::io(
                format!("moving an fd of {} above {above}", tap.display()),
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: a fresh fd that nothing else owns.
        opened.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    let sources: Vec<i32> = opened.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some((uid, gid)) = user {
        // After the fds are open, as libvirt runs QEMU: the command runs as
        // the user, with the user's group and no supplementary groups.
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: the closure only calls dup2, which is async-signal-safe, and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &source) in sources.iter().enumerate() {
                if libc::dup2(source, first_fd + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let error = cmd.exec();
    Err(Error::io(
        format!("running {}", Path::new(program).display()),
        error,
    ))
}

/// (uid, gid) of `user`, a name or a number, from the password database.
fn lookup_user(user: &str) -> Result<(u32, u32)> {
    let unknown = || {
        Error::invalid(
            "--user",
            user,
            "no such user (a name or uid from the password database, e.g. libvirt-qemu)",
        )
    };
    let Ok(name) = std::ffi::CString::new(user) else {
        return Err(unknown());
    };
    // SAFETY: getpwnam_r/getpwuid_r write only into the buffers we pass.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = match user.parse::<u32>() {
        Ok(uid) => unsafe {
            libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found)
        },
        Err(_) => unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        },
    };
    if rc != 0 || found.is_null() {
        return Err(unknown());
    }
    Ok((entry.pw_uid, entry.pw_gid))
}

/// The node must be the endpoint's tap device, not a stale or foreign one.
fn check_node(node: &Path, dev: (u32, u32)) -> Result<()> {
    let metadata =
        fs::metadata(node).map_err(|e| Error::io(format!("the tap node {}", node.display()), e))?;
    if !metadata.file_type().is_char_device() || metadata.rdev() != libc::makedev(dev.0, dev.1) {
        return Err(Error::Refused(format!(
            "{} is not this endpoint's tap device ({}:{}); `macvswitch restore` recreates it",
            node.display(),
            dev.0,
            dev.1
        )));
    }
    Ok(())
}

/// The `<interface>` element that attaches a libvirt domain to the
/// endpoint. libvirt opens the global `/dev/tapN` (N = ifindex), which
/// belongs to whichever namespace's macvtap with that ifindex registered
/// it: it must be this endpoint's.
pub fn libvirt_xml(record: &EndpointRecord) -> Result<String> {
    let dev = device(record)?;
    refuse_if_held(record, dev)?;
    let global = format!("/dev/tap{}", record.ifindex);
    match fs::metadata(&global) {
        Err(_) => {
            return Err(Error::invalid(
                "NAME",
                &record.name,
                format!(
                    "{global} does not exist, and libvirt opens it: devtmpfs (or udev) makes it \
                     for a macvtap in the host's network namespace"
                ),
            ));
        }
        Ok(m) if !m.file_type().is_char_device() || m.rdev() != libc::makedev(dev.0, dev.1) => {
            return Err(Error::invalid(
                "NAME",
                &record.name,
                format!(
                    "{global} is another network namespace's macvtap, not this endpoint's \
                     ({}:{}): libvirt would attach the guest to someone else's port; libvirt \
                     needs the endpoint in the host's network namespace",
                    dev.0, dev.1
                ),
            ));
        }
        Ok(_) => {}
    }
    Ok(format!(
        "<interface type='ethernet'>\n  <mac address='{}'/>\n  <target dev='{}' \
         managed='no'/>\n  <model type='virtio'/>\n</interface>\n",
        record.mac,
        xml_escape(record.name.as_str())
    ))
}

/// Interface names may hold `'` or `&`; attribute values must not.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('\'', "&apos;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_and_queues_are_checked() {
        assert!(check_fds(3, 1).is_ok());
        assert!(check_fds(3, 4).is_ok());
        for (fd, queues) in [(2, 1), (0, 1), (3, 0), (3, MAX_QUEUES + 1), (MAX_FD, 2)] {
            let error = check_fds(fd, queues).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{fd} {queues}: {error}");
        }
    }

    #[test]
    fn names_are_escaped_in_xml() {
        assert_eq!(xml_escape("a'b&c"), "a&apos;b&amp;c");
    }
}
