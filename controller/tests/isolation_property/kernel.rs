//! The real programs under BPF_PROG_TEST_RUN, and what a run showed.

use super::*;

// ---------------------------------------------------------------------------
// The real programs.

pub(super) struct Kernel {
    pub(super) ebpf: Ebpf,
    /// Indexed by the policy's slot; generated policies all use slot 0.
    pub(super) counters: PerCpuArray<MapData, EndpointCounters>,
    pub(super) vlan_counters: PerCpuHashMap<MapData, VlanKey, EndpointCounters>,
    pub(super) cpus: usize,
}

/// What one BPF_PROG_TEST_RUN showed.
pub(super) struct Observed {
    pub(super) retval: u32,
    pub(super) bytes: Vec<u8>,
    /// `cb[0]`: the pushed tag as TPID << 16 | TCI, 0 if none.
    pub(super) cb0: u32,
    /// `skb->mark` afterwards.
    pub(super) mark: u32,
}

/// How the test object carries tags in the mark: the default mask with a
/// fixed pattern.
pub(super) fn test_carriage() -> MarkCarriage {
    MarkCarriage::new(macvswitch_common::carriage::DEFAULT_MARK_MASK, 0x5a5a_0000)
        .expect("the default mask carries tags")
}

/// The pure decision for a frame whose outer tag `carried` is in the mark,
/// carried out as `to_guest` does: the verdict, the VLAN counted and the
/// frame the guest gets (the tag put into metadata on a pass, dropped with
/// the mark on a pop).
pub(super) fn pure_carried(
    policy: &EndpointPolicy,
    bytes: &[u8],
    carried: Tag,
) -> (Verdict, Option<u16>, Vec<u8>) {
    let frame = view(bytes, None).with_carried(Some(macvswitch_common::Tag {
        tpid: carried.tpid,
        tci: carried.tci,
    }));
    let Decision { action, vlan } = macvswitch_common::to_guest(policy, &frame);
    match action {
        Action::Pass => (Verdict::Pass, vlan, full(bytes, Some(carried))),
        Action::Pop => (Verdict::Pass, vlan, full(bytes, None)),
        Action::Drop(reason) => (Verdict::Drop(Some(reason)), vlan, bytes.to_vec()),
        // Never towards a guest; a pass with the bytes unchanged makes the
        // comparison report it.
        Action::Push(_) | Action::PopPush(_) => (Verdict::Pass, vlan, bytes.to_vec()),
    }
}

impl Kernel {
    pub(super) fn load() -> Self {
        let mut ebpf = datapath::load_object(&[names::PROG_FROM_GUEST, names::PROG_TO_GUEST])
            .expect("the object loads and the verifier accepts its programs");
        let counters = ebpf
            .take_map(names::MAP_COUNTERS)
            .expect("counters map")
            .try_into()
            .expect("per-cpu hash map");
        let vlan_counters = ebpf
            .take_map(names::MAP_VLAN_COUNTERS)
            .expect("vlan counters map")
            .try_into()
            .expect("per-cpu hash map");
        let cpus = aya::util::nr_cpus().expect("nr_cpus");
        datapath::set_object_uplink(&mut ebpf, 0, 0, Some(&test_carriage()))
            .expect("setting the carriage");
        Self {
            ebpf,
            counters,
            vlan_counters,
            cpus,
        }
    }

    /// A new policy (or none) with zeroed counters and no VLAN counters.
    pub(super) fn set_policy(&mut self, policy: Option<&EndpointPolicy>) {
        datapath::set_object_policy(&mut self.ebpf, TEST_IFINDEX, policy).expect("set policy");
        let zeros = PerCpuValues::try_from(vec![EndpointCounters::ZERO; self.cpus]).expect("zeros");
        self.counters.set(0, zeros, 0).expect("reset counters");
        let keys: Vec<VlanKey> = self
            .vlan_counters
            .keys()
            .collect::<Result<_, _>>()
            .expect("vlan counter keys");
        for key in keys {
            self.vlan_counters
                .remove(&key)
                .expect("remove vlan counter");
        }
    }

    pub(super) fn run(&mut self, dir: Dir, frame: &[u8]) -> Observed {
        self.run_marked(dir, frame, 0)
    }

