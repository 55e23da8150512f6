//! Bench-only: never attached by the controller. The data-path benchmark
//! (`controller/benches/datapath`) attaches it on the TC egress of the
//! wire-side veth peer, so that wire→guest frames reach the lower device
//! the way a NIC delivers them, with the 802.1Q tag in skb metadata (veth
//! has VLAN TX offload, so the pushed tag crosses it as metadata). A tag
//! written inline instead would make the receive side `skb_vlan_untag`
//! every frame, which no real NIC causes.
//!
//! The VID comes from `skb->mark`, which the bench's AF_PACKET sender sets
//! with `SO_MARK` (0: push nothing, so untagged runs pass the same program).
//! No map: the controller pins every map of the object, and this program
//! must leave no trace in production pins. veth scrubs the mark when the
//! frame crosses into the other namespace.

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_skb_vlan_push, macros::classifier, programs::TcContext,
};

const TPID_8021Q: u16 = 0x8100;
const VID_MASK: u32 = 0x0fff;

#[classifier]
pub fn bench_push_tag(ctx: TcContext) -> i32 {
    // SAFETY: the context's own __sk_buff; aya-ebpf has no getter for mark.
    let vid = unsafe { (*ctx.skb.skb).mark } & VID_MASK;
    if vid != 0 {
        // SAFETY: plain helper call on our own context. A failed push
        // leaves the frame untagged; the bench's delivery check catches it.
        let _ = unsafe { bpf_skb_vlan_push(ctx.skb.skb, TPID_8021Q.to_be(), vid as u16) };
    }
    TC_ACT_OK
}
