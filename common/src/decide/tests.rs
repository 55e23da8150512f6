use super::*;
use crate::{POLICY_ALLOW_MAC_SPOOFING, TPID_QINQ_LEGACY, VidSet};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const IPV4: u16 = 0x0800;

fn access(vlan: u16) -> EndpointPolicy {
    EndpointPolicy::access(MAC, vlan)
}

fn untagged_port() -> EndpointPolicy {
    EndpointPolicy::untagged(MAC)
}

fn vids(list: &[u16]) -> VidSet {
    let mut set = VidSet::EMPTY;
    for vid in list {
        set.insert(*vid);
    }
    set
}

fn trunk(list: &[u16], native: u16, flags: u32) -> EndpointPolicy {
    EndpointPolicy {
        kind: PORT_TRUNK,
        vlan: native,
        flags,
        vids: vids(list),
        ..untagged_port()
    }
}

fn tunnel(svid: u16, cvlans: Option<&[u16]>) -> EndpointPolicy {
    EndpointPolicy {
        kind: PORT_TUNNEL,
        vlan: svid,
        flags: if cvlans.is_some() {
            POLICY_CVLANS_LIMITED
        } else {
            0
        },
        vids: vids(cvlans.unwrap_or(&[])),
        ..untagged_port()
    }
}

/// A frame with inline tags (outermost first), as a guest writes it or
/// BPF_PROG_TEST_RUN passes it.
fn inline(tags: &[(u16, u16)]) -> FrameView {
    let mut frame = FrameView {
        len: 60,
        src: MAC,
        ethertype: IPV4,
        ..FrameView::default()
    };
    let mut types = [IPV4; 3];
    for (i, (tpid, _)) in tags.iter().enumerate() {
        types[i] = *tpid;
    }
    frame.ethertype = types[0];
    if let Some((_, tci)) = tags.first() {
        frame.inline_tci = *tci;
        frame.inline_inner = if tags.len() > 1 { types[1] } else { IPV4 };
    }
    if let Some((_, tci)) = tags.get(1) {
        frame.inline2_tci = *tci;
        frame.inline2_inner = if tags.len() > 2 { types[2] } else { IPV4 };
    }
    frame
}

/// A frame whose outer tag the kernel moved into metadata.
fn meta(tpid: u16, tci: u16, rest: &[(u16, u16)]) -> FrameView {
    FrameView {
        meta_tpid: tpid,
        meta_tci: tci,
        ..inline(rest)
    }
}

fn q(tci: u16) -> (u16, u16) {
    (TPID_8021Q, tci)
}

fn ad(tci: u16) -> (u16, u16) {
    (TPID_8021AD, tci)
}

fn action(decision: Decision) -> Action {
    decision.action
}

fn drop(reason: DropReason) -> Action {
    Action::Drop(reason)
}

fn push_q(tci: u16) -> Action {
    Action::Push(Tag {
        tpid: TPID_8021Q,
        tci,
    })
}

#[test]
fn access_port_tags_guest_frames() {
    assert_eq!(action(from_guest(&access(10), &inline(&[]))), push_q(10));
    // A priority tag is replaced, keeping the guest's PCP and DEI.
    assert_eq!(
        action(from_guest(&access(10), &inline(&[q(0xb000)]))),
        Action::PopPush(Tag {
            tpid: TPID_8021Q,
            tci: 0xb000 | 10
        })
    );
    // --priority overrides it.
    let prio = EndpointPolicy {
        priority: 5,
        flags: POLICY_PRIORITY_SET,
        ..access(10)
    };
    assert_eq!(action(from_guest(&prio, &inline(&[]))), push_q(0xa000 | 10));
}

#[test]
fn guest_may_not_tag_access_or_untagged_ports() {
    for tags in [
        &[q(20)][..],
        &[q(10)],
        &[ad(10)],
        &[(TPID_QINQ_LEGACY, 10)],
        &[q(0), q(10)],
    ] {
        for port in [access(10), untagged_port()] {
            assert_eq!(
                action(from_guest(&port, &inline(tags))),
                drop(DropReason::GuestTagged),
                "{tags:x?}"
            );
        }
    }
    assert_eq!(
        action(from_guest(&access(10), &meta(TPID_8021Q, 10, &[]))),
        drop(DropReason::GuestTagged)
    );
    // Priority tags are stripped on untagged ports.
    assert_eq!(
        action(from_guest(&untagged_port(), &inline(&[q(0x2000)]))),
        Action::Pop
    );
}

