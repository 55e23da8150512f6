//! The real TC programs, run by the kernel on crafted frames with
//! BPF_PROG_TEST_RUN. Each test loads its own, unpinned copy of the object,
//! so maps are private to the test.
//!
//! Under BPF_PROG_TEST_RUN the frame's tag stays inline (nothing moves it
//! into skb metadata) and a tag pushed into metadata does not show in the
//! output bytes: pushes are checked through the counters, pops through the
//! output bytes.

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions},
};
use macvswitch::kernel::datapath;
use macvswitch_common::{
    DropReason, EndpointCounters, EndpointPolicy, POLICY_ALLOW_MAC_SPOOFING, TPID_8021AD,
    TPID_8021Q, names,
};
use macvswitch_tests::require_root;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
/// BPF_PROG_TEST_RUN runs TC programs on the loopback device.
const TEST_IFINDEX: u32 = 1;
const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
/// IEEE local experimental: no guard parses it, so these tests see the
/// VLAN policy alone (the guards have tests of their own).
const LOCAL_EXPERIMENTAL: u16 = 0x88b5;

/// The object loaded, with one endpoint's policy on the test ifindex.
struct Programs {
    ebpf: Ebpf,
}

impl Programs {
    fn with_policy(vlan: u16, flags: u32) -> Self {
        let mut programs = Self::without_policy();
        let policy = EndpointPolicy {
            flags,
            ..if vlan == 0 {
                EndpointPolicy::untagged(GUEST_MAC)
            } else {
                EndpointPolicy::access(GUEST_MAC, vlan)
            }
        };
        datapath::set_object_policy(&mut programs.ebpf, TEST_IFINDEX, Some(&policy))
            .expect("set policy");
        datapath::reset_object_counters(&mut programs.ebpf, policy.slot).expect("set counters");
        programs
    }

    fn without_policy() -> Self {
        let ebpf = datapath::load_object(&[names::PROG_FROM_GUEST, names::PROG_TO_GUEST])
            .expect("the object loads and the verifier accepts its programs");
        Self { ebpf }
    }

    /// Runs a program once; returns the verdict and the output frame.
    fn run(&mut self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let program = datapath::classifier(&mut self.ebpf, program).expect("classifier");
        let mut out = vec![0u8; frame.len() + 64];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn run_from_guest(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run(names::PROG_FROM_GUEST, frame)
    }

    fn run_to_guest(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run(names::PROG_TO_GUEST, frame)
    }

    fn counters(&self) -> EndpointCounters {
        // Test policies use counter slot 0.
        datapath::object_counters(&self.ebpf, 0).expect("counters")
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.counters().drops[reason as usize]
    }
}

/// An Ethernet frame with an inline tag stack, padded to the 60-byte
/// minimum. `tags` are (TPID, TCI), outermost first.
fn frame(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&dst);
    bytes.extend_from_slice(&src);
    for (tpid, tci) in tags {
        bytes.extend_from_slice(&tpid.to_be_bytes());
        bytes.extend_from_slice(&tci.to_be_bytes());
    }
    bytes.extend_from_slice(&ethertype.to_be_bytes());
    bytes.extend_from_slice(b"macvswitch prog_test_run payload");
    bytes.resize(bytes.len().max(60), 0);
    bytes
}

fn from_guest_frame(tags: &[(u16, u16)]) -> Vec<u8> {
    frame(PEER_MAC, GUEST_MAC, tags, LOCAL_EXPERIMENTAL)
}

fn to_guest_frame(tags: &[(u16, u16)]) -> Vec<u8> {
    frame(GUEST_MAC, PEER_MAC, tags, LOCAL_EXPERIMENTAL)
}

#[test]
fn from_guest_access_port_pushes_its_vlan() {
    require_root!();
    let mut programs = Programs::with_policy(10, 0);
    let input = from_guest_frame(&[]);
    let (verdict, out) = programs.run_from_guest(&input);
    assert_eq!(verdict, TC_ACT_OK);
    // The tag goes into skb metadata, so the bytes are unchanged.
    assert_eq!(out, input);
    let counters = programs.counters();
    assert_eq!(counters.from_guest_packets, 1);
    assert_eq!(counters.from_guest_bytes, input.len() as u64);
    assert_eq!(counters.drops, [0; macvswitch_common::DROP_SLOTS]);
}

#[test]
fn from_guest_drops_any_tag_the_guest_sets() {
    require_root!();
    for vlan in [0, 10] {
        let mut programs = Programs::with_policy(vlan, 0);
        let cases: [&[(u16, u16)]; 4] = [
            &[(TPID_8021Q, 10)],
            &[(TPID_8021Q, 20)],
            &[(TPID_8021AD, 10)],
            &[(TPID_8021AD, 100), (TPID_8021Q, 10)],
        ];
        for tags in cases {
            let (verdict, _) = programs.run_from_guest(&from_guest_frame(tags));
            assert_eq!(verdict, TC_ACT_SHOT, "vlan {vlan}, tags {tags:x?}");
        }
        assert_eq!(programs.drops(DropReason::GuestTagged), cases.len() as u64);
        assert_eq!(programs.counters().from_guest_packets, 0);
    }
}

