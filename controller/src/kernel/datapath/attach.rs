//! Attaching a program to one hook of one device: TCX where the kernel has
//! it, clsact where it answers that it has not, or as forced by
//! `--attach` / `MACVSWITCH_ATTACH`.
//!
//! A hook keeps the mode it was attached with: a TCX link pinned for it is
//! swapped with `bpf_link_update`, our clsact filter on it is replaced in
//! place (see `clsact.rs`), and only a hook with neither is attached
//! anew, in the chosen mode. So one hook never carries both, and a reload
//! or an upgrade never leaves a moment with no program or two.

use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::{
        OnceLock,
        atomic::{AtomicU8, Ordering},
    },
};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
};

use super::{
    clsact,
    pins::{PROGRAMS, unpin_link},
};
use crate::{
    error::{Error, Result},
    model::types::{AttachChoice, AttachMode},
};

/// The environment variable behind `--attach`.
pub const ATTACH_ENV: &str = "MACVSWITCH_ATTACH";

/// 0: not set (the environment decides), else 1 + the choice.
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Sets the attach choice of this process (from `--attach`; benchmarks
/// switch it between runs); without it, `MACVSWITCH_ATTACH` decides, and
/// without that, `auto`.
pub fn set_attach_choice(choice: AttachChoice) {
    let code = match choice {
        AttachChoice::Auto => 1,
        AttachChoice::Tcx => 2,
        AttachChoice::Clsact => 3,
    };
    CHOICE.store(code, Ordering::Relaxed);
}

pub fn attach_choice() -> AttachChoice {
    match CHOICE.load(Ordering::Relaxed) {
        1 => return AttachChoice::Auto,
        2 => return AttachChoice::Tcx,
        3 => return AttachChoice::Clsact,
        _ => {}
    }
    static FROM_ENV: OnceLock<AttachChoice> = OnceLock::new();
    *FROM_ENV.get_or_init(|| match std::env::var(ATTACH_ENV) {
        Ok(value) => value.parse().unwrap_or_else(|why| {
            log::warn!("{ATTACH_ENV}={value}: {why}; using auto");
            AttachChoice::Auto
        }),
        Err(_) => AttachChoice::Auto,
    })
}

/// 0 unknown, 1 the kernel has TCX links, 2 it has not.
static TCX: AtomicU8 = AtomicU8::new(0);

/// Whether the kernel has TCX links. Asks once per process by creating a
/// TCX link for `program` on ifindex 0: a kernel with TCX looks for the
/// device and answers ENODEV; one without does not know the attach type
/// and answers EINVAL (or EOPNOTSUPP). Nothing is attached either way.
fn kernel_has_tcx(program: &SchedClassifier) -> bool {
    match TCX.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let Ok(fd) = program.fd() else {
        return false;
    };
    // union bpf_attr, link_create: prog_fd, target_ifindex, attach_type,
    // flags, then the TCX part (relative fd/id, expected revision).
    #[repr(C)]
    #[derive(Default)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        relative: u32,
        pad: u32,
        expected_revision: u64,
        rest: [u64; 8],
    }
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_TCX_INGRESS: u32 = 46;
    let attr = LinkCreate {
        prog_fd: fd.as_fd().as_raw_fd() as u32,
        attach_type: BPF_TCX_INGRESS,
        ..LinkCreate::default()
    };
    // SAFETY: `attr` is a zero-padded bpf_attr of the size we pass; the
    // kernel only reads it. A link it might create (it cannot, ifindex 0
    // names no device) would come back as an fd, which we close.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreate,
            std::mem::size_of::<LinkCreate>() as u32,
        )
    };
    let has = if ret >= 0 {
        // SAFETY: a fresh fd the kernel just gave us.
        unsafe { libc::close(ret as i32) };
        true
    } else {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        !matches!(errno, libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
    };
    log::debug!("TCX links: {}", if has { "yes" } else { "no" });
    TCX.store(if has { 1 } else { 2 }, Ordering::Relaxed);
    has
}

/// The mode a hook with nothing of ours gets.
pub(super) fn fresh_mode(program: &SchedClassifier) -> Result<AttachMode> {
    match attach_choice() {
        AttachChoice::Clsact => Ok(AttachMode::Clsact),
        AttachChoice::Auto if kernel_has_tcx(program) => Ok(AttachMode::Tcx),
        AttachChoice::Auto => Ok(AttachMode::Clsact),
        AttachChoice::Tcx if kernel_has_tcx(program) => Ok(AttachMode::Tcx),
        AttachChoice::Tcx => Err(Error::invalid(
            "--attach",
            "tcx",
            "this kernel has no TCX links (Linux >= 6.6 with CONFIG_NET_XGRESS); use clsact or auto",
        )),
    }
}

