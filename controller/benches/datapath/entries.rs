//! Per-frame cost with 2 to 4,094 endpoints in the maps (one VLAN each at
//! 4,094: every VLAN 1..=4094 in use), and the maps' memory.

use crate::{
    mode::Mode,
    object::{MapMemory, Object, TEST_IFINDEX},
    progs::{self, Bench},
    rows::{self, GUEST_MAC, Port, Row},
    stats::Summary,
};
use macvswitch_common::EndpointPolicy;

/// Endpoint counts measured (the one under test included).
pub const ENTRIES: [usize; 4] = [2, 100, 1000, 4094];

/// How each row is timed at scale: the push and pop rows only have a valid
/// fresh-skb figure; the drop row loops.
const ROWS: [(Row, Timing); 3] = [
    (rows::ACCESS_PUSH, Timing::Fresh),
    (rows::ACCESS_POP, Timing::Fresh),
    (rows::WRONG_VLAN, Timing::Loop),
];

#[derive(Clone, Copy)]
pub enum Timing {
    Loop,
    Fresh,
}

pub struct ScaleRow {
    pub name: &'static str,
    pub timing: Timing,
    /// ns over the baseline, per entry count.
    pub diff: Vec<Summary>,
}

pub struct Scale {
    pub entries: Vec<usize>,
    pub rows: Vec<ScaleRow>,
    pub maps: Vec<MapRow>,
    pub cpus: usize,
}

/// One map, empty and with every endpoint slot in use.
pub struct MapRow {
    pub empty: MapMemory,
    pub full_entries: usize,
    pub full_memlock: u64,
}

impl MapRow {
    /// Bytes per endpoint: what filling added, or for a preallocated map
    /// (nothing added) its fixed size divided by its slots.
    pub fn per_endpoint(&self) -> Option<f64> {
        let grown = self.full_memlock.saturating_sub(self.empty.memlock);
        if grown > 0 {
            Some(grown as f64 / self.full_entries as f64)
        } else if self.preallocated() {
            Some(self.empty.memlock as f64 / f64::from(self.empty.max_entries.max(1)))
        } else {
            None
        }
    }

    /// BPF_F_NO_PREALLOC unset.
    pub fn preallocated(&self) -> bool {
        self.empty.flags & 1 == 0
    }
}

/// An object whose maps hold `n` endpoints: the one under test on VLAN 10
/// and `n - 1` others, their VLANs spread over 1..=4094.
fn filled(n: usize) -> Object {
    let mut object = Object::load();
    object.set_endpoint(TEST_IFINDEX, &rows::policy(GUEST_MAC, Port::Access(10)));
    for i in 1..n {
        let vlan = (i % 4094) as u16 + 1;
        let mac = [0x02, 0, 0, 0x42, (i >> 8) as u8, i as u8];
        // Each in its own slot, at ifindexes the direct arrays cover.
        let policy = EndpointPolicy {
            slot: i as u16,
            ..rows::policy(mac, Port::Access(vlan))
        };
        object.set_endpoint(1000 + i as u32, &policy);
    }
    object
}

pub fn run(mode: &Mode) -> Scale {
    // One object per entry count and row, all alive at once so that the
    // rounds interleave across entry counts.
    let mut benches = vec![Bench::new(rows::BASELINE)];
    for &n in &ENTRIES {
        for (row, _) in ROWS {
            benches.push(Bench::with_object(row, filled(n)));
        }
    }
    let samples = progs::measure(&mut benches, mode);
    let base = &samples[0];
    let rows = ROWS
        .iter()
        .enumerate()
        .map(|(r, (row, timing))| {
            let diff = (0..ENTRIES.len())
                .map(|e| {
                    let s = &samples[1 + e * ROWS.len() + r];
                    let (mine, theirs) = match timing {
                        Timing::Loop => (&s.loop_ns, &base.loop_ns),
                        Timing::Fresh => (&s.fresh_ns, &base.fresh_ns),
                    };
                    let d: Vec<f64> = mine.iter().zip(theirs).map(|(a, b)| a - b).collect();
                    Summary::of(&d)
                })
                .collect();
            ScaleRow {
                name: row.name,
                timing: *timing,
                diff,
            }
        })
        .collect();
    let empty = Object::load().maps();
    let full_entries = *ENTRIES.last().expect("entries");
    let full = benches.last().expect("benches").object().maps();
    let maps = empty
        .into_iter()
        .map(|e| {
            let full_memlock = full
                .iter()
                .find(|f| f.name == e.name)
                .map_or(e.memlock, |f| f.memlock);
            MapRow {
                empty: e,
                full_entries,
                full_memlock,
            }
        })
        .collect();
    Scale {
        entries: ENTRIES.to_vec(),
        rows,
        maps,
        cpus: aya::util::nr_cpus().expect("counting CPUs"),
    }
}
