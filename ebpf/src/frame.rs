//! Reading the first bytes of a frame, and its offloaded tag, into a
//! `FrameView` (built by the same function the host tests use).

use aya_ebpf::programs::TcContext;
use macvswitch_common::{ETH_HLEN, ETH_VLAN_HLEN, FrameView, Tag, decide::VIEW_BYTES};

/// The frame's view; `None` for a runt (shorter than an Ethernet header).
/// Runts leave at once, so that no later check of the length has a branch
/// an older verifier would walk with impossible bounds.
#[inline(always)]
pub fn view(ctx: &TcContext) -> Option<FrameView> {
    if ctx.len() < ETH_HLEN {
        return None;
    }
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the program's whole run.
    let (vlan_present, vlan_tci, vlan_proto) =
        unsafe { ((*skb).vlan_present, (*skb).vlan_tci, (*skb).vlan_proto) };
    let meta = (vlan_present != 0).then_some(Tag {
        // The kernel hands the TPID over in network byte order.
        tpid: u16::from_be(vlan_proto as u16),
        tci: vlan_tci as u16,
    });
    let len = ctx.len();
    let (start, end) = (ctx.data(), ctx.data_end());
    let header = if start + VIEW_BYTES <= end {
        // Fast path: the bytes are in the linear area; read them in place
        // (no helper calls). SAFETY: bounds checked just above, as the
        // verifier wants.
        unsafe { core::ptr::read_unaligned(start as *const [u8; VIEW_BYTES]) }
    } else {
        // A short or non-linear frame: copy what there is.
        let mut header = [0u8; VIEW_BYTES];
        if let Ok(bytes) = ctx.load::<[u8; 14]>(0) {
            header[..14].copy_from_slice(&bytes);
        }
        if len >= ETH_VLAN_HLEN
            && let Ok(bytes) = ctx.load::<[u8; 4]>(ETH_HLEN as usize)
        {
            header[14..18].copy_from_slice(&bytes);
        }
        if len >= ETH_VLAN_HLEN + 4
            && let Ok(bytes) = ctx.load::<[u8; 4]>(ETH_VLAN_HLEN as usize)
        {
            header[18..22].copy_from_slice(&bytes);
        }
        header
    };
    Some(FrameView::from_header(len, &header, meta))
}
