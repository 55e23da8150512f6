//! Work inside another network namespace (a container's, for CNI): a
//! scoped thread joins it, so the process and its other threads stay where
//! they are.

use std::{
    fs::File,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use crate::error::{Error, Result};

/// Opens a network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn open(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("opening network namespace {}", path.display()), e))
}

/// Runs `f` on a thread that has joined the namespace at `path`. A tokio
/// runtime handle, if there is one, is entered there too, so netlink
/// sockets made by `f` belong to that namespace and to this runtime.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = open(path)?;
    let runtime = tokio::runtime::Handle::try_current().ok();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let _entered = runtime.as_ref().map(|handle| handle.enter());
                // SAFETY: `ns` is an open namespace fd owned by this
                // closure; setns changes only this thread's namespace, and
                // the thread ends with the scope.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::io(
                        format!("joining network namespace {}", path.display()),
                        std::io::Error::last_os_error(),
                    ));
                }
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Whether the namespace file at `path` is still there and a namespace
/// (a runtime may have removed it before a DEL).
pub fn exists(path: &Path) -> bool {
    open(path).is_ok()
}
