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
    io::Write as _,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use macvswitch_common::{
    DropReason,
    monitor::{MONITOR_RATE, MonitorEvent, MonitorStats},
};
use serde_json::json;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::MonitorArgs,
    error::{Error, Result},
    kernel::datapath::monitor::{MonitorMaps, ring},
    model::policy::PortVlans,
    ops::instance::Instance,
};

mod event;
mod slot;

use event::Shown;
use slot::{Slot, clock_ns};

/// How long a slot publishes without being renewed: a monitor killed
/// with SIGKILL is published to for at most this long.
pub const LEASE: Duration = Duration::from_secs(5);
/// `--all` shows 1 in this many passed frames per CPU unless `--sample`.
pub const DEFAULT_SAMPLE: u32 = 100;
/// How often a monitor renews its lease and reports losses.
const RENEW: Duration = Duration::from_secs(1);

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
