use super::*;

#[test]
fn vid_lists_parse_and_print_as_ranges() {
    let list: VidList = "10,20,100-199,21".parse().unwrap();
    assert_eq!(list.to_string(), "10,20-21,100-199");
    assert_eq!(list.iter().count(), 103);
    for bad in [
        "", "0", "4095", "10,", "10-", "20-10", "a", "1-4095", "10;20",
    ] {
        assert!(bad.parse::<VidList>().is_err(), "{bad:?}");
    }
}

#[test]
fn trunk_policy_sets_bits() {
    let trunk = PortVlans::Trunk {
        vlans: "10,4094".parse().unwrap(),
        native: Vid::new(30),
        native_tagged: true,
    };
    let mac = Mac::derived_from("t");
    let policy = trunk.to_policy(mac, Some(Pcp(5)), false);
    assert_eq!(policy.kind, PORT_TRUNK);
    assert_eq!(policy.vlan, 30);
    assert!(policy.vids.contains(10) && policy.vids.contains(4094));
    assert!(!policy.vids.contains(30));
    assert_eq!(policy.priority, 5);
    assert!(policy.has(POLICY_NATIVE_TAGGED) && policy.has(POLICY_PRIORITY_SET));
    assert!(trunk.carries(Vid::new(30).unwrap()));
}

/// `options` resolved against `current`, which must succeed.
fn resolved(options: PortOptions, current: &PortVlans) -> PortVlans {
    options.resolve(current).unwrap()
}

#[test]
fn options_resolve_and_conflict() {
    let trunk_opts = PortOptions {
        trunk: Some("10,20".parse().unwrap()),
        native: Vid::new(30),
        ..PortOptions::default()
    };
    let trunk = trunk_opts.resolve(&PortVlans::Untagged).unwrap();
    assert_eq!(trunk.kind(), "trunk");
    // `set --native-tagged` modifies the current trunk.
    let tagged = resolved(
        PortOptions {
            native_tagged: Some(true),
            ..PortOptions::default()
        },
        &trunk,
    );
    assert!(matches!(
        tagged,
        PortVlans::Trunk {
            native_tagged: true,
            ..
        }
    ));
    // `set --trunk` on a trunk keeps its native VLAN and its tagging;
    // `--no-native` drops them.
    let relisted = resolved(
        PortOptions {
            trunk: Some("10,30".parse().unwrap()),
            ..PortOptions::default()
        },
        &tagged,
    );
    assert_eq!(
        relisted,
        PortVlans::Trunk {
            vlans: "10,30".parse().unwrap(),
            native: Vid::new(30),
            native_tagged: true,
        }
    );
    let no_native = resolved(
        PortOptions {
            no_native: true,
            ..PortOptions::default()
        },
        &relisted,
    );
    assert!(matches!(
        no_native,
        PortVlans::Trunk {
            native: None,
            native_tagged: false,
            ..
        }
    ));
    // `set --tunnel` on a tunnel keeps its customer VLANs;
    // `--all-cvlans` lets every one through again.
    let tunnel = PortOptions {
        tunnel: Vid::new(300),
        tunnel_cvlans: Some("7,8".parse().unwrap()),
        ..PortOptions::default()
    }
    .resolve(&PortVlans::Untagged)
    .unwrap();
    let moved = resolved(
        PortOptions {
            tunnel: Vid::new(301),
            ..PortOptions::default()
        },
        &tunnel,
    );
    assert_eq!(
        moved,
        PortVlans::Tunnel {
            svlan: Vid::new(301).unwrap(),
            cvlans: Some("7,8".parse().unwrap()),
        }
    );
    let all = resolved(
        PortOptions {
            all_cvlans: true,
            ..PortOptions::default()
        },
        &moved,
    );
    assert!(matches!(all, PortVlans::Tunnel { cvlans: None, .. }));
    // A new kind starts from scratch.
    let access = resolved(
        PortOptions {
            vlan: Vid::new(5),
            ..PortOptions::default()
        },
        &tagged,
    );
    assert_eq!(
        access,
        PortVlans::Access {
            vlan: Vid::new(5).unwrap()
        }
    );
    for bad in [
        PortOptions {
            native: Vid::new(3),
            ..PortOptions::default()
        },
        PortOptions {
            no_native: true,
            ..PortOptions::default()
        },
        PortOptions {
            all_cvlans: true,
            ..PortOptions::default()
        },
        PortOptions {
            native_tagged: Some(true),
            trunk: Some("1".parse().unwrap()),
            ..PortOptions::default()
        },
        PortOptions {
            tunnel_cvlans: Some("1".parse().unwrap()),
            vlan: Vid::new(3),
            ..PortOptions::default()
        },
    ] {
        assert!(
            matches!(
                bad.resolve(&PortVlans::Untagged),
                Err(Error::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(check_priority(&PortVlans::Untagged, Some(Pcp(3))).is_err());
    assert!(check_priority(&access, Some(Pcp(3))).is_ok());
}
