use super::*;

#[test]
fn a_built_frame_reads_back() {
    let spec = FrameSpec {
        dst: EthAddr::BROADCAST,
        src: "02:00:00:00:00:0a".parse().unwrap(),
        tags: vec![
            Tag {
                tpid: TPID_8021AD,
                tci: 300,
            },
            Tag {
                tpid: TPID_8021Q,
                tci: (5 << 13) | 10,
            },
        ],
        ethertype: ETHERTYPE_IPV4,
        ips: default_ips(ETHERTYPE_IPV4),
    };
    let bytes = spec.bytes();
    assert!(bytes.len() >= 60);
    let summary = Summary::read(bytes.len() as u32, &bytes, &[]).unwrap();
    assert_eq!(summary.src, spec.src);
    assert_eq!(summary.tags.len(), 2);
    assert_eq!(summary.tags[1].0.vid(), 10);
    assert_eq!(summary.ethertype, ETHERTYPE_IPV4);
    let (src, dst, protocol) = summary.ip.unwrap();
    assert_eq!(
        (src.to_string(), dst.to_string(), protocol),
        ("192.0.2.1".into(), "192.0.2.2".into(), 17)
    );
    assert_eq!(
        ipv4_checksum(&bytes[22..42]),
        0,
        "a header with its checksum sums to zero"
    );
    let text = summary.to_string();
    assert!(
        text.contains("802.1ad vid 300 802.1Q vid 10 pcp 5 ipv4 192.0.2.1 > 192.0.2.2 udp"),
        "{text}"
    );
}

#[test]
fn ipv6_reads_back_and_bad_input_is_refused() {
    let spec = FrameSpec {
        dst: "33:33:00:00:00:01".parse().unwrap(),
        src: "02:00:00:00:00:0a".parse().unwrap(),
        tags: vec![],
        ethertype: ETHERTYPE_IPV6,
        ips: default_ips(ETHERTYPE_IPV6),
    };
    let bytes = spec.bytes();
    let summary = Summary::read(bytes.len() as u32, &bytes, &[]).unwrap();
    assert_eq!(summary.ip.unwrap().1.to_string(), "2001:db8::2");
    assert!("0x8100".parse::<EtherType>().is_err());
    assert!("0x05ff".parse::<EtherType>().is_err());
    assert_eq!("arp".parse::<EtherType>().unwrap().0, ETHERTYPE_ARP);
    assert!("4095".parse::<TagVid>().is_err());
    assert_eq!(
        "ff ff:0a-0b".parse::<HexFrame>().unwrap().0,
        [0xff, 0xff, 0x0a, 0x0b]
    );
    assert!("abc".parse::<HexFrame>().is_err());
    assert!(Summary::read(13, &bytes[..13], &[]).is_none());
}