/// The ifindex of `ifname` in this thread's network namespace (an ioctl
/// on a socket, unlike sysfs, which shows the namespace it was mounted in).
/// The mode a hook with nothing of ours gets on a device recorded with
/// mode `prefer` (a device keeps its mode; `None`: a new device).
fn wanted_mode(program: &SchedClassifier, prefer: Option<AttachMode>) -> Result<AttachMode> {
    match prefer {
        Some(AttachMode::Clsact) => Ok(AttachMode::Clsact),
        Some(AttachMode::Tcx) if kernel_has_tcx(program) => Ok(AttachMode::Tcx),
        _ => fresh_mode(program),
    }
}

fn ifindex(ifname: &str) -> Option<u32> {
    let name = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

fn hook_name(hook: TcAttachType) -> &'static str {
    match hook {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    }
}

/// What a hook carries of ours now.
pub(super) fn current(ifname: &str, hook: TcAttachType, pin: &Path) -> Option<AttachMode> {
    if pin.exists() {
        return Some(AttachMode::Tcx);
    }
    let ifindex = ifindex(ifname)?;
    clsact::filters(ifindex, hook)
        .ok()?
        .iter()
        .any(|filter| filter.is_ours(hook))
        .then_some(AttachMode::Clsact)
}

/// The outcome of attaching one hook.
#[derive(Clone, Copy, Debug)]
pub struct Attached {
    pub mode: AttachMode,
    /// A clsact qdisc was created for it.
    pub created_qdisc: bool,
}

/// Attaches `program` (named `name` in the object) to `hook` of `ifname`,
/// keeping the hook's mode if it carries something of ours, else the
/// device's recorded mode `prefer`; a TCX link is pinned at `pin`.
pub(super) fn attach(
    program: &mut SchedClassifier,
    name: &str,
    ifname: &str,
    hook: TcAttachType,
    pin: &Path,
    prefer: Option<AttachMode>,
) -> Result<Attached> {
    let context = || format!("attaching a program to {ifname} {}", hook_name(hook));
    if let Ok(pinned) = PinnedLink::from_pin(pin) {
        let swapped = SchedClassifierLink::try_from(FdLink::from(pinned))
            .map_err(|e| Error::bpf(context(), e))
            .and_then(|link| {
                program
                    .attach_to_link(link)
                    .map_err(|e| Error::bpf(context(), e))
            });
        match swapped {
            Ok(id) => {
                // The link stays pinned; our handle may go.
                let link = program
                    .take_link(id)
                    .map_err(|e| Error::bpf(context(), e))?;
                let _: FdLink = link.try_into().map_err(|e| Error::bpf(context(), e))?;
                return Ok(Attached {
                    mode: AttachMode::Tcx,
                    created_qdisc: false,
                });
            }
            // A link whose device is gone cannot be updated: make a new one.
            Err(e) => {
                log::info!("{}: {e}; attaching anew", pin.display());
                unpin_link(pin)?;
            }
        }
    }
    let Some(index) = ifindex(ifname) else {
        return Err(Error::Refused(format!(
            "{ifname}: no such device in this network namespace"
        )));
    };
    let ours_there = clsact::filters(index, hook)
        .map_err(|e| Error::io(format!("listing the tc filters of {ifname}"), e))?
        .iter()
        .any(|filter| filter.is_ours(hook));
    let mode = if ours_there {
        AttachMode::Clsact
    } else {
        wanted_mode(program, prefer)?
    };
    match mode {
        AttachMode::Clsact => attach_clsact(program, name, ifname, index, hook),
        AttachMode::Tcx => {
            attach_tcx(program, ifname, hook, pin)?;
            Ok(Attached {
                mode,
                created_qdisc: false,
            })
        }
    }
}