    /// One run with `skb->mark = mark`.
    pub(super) fn run_marked(&mut self, dir: Dir, frame: &[u8], mark: u32) -> Observed {
        let name = match dir {
            Dir::FromGuest => names::PROG_FROM_GUEST,
            Dir::ToGuest => names::PROG_TO_GUEST,
        };
        let program = datapath::classifier(&mut self.ebpf, name).expect("classifier");
        let mut out = vec![0u8; frame.len() + 64];
        let mut ctx_in = [0u8; SK_BUFF_SIZE];
        ctx_in[SK_BUFF_MARK..SK_BUFF_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = [0u8; SK_BUFF_SIZE];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| {
                panic!(
                    "BPF_PROG_TEST_RUN of {dir:?} on [{}] ({} bytes): {e}",
                    hex(frame),
                    frame.len()
                )
            });
        out.truncate(result.data_size_out as usize);
        let cb0 = u32::from_ne_bytes(
            ctx_out[SK_BUFF_CB..SK_BUFF_CB + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let mark = u32::from_ne_bytes(
            ctx_out[SK_BUFF_MARK..SK_BUFF_MARK + 4]
                .try_into()
                .expect("4 bytes"),
        );
        Observed {
            retval: result.return_value,
            bytes: out,
            cb0,
            mark,
        }
    }

    pub(super) fn sum(values: PerCpuValues<EndpointCounters>) -> EndpointCounters {
        let mut total = EndpointCounters::ZERO;
        for per_cpu in values.iter() {
            total.accumulate(per_cpu);
        }
        total
    }

    pub(super) fn endpoint_counters(&self) -> EndpointCounters {
        Self::sum(self.counters.get(&0, 0).expect("counters"))
    }

    pub(super) fn vlan_counter_map(&self) -> StdHashMap<u16, EndpointCounters> {
        self.vlan_counters
            .iter()
            .map(|entry| {
                let (key, values) = entry.expect("vlan counters");
                assert_eq!(
                    key.ifindex, TEST_IFINDEX,
                    "a VLAN counter of another ifindex"
                );
                (key.vid, Self::sum(values))
            })
            .collect()
    }
}

/// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, and
/// (since the skb's protocol is taken from the type field) IPv4 and IPv6
/// frames shorter than their network header: those go through the pure
/// functions only.
pub(super) fn test_run_accepts(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return false;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() >= 14 + 20,
        0x86dd => frame.len() >= 14 + 40,
        _ => true,
    }
}

/// The model's outcome as BPF_PROG_TEST_RUN shows it: a pushed tag lives
/// in skb metadata (so only in `cb[0]`), and `bpf_skb_vlan_pop` of an
/// inline tag moves the tag under it, if it is 802.1Q or 802.1ad, into skb
/// metadata too (`skb_vlan_pop`: "move next vlan tag to hw accel tag").
pub(super) fn as_test_run(expected: &Outcome) -> (u32, Vec<u8>, u32) {
    if expected.verdict != Verdict::Pass {
        return (TC_ACT_SHOT, Vec::new(), 0);
    }
    let mut bytes = expected.bytes.clone();
    if expected.popped && expected.pushed.is_none() && bytes.len() >= 18 {
        let next = u16::from_be_bytes([bytes[12], bytes[13]]);
        if matches!(next, TPID_Q | TPID_AD) {
            bytes.drain(12..16);
        }
    }
    let cb0 = expected
        .pushed
        .map_or(0, |t| (u32::from(t.tpid) << 16) | u32::from(t.tci));
    (TC_ACT_OK, bytes, cb0)
}

/// The complete frame a test-run output stands for: the tag moved into
/// metadata by a pop (seen as 8 bytes gone, the 4 under the popped tag
/// matching) and the pushed tag (from `cb[0]`) written back inline.
pub(super) fn observed_full(input: &[u8], observed: &Observed) -> Vec<u8> {
    let mut frame = observed.bytes.clone();
    let out = &observed.bytes;
    if out.len() + 8 == input.len()
        && out.len() >= 12
        && out[..12] == input[..12]
        && out[12..] == input[20..]
    {
        frame.splice(12..12, input[16..20].iter().copied());
    }
    if observed.cb0 != 0 {
        frame.splice(12..12, observed.cb0.to_be_bytes());
    }
    frame
}

// ---------------------------------------------------------------------------
