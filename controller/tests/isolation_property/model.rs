//! The reference model: what the README's "Port model" says a port does
//! with one frame, written over raw frame bytes and the same
//! `EndpointPolicy` the programs read. It deliberately does not call
//! `macvswitch_common::decide`.
//!
//! A frame is `bytes` (what starts at the MAC header) plus an optional tag
//! in skb metadata (`meta`), which is the outermost tag when present.
//! Representation of the result, as the kernel helpers leave it:
//! - pop: the metadata tag goes if there is one, else the 4 inline tag
//!   bytes at 12..16;
//! - push: an existing metadata tag is moved inline (to 12..16), and the
//!   pushed tag becomes the metadata tag.

use macvswitch_common::{
    DropReason, EndpointPolicy, POLICY_ALLOW_MAC_SPOOFING, POLICY_CVLANS_LIMITED,
    POLICY_NATIVE_TAGGED, POLICY_PRIORITY_SET, PORT_ACCESS, PORT_TRUNK, PORT_TUNNEL, PORT_UNTAGGED,
};

pub const TPID_Q: u16 = 0x8100;
pub const TPID_AD: u16 = 0x88a8;
pub const TPID_LEGACY: u16 = 0x9100;

/// Which hook: TC egress of the macvtap (from the guest) or TC ingress
/// (to the guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    FromGuest,
    ToGuest,
}

/// A VLAN tag: TPID and TCI (PCP:3, DEI:1, VID:12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
    pub fn bytes(self) -> [u8; 4] {
        let [a, b] = self.tpid.to_be_bytes();
        let [c, d] = self.tci.to_be_bytes();
        [a, b, c, d]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// `None`: no policy for the device; dropped without counting.
    Drop(Option<DropReason>),
}

/// Everything the model predicts for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Output frame bytes (the input's when dropped).
    pub bytes: Vec<u8>,
    /// The metadata tag after the program ran.
    pub meta: Option<Tag>,
    /// The tag the program pushed, if any.
    pub pushed: Option<Tag>,
    /// Whether the program popped the outer tag.
    pub popped: bool,
    /// The VLAN the frame is counted under (per-VLAN counters).
    pub vlan: Option<u16>,
}

/// Whether an ethertype announces a tag.
pub fn is_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_Q | TPID_AD | TPID_LEGACY)
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The first two tags of a frame.
#[derive(Clone, Copy, Debug)]
struct Stack {
    outer: Option<Tag>,
    /// The tag right under `outer`.
    second: Option<Tag>,
}

/// Reads the first two tags; `Err(Runt)` when a tag that must be read is
/// cut off by the end of the frame. `bytes.len() >= 14` here.
fn parse(bytes: &[u8], meta: Option<Tag>) -> Result<Stack, DropReason> {
    let len = bytes.len();
    let ethertype = be16(bytes, 12);
    // An inline tag announced by the type field at `at`: its TCI and the
    // next type field follow, at+2..at+6 (14..18 for the first, 18..22 for
    // a second under an inline outer tag). Cut short, it is a runt.
    let inline_tag = |at: usize| -> Result<Tag, DropReason> {
        if len < at + 6 {
            return Err(DropReason::Runt);
        }
        Ok(Tag {
            tpid: be16(bytes, at),
            tci: be16(bytes, at + 2),
        })
    };
    match meta {
        Some(outer) => {
            let second = if is_tpid(ethertype) {
                Some(inline_tag(12)?)
            } else {
                None
            };
            Ok(Stack {
                outer: Some(outer),
                second,
            })
        }
        None => {
            if !is_tpid(ethertype) {
                return Ok(Stack {
                    outer: None,
                    second: None,
                });
            }
            let outer = inline_tag(12)?;
            let second = if is_tpid(be16(bytes, 16)) {
                Some(inline_tag(16)?)
            } else {
                None
            };
            Ok(Stack {
                outer: Some(outer),
                second,
            })
        }
    }
}

/// What a port does with a frame, before it is applied to the bytes.
enum Act {
    Pass,
    Push(Tag),
    Pop,
    PopPush(Tag),
}

