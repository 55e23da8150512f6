//! Packets per second through the real data path: bare macvtap,
//! macvswitch and a Linux bridge with taps, in one topology and one run,
//! interleaved run by run (the order rotates by round). The guard cases
//! (issue 12) put macvswitch with all guards on and all guards off next to
//! bare macvtap in the same rounds. The VEPA rows run last, in a second
//! phase (see [`Setup::add_vepa`]).

use std::{
    os::fd::AsRawFd,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use aya::programs::{ProgramInfo, TcAttachType};
use macvswitch_common::names;
use macvswitch_tests::{
    frame::{ETHERTYPE_TEST, eth},
    topology::SWITCH_MAC,
};

use crate::{
    attached::Attached,
    guards,
    loadgen::{self, Queues, Sent, with_vnet_hdr},
    mode::Mode,
    setup::{Setup, Variant},
    stats::Summary,
};

/// The variants of the rows ([`Scenario::kinds`] says which a row runs).
/// `Empty` is bare macvtap with the empty program on the hooks
/// macvswitch's programs take on that path: the ceiling any TC program can
/// reach there. `GuardsOn` and `GuardsOff`: macvswitch endpoints with
/// [`guards::Guarding::All`] and [`guards::Guarding::Off`] (`Msw`'s have
/// the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bare,
    Empty,
    Msw,
    Bridge,
    GuardsOn,
    GuardsOff,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Bare,
        Kind::Empty,
        Kind::Msw,
        Kind::Bridge,
        Kind::GuardsOn,
        Kind::GuardsOff,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare macvtap",
            Kind::Empty => "bare macvtap + empty programs",
            Kind::Msw => "macvswitch",
            Kind::Bridge => "Linux bridge + tap",
            Kind::GuardsOn => "macvswitch, all guards on",
            Kind::GuardsOff => "macvswitch, all guards off",
        }
    }

    /// Runs macvswitch's programs: in-situ figures are taken of it.
    pub fn macvswitch(self) -> bool {
        matches!(self, Kind::Msw | Kind::GuardsOn | Kind::GuardsOff)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    GuestToWire,
    /// Guest→wire with honest IPv4 UDP from the guest's own address, which
    /// the guards parse (the other rows' test ethertype they do not), to a
    /// gateway MAC beyond the wire peer: bare macvtap against macvswitch
    /// with all guards on and all off.
    GuestToWireGuards,
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
            Scenario::GuestToWireGuards => "guest→wire, IPv4 UDP",
            Scenario::WireToGuest => "wire→guest",
            Scenario::GuestToGuest => "guest→guest (bridge)",
            Scenario::GuestToGuestVepa => "guest→guest (VEPA + relay)",
        }
    }

    /// Generator threads: writers on the tap (guest→wire: one per core,
    /// each on its own queue), or one sender / writer next to one reader.
    fn senders(self) -> usize {
        match self {
            Scenario::GuestToWire | Scenario::GuestToWireGuards => {
                thread::available_parallelism().map_or(2, |n| n.get())
            }
            Scenario::WireToGuest | Scenario::GuestToGuest | Scenario::GuestToGuestVepa => 1,
        }
    }

    /// What bounds the rate (the load generators), in a few words.
    pub fn generators(self) -> String {
        match self {
            Scenario::GuestToWire | Scenario::GuestToWireGuards => format!(
                "{} writers, one queue each; counted at the wire peer",
                self.senders()
            ),
            Scenario::WireToGuest => "1 AF_PACKET sender, 1 spinning reader".into(),
            Scenario::GuestToGuest | Scenario::GuestToGuestVepa => {
                "1 writer, 1 spinning reader".into()
            }
        }
    }

    /// The share of bare macvtap a row must reach: VEPA + relay is held
    /// against bare bridge mode, a shorter path, so its bar is lower.
    pub fn target(self) -> f64 {
        match self {
            Scenario::GuestToGuestVepa => 0.90,
            _ => 0.97,
        }
    }

    /// The programs that must run on this path (in-situ figures; others
    /// that ran, such as uplink_egress on lower0's egress, are reported too).
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Scenario::GuestToWire | Scenario::GuestToWireGuards => &[names::PROG_FROM_GUEST],
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

    /// A guard case: reported on its own, not in the chart or the
    /// throughput target.
    pub fn guards(self) -> bool {
        matches!(self, Scenario::GuestToWireGuards)
    }

    /// The variants this row runs, each round.
    pub fn kinds(self) -> &'static [Kind] {
        if self.guards() {
            &[Kind::Bare, Kind::GuardsOn, Kind::GuardsOff]
        } else {
            &[Kind::Bare, Kind::Empty, Kind::Msw, Kind::Bridge]
        }
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

