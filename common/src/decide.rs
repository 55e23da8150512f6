//! Per-frame decisions, as pure functions over a policy and the first bytes
//! of a frame.
//!
//! The eBPF programs gather a [`FrameView`], call [`from_guest`] or
//! [`to_guest`] and carry out the [`Action`]; tests run the same functions
//! on the host. On a real receive path the kernel has already moved the
//! outer 802.1Q/802.1ad tag into skb metadata (`meta_tag`); under
//! BPF_PROG_TEST_RUN, or when a guest writes a tagged frame, the tag is
//! still inline in the bytes. Both forms are handled.

use crate::{DropReason, ETH_HLEN, ETH_VLAN_HLEN, EndpointPolicy, TPID_8021Q, is_tpid, tci_vid};

/// A VLAN tag: protocol identifier and tag control information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

/// What a program knows about a frame before deciding.
///
/// Plain integers without padding: the verifier rejects copies of
/// uninitialised padding bytes, which an `Option` field would bring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView {
    /// Length of the frame bytes (an offloaded tag is not counted).
    pub len: u32,
    /// Bytes 6..12. Meaningful when `len >= ETH_HLEN`.
    pub src: [u8; 6],
    /// Bytes 12..14.
    pub ethertype: u16,
    /// Bytes 14..16: the TCI when `ethertype` is a TPID. Meaningful when
    /// `len >= ETH_VLAN_HLEN`.
    pub inline_tci: u16,
    /// Bytes 16..18: the ethertype under an inline tag.
    pub inline_inner: u16,
    /// TPID of the tag held in skb metadata, outside the bytes; 0 if none.
    pub meta_tpid: u16,
    /// TCI of the tag held in skb metadata.
    pub meta_tci: u16,
}

impl FrameView {
    /// The tag held in skb metadata, if any.
    pub fn meta_tag(&self) -> Option<Tag> {
        (self.meta_tpid != 0).then_some(Tag {
            tpid: self.meta_tpid,
            tci: self.meta_tci,
        })
    }
}

/// What the program does with the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let it through unchanged.
    Pass,
    /// Push an 802.1Q tag with this TCI.
    PushTag {
        tci: u16,
    },
    /// Remove the outer tag (metadata or inline), then let it through.
    PopTag,
    Drop(DropReason),
}

/// The outer tag of a frame and the ethertype under it.
#[derive(Clone, Copy)]
struct Outer {
    tag: Tag,
    inner_ethertype: u16,
}

/// Finds the outer tag, wherever the kernel left it.
fn outer_tag(frame: &FrameView) -> Result<Option<Outer>, DropReason> {
    if let Some(tag) = frame.meta_tag() {
        return Ok(Some(Outer {
            tag,
            inner_ethertype: frame.ethertype,
        }));
    }
    if !is_tpid(frame.ethertype) {
        return Ok(None);
    }
    if frame.len < ETH_VLAN_HLEN {
        return Err(DropReason::Runt);
    }
    Ok(Some(Outer {
        tag: Tag {
            tpid: frame.ethertype,
            tci: frame.inline_tci,
        },
        inner_ethertype: frame.inline_inner,
    }))
}

/// A frame the guest wrote to its tap fd, on its way out of the endpoint.
pub fn from_guest(policy: &EndpointPolicy, frame: &FrameView) -> Action {
    if frame.len < ETH_HLEN {
        return Action::Drop(DropReason::Runt);
    }
    // Any tag from the guest is an attempt to pick its own VLAN.
    if frame.meta_tag().is_some() || is_tpid(frame.ethertype) {
        return Action::Drop(DropReason::GuestTagged);
    }
    if !policy.allows_mac_spoofing() && frame.src != policy.mac {
        return Action::Drop(DropReason::SpoofedSource);
    }
    match policy.vlan {
        0 => Action::Pass,
        vlan => Action::PushTag { tci: vlan },
    }
}