fn attach_tcx(
    program: &mut SchedClassifier,
    ifname: &str,
    hook: TcAttachType,
    pin: &Path,
) -> Result<()> {
    let context = || format!("attaching a program to {ifname} {}", hook_name(hook));
    let id = program
        .attach_with_options(
            ifname,
            hook,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| Error::bpf(context(), e))?;
    let link = program
        .take_link(id)
        .map_err(|e| Error::bpf(context(), e))?;
    let link: FdLink = link.try_into().map_err(|e| Error::bpf(context(), e))?;
    if let Some(dir) = pin.parent() {
        super::pins::create_dir(dir)?;
    }
    if pin.exists() {
        fs::remove_file(pin).map_err(|e| Error::io(format!("replacing {}", pin.display()), e))?;
    }
    link.pin(pin)
        .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
    Ok(())
}

/// What a kernel refusal on the clsact path means, in one line.
fn clsact_refusal(ifname: &str, hook: TcAttachType, what: &str, errno: i32) -> Error {
    let hook = hook_name(hook);
    Error::Refused(match (what, errno) {
        ("qdisc", libc::ENOENT | libc::EOPNOTSUPP) => {
            "this kernel has no clsact qdisc (CONFIG_NET_SCH_INGRESS) and no TCX links: nothing to attach the programs with".to_string()
        }
        ("filter", libc::ENOENT | libc::EOPNOTSUPP) => {
            "this kernel has no bpf classifier (CONFIG_NET_CLS_BPF) and no TCX links: nothing to attach the programs with".to_string()
        }
        _ => format!(
            "{ifname} {hook}: the kernel refused our {what} ({})",
            std::io::Error::from_raw_os_error(errno)
        ),
    })
}

fn attach_clsact(
    program: &SchedClassifier,
    name: &str,
    ifname: &str,
    index: u32,
    hook: TcAttachType,
) -> Result<Attached> {
    let io = |e| Error::io(format!("tc on {ifname}"), e);
    let filters = clsact::filters(index, hook).map_err(io)?;
    if let Some(foreign) = filters
        .iter()
        .find(|f| f.priority == clsact::PRIORITY && !f.is_ours(hook))
    {
        return Err(Error::Refused(format!(
            "{ifname} {}: tc priority {} is taken by a {} filter macvswitch did not make (handle {:#x}); macvswitch needs that priority",
            hook_name(hook),
            clsact::PRIORITY,
            foreign.kind,
            foreign.handle
        )));
    }
    let mut created_qdisc = false;
    if !filters.iter().any(|f| f.is_ours(hook)) {
        created_qdisc = match clsact::add_qdisc(index).map_err(io)? {
            Ok(created) => created,
            Err(errno) => return Err(clsact_refusal(ifname, hook, "qdisc", errno)),
        };
        if !created_qdisc && clsact::ingress_qdisc(index).map_err(io)?.as_deref() == Some("ingress")
        {
            return Err(Error::Refused(format!(
                "{ifname} has an `ingress` qdisc, which leaves no room for the clsact qdisc macvswitch needs there"
            )));
        }
    }
    let fd = program
        .fd()
        .map_err(|e| Error::bpf(format!("program {name}"), e))?
        .as_fd()
        .as_raw_fd();
    if let Err(errno) = clsact::create_or_replace(index, hook, fd, name).map_err(io)? {
        if created_qdisc {
            let _ = clsact::delete_qdisc(index);
        }
        return Err(clsact_refusal(ifname, hook, "filter", errno));
    }
    // Ours runs first (its priority is below any the kernel hands out), so
    // an older build's filters can go now without a gap.
    remove_legacy(ifname, index, hook)?;
    Ok(Attached {
        mode: AttachMode::Clsact,
        created_qdisc,
    })
}

/// Removes the filters an older macvswitch left on `hook` (see
/// `Filter::is_legacy`).
fn remove_legacy(ifname: &str, index: u32, hook: TcAttachType) -> Result<()> {
    let io = |e| Error::io(format!("tc on {ifname}"), e);
    for filter in clsact::filters(index, hook).map_err(io)? {
        if filter.is_legacy(hook, &PROGRAMS) {
            log::info!(
                "{ifname} {}: removing an older macvswitch's filter (priority {}, handle {:#x})",
                hook_name(hook),
                filter.priority,
                filter.handle
            );
            clsact::delete_at(index, hook, filter.priority, filter.handle).map_err(io)?;
        }
    }
    Ok(())
}

