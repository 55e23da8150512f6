//! Packets per second through the real data path, macvswitch versus bare
//! macvtap, in one topology and one run, alternating run by run. The VEPA
//! rows run last, in a second phase (see [`Setup::add_vepa`]).

use std::{
    os::fd::AsRawFd,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use aya::programs::ProgramInfo;
use macvswitch_common::names;
use macvswitch_tests::{
    frame::{ETHERTYPE_TEST, TPID_8021Q, eth, tagged},
    topology::{SWITCH_MAC, SWITCH_PORT},
};

use crate::{
    loadgen::{self, Sent, open_queue, with_vnet_hdr},
    mode::Mode,
    setup::{Setup, Variant},
    stats::Summary,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    GuestToWire,
    WireToGuest,
    GuestToGuest,
    /// macvswitch: VEPA guests with reflective-relay emulation on lower0.
    /// Bare: bridge-mode macvtaps, since bare VEPA guests cannot reach each
    /// other without a hairpin switch.
    GuestToGuestVepa,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::GuestToWire => "guest→wire",
            Scenario::WireToGuest => "wire→guest",
            Scenario::GuestToGuest => "guest→guest (bridge)",
            Scenario::GuestToGuestVepa => "guest→guest (VEPA + relay)",
        }
    }

    /// Generator threads: writers on the tap (guest→wire: one per core,
    /// each on its own queue), or one sender / writer next to one reader.
    fn senders(self) -> usize {
        match self {
            Scenario::GuestToWire => thread::available_parallelism().map_or(2, |n| n.get()),
            Scenario::WireToGuest | Scenario::GuestToGuest | Scenario::GuestToGuestVepa => 1,
        }
    }

    pub fn limit(self) -> String {
        match self {
            Scenario::GuestToWire => format!(
                "{} writer threads, one tap queue each: each write() runs the whole transmit \
                 path (macvtap, TC egress, lower0, veth) on the writer's CPU; counted by sw0's \
                 rx_packets",
                self.senders()
            ),
            Scenario::WireToGuest => "1 AF_PACKET sendmmsg sender on sw0 (lower0's receive path, \
                 macvlan and TC ingress run in its softirq) and 1 reader doing one read() per \
                 frame: delivered < offered means the reader or the tap queue (drops) limits"
                .into(),
            Scenario::GuestToGuest => "1 writer on tap A (transmit, bridge-mode forward) and 1 \
                 reader on tap B (one read() per frame), one core each"
                .into(),
            Scenario::GuestToGuestVepa => "**bare = bridge-mode macvtaps** (plain VEPA needs a \
                 hairpin switch; bridge mode is what an operator would use instead). macvswitch: \
                 VEPA, so each frame goes out through lower0's TC egress, where uplink_egress \
                 redirects it back into lower0's receive path. 1 writer on tap A, 1 reader on tap \
                 B (one read() per frame)"
                .into(),
        }
    }

    /// The programs on this path (for the in-situ figures).
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Scenario::GuestToWire => &[names::PROG_FROM_GUEST],
            Scenario::WireToGuest => &[names::PROG_TO_GUEST],
            Scenario::GuestToGuest => &[names::PROG_FROM_GUEST, names::PROG_TO_GUEST],
            Scenario::GuestToGuestVepa => &[
                names::PROG_FROM_GUEST,
                names::PROG_UPLINK_EGRESS,
                names::PROG_TO_GUEST,
            ],
        }
    }

    /// Measured in the second phase, with VEPA guests and relay on.
    pub fn vepa(self) -> bool {
        matches!(self, Scenario::GuestToGuestVepa)
    }
}

/// Frame sizes as the guest sees them, without FCS: 60 (a 64-byte frame on
/// a real wire) and 1514 (1500-byte MTU). On the trunk, macvswitch's
/// frames carry 4 more bytes of tag.
pub const SIZES: [usize; 2] = [60, 1514];

pub const CASES: [(Scenario, usize); 8] = [
    (Scenario::GuestToWire, SIZES[0]),
    (Scenario::GuestToWire, SIZES[1]),
    (Scenario::WireToGuest, SIZES[0]),
    (Scenario::WireToGuest, SIZES[1]),
    (Scenario::GuestToGuest, SIZES[0]),
    (Scenario::GuestToGuest, SIZES[1]),
    (Scenario::GuestToGuestVepa, SIZES[0]),
    (Scenario::GuestToGuestVepa, SIZES[1]),
];

/// One timed run.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Frames delivered per second.
    pub pps: f64,
    /// Frames the generators got into the kernel per second.
    pub offered: f64,
}

fn payload(size: usize) -> Vec<u8> {
    vec![0x5a; size - 14]
}

fn guest_frame(dst: [u8; 6], src: [u8; 6], size: usize) -> Vec<u8> {
    with_vnet_hdr(&eth(dst, src, ETHERTYPE_TEST, &payload(size)))
}

