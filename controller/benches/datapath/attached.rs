//! Programs the bench attaches itself, each from a private copy of the
//! embedded object (TCX, unpinned: dropping detaches):
//!
//! - `bench_push_tag` (ebpf/src/bench_tag.rs, bench-only) on the TC egress
//!   of the wire-side veth peers: wire→guest frames arrive as a NIC
//!   delivers them, with the 802.1Q tag in skb metadata (veth has VLAN TX
//!   offload, so the pushed tag crosses it as metadata). The VID is the
//!   sender's `SO_MARK`; bare and bridge runs pass the same program with
//!   mark 0 (nothing pushed), so every variant's sender does the same work.
//! - the empty `baseline` program on the bare macvtaps' hooks, for its
//!   in-situ cost: the floor under every in-situ figure.

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};
use macvswitch::kernel::datapath;
use macvswitch_tests::NetNs;

/// The bench-only tagging program's name in the object.
pub const PROG_BENCH_PUSH_TAG: &str = "bench_push_tag";

/// One program of a private copy of the object, loaded.
pub struct Attached {
    ebpf: Ebpf,
    name: &'static str,
}

impl Attached {
    pub fn load(name: &'static str) -> Attached {
        let ebpf = datapath::load_object(&[name])
            .unwrap_or_else(|e| panic!("loading {name} of the eBPF object: {e}"));
        Attached { ebpf, name }
    }

    fn prog(&mut self) -> &mut SchedClassifier {
        datapath::classifier(&mut self.ebpf, self.name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Attaches at each hook (interface names of `ns`).
    pub fn attach(
        &mut self,
        ns: &NetNs,
        hooks: &[(&str, TcAttachType)],
    ) -> Vec<SchedClassifierLinkId> {
        let name = self.name;
        let prog = self.prog();
        // Interface names resolve in the calling thread's namespace.
        ns.enter_and(|| {
            hooks
                .iter()
                .map(|&(ifname, hook)| {
                    prog.attach(ifname, hook)
                        .unwrap_or_else(|e| panic!("attaching {name} to {ifname} ({hook:?}): {e}"))
                })
                .collect()
        })
    }

    pub fn detach(&mut self, links: Vec<SchedClassifierLinkId>) {
        let name = self.name;
        for link in links {
            self.prog()
                .detach(link)
                .unwrap_or_else(|e| panic!("detaching {name}: {e}"));
        }
    }

    /// (run time in ns, run count) from the kernel's statistics.
    pub fn stats(&mut self) -> (u64, u64) {
        let info = self.prog().info().expect("program info");
        (info.run_time().as_nanos() as u64, info.run_count())
    }
}