#[test]
fn spoofing_is_dropped_unless_allowed() {
    let spoofed = FrameView {
        src: [0x02, 0, 0, 0, 0, 2],
        ..inline(&[])
    };
    assert_eq!(
        action(from_guest(&access(10), &spoofed)),
        drop(DropReason::SpoofedSource)
    );
    let lax = EndpointPolicy {
        flags: POLICY_ALLOW_MAC_SPOOFING,
        ..access(10)
    };
    assert_eq!(action(from_guest(&lax, &spoofed)), push_q(10));
}

#[test]
fn runts_and_cut_tags_are_dropped() {
    for port in [
        access(10),
        untagged_port(),
        trunk(&[10], 0, 0),
        tunnel(5, None),
    ] {
        let runt = FrameView {
            len: 13,
            ..inline(&[])
        };
        assert_eq!(action(from_guest(&port, &runt)), drop(DropReason::Runt));
        assert_eq!(action(to_guest(&port, &runt)), drop(DropReason::Runt));
        let cut = FrameView {
            len: 17,
            ..inline(&[q(10)])
        };
        assert_eq!(action(to_guest(&port, &cut)), drop(DropReason::Runt));
        let cut_second = FrameView {
            len: 21,
            ..inline(&[ad(5), q(10)])
        };
        assert_eq!(action(to_guest(&port, &cut_second)), drop(DropReason::Runt));
        let cut_under_meta = FrameView {
            len: 17,
            ..meta(TPID_8021AD, 5, &[q(10)])
        };
        assert_eq!(
            action(to_guest(&port, &cut_under_meta)),
            drop(DropReason::Runt)
        );
    }
}

#[test]
fn access_port_delivers_only_its_vlan() {
    let port = access(10);
    assert_eq!(
        action(to_guest(&port, &meta(TPID_8021Q, 10, &[]))),
        Action::Pop
    );
    assert_eq!(action(to_guest(&port, &inline(&[q(10)]))), Action::Pop);
    assert_eq!(
        action(to_guest(&port, &meta(TPID_8021Q, 0xe000 | 10, &[]))),
        Action::Pop
    );
    let cases = [
        (meta(TPID_8021Q, 11, &[]), DropReason::WrongVlan),
        (inline(&[]), DropReason::Untagged),
        (inline(&[q(0)]), DropReason::Untagged),
        (meta(TPID_8021AD, 10, &[]), DropReason::ForeignTpid),
        (inline(&[q(10), q(20)]), DropReason::StackedTag),
        (meta(TPID_8021Q, 10, &[q(20)]), DropReason::StackedTag),
        (meta(TPID_8021AD, 10, &[q(10)]), DropReason::ForeignTpid),
    ];
    for (frame, reason) in cases {
        assert_eq!(action(to_guest(&port, &frame)), drop(reason), "{frame:x?}");
    }
}

#[test]
fn untagged_port_passes_only_untagged() {
    let port = untagged_port();
    assert_eq!(action(to_guest(&port, &inline(&[]))), Action::Pass);
    assert_eq!(action(to_guest(&port, &inline(&[q(0x4000)]))), Action::Pop);
    for frame in [
        meta(TPID_8021Q, 10, &[]),
        inline(&[ad(10)]),
        inline(&[q(0), q(5)]),
    ] {
        assert_eq!(
            action(to_guest(&port, &frame)),
            drop(DropReason::TaggedOnUntaggedPort)
        );
    }
}

#[test]
fn trunk_from_guest() {
    let port = trunk(&[10, 20, 100, 101], 0, 0);
    let pass = |vid| Decision {
        action: Action::Pass,
        vlan: Some(vid),
    };
    assert_eq!(from_guest(&port, &inline(&[q(0xe000 | 20)])), pass(20));
    assert_eq!(from_guest(&port, &inline(&[q(101)])), pass(101));
    assert_eq!(
        action(from_guest(&port, &inline(&[q(30)]))),
        drop(DropReason::WrongVlan)
    );
    assert_eq!(
        action(from_guest(&port, &inline(&[]))),
        drop(DropReason::Untagged)
    );
    assert_eq!(
        action(from_guest(&port, &inline(&[q(0)]))),
        drop(DropReason::Untagged)
    );
    assert_eq!(
        action(from_guest(&port, &inline(&[ad(10)]))),
        drop(DropReason::ForeignTpid)
    );
    assert_eq!(
        from_guest(&port, &inline(&[q(10), q(20)])),
        Decision {
            action: drop(DropReason::StackedTag),
            vlan: Some(10)
        }
    );

    let native = trunk(&[10, 20], 30, 0);
    assert_eq!(
        from_guest(&native, &inline(&[])),
        Decision {
            action: push_q(30),
            vlan: Some(30)
        }
    );
    // The native VLAN may also be sent tagged.
    assert_eq!(from_guest(&native, &inline(&[q(30)])), pass(30));
    assert_eq!(
        action(from_guest(&native, &inline(&[q(0x6000)]))),
        Action::PopPush(Tag {
            tpid: TPID_8021Q,
            tci: 0x6000 | 30
        })
    );
}

