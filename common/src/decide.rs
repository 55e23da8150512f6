//! Per-frame decisions, as pure functions over a policy and the first bytes
//! of a frame.
//!
//! The eBPF programs gather a [`FrameView`], call [`from_guest`] or
//! [`to_guest`] and carry out the [`Action`]; host tests run the same
//! functions. On a real receive path the kernel has already moved the outer
//! 802.1Q/802.1ad tag into skb metadata (`meta_*`); under
//! BPF_PROG_TEST_RUN, or when a guest writes a tagged frame, tags are
//! still inline in the bytes. Both forms are handled: only the first two
//! tags of a stack matter to any port.
//!
//! A priority tag (802.1Q with VID 0 and nothing under it) counts as
//! untagged, carrying a priority.

use crate::{
    DropReason, ETH_HLEN, ETH_VLAN_HLEN, EndpointPolicy, POLICY_CVLANS_LIMITED,
    POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, PORT_ACCESS, PORT_TRUNK, PORT_TUNNEL, PORT_UNTAGGED,
    TPID_8021AD, TPID_8021Q, is_tpid, tci_vid,
};

/// PCP and DEI bits of a TCI.
const TCI_PRIORITY_BITS: u16 = 0xf000;

/// A VLAN tag: protocol identifier and tag control information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    #[inline(always)]
    pub const fn vid(&self) -> u16 {
        tci_vid(self.tci)
    }
}

/// What a program knows about a frame before deciding.
///
/// Plain integers without padding: the verifier rejects copies of
/// uninitialised padding bytes, which an `Option` field would bring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameView {
    /// Length of the frame bytes (an offloaded tag is not counted).
    pub len: u32,
    /// Bytes 6..12. Meaningful when `len >= ETH_HLEN`.
    pub src: [u8; 6],
    /// Bytes 12..14.
    pub ethertype: u16,
    /// Bytes 14..16 and 16..18: TCI and next ethertype of a first inline
    /// tag. Meaningful when `len >= 18`.
    pub inline_tci: u16,
    pub inline_inner: u16,
    /// Bytes 18..20 and 20..22: the same for a second inline tag.
    /// Meaningful when `len >= 22`.
    pub inline2_tci: u16,
    pub inline2_inner: u16,
    /// TPID of the tag held in skb metadata, outside the bytes; 0 if none.
    pub meta_tpid: u16,
    /// TCI of the tag held in skb metadata.
    pub meta_tci: u16,
    /// TPID of a tag carried in `skb->mark` by another local endpoint
    /// (see [`crate::carriage`]); outside both the bytes and the metadata,
    /// and outermost. 0 if none.
    pub carried_tpid: u16,
    pub carried_tci: u16,
}

/// Bytes a view covers: an Ethernet header and two tags.
pub const VIEW_BYTES: usize = 22;

impl FrameView {
    /// A view of a frame of `len` bytes whose first bytes are `header`
    /// (zero past the end of a shorter frame: the decisions look at `len`
    /// before trusting a field), with the tag the kernel may hold in skb
    /// metadata.
    #[inline(always)]
    pub fn from_header(len: u32, header: &[u8; VIEW_BYTES], meta: Option<Tag>) -> Self {
        let be = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        let (meta_tpid, meta_tci) = meta.map_or((0, 0), |tag| (tag.tpid, tag.tci));
        Self {
            carried_tpid: 0,
            carried_tci: 0,
            len,
            src: [
                header[6], header[7], header[8], header[9], header[10], header[11],
            ],
            ethertype: be(12),
            inline_tci: be(14),
            inline_inner: be(16),
            inline2_tci: be(18),
            inline2_inner: be(20),
            meta_tpid,
            meta_tci,
        }
    }

    /// The same frame with `tag` carried in its mark.
    #[inline(always)]
    pub fn with_carried(self, tag: Option<Tag>) -> Self {
        let (carried_tpid, carried_tci) = tag.map_or((0, 0), |tag| (tag.tpid, tag.tci));
        Self {
            carried_tpid,
            carried_tci,
            ..self
        }
    }

    /// The tag carried in the mark, if any.
    #[inline(always)]
    pub const fn carried(&self) -> Option<Tag> {
        if self.carried_tpid == 0 {
            None
        } else {
            Some(Tag {
                tpid: self.carried_tpid,
                tci: self.carried_tci,
            })
        }
    }
}

