//! Reading the first bytes of a frame, and its offloaded tag, into a
//! `FrameView`.

use aya_ebpf::programs::TcContext;
use macvswitch_common::{ETH_HLEN, ETH_VLAN_HLEN, FrameView};

/// Bytes a view covers: an Ethernet header and two tags.
const VIEW_BYTES: usize = ETH_VLAN_HLEN as usize + 4;

/// Fills a view of the frame. Fields beyond the frame's length stay zero;
/// the decision functions look at `len` before trusting them.
#[inline(always)]
pub fn view(ctx: &TcContext) -> FrameView {
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the program's whole run.
    let (vlan_present, vlan_tci, vlan_proto) =
        unsafe { ((*skb).vlan_present, (*skb).vlan_tci, (*skb).vlan_proto) };
    let mut frame = FrameView {
        len: ctx.len(),
        src: [0; 6],
        ethertype: 0,
        inline_tci: 0,
        inline_inner: 0,
        inline2_tci: 0,
        inline2_inner: 0,
        meta_tpid: 0,
        meta_tci: 0,
    };
    if vlan_present != 0 {
        // The kernel hands the TPID over in network byte order.
        frame.meta_tpid = u16::from_be(vlan_proto as u16);
        frame.meta_tci = vlan_tci as u16;
    }
    // Fast path: the first bytes are in the linear area, read them in
    // place (no helper calls).
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + VIEW_BYTES <= end {
        // SAFETY: the bounds are checked just above, as the verifier wants.
        let bytes = unsafe { core::ptr::read_unaligned(start as *const [u8; VIEW_BYTES]) };
        let be = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        frame.src = [bytes[6], bytes[7], bytes[8], bytes[9], bytes[10], bytes[11]];
        frame.ethertype = be(12);
        frame.inline_tci = be(14);
        frame.inline_inner = be(16);
        frame.inline2_tci = be(18);
        frame.inline2_inner = be(20);
        return frame;
    }
    if frame.len >= ETH_HLEN
        && let Ok(header) = ctx.load::<[u8; 14]>(0)
    {
        frame.src = [
            header[6], header[7], header[8], header[9], header[10], header[11],
        ];
        frame.ethertype = u16::from_be_bytes([header[12], header[13]]);
    }
    if frame.len >= ETH_VLAN_HLEN
        && let Ok(tag) = ctx.load::<[u8; 4]>(ETH_HLEN as usize)
    {
        frame.inline_tci = u16::from_be_bytes([tag[0], tag[1]]);
        frame.inline_inner = u16::from_be_bytes([tag[2], tag[3]]);
    }
    if frame.len >= ETH_VLAN_HLEN + 4
        && let Ok(tag) = ctx.load::<[u8; 4]>(ETH_VLAN_HLEN as usize)
    {
        frame.inline2_tci = u16::from_be_bytes([tag[0], tag[1]]);
        frame.inline2_inner = u16::from_be_bytes([tag[2], tag[3]]);
    }
    frame
}