/// A frame on its way into the endpoint, towards the guest: from the wire
/// or from another endpoint on the same lower device.
pub fn to_guest(policy: &EndpointPolicy, frame: &FrameView) -> Action {
    if frame.len < ETH_HLEN {
        return Action::Drop(DropReason::Runt);
    }
    let outer = match outer_tag(frame) {
        Ok(outer) => outer,
        Err(reason) => return Action::Drop(reason),
    };
    match (policy.vlan, outer) {
        (0, None) => Action::Pass,
        (0, Some(_)) => Action::Drop(DropReason::TaggedOnUntaggedPort),
        (_, None) => Action::Drop(DropReason::Untagged),
        (vlan, Some(outer)) => {
            if outer.tag.tpid != TPID_8021Q {
                Action::Drop(DropReason::ForeignTpid)
            } else if tci_vid(outer.tag.tci) != vlan {
                Action::Drop(DropReason::WrongVlan)
            } else if is_tpid(outer.inner_ethertype) {
                Action::Drop(DropReason::StackedTag)
            } else {
                Action::PopTag
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TPID_8021AD, TPID_QINQ_LEGACY};

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const IPV4: u16 = 0x0800;

    fn access(vlan: u16) -> EndpointPolicy {
        EndpointPolicy {
            mac: MAC,
            vlan,
            flags: 0,
        }
    }

    fn untagged_frame() -> FrameView {
        FrameView {
            len: 60,
            src: MAC,
            ethertype: IPV4,
            inline_tci: 0,
            inline_inner: 0,
            meta_tpid: 0,
            meta_tci: 0,
        }
    }

    fn inline_tagged(tpid: u16, tci: u16, inner: u16) -> FrameView {
        FrameView {
            ethertype: tpid,
            inline_tci: tci,
            inline_inner: inner,
            ..untagged_frame()
        }
    }

    fn meta_tagged(tpid: u16, tci: u16) -> FrameView {
        FrameView {
            meta_tpid: tpid,
            meta_tci: tci,
            ..untagged_frame()
        }
    }

    #[test]
    fn access_port_tags_guest_frames() {
        assert_eq!(
            from_guest(&access(10), &untagged_frame()),
            Action::PushTag { tci: 10 }
        );
        assert_eq!(from_guest(&access(0), &untagged_frame()), Action::Pass);
    }

    #[test]
    fn guest_may_not_tag() {
        for tpid in [TPID_8021Q, TPID_8021AD, TPID_QINQ_LEGACY] {
            let frame = inline_tagged(tpid, 20, IPV4);
            for vlan in [0, 10] {
                assert_eq!(
                    from_guest(&access(vlan), &frame),
                    Action::Drop(DropReason::GuestTagged)
                );
            }
        }
        assert_eq!(
            from_guest(&access(10), &meta_tagged(TPID_8021Q, 10)),
            Action::Drop(DropReason::GuestTagged)
        );
    }

    #[test]
    fn spoofing_is_dropped_unless_allowed() {
        let spoofed = FrameView {
            src: [0x02, 0, 0, 0, 0, 2],
            ..untagged_frame()
        };
        assert_eq!(
            from_guest(&access(10), &spoofed),
            Action::Drop(DropReason::SpoofedSource)
        );
        let lax = EndpointPolicy {
            flags: crate::POLICY_ALLOW_MAC_SPOOFING,
            ..access(10)
        };
        assert_eq!(from_guest(&lax, &spoofed), Action::PushTag { tci: 10 });
    }

    #[test]
    fn runts_are_dropped_both_ways() {
        let runt = FrameView {
            len: 13,
            ..untagged_frame()
        };
        for vlan in [0, 10] {
            assert_eq!(
                from_guest(&access(vlan), &runt),
                Action::Drop(DropReason::Runt)
            );
            assert_eq!(
                to_guest(&access(vlan), &runt),
                Action::Drop(DropReason::Runt)
            );
        }
        let cut_tag = FrameView {
            len: 16,
            ..inline_tagged(TPID_8021Q, 10, IPV4)
        };
        assert_eq!(
            to_guest(&access(10), &cut_tag),
            Action::Drop(DropReason::Runt)
        );
    }

    #[test]
    fn access_port_delivers_only_its_vlan() {
        let port = access(10);
        for frame in [
            meta_tagged(TPID_8021Q, 10),
            inline_tagged(TPID_8021Q, 10, IPV4),
        ] {
            assert_eq!(to_guest(&port, &frame), Action::PopTag);
        }
        // Priority bits do not change the VLAN.
        assert_eq!(
            to_guest(&port, &meta_tagged(TPID_8021Q, 0xe000 | 10)),
            Action::PopTag
        );
        assert_eq!(
            to_guest(&port, &meta_tagged(TPID_8021Q, 11)),
            Action::Drop(DropReason::WrongVlan)
        );
        assert_eq!(
            to_guest(&port, &meta_tagged(TPID_8021Q, 0)),
            Action::Drop(DropReason::WrongVlan)
        );
        assert_eq!(
            to_guest(&port, &untagged_frame()),
            Action::Drop(DropReason::Untagged)
        );
        assert_eq!(
            to_guest(&port, &meta_tagged(TPID_8021AD, 10)),
            Action::Drop(DropReason::ForeignTpid)
        );
        assert_eq!(
            to_guest(&port, &inline_tagged(TPID_8021Q, 10, TPID_8021Q)),
            Action::Drop(DropReason::StackedTag)
        );
        let meta_then_inline = FrameView {
            ethertype: TPID_8021Q,
            ..meta_tagged(TPID_8021AD, 10)
        };
        assert_eq!(
            to_guest(&port, &meta_then_inline),
            Action::Drop(DropReason::ForeignTpid)
        );
        let q_then_q = FrameView {
            ethertype: TPID_8021Q,
            ..meta_tagged(TPID_8021Q, 10)
        };
        assert_eq!(
            to_guest(&port, &q_then_q),
            Action::Drop(DropReason::StackedTag)
        );
    }

    #[test]
    fn untagged_port_passes_only_untagged() {
        let port = access(0);
        assert_eq!(to_guest(&port, &untagged_frame()), Action::Pass);
        assert_eq!(
            to_guest(&port, &meta_tagged(TPID_8021Q, 10)),
            Action::Drop(DropReason::TaggedOnUntaggedPort)
        );
        assert_eq!(
            to_guest(&port, &inline_tagged(TPID_8021AD, 10, IPV4)),
            Action::Drop(DropReason::TaggedOnUntaggedPort)
        );
    }
}
