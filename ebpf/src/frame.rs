//! Reading a frame: a glance at the few fields the common cases need, or
//! its first bytes and offloaded tag as a `FrameView` (built by the same
//! function the host tests use).

use aya_ebpf::programs::TcContext;
use macvswitch_common::{
    ETH_HLEN, ETH_VLAN_HLEN, FrameView, Tag,
    decide::{Glance, VIEW_BYTES},
};

/// The tag the kernel holds in skb metadata, if any.
#[inline(always)]
pub fn meta(ctx: &TcContext) -> Option<Tag> {
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the program's whole run.
    let (vlan_present, vlan_tci, vlan_proto) =
        unsafe { ((*skb).vlan_present, (*skb).vlan_tci, (*skb).vlan_proto) };
    (vlan_present != 0).then_some(Tag {
        // The kernel hands the TPID over in network byte order.
        tpid: u16::from_be(vlan_proto as u16),
        tci: vlan_tci as u16,
    })
}

/// A glance at a frame of `len` (at least `ETH_HLEN`) bytes whose header
/// is in the linear area: its ethertype and whether its source is `mac`.
/// `None` when the header is not there to read in place.
#[inline(always)]
pub fn glance(
    ctx: &TcContext,
    len: u32,
    mac: &[u8; 6],
    meta: Option<Tag>,
    carried: Option<Tag>,
) -> Option<Glance> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_HLEN as usize > end {
        return None;
    }
    // SAFETY: bounds checked just above, as the verifier wants.
    let (src_high, src_low, ethertype) = unsafe {
        (
            core::ptr::read_unaligned((start + 6) as *const u32),
            core::ptr::read_unaligned((start + 10) as *const u16),
            core::ptr::read_unaligned((start + 12) as *const u16),
        )
    };
    let own_high = u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let own_low = u16::from_ne_bytes([mac[4], mac[5]]);
    Some(Glance {
        len,
        ethertype: u16::from_be(ethertype),
        src_is_own: src_high == own_high && src_low == own_low,
        meta,
        carried,
    })
}

/// The frame's view, for a frame of `len` (at least `ETH_HLEN`) bytes.
#[inline(always)]
pub fn view(ctx: &TcContext, len: u32, meta: Option<Tag>) -> FrameView {
    let (start, end) = (ctx.data(), ctx.data_end());
    let header = if start + VIEW_BYTES <= end {
        // The bytes are in the linear area; read them in place (no helper
        // calls). SAFETY: bounds checked just above, as the verifier wants.
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
    FrameView::from_header(len, &header, meta)
}