#[test]
fn trunk_to_guest() {
    let port = trunk(&[10, 20], 30, 0);
    assert_eq!(
        to_guest(&port, &meta(TPID_8021Q, 10, &[])),
        Decision {
            action: Action::Pass,
            vlan: Some(10)
        }
    );
    // Native VLAN: untagged by default, tagged with --native-tagged.
    assert_eq!(
        action(to_guest(&port, &meta(TPID_8021Q, 30, &[]))),
        Action::Pop
    );
    let tagged_native = trunk(&[10, 20], 30, POLICY_NATIVE_TAGGED);
    assert_eq!(
        action(to_guest(&tagged_native, &meta(TPID_8021Q, 30, &[]))),
        Action::Pass
    );
    for (frame, reason) in [
        (meta(TPID_8021Q, 40, &[]), DropReason::WrongVlan),
        (inline(&[]), DropReason::Untagged),
        (inline(&[q(0)]), DropReason::Untagged),
        (meta(TPID_8021AD, 10, &[]), DropReason::ForeignTpid),
        (meta(TPID_8021Q, 10, &[q(20)]), DropReason::StackedTag),
    ] {
        assert_eq!(action(to_guest(&port, &frame)), drop(reason), "{frame:x?}");
    }
}

#[test]
fn tunnel_from_guest_pushes_a_service_tag() {
    let port = tunnel(100, None);
    let push_ad = |tci, cvid| Decision {
        action: Action::Push(Tag {
            tpid: TPID_8021AD,
            tci,
        }),
        vlan: Some(cvid),
    };
    assert_eq!(from_guest(&port, &inline(&[])), push_ad(100, 0));
    // The customer's PCP is copied to the service tag.
    assert_eq!(
        from_guest(&port, &inline(&[q(0x8000 | 7)])),
        push_ad(0x8000 | 100, 7)
    );
    assert_eq!(from_guest(&port, &inline(&[q(7), q(8)])), push_ad(100, 7));
    assert_eq!(
        action(from_guest(&port, &inline(&[ad(100)]))),
        drop(DropReason::ForeignTpid)
    );

    let limited = tunnel(100, Some(&[7, 8]));
    assert_eq!(from_guest(&limited, &inline(&[q(8)])), push_ad(100, 8));
    assert_eq!(
        action(from_guest(&limited, &inline(&[q(9)]))),
        drop(DropReason::CvlanNotAllowed)
    );
    assert_eq!(
        action(from_guest(&limited, &inline(&[]))),
        drop(DropReason::Untagged)
    );
}

#[test]
fn tunnel_to_guest_removes_the_service_tag() {
    let port = tunnel(100, None);
    assert_eq!(
        to_guest(&port, &meta(TPID_8021AD, 100, &[q(7)])),
        Decision {
            action: Action::Pop,
            vlan: Some(7)
        }
    );
    assert_eq!(action(to_guest(&port, &inline(&[ad(100)]))), Action::Pop);
    assert_eq!(
        action(to_guest(&port, &inline(&[ad(100), q(7)]))),
        Action::Pop
    );
    for (frame, reason) in [
        (meta(TPID_8021AD, 101, &[]), DropReason::WrongVlan),
        (meta(TPID_8021Q, 100, &[]), DropReason::ForeignTpid),
        (inline(&[]), DropReason::Untagged),
        (meta(TPID_8021AD, 100, &[ad(5)]), DropReason::StackedTag),
    ] {
        assert_eq!(action(to_guest(&port, &frame)), drop(reason), "{frame:x?}");
    }
    let limited = tunnel(100, Some(&[7]));
    assert_eq!(
        action(to_guest(&limited, &inline(&[ad(100), q(7)]))),
        Action::Pop
    );
    assert_eq!(
        action(to_guest(&limited, &inline(&[ad(100), q(8)]))),
        drop(DropReason::CvlanNotAllowed)
    );
    assert_eq!(
        action(to_guest(&limited, &inline(&[ad(100)]))),
        drop(DropReason::Untagged)
    );
}