/// What the program does with the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let it through unchanged.
    Pass,
    /// Push a tag (into skb metadata).
    Push(Tag),
    /// Remove the outer tag (metadata or inline).
    Pop,
    /// Remove a priority tag, then push the port's tag.
    PopPush(Tag),
    Drop(DropReason),
}

/// An action and the VLAN it is counted under on trunk and tunnel ports:
/// the VLAN on a trunk, the customer VLAN (0: untagged) in a tunnel.
/// `None` when the frame is not of a VLAN the port carries, so a guest
/// cannot make the controller count arbitrary VLANs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub vlan: Option<u16>,
}

impl Decision {
    const fn new(action: Action, vlan: Option<u16>) -> Self {
        Self { action, vlan }
    }

    const fn drop(reason: DropReason) -> Self {
        Self::new(Action::Drop(reason), None)
    }

    const fn drop_in(reason: DropReason, vlan: u16) -> Self {
        Self::new(Action::Drop(reason), Some(vlan))
    }
}

/// The tags at the front of a frame, outermost first.
#[derive(Clone, Copy)]
struct TagStack {
    outer: Option<Tag>,
    second: Option<Tag>,
}

impl TagStack {
    /// Untagged or priority-tagged: the frame belongs to no VLAN yet.
    /// Returns the priority bits (PCP and DEI) it carried.
    fn untagged_priority(&self) -> Option<u16> {
        match self.outer {
            None => Some(0),
            Some(tag) if tag.tpid == TPID_8021Q && tag.vid() == 0 && self.second.is_none() => {
                Some(tag.tci & TCI_PRIORITY_BITS)
            }
            Some(_) => None,
        }
    }

    fn is_priority_tagged(&self) -> bool {
        self.outer.is_some() && self.untagged_priority().is_some()
    }
}

/// Reads the tag stack, wherever it is: a tag carried in the mark
/// (outermost), the one in skb metadata, then those in the bytes. A tag cut
/// short by the end of the frame is a runt.
fn tag_stack(frame: &FrameView) -> Result<TagStack, DropReason> {
    let mut stack = TagStack {
        outer: None,
        second: None,
    };
    let mut found = 0;
    let mut add = |stack: &mut TagStack, tag: Tag| {
        if found == 0 {
            stack.outer = Some(tag);
        } else {
            stack.second = Some(tag);
        }
        found += 1;
    };
    if let Some(tag) = frame.carried() {
        add(&mut stack, tag);
    }
    if frame.meta_tpid != 0 {
        add(
            &mut stack,
            Tag {
                tpid: frame.meta_tpid,
                tci: frame.meta_tci,
            },
        );
    }
    if stack.second.is_some() || !is_tpid(frame.ethertype) {
        return Ok(stack);
    }
    // Tags in the bytes: the first, and a second if one more counts.
    if frame.len < ETH_VLAN_HLEN {
        return Err(DropReason::Runt);
    }
    add(
        &mut stack,
        Tag {
            tpid: frame.ethertype,
            tci: frame.inline_tci,
        },
    );
    if stack.second.is_none() && is_tpid(frame.inline_inner) {
        if frame.len < ETH_VLAN_HLEN + 4 {
            return Err(DropReason::Runt);
        }
        add(
            &mut stack,
            Tag {
                tpid: frame.inline_inner,
                tci: frame.inline2_tci,
            },
        );
    }
    Ok(stack)
}

/// The TCI of a tag macvswitch pushes: the configured priority, or else
/// the priority bits the guest put in its own tag.
fn pushed_tci(policy: &EndpointPolicy, vlan: u16, guest_priority: u16) -> u16 {
    let priority = if policy.has(POLICY_PRIORITY_SET) {
        u16::from(policy.priority & 7) << 13
    } else {
        guest_priority & TCI_PRIORITY_BITS
    };
    priority | (vlan & 0x0fff)
}

/// Push the port's tag onto a frame that had none, or replace its
/// priority tag.
fn tag_untagged(stack: &TagStack, tag: Tag) -> Action {
    if stack.is_priority_tagged() {
        Action::PopPush(tag)
    } else {
        Action::Push(tag)
    }
}

