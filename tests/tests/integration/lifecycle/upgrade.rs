//! Upgrades and restarts without losing frames, and pinned-map
//! compatibility.
//!
//! - A paced stream of sequence-numbered frames runs both ways through an
//!   access endpoint while the controller reloads its programs (a fresh
//!   copy swapped in atomically), is SIGKILLed mid-reload and mid-read, and
//!   is "upgraded" (the pinned programs made another build's, so the next
//!   command loads its own and takes over every link): every frame arrives,
//!   once, on VLAN 10 on the wire and untagged at the guest.
//! - A pinned map whose layout is not what the build expects (another value
//!   size, other max entries), as an older build would have left it, is
//!   recreated with a warning naming it, and traffic flows on the right
//!   VLANs. The incompatible map is made with the bpf(2) syscall directly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use macvswitch_tests::attach;
use macvswitch_tests::bpf::{MapLayout, pin_map, pinned_layout};
use macvswitch_tests::expect::{Receive, at_guest, on_wire};
use macvswitch_tests::frame::{self, ETHERTYPE_TEST, Mac, Marker, eth, tagged};
use macvswitch_tests::lifecycle::{Rng, assert_consistent, command, run_and_kill};
use macvswitch_tests::topology::{LOWER, SWITCH_MAC};
use macvswitch_tests::wire::WireFrame;
use macvswitch_tests::{Harness, require_root};

/// Frames per direction, one per millisecond.
const FRAMES: u32 = 2000;
const VLAN: u16 = 10;