/// A frame from another local endpoint: its outer tag carried in the mark,
/// any further tags in metadata (moved there by the receive path) or inline.
fn carried(outer: (u16, u16), rest: &[(u16, u16)]) -> FrameView {
    inline(rest).with_carried(Some(Tag {
        tpid: outer.0,
        tci: outer.1,
    }))
}

#[test]
fn a_tag_carried_in_the_mark_is_the_outermost() {
    // Access: its own VLAN is delivered (the mark cleared stands for the
    // pop), others are not.
    assert_eq!(
        to_guest(&access(10), &carried((TPID_8021Q, 10), &[])).action,
        Action::Pop
    );
    assert_eq!(
        to_guest(&access(10), &carried((TPID_8021Q, 20), &[])).action,
        Action::Drop(DropReason::WrongVlan)
    );
    // A trunk gets it tagged; an untagged port never.
    assert_eq!(
        to_guest(&trunk(&[10], 0, 0), &carried((TPID_8021Q, 10), &[])).action,
        Action::Pass
    );
    assert_eq!(
        to_guest(&untagged_port(), &carried((TPID_8021Q, 10), &[])).action,
        Action::Drop(DropReason::TaggedOnUntaggedPort)
    );
    // A tunnel's S-tag in the mark over the customer's tag in the bytes.
    let d = to_guest(
        &tunnel(300, None),
        &carried((TPID_8021AD, 300), &[(TPID_8021Q, 7)]),
    );
    assert_eq!((d.action, d.vlan), (Action::Pop, Some(7)));
    // Over a metadata tag: still outermost, the metadata tag second.
    let mut frame = carried((TPID_8021AD, 300), &[]);
    frame.meta_tpid = TPID_8021Q;
    frame.meta_tci = 8;
    let d = to_guest(&tunnel(300, Some(&[8])), &frame);
    assert_eq!((d.action, d.vlan), (Action::Pop, Some(8)));
    // Two tags already known: a third inline one does not matter, a
    // stacked tag on an access port is still refused.
    let mut frame = carried((TPID_8021Q, 10), &[(TPID_8021Q, 5)]);
    frame.meta_tpid = TPID_8021Q;
    frame.meta_tci = 9;
    assert_eq!(
        to_guest(&access(10), &frame).action,
        Action::Drop(DropReason::StackedTag)
    );
}

fn glance(frame: &FrameView, own: bool) -> Glance {
    Glance {
        len: frame.len,
        ethertype: frame.ethertype,
        src_is_own: own,
        meta: (frame.meta_tpid != 0).then_some(Tag {
            tpid: frame.meta_tpid,
            tci: frame.meta_tci,
        }),
        carried: frame.carried(),
    }
}

#[test]
fn the_fast_path_decides_as_the_full_one_where_it_decides() {
    let policies = [
        access(10),
        EndpointPolicy {
            flags: POLICY_PRIORITY_SET,
            priority: 5,
            ..access(10)
        },
        untagged_port(),
        EndpointPolicy {
            flags: POLICY_ALLOW_MAC_SPOOFING,
            ..untagged_port()
        },
        trunk(&[10], 10, 0),
        tunnel(10, None),
    ];
    let with_meta = |tci: u16, mut frame: FrameView| {
        frame.meta_tpid = TPID_8021Q;
        frame.meta_tci = tci;
        frame
    };
    let frames = [
        inline(&[]),
        inline(&[(TPID_8021Q, 10)]),
        with_meta(0xa00a, inline(&[])),
        with_meta(0x2000, inline(&[])),
        carried((TPID_8021Q, 10), &[]),
        carried((TPID_8021Q, 20), &[]),
        carried((TPID_8021AD, 10), &[]),
        with_meta(10, carried((TPID_8021Q, 10), &[])),
    ];
    let mut decided = 0;
    for policy in &policies {
        for frame in &frames {
            for own in [true, false] {
                let mut frame = *frame;
                if !own {
                    frame.src = [0x02, 0, 0, 0, 0, 9];
                }
                for (to_guest, full) in [
                    (false, from_guest(policy, &frame)),
                    (true, to_guest(policy, &frame)),
                ] {
                    if !to_guest && frame.carried().is_some() {
                        continue; // never on the guest's side
                    }
                    if let Some(fast) = fast(policy, to_guest, &glance(&frame, own)) {
                        decided += 1;
                        assert_eq!(fast, full, "{policy:?} {frame:?} to_guest {to_guest}");
                    }
                }
            }
        }
    }
    assert!(decided >= 10, "the fast path decided only {decided} cases");
}