/// A frame the guest wrote to its tap fd, on its way out of the endpoint.
pub fn from_guest(policy: &EndpointPolicy, frame: &FrameView) -> Decision {
    if frame.len < ETH_HLEN {
        return Decision::drop(DropReason::Runt);
    }
    if !policy.allows_mac_spoofing() && frame.src != policy.mac {
        return Decision::drop(DropReason::SpoofedSource);
    }
    let stack = match tag_stack(frame) {
        Ok(stack) => stack,
        Err(reason) => return Decision::drop(reason),
    };
    let untagged = stack.untagged_priority();
    match policy.kind {
        PORT_ACCESS => match untagged {
            Some(priority) => {
                let tag = Tag {
                    tpid: TPID_8021Q,
                    tci: pushed_tci(policy, policy.vlan, priority),
                };
                Decision::new(tag_untagged(&stack, tag), None)
            }
            // Any real tag is an attempt to pick another VLAN.
            None => Decision::drop(DropReason::GuestTagged),
        },
        PORT_TRUNK => trunk_from_guest(policy, &stack),
        PORT_TUNNEL => tunnel_from_guest(policy, &stack),
        // An untagged port, and any kind this build does not know: fail
        // closed towards untagged.
        _ => match untagged {
            Some(_) if stack.is_priority_tagged() => Decision::new(Action::Pop, None),
            Some(_) => Decision::new(Action::Pass, None),
            None => Decision::drop(DropReason::GuestTagged),
        },
    }
}

fn trunk_from_guest(policy: &EndpointPolicy, stack: &TagStack) -> Decision {
    let native = policy.vlan;
    if let Some(priority) = stack.untagged_priority() {
        if native == 0 {
            return Decision::drop(DropReason::Untagged);
        }
        let tag = Tag {
            tpid: TPID_8021Q,
            tci: pushed_tci(policy, native, priority),
        };
        return Decision::new(tag_untagged(stack, tag), Some(native));
    }
    let Some(outer) = stack.outer else {
        return Decision::drop(DropReason::Untagged);
    };
    if outer.tpid != TPID_8021Q {
        return Decision::drop(DropReason::ForeignTpid);
    }
    let vid = outer.vid();
    if vid == 0 || !(policy.vids.contains(vid) || vid == native) {
        return Decision::drop(DropReason::WrongVlan);
    }
    if stack.second.is_some() {
        return Decision::drop_in(DropReason::StackedTag, vid);
    }
    // The guest's own tag, priority bits included, goes out unchanged.
    Decision::new(Action::Pass, Some(vid))
}

fn tunnel_from_guest(policy: &EndpointPolicy, stack: &TagStack) -> Decision {
    let (cvid, guest_priority) = match stack.outer {
        None => (0, 0),
        Some(tag) if tag.tpid == TPID_8021Q => (tag.vid(), tag.tci),
        // Service tags are the provider's, never the customer's.
        Some(_) => return Decision::drop(DropReason::ForeignTpid),
    };
    if policy.has(POLICY_CVLANS_LIMITED) && !policy.vids.contains(cvid) {
        return Decision::drop(if cvid == 0 {
            DropReason::Untagged
        } else {
            DropReason::CvlanNotAllowed
        });
    }
    let tag = Tag {
        tpid: TPID_8021AD,
        tci: pushed_tci(policy, policy.vlan, guest_priority),
    };
    Decision::new(Action::Push(tag), Some(cvid))
}