/// A stream frame's payload: the stream's marker, then the sequence number.
fn payload(m: &Marker, seq: u32) -> Vec<u8> {
    let mut p = m.0.to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

/// Stream frame `seq` of `m` from `src` to `dst`, untagged (as a guest
/// sends it).
fn stream_frame(dst: Mac, src: Mac, m: &Marker, seq: u32) -> Vec<u8> {
    eth(dst, src, ETHERTYPE_TEST, &payload(m, seq))
}

/// Stream frame `seq` of `m` from the switch to `dst`, tagged `VLAN` (as
/// the wire sends it).
fn wire_stream_frame(dst: Mac, m: &Marker, seq: u32) -> Vec<u8> {
    tagged(
        dst,
        SWITCH_MAC,
        frame::TPID_8021Q,
        VLAN,
        ETHERTYPE_TEST,
        &payload(m, seq),
    )
}

/// The sequence number of one of our stream frames, if `bytes` is one.
fn seq_of(m: &Marker, bytes: &[u8]) -> Option<u32> {
    let at = bytes.windows(16).position(|w| w == m.0)?;
    let s = bytes.get(at + 16..at + 20)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

/// Sends `FRAMES` frames paced at 1 per ms with `send`.
fn paced(mut send: impl FnMut(u32)) {
    let start = Instant::now();
    for seq in 0..FRAMES {
        send(seq);
        let next = start + Duration::from_millis(u64::from(seq) + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Checks one direction: every seq exactly once, each frame as `ok` says.
fn verify(dir: &str, got: &[(u32, bool)]) -> Vec<String> {
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (seq, ok) in got {
        *count.entry(*seq).or_default() += 1;
        if !ok {
            wrong.push(*seq);
        }
    }
    let lost: Vec<u32> = (0..FRAMES).filter(|s| !count.contains_key(s)).collect();
    let dup: Vec<u32> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let mut problems = Vec::new();
    if !lost.is_empty() {
        problems.push(format!(
            "{dir}: {} of {FRAMES} frames lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        ));
    }
    if !dup.is_empty() {
        problems.push(format!(
            "{dir}: {} duplicated, e.g. {:?}",
            dup.len(),
            &dup[..dup.len().min(20)]
        ));
    }
    if !wrong.is_empty() {
        problems.push(format!(
            "{dir}: {} arrived with the wrong tag, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        ));
    }
    problems
}

/// The program pins' build directories.
fn builds(h: &Harness) -> Vec<PathBuf> {
    std::fs::read_dir(h.bpffs.path().join("progs"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `args` after the global options that force attach mode `mode` (none:
/// the environment's choice).
fn with_mode<'a>(mode: Option<&'a str>, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = Vec::new();
    if let Some(mode) = mode {
        all.extend(["--attach", mode]);
    }
    all.extend_from_slice(args);
    all
}

/// The program ids of ep0's clsact filters (ingress, egress).
fn filter_prog_ids(h: &Harness, dev: &str) -> Vec<u64> {
    ["ingress", "egress"]
        .iter()
        .flat_map(|hook| attach::ours(&h.topo.host, dev, hook))
        .filter_map(|f| f["options"]["prog"]["id"].as_u64())
        .collect()
}

#[test]
fn frames_flow_without_loss_through_reloads_kills_and_an_upgrade() {
    require_root!();
    // TCX where the kernel has it (or whatever MACVSWITCH_ATTACH says).
    stream_through_reloads_kills_and_an_upgrade(None);
}

#[test]
fn frames_flow_without_loss_through_reloads_kills_and_an_upgrade_on_clsact() {
    require_root!();
    stream_through_reloads_kills_and_an_upgrade(Some("clsact"));
}

fn stream_through_reloads_kills_and_an_upgrade(mode: Option<&str>) {
    let h = Harness::new();
    let vlan = VLAN.to_string();
    h.ctl.ok(&with_mode(
        mode,
        &["endpoint", "add", "ep0", "--lower", LOWER, "--vlan", &vlan],
    ));
    let ep = h.show("ep0");
    if let Some(mode) = mode {
        assert_eq!(ep.raw["attach"], mode, "ep0: {}", ep.raw);
    }
    let ids_before = filter_prog_ids(&h, "ep0");
    let tap = h.tap(&ep);
    let wire = h.topo.wire();
    let mut rng = Rng::from_env("stream");
    let up = Marker::new();
    let down = Marker::new();
    let sending = AtomicBool::new(true);
    let budget = Duration::from_secs(15);

    let (from_guest, to_guest, steps) = std::thread::scope(|s| {
        // Guest -> wire.
        let guest_tx = s.spawn(|| {
            paced(|seq| {
                tap.write(&stream_frame(SWITCH_MAC, ep.mac, &up, seq));
            })
        });
        // Wire -> guest.
        let wire_tx = s.spawn(|| {
            paced(|seq| {
                wire.send(&wire_stream_frame(ep.mac, &down, seq));
            })
        });
        // The wire's view: (seq, tagged with VLAN 10 in metadata).
        let wire_rx = s.spawn(|| collect(&wire, tagged_in_metadata, &up, &sending, budget));
        // The guest's view: (seq, untagged).
        let tap_rx = s.spawn(|| collect(&tap, |f| untagged(f), &down, &sending, budget));

        // Meanwhile, the controller's life.
        let mut steps = Vec::new();
        let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
        pause(100);
        for _ in 0..3 {
            h.ctl.ok(&with_mode(mode, &["reload"]));
            steps.push("reload".to_string());
            pause(120);
        }
        let d = rng.range(0, 5_000);
        run_and_kill(
            &h,
            &with_mode(mode, &["endpoint", "list"]),
            Duration::from_micros(d),
        );
        steps.push(format!("endpoint list, SIGKILLed after {d} µs"));
        pause(100);
        let d = rng.range(5_000, 100_000);
        let done = run_and_kill(&h, &with_mode(mode, &["reload"]), Duration::from_micros(d));
        steps.push(format!("reload, SIGKILLed after {d} µs ({done:?})"));
        pause(100);
        // An upgrade: the pinned programs become another build's, so the
        // next command loads this build's and swaps every link to them.
        let current = builds(&h);
        assert_eq!(current.len(), 1, "program builds pinned: {current:?}");
        let old = current[0].with_file_name("00000000000000aa");
        std::fs::rename(&current[0], &old).expect("renaming the build");
        h.ctl.ok(&with_mode(
            mode,
            &["endpoint", "add", "ep1", "--lower", LOWER, "--vlan", "20"],
        ));
        steps.push("upgrade: endpoint add ep1 by a \"new build\"".to_string());
        pause(100);
        h.ctl.ok(&with_mode(mode, &["reload"]));
        steps.push("reload".to_string());

        guest_tx.join().expect("guest sender");
        wire_tx.join().expect("wire sender");
        sending.store(false, Ordering::Relaxed);
        (
            wire_rx.join().expect("wire receiver"),
            tap_rx.join().expect("tap receiver"),
            steps,
        )
    });

    let mut problems = verify("guest -> wire (VLAN 10)", &from_guest);
    problems.extend(verify("wire -> guest (untagged)", &to_guest));
    assert!(
        problems.is_empty(),
        "during {steps:?}:\n{}",
        problems.join("\n")
    );
    // The upgrade removed the other build's pins and kept the endpoint.
    let now = builds(&h);
    assert_eq!(
        now.len(),
        1,
        "program builds pinned after the upgrade: {now:?}"
    );
    assert!(
        !now[0].ends_with("00000000000000aa"),
        "the old build's pins are left: {now:?}"
    );
    assert_eq!(h.show("ep0").ifindex, ep.ifindex);
    assert_consistent(&h, "after the stream");
    if mode == Some("clsact") {
        // The programs were replaced in the very filters, which are the
        // only ones on each hook.
        let ids_after = filter_prog_ids(&h, "ep0");
        assert_eq!(ids_after.len(), 2, "ep0's filters: {ids_after:?}");
        assert!(
            ids_before.iter().all(|id| !ids_after.contains(id)),
            "the programs were not replaced: {ids_before:?} -> {ids_after:?}"
        );
        for hook in ["ingress", "egress"] {
            let all = attach::filters(&h.topo.host, "ep0", hook);
            assert_eq!(all.len(), 1, "ep0 {hook}: {all:?}");
        }
    }
    assert!(
        h.packets("ep0", "from_guest") > 0,
        "counters: {}",
        h.stats("ep0")
    );
}

/// A guest frame of `ep` reaches the wire on `vlan`, and a wire frame on
/// `vlan` reaches the guest untagged.
fn assert_traffic(h: &Harness, name: &str, vlan: u16, context: &str) {
    let ep = h.show(name);
    let tap = h.tap(&ep);
    let wire = h.topo.wire();
    let m = Marker::new();
    tap.write(&frame::marked(SWITCH_MAC, ep.mac, &m));
    let f = on_wire(
        &wire,
        &m,
        &format!("{context}: {name}'s frame not on the wire"),
    );
    assert_eq!(f.vid(), Some(vlan), "{context}: {name}: {f:?}");
    let m = Marker::new();
    wire.send(&frame::marked_tagged(ep.mac, SWITCH_MAC, vlan, &m));
    let f = at_guest(
        &tap,
        &m,
        &format!("{context}: wire frame on VLAN {vlan} not at {name}"),
    );
    assert_eq!(
        frame::outer_ethertype(&f),
        Some(ETHERTYPE_TEST),
        "{context}"
    );
}

#[test]
fn incompatible_pinned_maps_are_recreated_loudly_and_traffic_flows() {
    require_root!();
    type Change = fn(MapLayout) -> MapLayout;
    let cases: [(&str, &str, Change); 2] = [
        ("POLICIES", "value size", |l| MapLayout {
            value_size: l.value_size + 8,
            ..l
        }),
        ("SOURCES", "max entries", |l| MapLayout {
            max_entries: l.max_entries / 2,
            ..l
        }),
    ];
    let mut failures = Vec::new();
    for (map, what, change) in cases {
        let h = Harness::new();
        h.add("ep0", &["--vlan", "10"]);
        let path = h.bpffs.path().join("maps").join(map);
        let good = pinned_layout(&path);
        let bad = change(good);
        pin_map(&path, map, bad);
        assert_eq!(pinned_layout(&path), bad);
        std::fs::remove_dir_all(h.bpffs.path().join("progs")).expect("removing progs/");

        let out = command(
            &h,
            &["endpoint", "add", "ep1", "--lower", LOWER, "--vlan", "20"],
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("running endpoint add");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let context = format!("{map} with {bad:?} (expected {good:?})");
        if !out.status.success() {
            let reset = h.ctl.run(&["reset"]);
            failures.push(format!(
                "{context}: the next command failed ({:?}): {}; `reset` then: {:?} {}",
                out.status.code(),
                stderr.trim(),
                reset.status.code(),
                String::from_utf8_lossy(&reset.stderr).trim()
            ));
            continue;
        }
        if !stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains(map) && l.contains(what))
        {
            failures.push(format!(
                "{context}: no warning naming {map} and its {what}: {stderr:?}"
            ));
        }
        let now = pinned_layout(&path);
        if now != good {
            failures.push(format!("{context}: pinned now {now:?}"));
        }
        assert_traffic(&h, "ep0", 10, &context);
        assert_traffic(&h, "ep1", 20, &context);
        assert_consistent(&h, &context);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads `seq`s of `marker` at `rx`, each with whether `ok` holds for its
/// frame, until the senders stop and it has been quiet for half a second.
fn collect<R: Receive>(
    rx: &R,
    ok: impl Fn(&R::Frame) -> bool,
    marker: &Marker,
    sending: &AtomicBool,
    budget: Duration,
) -> Vec<(u32, bool)> {
    let deadline = Instant::now() + budget;
    let mut got = Vec::new();
    let mut quiet_since = None;
    while Instant::now() < deadline {
        match rx.next_within(Duration::from_millis(50)) {
            Some(f) => {
                quiet_since = None;
                if let Some(seq) = seq_of(marker, R::bytes(&f)) {
                    got.push((seq, ok(&f)));
                }
            }
            None if sending.load(Ordering::Relaxed) => {}
            None => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
        }
    }
    got
}

/// A frame on the wire is tagged VLAN 10 in metadata only.
fn tagged_in_metadata(f: &WireFrame) -> bool {
    f.vid() == Some(VLAN) && frame::parse(&f.bytes).is_some_and(|p| p.tags.is_empty())
}

/// A frame at the guest is untagged.
fn untagged(f: &[u8]) -> bool {
    frame::outer_ethertype(f) == Some(ETHERTYPE_TEST)
}

/// The previous release's binary (`cargo xtask test` builds it from git).
fn previous_bin() -> Option<PathBuf> {
    std::env::var_os("MACVSWITCH_PREVIOUS_BIN").map(PathBuf::from)
}

#[test]
fn endpoints_of_the_previous_release_are_taken_over_under_a_paced_stream() {
    require_root!();
    let Some(previous) = previous_bin() else {
        eprintln!(
            "skipping: MACVSWITCH_PREVIOUS_BIN is not set (`cargo xtask test` builds the \
             previous release and sets it)"
        );
        return;
    };
    let h = Harness::new();
    let mut old = h.ctl.clone();
    old.bin = previous;
    // Made by the previous release: tags pushed on the macvtaps.
    for (name, vlan) in [("ep0", VLAN), ("ep1", VLAN), ("ep2", 20)] {
        old.ok(&[
            "endpoint",
            "add",
            name,
            "--lower",
            LOWER,
            "--vlan",
            &vlan.to_string(),
        ]);
    }
    let (ep0, ep1, ep2) = (h.show("ep0"), h.show("ep1"), h.show("ep2"));
    let (tap0, tap1, tap2) = (h.tap(&ep0), h.tap(&ep1), h.tap(&ep2));
    let wire = h.topo.wire();
    let (up, down, local) = (Marker::new(), Marker::new(), Marker::new());
    let sending = AtomicBool::new(true);
    let budget = Duration::from_secs(15);

    let (from_guest, to_guest, between, crossed) = std::thread::scope(|s| {
        let guest_tx = s.spawn(|| {
            paced(|seq| {
                tap0.write(&stream_frame(SWITCH_MAC, ep0.mac, &up, seq));
                tap0.write(&stream_frame(ep1.mac, ep0.mac, &local, seq));
            })
        });
        let wire_tx = s.spawn(|| {
            paced(|seq| {
                wire.send(&wire_stream_frame(ep0.mac, &down, seq));
            })
        });
        let wire_rx = s.spawn(|| collect(&wire, tagged_in_metadata, &up, &sending, budget));
        let tap0_rx = s.spawn(|| collect(&tap0, |f| untagged(f), &down, &sending, budget));
        let tap1_rx = s.spawn(|| collect(&tap1, |f| untagged(f), &local, &sending, budget));
        // VLAN 20 must see none of VLAN 10's frames, before, during or
        // after the takeover.
        let tap2_rx = s.spawn(|| {
            let deadline = Instant::now() + budget;
            let mut crossed = 0;
            while Instant::now() < deadline && sending.load(Ordering::Relaxed) {
                if let Some(f) = tap2.read_timeout(Duration::from_millis(50))
                    && [&up, &down, &local].iter().any(|m| m.is_in(&f))
                {
                    crossed += 1;
                }
            }
            crossed
        });

        // This build takes over: `reload` loads it, recreates the maps whose
        // layout changed and swaps every link to its programs.
        std::thread::sleep(Duration::from_millis(700));
        h.ctl.ok(&["reload"]);
        std::thread::sleep(Duration::from_millis(300));
        h.ctl.ok(&["endpoint", "list"]);

        guest_tx.join().expect("guest sender");
        wire_tx.join().expect("wire sender");
        sending.store(false, Ordering::Relaxed);
        (
            wire_rx.join().expect("wire receiver"),
            tap0_rx.join().expect("ep0 receiver"),
            tap1_rx.join().expect("ep1 receiver"),
            tap2_rx.join().expect("ep2 receiver"),
        )
    });

    assert_eq!(crossed, 0, "VLAN 10 frames reached the VLAN 20 guest");
    let mut problems = verify("guest -> wire (VLAN 10)", &from_guest);
    problems.extend(verify("wire -> guest (untagged)", &to_guest));
    problems.extend(verify("guest -> guest (VLAN 10, untagged)", &between));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(h.show("ep0").ifindex, ep0.ifindex);
    assert_eq!(h.show("ep2").ifindex, ep2.ifindex);
    assert_consistent(&h, "after the takeover");
}
