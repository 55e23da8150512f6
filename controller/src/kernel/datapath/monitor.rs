//! The drop monitor's maps, opened from their pins: the switch the
//! programs read (`MONITOR`), their per-CPU counts (`MONITOR_STATS`) and
//! one ring buffer per monitor slot. See `macvswitch_common::monitor`.

use aya::maps::{Array, Map, MapData, PerCpuArray, ProgramArray, RingBuf};
use macvswitch_common::{
    monitor::{MonitorControl, MonitorStats},
    names,
};

use super::{
    PinLayout,
    maps::{map_err, open_pinned},
    object::classifier,
};
use crate::error::{Error, Result};

/// The switch and the counts.
pub struct MonitorMaps {
    control: Array<MapData, MonitorControl>,
    stats: PerCpuArray<MapData, MonitorStats>,
}

fn required(pins: &PinLayout, name: &str) -> Result<Map> {
    open_pinned(pins, name)?.ok_or_else(|| {
        Error::Refused(format!(
            "no monitor map {name} under {}: the data path was never loaded here (add an endpoint), or by a build without the monitor (`macvswitch reload`)",
            pins.root().display()
        ))
    })
}

impl MonitorMaps {
    pub fn open(pins: &PinLayout) -> Result<Self> {
        let control = required(pins, names::MAP_MONITOR)?;
        let stats = required(pins, names::MAP_MONITOR_STATS)?;
        Ok(Self {
            control: Array::try_from(control)
                .map_err(map_err(format!("opening {}", names::MAP_MONITOR)))?,
            stats: PerCpuArray::try_from(stats)
                .map_err(map_err(format!("opening {}", names::MAP_MONITOR_STATS)))?,
        })
    }

    pub fn control(&self) -> Result<MonitorControl> {
        self.control
            .get(&0, 0)
            .map_err(map_err(format!("reading {}", names::MAP_MONITOR)))
    }

    /// Replaces the switch whole (the programs read each field once).
    pub fn set_control(&mut self, control: &MonitorControl) -> Result<()> {
        self.control
            .set(0, control, 0)
            .map_err(map_err(format!("writing {}", names::MAP_MONITOR)))
    }

    /// Published and lost events, summed over CPUs, since the map was made.
    pub fn stats(&self) -> Result<MonitorStats> {
        let per_cpu = self
            .stats
            .get(&0, 0)
            .map_err(map_err(format!("reading {}", names::MAP_MONITOR_STATS)))?;
        let mut total = MonitorStats::default();
        for stats in per_cpu.iter() {
            total.accumulate(stats);
        }
        Ok(total)
    }
}

/// The ring buffer of monitor slot `slot`.
pub fn ring(pins: &PinLayout, slot: usize) -> Result<RingBuf<MapData>> {
    let name = names::MAP_MONITOR_EVENTS[slot];
    RingBuf::try_from(required(pins, name)?).map_err(map_err(format!("opening {name}")))
}

/// Loads `monitor_publish` of a freshly loaded object and puts it where
/// the programs tail-call it (`MONITOR_PROGS`, pinned: the array keeps the
/// program alive, and programs of an older build still attached reach this
/// one, whose hand-over is the same).
pub(super) fn install_publisher(ebpf: &mut aya::Ebpf) -> Result<()> {
    let name = names::PROG_MONITOR_PUBLISH;
    let program = classifier(ebpf, name)?;
    program
        .load()
        .map_err(|e| Error::bpf(format!("loading program {name}"), e))?;
    let fd = program
        .fd()
        .map_err(|e| Error::bpf(format!("program {name}"), e))?
        .try_clone()
        .map_err(|e| Error::io(format!("duplicating the fd of program {name}"), e))?;
    let map = ebpf.map_mut(names::MAP_MONITOR_PROGS).ok_or_else(|| {
        Error::Refused(format!(
            "the eBPF object lacks map {}",
            names::MAP_MONITOR_PROGS
        ))
    })?;
    let mut progs = ProgramArray::try_from(map)
        .map_err(map_err(format!("opening {}", names::MAP_MONITOR_PROGS)))?;
    progs
        .set(0, &fd, 0)
        .map_err(map_err(format!("setting {}", names::MAP_MONITOR_PROGS)))
}