/// A frame on its way into the endpoint, towards the guest: from the wire
/// or from another endpoint on the same lower device.
pub fn to_guest(policy: &EndpointPolicy, frame: &FrameView) -> Decision {
    if frame.len < ETH_HLEN {
        return Decision::drop(DropReason::Runt);
    }
    let stack = match tag_stack(frame) {
        Ok(stack) => stack,
        Err(reason) => return Decision::drop(reason),
    };
    let Some(outer) = stack.outer.filter(|_| !stack.is_priority_tagged()) else {
        // Untagged, or priority-tagged: deliverable only to untagged ports.
        return match policy.kind {
            PORT_ACCESS | PORT_TRUNK | PORT_TUNNEL => Decision::drop(DropReason::Untagged),
            _ if stack.is_priority_tagged() => Decision::new(Action::Pop, None),
            _ => Decision::new(Action::Pass, None),
        };
    };
    let vid = outer.vid();
    match policy.kind {
        PORT_ACCESS => {
            if outer.tpid != TPID_8021Q {
                Decision::drop(DropReason::ForeignTpid)
            } else if vid != policy.vlan {
                Decision::drop(DropReason::WrongVlan)
            } else if stack.second.is_some() {
                Decision::drop(DropReason::StackedTag)
            } else {
                Decision::new(Action::Pop, None)
            }
        }
        PORT_TRUNK => {
            let native = policy.vlan;
            if outer.tpid != TPID_8021Q {
                Decision::drop(DropReason::ForeignTpid)
            } else if vid == 0 || !(policy.vids.contains(vid) || vid == native) {
                Decision::drop(DropReason::WrongVlan)
            } else if stack.second.is_some() {
                Decision::drop_in(DropReason::StackedTag, vid)
            } else if vid == native && !policy.has(POLICY_NATIVE_TAGGED) {
                Decision::new(Action::Pop, Some(vid))
            } else {
                Decision::new(Action::Pass, Some(vid))
            }
        }
        PORT_TUNNEL => {
            if outer.tpid != TPID_8021AD {
                return Decision::drop(DropReason::ForeignTpid);
            }
            if vid != policy.vlan {
                return Decision::drop(DropReason::WrongVlan);
            }
            let cvid = match stack.second {
                None => 0,
                Some(tag) if tag.tpid == TPID_8021Q => tag.vid(),
                Some(_) => return Decision::drop(DropReason::StackedTag),
            };
            if policy.has(POLICY_CVLANS_LIMITED) && !policy.vids.contains(cvid) {
                return Decision::drop(if cvid == 0 {
                    DropReason::Untagged
                } else {
                    DropReason::CvlanNotAllowed
                });
            }
            Decision::new(Action::Pop, Some(cvid))
        }
        _ => Decision::drop(DropReason::TaggedOnUntaggedPort),
    }
}

/// What the fast path looks at: enough for the common cases, read with a
/// handful of loads instead of the whole [`FrameView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Glance {
    /// Length of the frame bytes; at least `ETH_HLEN` (runts never get here).
    pub len: u32,
    /// Bytes 12..14.
    pub ethertype: u16,
    /// Whether bytes 6..12 are the policy's MAC.
    pub src_is_own: bool,
    /// The tag in skb metadata, and the one carried in the mark.
    pub meta: Option<Tag>,
    pub carried: Option<Tag>,
}

/// The common cases, untagged frames of access and untagged ports, decided
/// from a [`Glance`]: `Some` only where [`from_guest`] / [`to_guest`] decide
/// exactly the same (the tests hold it to that), `None` for everything else.
#[inline(always)]
pub fn fast(policy: &EndpointPolicy, to_guest: bool, glance: &Glance) -> Option<Decision> {
    if glance.len < ETH_HLEN || is_tpid(glance.ethertype) {
        return None;
    }
    if !to_guest {
        if glance.meta.is_some() || glance.carried.is_some() {
            return None;
        }
        if !glance.src_is_own && !policy.allows_mac_spoofing() {
            return Some(Decision::drop(DropReason::SpoofedSource));
        }
        return match policy.kind {
            PORT_ACCESS => Some(Decision::new(
                Action::Push(Tag {
                    tpid: TPID_8021Q,
                    tci: pushed_tci(policy, policy.vlan, 0),
                }),
                None,
            )),
            PORT_UNTAGGED => Some(Decision::new(Action::Pass, None)),
            _ => None,
        };
    }
    // Towards the guest: one tag at the most, outside the bytes.
    let outer = match (glance.carried, glance.meta) {
        (Some(_), Some(_)) => return None,
        (Some(tag), None) | (None, Some(tag)) => Some(tag),
        (None, None) => None,
    };
    match (policy.kind, outer) {
        (PORT_UNTAGGED, None) => Some(Decision::new(Action::Pass, None)),
        (PORT_ACCESS, Some(tag))
            if tag.tpid == TPID_8021Q && tag.vid() == policy.vlan && policy.vlan != 0 =>
        {
            Some(Decision::new(Action::Pop, None))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