/// The guard cases, measured in the first phase with the others (their
/// variants run in the same rotation, each round). Both sizes: about a
/// minute more in the full run.
pub const GUARD_CASES: [(Scenario, usize); 2] = [
    (Scenario::GuestToWireGuards, SIZES[0]),
    (Scenario::GuestToWireGuards, SIZES[1]),
];

/// Where the guard cases' frames go: a gateway beyond the wire peer, not
/// the peer's own MAC, so that the peer's IP stack drops every variant's
/// IPv4 alike at its first check (another host's frame) instead of routing
/// the bare variant's (untagged, for it) and not macvswitch's (tagged).
pub const GATEWAY_MAC: [u8; 6] = macvswitch_tests::frame::test_mac(0xe1);

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

fn write_threads(queues: &Queues, buf: &[u8], writers: usize, mode: &Mode) -> Vec<Sent> {
    let fds: Vec<_> = (0..writers).map(|_| queues.open()).collect();
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

/// Runs `generate` while a reader counts what one queue of `queues` delivers.
fn with_reader(
    queues: &Queues,
    mode: &Mode,
    generate: impl FnOnce() -> Vec<Sent>,
) -> (u64, Vec<Sent>) {
    let fd = queues.open();
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
        Scenario::GuestToWire | Scenario::GuestToWireGuards => {
            let buf = if scenario.guards() {
                with_vnet_hdr(&guards::udp4(GATEWAY_MAC, v.a.mac, size))
            } else {
                guest_frame(SWITCH_MAC, v.a.mac, size)
            };
            let before = loadgen::rx_packets(switch, v.wire_port);
            let sent = write_threads(&v.a.queues, &buf, scenario.senders(), mode);
            let after = loadgen::rx_packets(switch, v.wire_port);
            (after - before, sent)
        }
        Scenario::WireToGuest => {
            // Untagged bytes; bench_push_tag on the wire port's egress
            // puts the variant's VID (the socket's mark) in metadata.
            let frame = eth(v.a.mac, SWITCH_MAC, ETHERTYPE_TEST, &payload(size));
            let mark = u32::from(v.wire_vid.unwrap_or(0));
            let sender = loadgen::packet_sender(switch, v.wire_port, mark);
            with_reader(&v.a.queues, mode, || {
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
            with_reader(&v.b.queues, mode, || {
                write_threads(&v.a.queues, &buf, scenario.senders(), mode)
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

/// The in-situ cost of one program: ns per run in each statistics run.
#[derive(Clone, Debug)]
pub struct InSitu {
    /// The variant it ran in.
    pub kind: Kind,
    pub program: &'static str,
    /// Program runs over all statistics runs.
    pub runs: u64,
    /// ns per program run, one sample per statistics run.
    pub samples: Vec<f64>,
}

impl InSitu {
    fn new(kind: Kind, program: &'static str) -> InSitu {
        InSitu {
            kind,
            program,
            runs: 0,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, (t0, c0): (u64, u64), (t1, c1): (u64, u64)) {
        self.runs += c1 - c0;
        self.samples.push((t1 - t0) as f64 / (c1 - c0) as f64);
    }

    pub fn ns_per_run(&self) -> Summary {
        Summary::of(&self.samples)
    }
}

/// One row of the throughput table.
pub struct Case {
    pub scenario: Scenario,
    pub size: usize,
    /// Runs per variant, indexed by [`Kind`]; round `i` is entry `i` of each
    /// (empty for the kinds the scenario does not run).
    runs: [Vec<Run>; Kind::ALL.len()],
    /// Each macvswitch program that ran with run-time statistics on.
    pub insitu: Vec<InSitu>,
    /// The empty program on the bare macvtaps' hooks of this path, in situ.
    pub baseline: Option<InSitu>,
}

impl Case {
    fn new(scenario: Scenario, size: usize) -> Case {
        Case {
            scenario,
            size,
            runs: Default::default(),
            insitu: Vec::new(),
            baseline: None,
        }
    }

    pub fn runs(&self, kind: Kind) -> &[Run] {
        &self.runs[kind.index()]
    }

    pub fn pps(&self, kind: Kind) -> Summary {
        Summary::of(&self.runs(kind).iter().map(|r| r.pps).collect::<Vec<_>>())
    }

    pub fn offered(&self, kind: Kind) -> Summary {
        Summary::of(
            &self
                .runs(kind)
                .iter()
                .map(|r| r.offered)
                .collect::<Vec<_>>(),
        )
    }

    /// The variants this row runs.
    pub fn kinds(&self) -> &'static [Kind] {
        self.scenario.kinds()
    }

    /// `kind` against `base`, round by round (the runs of one round ran
    /// back to back): median and spread.
    pub fn ratio(&self, kind: Kind, base: Kind) -> Summary {
        Summary::of(
            &self
                .runs(base)
                .iter()
                .zip(self.runs(kind))
                .map(|(b, k)| k.pps / b.pps)
                .collect::<Vec<_>>(),
        )
    }

    /// `kind` against bare macvtap, round by round. The headline figure.
    pub fn paired(&self, kind: Kind) -> Summary {
        self.ratio(kind, Kind::Bare)
    }

    /// macvswitch against `kind`, round by round.
    pub fn vs(&self, kind: Kind) -> Summary {
        self.ratio(Kind::Msw, kind)
    }

    /// The in-situ figure of `program` in variant `kind`, if it ran.
    pub fn insitu_of(&self, kind: Kind, program: &str) -> Option<&InSitu> {
        self.insitu
            .iter()
            .find(|p| p.kind == kind && p.program == program)
    }

    /// How far `program` runs over the empty program in situ (medians).
    pub fn over_empty(&self, program: &InSitu) -> Option<f64> {
        let floor = self.baseline.as_ref()?.ns_per_run().median;
        Some(program.ns_per_run().median - floor)
    }

    /// macvswitch's paired ratio reaches the row's target.
    pub fn met(&self) -> bool {
        self.paired(Kind::Msw).median >= self.scenario.target()
    }
}

fn prog_stats(bpffs: &Path, program: &str) -> (u64, u64) {
    let info =
        ProgramInfo::from_pin(macvswitch::kernel::datapath::PinLayout::new(bpffs).prog(program))
            .unwrap_or_else(|e| panic!("pinned program {program}: {e}"));
    (info.run_time().as_nanos() as u64, info.run_count())
}

/// Every program macvswitch attaches; the in-situ figures report each that
/// ran.
const PROGRAMS: [&str; 3] = [
    names::PROG_FROM_GUEST,
    names::PROG_TO_GUEST,
    names::PROG_UPLINK_EGRESS,
];

pub struct Throughput {
    /// Bare macvtap, macvswitch and the bridge ([`CASES`]).
    pub cases: Vec<Case>,
    /// Guards on and off against bare macvtap ([`GUARD_CASES`]).
    pub guards: Vec<Case>,
    /// Every guard drop counted on the guard endpoints during the runs:
    /// must stay 0, the frames are honest.
    pub guard_drops: u64,
    pub rounds: usize,
    pub insitu_rounds: usize,
    pub run_time: Duration,
    /// What macvswitch itself counted during all runs, per endpoint/direction.
    pub counted: Vec<(String, u64)>,
}

/// The variant of `kind` for a case.
fn variant(setup: &Setup, scenario: Scenario, kind: Kind) -> &Variant {
    match kind {
        Kind::Bare | Kind::Empty => &setup.bare,
        Kind::Msw if scenario.vepa() => setup.vepa.as_ref().expect("the VEPA guests"),
        Kind::Msw => &setup.msw,
        Kind::Bridge => &setup.bridge,
        Kind::GuardsOn | Kind::GuardsOff => {
            assert!(scenario.guards(), "{} runs guard cases only", kind.name());
            if kind == Kind::GuardsOn {
                &setup.guards_on
            } else {
                &setup.guards_off
            }
        }
    }
}

/// The hooks macvswitch's programs take on this path, on the bare
/// variant's devices: where the empty program runs for the baseline.
fn baseline_hooks(setup: &Setup, scenario: Scenario) -> Vec<(&str, TcAttachType)> {
    let (a, b) = (setup.bare.a.ifname.as_str(), setup.bare.b.ifname.as_str());
    match scenario {
        Scenario::GuestToWire | Scenario::GuestToWireGuards => vec![(a, TcAttachType::Egress)],
        Scenario::WireToGuest => vec![(a, TcAttachType::Ingress)],
        Scenario::GuestToGuest | Scenario::GuestToGuestVepa => {
            vec![(a, TcAttachType::Egress), (b, TcAttachType::Ingress)]
        }
    }
}

/// One run of `kind`; `Empty` with the empty program attached for the run.
fn run_kind(setup: &Setup, empty: &mut Attached, case: &Case, kind: Kind, mode: &Mode) -> Run {
    let v = variant(setup, case.scenario, kind);
    if kind != Kind::Empty {
        return run_once(setup, v, case.scenario, case.size, mode);
    }
    let links = empty.attach(
        &setup.harness.topo.host,
        &baseline_hooks(setup, case.scenario),
    );
    let r = run_once(setup, v, case.scenario, case.size, mode);
    empty.detach(links);
    r
}

/// The rounds of `cases`, the variants in an order that rotates by round
/// (against drift), then the in-situ runs.
fn measure(setup: &Setup, cases: &mut [Case], mode: &Mode) {
    let mut empty = Attached::load(names::PROG_BASELINE);
    for round in 0..mode.tput_rounds {
        for case in cases.iter_mut() {
            let kinds = case.kinds();
            for i in 0..kinds.len() {
                let kind = kinds[(round + i) % kinds.len()];
                let r = run_kind(setup, &mut empty, case, kind, mode);
                eprintln!(
                    "  round {round} {:<26} {:>4} B {:<30} {:>10.0} pps (offered {:.0})",
                    case.scenario.name(),
                    case.size,
                    kind.name(),
                    r.pps,
                    r.offered
                );
                assert!(
                    r.pps > 0.0,
                    "{} {}: nothing delivered",
                    case.scenario.name(),
                    kind.name()
                );
                case.runs[kind.index()].push(r);
            }
        }
    }
    insitu(setup, cases, &mut empty, mode);
}

/// In-situ: `mode.insitu_rounds` more runs per case of each macvswitch
/// variant with run-time statistics on (BPF_ENABLE_STATS: the same static
/// key as the sysctl kernel.bpf_stats_enabled, and it switches off by
/// itself when the fd closes, even if this process dies), followed by a
/// bare run with the empty program on the same hooks. Kept out of the ratio
/// runs: the statistics themselves cost two clock reads per program run.
fn insitu(setup: &Setup, cases: &mut [Case], empty: &mut Attached, mode: &Mode) {
    let bpffs = setup.harness.bpffs.path().to_path_buf();
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .expect("BPF_ENABLE_STATS (run-time statistics)");
    for _ in 0..mode.insitu_rounds {
        for case in cases.iter_mut() {
            for &kind in case.kinds().iter().filter(|k| k.macvswitch()) {
                insitu_run(setup, &bpffs, case, kind, mode);
            }

            let links = empty.attach(
                &setup.harness.topo.host,
                &baseline_hooks(setup, case.scenario),
            );
            let before = empty.stats();
            run_once(setup, &setup.bare, case.scenario, case.size, mode);
            let after = empty.stats();
            empty.detach(links);
            assert!(after.1 > before.1, "the empty program never ran in situ");
            case.baseline
                .get_or_insert_with(|| InSitu::new(Kind::Empty, names::PROG_BASELINE))
                .add(before, after);
        }
    }
}

/// One statistics run of variant `kind`: each program's run time and count.
fn insitu_run(setup: &Setup, bpffs: &Path, case: &mut Case, kind: Kind, mode: &Mode) {
    let before: Vec<_> = PROGRAMS.iter().map(|p| prog_stats(bpffs, p)).collect();
    let v = variant(setup, case.scenario, kind);
    run_once(setup, v, case.scenario, case.size, mode);
    for (&program, before) in PROGRAMS.iter().zip(before) {
        let after = prog_stats(bpffs, program);
        if after.1 == before.1 {
            assert!(
                !case.scenario.programs().contains(&program),
                "{program} never ran with statistics on ({})",
                kind.name()
            );
            continue;
        }
        let at = match case
            .insitu
            .iter()
            .position(|p| p.kind == kind && p.program == program)
        {
            Some(at) => at,
            None => {
                case.insitu.push(InSitu::new(kind, program));
                case.insitu.len() - 1
            }
        };
        case.insitu[at].add(before, after);
    }
}

pub fn run(mode: &Mode) -> Throughput {
    let mut setup = Setup::new();
    setup.check_wire();
    // The guard cases before the VEPA ones: measured in the first phase.
    let (vepa, plain): (Vec<_>, Vec<_>) = CASES.iter().partition(|(s, _)| s.vepa());
    let mut cases: Vec<Case> = plain
        .into_iter()
        .chain(&GUARD_CASES)
        .chain(vepa)
        .map(|&(scenario, size)| Case::new(scenario, size))
        .collect();
    setup.check_guards();
    let guard_drops_before = setup.guard_drops();
    let vepa_from = cases
        .iter()
        .position(|c| c.scenario.vepa())
        .unwrap_or(cases.len());
    assert!(
        cases[vepa_from..].iter().all(|c| c.scenario.vepa()),
        "the VEPA cases come last"
    );
    measure(&setup, &mut cases[..vepa_from], mode);
    let guard_drops = setup.guard_drops() - guard_drops_before;
    assert_eq!(guard_drops, 0, "the guards dropped honest frames");
    let mut counted = Vec::new();
    for (name, dir) in [
        ("mswa", "from_guest"),
        ("mswa", "to_guest"),
        ("mswb", "to_guest"),
        (setup.guards_on.a.ifname.as_str(), "from_guest"),
        (setup.guards_off.a.ifname.as_str(), "from_guest"),
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
    let (guards, cases) = cases.into_iter().partition(|c| c.scenario.guards());
    Throughput {
        cases,
        guards,
        guard_drops,
        rounds: mode.tput_rounds,
        insitu_rounds: mode.insitu_rounds,
        run_time: mode.run_time,
        counted,
    }
}