/// Removes what of ours `hook` of `ifname` carries: the TCX link pinned at
/// `pin`, and our clsact filter (the device may be gone: then both went
/// with it).
pub(super) fn detach(ifname: &str, hook: TcAttachType, pin: &Path) -> Result<()> {
    unpin_link(pin)?;
    let Some(index) = ifindex(ifname) else {
        return Ok(());
    };
    let io = |e| Error::io(format!("removing our tc filter from {ifname}"), e);
    // Only a filter that is ours by every mark, priority, handle and name.
    if clsact::filters(index, hook)
        .map_err(io)?
        .iter()
        .any(|filter| filter.is_ours(hook))
    {
        clsact::delete(index, hook).map_err(io)?;
    }
    remove_legacy(ifname, index, hook)
}

/// Removes the clsact qdisc of `ifname` if nothing is left on it: called
/// only for qdiscs macvswitch created, so an operator's filters added
/// since keep theirs.
pub(super) fn remove_qdisc_if_empty(ifname: &str) -> Result<()> {
    let Some(index) = ifindex(ifname) else {
        return Ok(());
    };
    let io = |e| Error::io(format!("tc on {ifname}"), e);
    let empty = clsact::filters(index, TcAttachType::Ingress)
        .map_err(io)?
        .is_empty()
        && clsact::filters(index, TcAttachType::Egress)
            .map_err(io)?
            .is_empty();
    if empty && clsact::ingress_qdisc(index).map_err(io)?.as_deref() == Some("clsact") {
        clsact::delete_qdisc(index).map_err(io)?;
    } else if !empty {
        log::info!("{ifname}: other filters are on the clsact qdisc macvswitch made; leaving it");
    }
    Ok(())
}

/// Whether attaching `hook` of `ifname` now would create a clsact qdisc
/// (so the caller can record that it is ours before it exists).
pub(super) fn would_create_qdisc(
    program: &SchedClassifier,
    ifname: &str,
    hook: TcAttachType,
    pin: &Path,
    prefer: Option<AttachMode>,
) -> Result<bool> {
    if current(ifname, hook, pin).is_some() {
        return Ok(false);
    }
    let Some(index) = ifindex(ifname) else {
        return Ok(false);
    };
    Ok(wanted_mode(program, prefer)? == AttachMode::Clsact
        && clsact::ingress_qdisc(index)
            .map_err(|e| Error::io(format!("tc on {ifname}"), e))?
            .is_none())
}

#[cfg(test)]
mod tests {
    use aya::programs::{
        TcAttachType,
        tc::{NlOptions, TcAttachOptions},
    };
    use macvswitch_common::names;

    use super::{super::clsact, attach, detach};

    /// What an older build left on a kernel without TCX (two filters of
    /// the same program at priorities the kernel picked) is replaced by one
    /// filter of ours on the next attach, and detach leaves nothing. On lo
    /// of a scratch network namespace.
    #[test]
    fn legacy_filters_give_way_to_one_of_ours() {
        if crate::EBPF_OBJECT.is_empty() || !crate::kernel::sys::is_root() {
            eprintln!("skipping: needs root and the eBPF object");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: this thread only; it ends with the test.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let mut ebpf = crate::kernel::datapath::load_object(&[names::PROG_FROM_GUEST])
                .expect("loading the object");
            let program = crate::kernel::datapath::classifier(&mut ebpf, names::PROG_FROM_GUEST)
                .expect("classifier");
            clsact::add_qdisc(1)
                .expect("netlink")
                .expect("clsact on lo");
            let hook = TcAttachType::Egress;
            for _ in 0..2 {
                let id = program
                    .attach_with_options("lo", hook, TcAttachOptions::Netlink(NlOptions::default()))
                    .expect("legacy attach");
                std::mem::forget(program.take_link(id).expect("link"));
            }
            assert_eq!(clsact::filters(1, hook).expect("filters").len(), 2);
            crate::kernel::datapath::set_attach_choice(crate::model::types::AttachChoice::Clsact);
            let pin = std::path::Path::new("/nonexistent/pin");
            attach(program, names::PROG_FROM_GUEST, "lo", hook, pin, None).expect("attach");
            let filters = clsact::filters(1, hook).expect("filters");
            assert_eq!(filters.len(), 1, "{filters:?}");
            assert!(filters[0].is_ours(hook), "{filters:?}");
            detach("lo", hook, pin).expect("detach");
            assert!(clsact::filters(1, hook).expect("filters").is_empty());
        })
        .join()
        .expect("the test thread");
    }
}