#[test]
fn from_guest_drops_spoofed_sources_unless_allowed() {
    require_root!();
    let spoofed = frame(PEER_MAC, [0x02, 0, 0, 0, 0, 0x66], &[], LOCAL_EXPERIMENTAL);
    let mut strict = Programs::with_policy(10, 0);
    assert_eq!(strict.run_from_guest(&spoofed).0, TC_ACT_SHOT);
    assert_eq!(strict.drops(DropReason::SpoofedSource), 1);

    let mut lax = Programs::with_policy(10, POLICY_ALLOW_MAC_SPOOFING);
    assert_eq!(lax.run_from_guest(&spoofed).0, TC_ACT_OK);
    assert_eq!(lax.counters().from_guest_packets, 1);
}

#[test]
fn from_guest_untagged_port_passes_untagged_frames() {
    require_root!();
    let mut programs = Programs::with_policy(0, 0);
    let input = from_guest_frame(&[]);
    let (verdict, out) = programs.run_from_guest(&input);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, input);
    assert_eq!(programs.counters().from_guest_packets, 1);
}

#[test]
fn to_guest_access_port_pops_its_vlan() {
    require_root!();
    let mut programs = Programs::with_policy(10, 0);
    // Priority bits set: still VLAN 10.
    let input = to_guest_frame(&[(TPID_8021Q, 0xa000 | 10)]);
    let (verdict, out) = programs.run_to_guest(&input);
    assert_eq!(verdict, TC_ACT_OK);
    let mut expected = input.clone();
    expected.drain(12..16);
    assert_eq!(out, expected, "the tag is removed, the rest untouched");
    let counters = programs.counters();
    assert_eq!(counters.to_guest_packets, 1);
    assert_eq!(counters.to_guest_bytes, expected.len() as u64);
}

#[test]
fn to_guest_access_port_drops_everything_else() {
    require_root!();
    let mut programs = Programs::with_policy(10, 0);
    let cases: [(&[(u16, u16)], DropReason); 6] = [
        (&[(TPID_8021Q, 11)], DropReason::WrongVlan),
        // Priority-tagged: counts as untagged.
        (&[(TPID_8021Q, 0)], DropReason::Untagged),
        (&[], DropReason::Untagged),
        (&[(TPID_8021AD, 10)], DropReason::ForeignTpid),
        (
            &[(TPID_8021AD, 10), (TPID_8021Q, 10)],
            DropReason::ForeignTpid,
        ),
        (
            &[(TPID_8021Q, 10), (TPID_8021Q, 20)],
            DropReason::StackedTag,
        ),
    ];
    for (tags, reason) in cases {
        let before = programs.drops(reason);
        let (verdict, _) = programs.run_to_guest(&to_guest_frame(tags));
        assert_eq!(verdict, TC_ACT_SHOT, "tags {tags:x?}");
        assert_eq!(programs.drops(reason), before + 1, "tags {tags:x?}");
    }
    assert_eq!(programs.counters().to_guest_packets, 0);
}

#[test]
fn to_guest_untagged_port_passes_only_untagged() {
    require_root!();
    let mut programs = Programs::with_policy(0, 0);
    let input = to_guest_frame(&[]);
    let (verdict, out) = programs.run_to_guest(&input);
    assert_eq!((verdict, out), (TC_ACT_OK, input));
    for tags in [&[(TPID_8021Q, 10)][..], &[(TPID_8021AD, 10)][..]] {
        assert_eq!(programs.run_to_guest(&to_guest_frame(tags)).0, TC_ACT_SHOT);
    }
    assert_eq!(programs.drops(DropReason::TaggedOnUntaggedPort), 2);
    assert_eq!(programs.counters().to_guest_packets, 1);
}

#[test]
fn runts_and_cut_tags_are_dropped() {
    require_root!();
    let mut programs = Programs::with_policy(10, 0);
    // A header that announces a tag and ends: BPF_PROG_TEST_RUN accepts no
    // frame shorter than an Ethernet header, so this is the shortest runt.
    let mut cut = to_guest_frame(&[]);
    cut.truncate(12);
    cut.extend_from_slice(&TPID_8021Q.to_be_bytes());
    for len in [14, 16, 17] {
        let mut input = cut.clone();
        input.resize(len, 0);
        assert_eq!(programs.run_to_guest(&input).0, TC_ACT_SHOT, "len {len}");
    }
    assert_eq!(programs.drops(DropReason::Runt), 3);
}

#[test]
fn frames_on_unknown_devices_fail_closed() {
    require_root!();
    let mut programs = Programs::without_policy();
    assert_eq!(
        programs.run_from_guest(&from_guest_frame(&[])).0,
        TC_ACT_SHOT
    );
    assert_eq!(
        programs
            .run_to_guest(&to_guest_frame(&[(TPID_8021Q, 10)]))
            .0,
        TC_ACT_SHOT
    );
}