fn frames(sent: &[Sent]) -> u64 {
    sent.iter().map(|s| s.frames).sum()
}

fn write_threads(node: &Path, buf: &[u8], writers: usize, mode: &Mode) -> Vec<Sent> {
    let fds: Vec<_> = (0..writers).map(|_| open_queue(node)).collect();
    thread::scope(|s| {
        let handles: Vec<_> = fds
            .iter()
            .map(|fd| {
                let raw = fd.as_raw_fd();
                s.spawn(move || loadgen::write_tap(raw, buf, mode.run_time, mode.max_frames))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    })
}

/// Runs `generate` while a reader counts what tap `node` delivers.
fn with_reader(node: &Path, mode: &Mode, generate: impl FnOnce() -> Vec<Sent>) -> (u64, Vec<Sent>) {
    let fd = open_queue(node);
    let raw = fd.as_raw_fd();
    let stop = AtomicBool::new(false);
    let hard_limit = mode.run_time + Duration::from_secs(5);
    thread::scope(|s| {
        let reader = s.spawn(|| loadgen::read_tap(raw, &stop, hard_limit));
        let sent = generate();
        stop.store(true, Ordering::Relaxed);
        (reader.join().expect("reader"), sent)
    })
}

pub fn run_once(setup: &Setup, v: &Variant, scenario: Scenario, size: usize, mode: &Mode) -> Run {
    let switch = &setup.harness.topo.switch;
    let (delivered, sent) = match scenario {
        Scenario::GuestToWire => {
            let buf = guest_frame(SWITCH_MAC, v.a.mac, size);
            let before = loadgen::rx_packets(switch, SWITCH_PORT);
            let sent = write_threads(&v.a.node, &buf, scenario.senders(), mode);
            let after = loadgen::rx_packets(switch, SWITCH_PORT);
            (after - before, sent)
        }
        Scenario::WireToGuest => {
            let frame = match v.wire_vid {
                Some(vid) => tagged(
                    v.a.mac,
                    SWITCH_MAC,
                    TPID_8021Q,
                    vid,
                    ETHERTYPE_TEST,
                    &payload(size),
                ),
                None => eth(v.a.mac, SWITCH_MAC, ETHERTYPE_TEST, &payload(size)),
            };
            let sender = loadgen::packet_sender(switch, SWITCH_PORT);
            with_reader(&v.a.node, mode, || {
                vec![loadgen::send_packets(
                    sender.as_raw_fd(),
                    &frame,
                    mode.run_time,
                    mode.max_frames,
                )]
            })
        }
        Scenario::GuestToGuest | Scenario::GuestToGuestVepa => {
            let buf = guest_frame(v.b.mac, v.a.mac, size);
            with_reader(&v.b.node, mode, || {
                write_threads(&v.a.node, &buf, scenario.senders(), mode)
            })
        }
    };
    let elapsed = sent
        .iter()
        .map(|s| s.elapsed)
        .max()
        .expect("a generator")
        .as_secs_f64();
    Run {
        pps: delivered as f64 / elapsed,
        offered: frames(&sent) as f64 / elapsed,
    }
}

/// The in-situ cost of one program during one run.
#[derive(Clone, Debug)]
pub struct InSitu {
    pub program: &'static str,
    pub runs: u64,
    pub ns_per_run: f64,
}

/// One row of the throughput table.
pub struct Case {
    pub scenario: Scenario,
    pub size: usize,
    pub bare: Vec<Run>,
    pub msw: Vec<Run>,
    /// A macvswitch run with run-time statistics on, and what they said.
    pub stats_run: Option<Run>,
    pub insitu: Vec<InSitu>,
}

impl Case {
    pub fn bare_pps(&self) -> Summary {
        Summary::of(&self.bare.iter().map(|r| r.pps).collect::<Vec<_>>())
    }

    pub fn msw_pps(&self) -> Summary {
        Summary::of(&self.msw.iter().map(|r| r.pps).collect::<Vec<_>>())
    }

    /// Ratio of the medians, macvswitch / bare.
    pub fn ratio(&self) -> f64 {
        self.msw_pps().median / self.bare_pps().median
    }

    /// Ratios of the paired runs (round by round).
    pub fn paired_ratios(&self) -> Summary {
        Summary::of(
            &self
                .bare
                .iter()
                .zip(&self.msw)
                .map(|(b, m)| m.pps / b.pps)
                .collect::<Vec<_>>(),
        )
    }

    pub fn offered(runs: &[Run]) -> Summary {
        Summary::of(&runs.iter().map(|r| r.offered).collect::<Vec<_>>())
    }
}

fn prog_stats(bpffs: &Path, program: &str) -> (u64, u64) {
    let info = ProgramInfo::from_pin(macvswitch::datapath::PinLayout::new(bpffs).prog(program))
        .unwrap_or_else(|e| panic!("pinned program {program}: {e}"));
    (info.run_time().as_nanos() as u64, info.run_count())
}

pub struct Throughput {
    pub cases: Vec<Case>,
    pub rounds: usize,
    pub run_time: Duration,
    /// What macvswitch itself counted during all runs, per endpoint/direction.
    pub counted: Vec<(String, u64)>,
}

/// The variants a case compares: (bare, macvswitch).
fn variants(setup: &Setup, scenario: Scenario) -> (&Variant, &Variant) {
    let msw = if scenario.vepa() {
        setup.vepa.as_ref().expect("the VEPA guests")
    } else {
        &setup.msw
    };
    (&setup.bare, msw)
}

/// The rounds of `cases`, bare and macvswitch alternating, then one run
/// each with run-time statistics on.
fn measure(setup: &Setup, cases: &mut [Case], mode: &Mode) {
    for round in 0..mode.tput_rounds {
        for case in cases.iter_mut() {
            // Alternate which variant goes first, against drift.
            let msw_first = round % 2 == 1;
            for msw in [msw_first, !msw_first] {
                let (bare, with) = variants(setup, case.scenario);
                let v = if msw { with } else { bare };
                let r = run_once(setup, v, case.scenario, case.size, mode);
                eprintln!(
                    "  round {round} {:<26} {:>4} B {:<15} {:>10.0} pps (offered {:.0})",
                    case.scenario.name(),
                    case.size,
                    v.name,
                    r.pps,
                    r.offered
                );
                assert!(
                    r.pps > 0.0,
                    "{} {}: nothing delivered",
                    case.scenario.name(),
                    v.name
                );
                if msw {
                    case.msw.push(r);
                } else {
                    case.bare.push(r);
                }
            }
        }
    }
    // In-situ: one more macvswitch run per case with run-time statistics
    // on (BPF_ENABLE_STATS: the same static key as the sysctl
    // kernel.bpf_stats_enabled, and it switches off by itself when the fd
    // closes, even if this process dies). Kept out of the ratio runs: the
    // statistics themselves cost two clock reads per program run.
    let bpffs = setup.harness.bpffs.path().to_path_buf();
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .expect("BPF_ENABLE_STATS (run-time statistics)");
    for case in cases.iter_mut() {
        let before: Vec<_> = case
            .scenario
            .programs()
            .iter()
            .map(|p| prog_stats(&bpffs, p))
            .collect();
        let (_, msw) = variants(setup, case.scenario);
        let r = run_once(setup, msw, case.scenario, case.size, mode);
        for (program, (t0, c0)) in case.scenario.programs().iter().zip(before) {
            let (t1, c1) = prog_stats(&bpffs, program);
            let runs = c1 - c0;
            assert!(runs > 0, "{program} never ran with statistics on");
            case.insitu.push(InSitu {
                program,
                runs,
                ns_per_run: (t1 - t0) as f64 / runs as f64,
            });
        }
        case.stats_run = Some(r);
    }
}

pub fn run(mode: &Mode) -> Throughput {
    let mut setup = Setup::new();
    setup.check_wire();
    let mut cases: Vec<Case> = CASES
        .iter()
        .map(|&(scenario, size)| Case {
            scenario,
            size,
            bare: Vec::new(),
            msw: Vec::new(),
            stats_run: None,
            insitu: Vec::new(),
        })
        .collect();
    let vepa_from = cases
        .iter()
        .position(|c| c.scenario.vepa())
        .unwrap_or(cases.len());
    assert!(
        cases[vepa_from..].iter().all(|c| c.scenario.vepa()),
        "the VEPA cases come last"
    );
    measure(&setup, &mut cases[..vepa_from], mode);
    let mut counted = Vec::new();
    for (name, dir) in [
        ("mswa", "from_guest"),
        ("mswa", "to_guest"),
        ("mswb", "to_guest"),
    ] {
        let n = setup.counted(name, dir);
        assert!(n > 0, "macvswitch counted no {dir} packets on {name}");
        counted.push((format!("{name} {dir}"), n));
    }
    if vepa_from < cases.len() {
        setup.add_vepa();
        measure(&setup, &mut cases[vepa_from..], mode);
        for (name, dir) in [("vepaa", "from_guest"), ("vepab", "to_guest")] {
            let n = setup.counted(name, dir);
            assert!(n > 0, "macvswitch counted no {dir} packets on {name}");
            counted.push((format!("{name} {dir}"), n));
        }
        let relayed = setup.relayed_unicast();
        assert!(relayed > 0, "lower0 relayed no unicast frame");
        counted.push(("lower0 relayed unicast".into(), relayed));
    }
    Throughput {
        cases,
        rounds: mode.tput_rounds,
        run_time: mode.run_time,
        counted,
    }
}