/// The model. `policy` is `None` when the device has no policy entry.
pub fn model(
    dir: Dir,
    policy: Option<&EndpointPolicy>,
    bytes: &[u8],
    meta: Option<Tag>,
) -> Outcome {
    let decision = match policy {
        None => Err((None, None)),
        Some(policy) => match dir {
            Dir::FromGuest => from_guest(policy, bytes, meta),
            Dir::ToGuest => to_guest(policy, bytes, meta),
        }
        .map_err(|(reason, vlan)| (Some(reason), vlan)),
    };
    match decision {
        Err((reason, vlan)) => Outcome {
            verdict: Verdict::Drop(reason),
            bytes: bytes.to_vec(),
            meta,
            pushed: None,
            popped: false,
            vlan,
        },
        Ok((act, vlan)) => {
            let (out, meta_out, pushed, popped) = apply(bytes, meta, &act);
            Outcome {
                verdict: Verdict::Pass,
                bytes: out,
                meta: meta_out,
                pushed,
                popped,
                vlan,
            }
        }
    }
}

/// Pop and push as the kernel helpers do them (see the module docs).
fn apply(bytes: &[u8], meta: Option<Tag>, act: &Act) -> (Vec<u8>, Option<Tag>, Option<Tag>, bool) {
    let mut out = bytes.to_vec();
    let mut meta = meta;
    let (pop, push) = match *act {
        Act::Pass => (false, None),
        Act::Push(tag) => (false, Some(tag)),
        Act::Pop => (true, None),
        Act::PopPush(tag) => (true, Some(tag)),
    };
    if pop {
        pop_outer(&mut out, &mut meta);
    }
    if let Some(tag) = push {
        push_outer(&mut out, &mut meta, tag);
    }
    (out, meta, push, pop)
}

pub fn pop_outer(bytes: &mut Vec<u8>, meta: &mut Option<Tag>) {
    if meta.take().is_none() {
        bytes.drain(12..16);
    }
}

pub fn push_outer(bytes: &mut Vec<u8>, meta: &mut Option<Tag>, tag: Tag) {
    if let Some(old) = meta.replace(tag) {
        bytes.splice(12..12, old.bytes());
    }
}

type Decided = Result<(Act, Option<u16>), (DropReason, Option<u16>)>;

fn drop<T>(reason: DropReason) -> Result<T, (DropReason, Option<u16>)> {
    Err((reason, None))
}

/// TCI of a tag macvswitch pushes: `--priority` if set, else the priority
/// bits (PCP and DEI) of the guest's own priority or customer tag.
fn pushed_tci(policy: &EndpointPolicy, vid: u16, guest_bits: u16) -> u16 {
    let bits = if policy.flags & POLICY_PRIORITY_SET != 0 {
        u16::from(policy.priority & 7) << 13
    } else {
        guest_bits & 0xf000
    };
    bits | (vid & 0x0fff)
}

/// A priority tag: 802.1Q, VID 0, nothing under it.
fn is_priority_tag(stack: &Stack) -> bool {
    matches!(stack.outer, Some(tag) if tag.tpid == TPID_Q && tag.vid() == 0)
        && stack.second.is_none()
}

/// VLANs a trunk carries: its list and its native VLAN.
fn trunk_carries(policy: &EndpointPolicy, vid: u16) -> bool {
    policy.vids.contains(vid) || (policy.vlan != 0 && vid == policy.vlan)
}

