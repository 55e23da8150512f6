//! A monitor's slot: the lock file that says it is taken, and its lease
//! in the `MONITOR` switch the programs read.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use macvswitch_common::monitor::{MONITOR_DROPS, MONITOR_PASSES, MONITOR_SLOTS, MonitorControl};

use super::LEASE;
use crate::{
    error::{Error, Result},
    kernel::datapath::monitor::MonitorMaps,
};

/// CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads) or CLOCK_REALTIME, in ns.
pub(super) fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Opens (creating) the lock file `path` and takes an exclusive flock on
/// it; `Ok(None)` if another process holds it and `wait` is false.
fn lock(path: &Path, wait: bool) -> Result<Option<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let how = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) && !wait {
        return Ok(None);
    }
    Err(Error::io(format!("locking {}", path.display()), e))
}

/// This monitor's slot: its lock file held, its lease in the map.
pub(super) struct Slot {
    pub(super) maps: MonitorMaps,
    dir: PathBuf,
    pub(super) slot: usize,
    _held: File,
    /// 1 in how many passed frames (`--all`), or `None` for drops only.
    sample: Option<u32>,
}

impl Slot {
    pub(super) fn claim(dir: PathBuf, maps: MonitorMaps, sample: Option<u32>) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        for slot in 0..MONITOR_SLOTS {
            if let Some(held) = lock(&dir.join(format!("slot{slot}")), false)? {
                return Ok(Self {
                    maps,
                    dir,
                    slot,
                    _held: held,
                    sample,
                });
            }
        }
        Err(Error::Refused(format!(
            "{MONITOR_SLOTS} monitors are running already, the most at once"
        )))
    }

    /// Changes the switch under the control lock, clearing slots whose
    /// monitor is gone (its lock file is free) on the way.
    fn update(&mut self, change: impl FnOnce(&mut MonitorControl, usize)) -> Result<()> {
        let _control = lock(&self.dir.join("control"), true)?;
        let mut control = self.maps.control()?;
        for other in (0..MONITOR_SLOTS).filter(|other| *other != self.slot) {
            if control.active & bits(other) != 0
                && lock(&self.dir.join(format!("slot{other}")), false)?.is_some()
            {
                clear(&mut control, other);
            }
        }
        change(&mut control, self.slot);
        self.maps.set_control(&control)
    }

    /// Takes or renews the lease.
    pub(super) fn renew(&mut self) -> Result<()> {
        let until = (clock_ns(libc::CLOCK_MONOTONIC) + LEASE.as_nanos() as i128) as u64;
        let sample = self.sample;
        self.update(|control, slot| {
            control.active |= bits(slot) & MONITOR_DROPS;
            control.drops_until[slot] = until;
            if let Some(sample) = sample {
                control.active |= bits(slot) & MONITOR_PASSES;
                control.passes_until[slot] = until;
                control.sample[slot] = sample;
            }
        })
    }

    /// Takes the lease, and makes sure it holds: a program that saw every
    /// lease run out just before may clear the switch just after (it does
    /// so when all monitors are gone). A program run takes microseconds.
    pub(super) async fn start(&mut self) -> Result<()> {
        for _ in 0..5 {
            self.renew()?;
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.maps.control()?.active & bits(self.slot) & MONITOR_DROPS != 0 {
                return Ok(());
            }
        }
        Err(Error::Refused(
            "the monitor switch was cleared again and again while starting".into(),
        ))
    }

    pub(super) fn leave(&mut self) -> Result<()> {
        self.update(clear)
    }
}

/// Slot `slot`'s bits in `MonitorControl::active`, drops and passes.
fn bits(slot: usize) -> u32 {
    (MONITOR_DROPS | MONITOR_PASSES) & (0x101 << slot)
}

fn clear(control: &mut MonitorControl, slot: usize) {
    control.active &= !bits(slot);
    control.drops_until[slot] = 0;
    control.passes_until[slot] = 0;
    control.sample[slot] = 0;
}
