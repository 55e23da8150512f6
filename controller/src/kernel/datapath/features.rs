//! Kernel features macvswitch needs, checked before a command changes
//! anything; a missing one fails the command with one line naming the
//! feature and its config option.
//!
//! Probes that have to ask the kernel to make something (a qdisc, a
//! filter) run in a scratch network namespace of a thread of our own, so
//! nothing in the operator's namespace changes and nothing outlives the
//! probe.

use std::{path::Path, sync::OnceLock};

use super::clsact;
use crate::error::{Error, Result};

fn missing(feature: &str, option: &str) -> Error {
    Error::Refused(format!(
        "this kernel lacks {feature} ({option}), which macvswitch needs"
    ))
}

/// BTF and macvtap: what every data path needs.
pub fn check_base() -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(missing("BTF type information", "CONFIG_DEBUG_INFO_BTF"));
    }
    match in_scratch_netns(Probe::Macvtap)? {
        Some((feature, option)) => Err(missing(feature, option)),
        None => Ok(()),
    }
}

/// The clsact qdisc and the bpf classifier: what the clsact path needs.
pub fn check_clsact() -> Result<()> {
    match in_scratch_netns(Probe::Clsact)? {
        Some((feature, option)) => Err(missing(feature, option)),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Probe {
    Macvtap,
    Clsact,
}

type Missing = Option<(&'static str, &'static str)>;

/// Runs `probe` once per process, in a thread moved into a fresh network
/// namespace (per-thread, gone when the thread ends). If the namespace
/// cannot be made, nothing is probed: the real operation reports instead.
fn in_scratch_netns(probe: Probe) -> Result<Missing> {
    static MACVTAP: OnceLock<Missing> = OnceLock::new();
    static CLSACT: OnceLock<Missing> = OnceLock::new();
    let cell = match probe {
        Probe::Macvtap => &MACVTAP,
        Probe::Clsact => &CLSACT,
    };
    if let Some(found) = cell.get() {
        return Ok(*found);
    }
    let found = std::thread::spawn(move || -> Missing {
        // SAFETY: unshare(2) on this thread only; it touches no memory of
        // ours. The thread ends right after, and with it the namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            log::debug!(
                "no scratch network namespace for a kernel probe: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let unknown = |errno| matches!(errno, libc::ENOENT | libc::EOPNOTSUPP);
        match probe {
            Probe::Macvtap => match clsact::macvtap_probe() {
                Ok(libc::EOPNOTSUPP) => Some(("macvtap", "CONFIG_MACVTAP")),
                _ => None,
            },
            // Loopback is ifindex 1 in a fresh namespace.
            Probe::Clsact => match clsact::add_qdisc(1) {
                Ok(Err(errno)) if unknown(errno) => {
                    Some(("the clsact qdisc", "CONFIG_NET_SCH_INGRESS"))
                }
                Ok(Ok(_)) => match clsact::add_classic_probe(1) {
                    Ok(Err(errno)) if unknown(errno) => {
                        Some(("the bpf classifier", "CONFIG_NET_CLS_BPF"))
                    }
                    _ => None,
                },
                _ => None,
            },
        }
    })
    .join()
    .map_err(|_| Error::Refused("a kernel probe panicked".into()))?;
    Ok(*cell.get_or_init(|| found))
}

#[cfg(test)]
mod tests {
    /// This host's kernel has all of it (KERNEL-NOTES.md), so a probe that
    /// reports something missing here is wrong.
    #[test]
    fn the_probes_find_what_this_kernel_has() {
        if !crate::kernel::sys::is_root() {
            eprintln!("skipping: the probes need root");
            return;
        }
        super::check_base().expect("BTF and macvtap");
        super::check_clsact().expect("clsact and the bpf classifier");
    }
}