fn from_guest(policy: &EndpointPolicy, bytes: &[u8], meta: Option<Tag>) -> Decided {
    if bytes.len() < 14 {
        return drop(DropReason::Runt);
    }
    if policy.flags & POLICY_ALLOW_MAC_SPOOFING == 0 && bytes[6..12] != policy.mac {
        return drop(DropReason::SpoofedSource);
    }
    let stack = parse(bytes, meta).map_err(|reason| (reason, None))?;
    let priority_tag = is_priority_tag(&stack);
    let untagged = stack.outer.is_none() || priority_tag;
    let guest_bits = match stack.outer {
        Some(tag) if priority_tag => tag.tci,
        _ => 0,
    };
    // Untagged frames get `tag`: pushed, or replacing the priority tag.
    let tag_untagged = |tag: Tag| {
        if priority_tag {
            Act::PopPush(tag)
        } else {
            Act::Push(tag)
        }
    };
    match policy.kind {
        PORT_UNTAGGED => match stack.outer {
            None => Ok((Act::Pass, None)),
            Some(_) if priority_tag => Ok((Act::Pop, None)),
            Some(_) => drop(DropReason::GuestTagged),
        },
        PORT_ACCESS => {
            if !untagged {
                return drop(DropReason::GuestTagged);
            }
            let tci = pushed_tci(policy, policy.vlan, guest_bits);
            Ok((tag_untagged(Tag { tpid: TPID_Q, tci }), None))
        }
        PORT_TRUNK => {
            if untagged {
                if policy.vlan == 0 {
                    return drop(DropReason::Untagged);
                }
                let tci = pushed_tci(policy, policy.vlan, guest_bits);
                return Ok((tag_untagged(Tag { tpid: TPID_Q, tci }), Some(policy.vlan)));
            }
            let outer = stack.outer.expect("tagged");
            if outer.tpid != TPID_Q {
                return drop(DropReason::ForeignTpid);
            }
            let vid = outer.vid();
            if !trunk_carries(policy, vid) {
                return drop(DropReason::WrongVlan);
            }
            if stack.second.is_some() {
                return Err((DropReason::StackedTag, Some(vid)));
            }
            Ok((Act::Pass, Some(vid)))
        }
        PORT_TUNNEL => {
            // Only 802.1Q customer tags go into a tunnel: an 802.1ad (or
            // 0x9100) outer tag from the guest is a service tag, not the
            // customer's. (The README names foreign-tpid for "802.1ad tags
            // from non-tunnel guests"; for tunnel guests it says "customer
            // tags kept", and customer tags are 802.1Q.)
            let (cvid, bits) = match stack.outer {
                None => (0, 0),
                Some(tag) if tag.tpid == TPID_Q => (tag.vid(), tag.tci),
                Some(_) => return drop(DropReason::ForeignTpid),
            };
            // A customer frame with VID 0 (priority-tagged, or a VID-0 tag
            // with more under it) is an untagged customer frame, counted
            // under 0; its tag is kept under the S-tag like any customer
            // tag (QinQ is transparent to the customer's frame), and its
            // PCP and DEI go into the S-tag.
            if policy.flags & POLICY_CVLANS_LIMITED != 0 && !policy.vids.contains(cvid) {
                return drop(if cvid == 0 {
                    DropReason::Untagged
                } else {
                    DropReason::CvlanNotAllowed
                });
            }
            let tag = Tag {
                tpid: TPID_AD,
                tci: pushed_tci(policy, policy.vlan, bits),
            };
            Ok((Act::Push(tag), Some(cvid)))
        }
        _ => panic!("model: unknown port kind {}", policy.kind),
    }
}

fn to_guest(policy: &EndpointPolicy, bytes: &[u8], meta: Option<Tag>) -> Decided {
    if bytes.len() < 14 {
        return drop(DropReason::Runt);
    }
    let stack = parse(bytes, meta).map_err(|reason| (reason, None))?;
    let priority_tag = is_priority_tag(&stack);
    let untagged = stack.outer.is_none() || priority_tag;
    match policy.kind {
        PORT_UNTAGGED => match stack.outer {
            None => Ok((Act::Pass, None)),
            Some(_) if priority_tag => Ok((Act::Pop, None)),
            Some(_) => drop(DropReason::TaggedOnUntaggedPort),
        },
        PORT_ACCESS | PORT_TRUNK => {
            if untagged {
                return drop(DropReason::Untagged);
            }
            let outer = stack.outer.expect("tagged");
            if outer.tpid != TPID_Q {
                return drop(DropReason::ForeignTpid);
            }
            let vid = outer.vid();
            let trunk = policy.kind == PORT_TRUNK;
            let carried = if trunk {
                trunk_carries(policy, vid)
            } else {
                vid == policy.vlan
            };
            if !carried {
                return drop(DropReason::WrongVlan);
            }
            let counted = trunk.then_some(vid);
            if stack.second.is_some() {
                return Err((DropReason::StackedTag, counted));
            }
            let native_untagged =
                policy.vlan != 0 && vid == policy.vlan && policy.flags & POLICY_NATIVE_TAGGED == 0;
            if !trunk || native_untagged {
                Ok((Act::Pop, counted))
            } else {
                Ok((Act::Pass, counted))
            }
        }
        PORT_TUNNEL => {
            if untagged {
                return drop(DropReason::Untagged);
            }
            let outer = stack.outer.expect("tagged");
            if outer.tpid != TPID_AD {
                return drop(DropReason::ForeignTpid);
            }
            if outer.vid() != policy.vlan {
                return drop(DropReason::WrongVlan);
            }
            // The customer's tag, if any, must be 802.1Q: a second
            // service tag under S is a stacked tag.
            let cvid = match stack.second {
                None => 0,
                Some(tag) if tag.tpid == TPID_Q => tag.vid(),
                Some(_) => return drop(DropReason::StackedTag),
            };
            if policy.flags & POLICY_CVLANS_LIMITED != 0 && !policy.vids.contains(cvid) {
                return drop(if cvid == 0 {
                    DropReason::Untagged
                } else {
                    DropReason::CvlanNotAllowed
                });
            }
            Ok((Act::Pop, Some(cvid)))
        }
        _ => panic!("model: unknown port kind {}", policy.kind),
    }
}
