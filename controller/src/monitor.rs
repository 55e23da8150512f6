//! `macvswitch monitor`: a live stream of the frames the programs drop
//! (and, with `--all`, a sample of those they pass), read from a ring
//! buffer the programs write only while a monitor runs.
//!
//! Each monitor takes one of `MONITOR_SLOTS` slots by holding a lock file
//! `monitor/slotN` in the state directory, and its slot's lease in the
//! `MONITOR` map: it renews the lease every second and clears it when it
//! exits. A monitor killed with SIGKILL drops its lock file with its
//! process; its lease runs out after [`LEASE`], so publishing stops by
//! itself, and the next monitor to start or stop clears the slot's bit.
//! Changes to `MONITOR` are made under `monitor/control`, another lock
//! file, so that two monitors never write over each other's slot.

use std::{
    collections::HashMap,
    fs::File,
    io::Write as _,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use macvswitch_common::{
    DropReason, Tag,
    monitor::{
        MONITOR_DROPS, MONITOR_PASSES, MONITOR_RATE, MONITOR_SLOTS, MONITOR_TO_GUEST,
        MonitorControl, MonitorEvent, MonitorStats,
    },
};
use serde_json::{Value, json};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::MonitorArgs,
    error::{Error, Result},
    kernel::datapath::monitor::{MonitorMaps, ring},
    model::{
        frame::{Summary, TagPlace},
        policy::PortVlans,
    },
    ops::instance::Instance,
};

/// How long a slot publishes without being renewed: a monitor killed
/// with SIGKILL is published to for at most this long.
pub const LEASE: Duration = Duration::from_secs(5);
/// `--all` shows 1 in this many passed frames per CPU unless `--sample`.
pub const DEFAULT_SAMPLE: u32 = 100;
/// How often a monitor renews its lease and reports losses.
const RENEW: Duration = Duration::from_secs(1);

/// CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads) or CLOCK_REALTIME, in ns.
fn clock_ns(clock: libc::clockid_t) -> i128 {
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
struct Slot {
    maps: MonitorMaps,
    dir: PathBuf,
    slot: usize,
    _held: File,
    /// 1 in how many passed frames (`--all`), or `None` for drops only.
    sample: Option<u32>,
}

impl Slot {
    fn claim(dir: PathBuf, maps: MonitorMaps, sample: Option<u32>) -> Result<Self> {
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
    fn renew(&mut self) -> Result<()> {
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
    async fn start(&mut self) -> Result<()> {
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

    fn leave(&mut self) -> Result<()> {
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

/// Names and VLANs of the ports events come from, by ifindex.
struct Ports {
    by_ifindex: HashMap<u32, (String, Option<u16>)>,
    loaded: Instant,
}

impl Ports {
    fn load(instance: &Instance) -> Result<Self> {
        let mut by_ifindex = HashMap::new();
        for record in instance.list()? {
            let vlan = match &record.vlans {
                PortVlans::Access { vlan } => Some(vlan.get()),
                PortVlans::Tunnel { svlan, .. } => Some(svlan.get()),
                _ => None,
            };
            by_ifindex.insert(record.ifindex, (record.name.to_string(), vlan));
        }
        for uplink in instance.uplinks()? {
            if let Some(port) = uplink.host_port {
                let vlan = match &port.vlans {
                    PortVlans::Access { vlan } => Some(vlan.get()),
                    _ => None,
                };
                by_ifindex.insert(port.ifindex, (port.name.to_string(), vlan));
            }
        }
        Ok(Self {
            by_ifindex,
            loaded: Instant::now(),
        })
    }

    /// The port at `ifindex`, reading the state again (at most once a
    /// second) for one added since.
    fn get(&mut self, instance: &Instance, ifindex: u32) -> Option<&(String, Option<u16>)> {
        if !self.by_ifindex.contains_key(&ifindex)
            && self.loaded.elapsed() >= RENEW
            && let Ok(fresh) = Self::load(instance)
        {
            *self = fresh;
        }
        self.by_ifindex.get(&ifindex)
    }
}

/// What the options let through.
struct Filter {
    endpoints: Vec<String>,
    reasons: Vec<DropReason>,
    vlan: Option<u16>,
}

impl Filter {
    fn admits(&self, endpoint: &str, port_vlan: Option<u16>, event: &Shown) -> bool {
        (self.endpoints.is_empty() || self.endpoints.iter().any(|e| e == endpoint))
            && (self.reasons.is_empty() || event.reason.is_some_and(|r| self.reasons.contains(&r)))
            && self.vlan.is_none_or(|vlan| {
                port_vlan == Some(vlan)
                    || event
                        .summary
                        .as_ref()
                        .is_some_and(|s| s.tags.iter().any(|(tag, _)| tag.vid() == vlan))
            })
    }
}

/// An event as shown.
struct Shown {
    wall_ns: i128,
    endpoint: String,
    ifindex: u32,
    to_guest: bool,
    reason: Option<DropReason>,
    /// The reason's number when this build does not know it.
    unknown_reason: Option<u8>,
    len: u32,
    summary: Option<Summary>,
}

impl Shown {
    fn new(event: &MonitorEvent, endpoint: String, clock_offset: i128) -> Self {
        let mut outside = Vec::new();
        if event.carried_tpid != 0 {
            outside.push((
                Tag {
                    tpid: event.carried_tpid,
                    tci: event.carried_tci,
                },
                TagPlace::Mark,
            ));
        }
        if event.meta_tpid != 0 {
            outside.push((
                Tag {
                    tpid: event.meta_tpid,
                    tci: event.meta_tci,
                },
                TagPlace::Metadata,
            ));
        }
        let captured = usize::from(event.captured).min(event.bytes.len());
        let reason = DropReason::from_u32(u32::from(event.reason));
        Self {
            wall_ns: i128::from(event.time_ns) + clock_offset,
            endpoint,
            ifindex: event.ifindex,
            to_guest: event.direction == MONITOR_TO_GUEST,
            unknown_reason: (event.reason != 0 && reason.is_none()).then_some(event.reason),
            reason,
            len: event.len,
            summary: Summary::read(event.len, &event.bytes[..captured], &outside),
        }
    }

    fn verdict(&self) -> &'static str {
        if self.reason.is_some() || self.unknown_reason.is_some() {
            "drop"
        } else {
            "pass"
        }
    }

    fn reason_name(&self) -> Option<String> {
        match (self.reason, self.unknown_reason) {
            (Some(reason), _) => Some(reason.name().to_string()),
            (None, Some(n)) => Some(format!("reason-{n}")),
            (None, None) => None,
        }
    }

    fn direction(&self) -> &'static str {
        if self.to_guest {
            "to_guest"
        } else {
            "from_guest"
        }
    }

    fn json(&self) -> Value {
        let mut value = match &self.summary {
            Some(summary) => summary.json(),
            None => json!({ "len": self.len }),
        };
        value["time"] = json!(rfc3339(self.wall_ns));
        value["endpoint"] = json!(self.endpoint);
        value["ifindex"] = json!(self.ifindex);
        value["direction"] = json!(self.direction());
        value["verdict"] = json!(self.verdict());
        value["reason"] = json!(self.reason_name());
        value
    }

    fn text(&self) -> String {
        let fate = match self.reason_name() {
            Some(reason) => format!("drop {reason}"),
            None => "pass".into(),
        };
        let frame = match &self.summary {
            Some(summary) => summary.to_string(),
            None => format!("runt len {}", self.len),
        };
        format!(
            "{} {} {} {fate} {frame}",
            clock_text(self.wall_ns),
            self.endpoint,
            self.direction().replace('_', "-"),
        )
    }
}

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `16:40:01.123456` (UTC).
fn clock_text(wall_ns: i128) -> String {
    let micros = wall_ns.div_euclid(1000);
    let secs = micros.div_euclid(1_000_000);
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        micros.rem_euclid(1_000_000)
    )
}

/// `2026-12-03T16:40:01.123456Z`.
fn rfc3339(wall_ns: i128) -> String {
    let secs = wall_ns.div_euclid(1_000_000_000);
    let (year, month, day) = civil(secs.div_euclid(86_400) as i64);
    format!("{year:04}-{month:02}-{day:02}T{}Z", clock_text(wall_ns))
}

/// Losses since this monitor started.
fn losses(now: &MonitorStats, start: &MonitorStats) -> (u64, u64) {
    (
        now.lost_rate.saturating_sub(start.lost_rate),
        now.lost_full.saturating_sub(start.lost_full),
    )
}

/// Writes one line to stdout; false when nobody reads it any more (a
/// closed pipe): the monitor then stops.
fn emit(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// Runs until SIGINT, SIGTERM or SIGHUP, or until stdout closes.
pub async fn run(instance: &Instance, args: &MonitorArgs) -> Result<()> {
    let mut endpoints = Vec::new();
    for name in &args.endpoints {
        endpoints.push(instance.get(name)?.name.to_string());
    }
    let reasons = args
        .reasons
        .iter()
        .map(|name| {
            DropReason::ALL
                .iter()
                .copied()
                .find(|r| r.name() == name)
                .expect("clap admits only drop-reason names")
        })
        .collect();
    let filter = Filter {
        endpoints,
        reasons,
        vlan: args.vlan.map(|vid| vid.get()),
    };
    let signal_stream = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::io(format!("handling {name}"), e))
    };
    let mut sigterm = signal_stream(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = signal_stream(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = signal_stream(SignalKind::hangup(), "SIGHUP")?;

    let maps = MonitorMaps::open(&instance.pins)?;
    let start = maps.stats()?;
    let sample = match (args.all, args.sample) {
        (true, sample) => Some(sample.unwrap_or(DEFAULT_SAMPLE)),
        (false, None) => None,
        (false, Some(n)) => {
            return Err(Error::invalid(
                "--sample",
                n,
                "needs --all: it samples passed frames",
            ));
        }
    };
    let mut slot = Slot::claim(instance.state_dir.root().join("monitor"), maps, sample)?;
    let mut ring: RingBuf<MapData> = ring(&instance.pins, slot.slot)?;
    // Events left by this slot's previous monitor are not ours.
    while ring.next().is_some() {}
    let mut ports = Ports::load(instance)?;
    let clock_offset = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC);
    // SAFETY: the ring buffer owns its fd and neither closes nor replaces
    // it while the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .map_err(|e| Error::io("polling the monitor ring buffer", e))?;
    let result = async {
        slot.start().await?;
        let what = match sample {
            Some(n) => format!("drops, and 1 in {n} passed frames per CPU"),
            None => "drops".into(),
        };
        if args.json {
            let ready = json!({
                "ready": true,
                "slot": slot.slot,
                "watching": what,
                "rate_limit_per_cpu": MONITOR_RATE,
            });
            if !emit(&ready.to_string()) {
                return Ok(());
            }
        } else {
            eprintln!(
                "monitor: ready, showing {what} (at most {MONITOR_RATE} events per second per CPU); Ctrl-C stops"
            );
        }
        let mut tick = tokio::time::interval(RENEW);
        let mut reported = (0, 0);
        loop {
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => break,
                _ = tick.tick() => {
                    slot.renew()?;
                    let lost = losses(&slot.maps.stats()?, &start);
                    if lost != reported {
                        reported = lost;
                        if !report_lost(args.json, lost) {
                            break;
                        }
                    }
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(|e| Error::io("polling the monitor ring buffer", e))?;
                    let mut open = true;
                    while let Some(item) = guard.get_inner_mut().next() {
                        if item.len() < std::mem::size_of::<MonitorEvent>() {
                            continue;
                        }
                        // SAFETY: the programs write whole MonitorEvents; the
                        // length was checked; an unaligned read of plain data.
                        let event: MonitorEvent =
                            unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                        drop(item);
                        let (endpoint, port_vlan) = match ports.get(instance, event.ifindex) {
                            Some((name, vlan)) => (name.clone(), *vlan),
                            None => (format!("ifindex-{}", event.ifindex), None),
                        };
                        let shown = Shown::new(&event, endpoint, clock_offset);
                        if !filter.admits(&shown.endpoint, port_vlan, &shown) {
                            continue;
                        }
                        let line = if args.json { shown.json().to_string() } else { shown.text() };
                        if !emit(&line) {
                            open = false;
                            break;
                        }
                    }
                    guard.clear_ready();
                    if !open {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let left = slot.leave();
    result?;
    left?;
    let lost = losses(&slot.maps.stats()?, &start);
    if lost != (0, 0) || args.json {
        report_lost(args.json, lost);
    }
    Ok(())
}

/// Says how many events were lost since the start; false if stdout closed.
fn report_lost(json: bool, (rate, full): (u64, u64)) -> bool {
    if json {
        emit(&json!({ "lost": { "rate_limit": rate, "ring_full": full } }).to_string())
    } else {
        eprintln!(
            "monitor: {rate} events lost to the rate limit, {full} to a full ring buffer, since the start"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_text() {
        let ns = (1_796_316_001_i128 * 1_000_000_000) + 123_456_789;
        assert_eq!(rfc3339(ns), "2026-12-03T16:40:01.123456Z");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_514), (2026, 3, 2));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
