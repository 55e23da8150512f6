//! A private, unpinned copy of the eBPF object, loaded like the controller
//! loads it, with one endpoint under test on ifindex 1 (BPF_PROG_TEST_RUN
//! runs TC programs on loopback unless told otherwise; for uplink_egress
//! loopback plays the lower device).

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    Ebpf,
    maps::{HashMap, MapInfo, PerCpuHashMap, PerCpuValues},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use macvswitch::kernel::datapath;
use macvswitch_common::{
    EndpointCounters, EndpointPolicy, SourceInfo, SourceKey, UplinkCounters, names,
};

/// The device BPF_PROG_TEST_RUN gives the skb by default.
pub const TEST_IFINDEX: u32 = 1;

pub struct Object {
    ebpf: Ebpf,
}

impl Object {
    pub fn load() -> Object {
        let ebpf = datapath::load_object(&[
            names::PROG_BASELINE,
            crate::rows::PROG_BENCH_MONITOR_IDLE,
            names::PROG_FROM_GUEST,
            names::PROG_TO_GUEST,
            names::PROG_UPLINK_EGRESS,
        ])
        .unwrap_or_else(|e| panic!("loading the eBPF object: {e}"));
        Object { ebpf }
    }

    /// Gives `ifindex` a policy and zeroed counters.
    pub fn set_endpoint(&mut self, ifindex: u32, policy: &EndpointPolicy) {
        datapath::set_object_policy(&mut self.ebpf, ifindex, Some(policy))
            .expect("writing a policy");
        datapath::reset_object_counters(&mut self.ebpf, policy.slot).expect("zeroing counters");
    }

    /// The map `name`, as the map type `T`.
    fn map_mut<'a, T>(&'a mut self, name: &str) -> T
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("the eBPF object lacks {name}"));
        T::try_from(map).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A local endpoint `mac` on lower device `lower`, as uplink_egress and
    /// to_guest look senders up.
    pub fn set_source(&mut self, lower: u32, mac: [u8; 6], info: &SourceInfo) {
        let mut sources: HashMap<_, SourceKey, SourceInfo> = self.map_mut(names::MAP_SOURCES);
        sources
            .insert(SourceKey::new(lower, mac), info, 0)
            .expect("writing a source");
    }

    /// Relay on for `lower` (an UPLINKS entry with `flags`) and zeroed
    /// counters, as `uplink set DEV --reflective-relay on` does.
    pub fn set_uplink(&mut self, lower: u32, flags: u32) {
        datapath::set_object_uplink(&mut self.ebpf, lower, flags, None).expect("writing an uplink");
        let mut counters: PerCpuHashMap<_, u32, UplinkCounters> =
            self.map_mut(names::MAP_UPLINK_COUNTERS);
        let cpus = aya::util::nr_cpus().expect("counting CPUs");
        let zeros = PerCpuValues::try_from(vec![UplinkCounters::default(); cpus]).expect("zeros");
        counters
            .insert(lower, zeros, 0)
            .expect("zeroing uplink counters");
    }

    /// The relay counters of `lower`, summed over CPUs (zero without an
    /// entry).
    pub fn uplink_counters(&self, lower: u32) -> UplinkCounters {
        let counters: PerCpuHashMap<_, u32, UplinkCounters> = self
            .ebpf
            .map(names::MAP_UPLINK_COUNTERS)
            .expect("UPLINK_COUNTERS")
            .try_into()
            .expect("UPLINK_COUNTERS is a per-CPU hash map");
        let mut total = UplinkCounters::default();
        if let Ok(per_cpu) = counters.get(&lower, 0) {
            for c in per_cpu.iter() {
                total.accumulate(c);
            }
        }
        total
    }

    /// The counters in `slot`, summed over CPUs.
    pub fn counters(&self, slot: u16) -> EndpointCounters {
        datapath::object_counters(&self.ebpf, slot).expect("reading COUNTERS")
    }

    /// One BPF_PROG_TEST_RUN: the verdict of the last repeat and the
    /// kernel's average duration per repeat, in ns.
    pub fn run(&mut self, program: &str, frame: &[u8], repeat: u32) -> (u32, u64) {
        let mut out = vec![0u8; frame.len() + 64];
        let result = classifier(&mut self.ebpf, program)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {program}: {e}"));
        (result.return_value, result.duration.as_nanos() as u64)
    }

    /// The maps the data-path programs use, with their kernel-reported
    /// memory.
    pub fn maps(&self) -> Vec<MapMemory> {
        let mut ids = Vec::new();
        for name in [
            names::PROG_FROM_GUEST,
            names::PROG_TO_GUEST,
            names::PROG_UPLINK_EGRESS,
        ] {
            let program: &SchedClassifier = self
                .ebpf
                .program(name)
                .expect("program")
                .try_into()
                .expect("classifier");
            let info = program.info().expect("program info");
            for id in info.map_ids().expect("map ids").unwrap_or_default() {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids.into_iter().map(MapMemory::of).collect()
    }
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut SchedClassifier {
    datapath::classifier(ebpf, name).unwrap_or_else(|e| panic!("{e}"))
}

/// One map's shape and the memory the kernel charges for it.
#[derive(Clone, Debug)]
pub struct MapMemory {
    pub name: String,
    pub kind: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// `memlock:` of /proc/self/fdinfo (the kernel's map_mem_usage).
    pub memlock: u64,
}

impl MapMemory {
    fn of(id: u32) -> MapMemory {
        let info = MapInfo::from_id(id).expect("map info");
        let fd = info.fd().expect("map fd");
        let fdinfo =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
                .expect("reading fdinfo");
        let memlock = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("memlock in fdinfo");
        MapMemory {
            name: info.name_as_str().unwrap_or("?").to_string(),
            kind: info
                .map_type()
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|_| "?".into()),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
            memlock,
        }
    }
}
