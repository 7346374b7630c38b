//! Captures of every link type otfw reads (root: the replays run the XDP program). A real
//! Ethernet capture, and an IPv6 rendering of it, are converted into each link type (files
//! written with pcap-file into a temporary directory), replayed, and must be judged frame by
//! frame as the Ethernet capture is; a pcapng file mixing an Ethernet and a Linux cooked v2
//! interface likewise. Captures of a link type otfw cannot read are refused by name.

#[path = "common/corpus.rs"]
#[allow(dead_code)] // only the policy builder is used here
mod corpus;

use std::{
    borrow::Cow,
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
    time::Duration,
};

use etherparse::{
    ArpHardwareId, EtherType, Ethernet2Header, Ethernet2HeaderSlice, IpNumber, Ipv6FlowLabel,
    Ipv6Header, LinuxSllHeader, LinuxSllPacketType, LinuxSllProtocolType, NetSlice, SlicedPacket,
    TransportSlice,
};
use otfw::{
    capture, offload::Checksums, policy::check_str, policy::compiled::CompiledPolicy,
    replay::replay,
};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter},
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
        PcapNgWriter,
    },
    DataLink,
};
use serde_json::Value;

/// The Ethernet original: Modbus/TCP polling, picked up mid-stream.
const ORIGINAL: &str = "modbus/ndpi_modbus.pcap";

/// The link types an IPv4 capture converts into, and how replay names each.
const IPV4_LINKS: [(DataLink, &str); 8] = [
    (DataLink::LINUX_SLL, "linux_sll"),
    (DataLink::LINUX_SLL2, "linux_sll2"),
    (DataLink::NULL, "null"),
    (DataLink::LOOP, "loop"),
    (DataLink::RAW, "raw"),
    (DataLink::Unknown(12), "raw"),
    (DataLink::Unknown(14), "raw"),
    (DataLink::IPV4, "ipv4"),
];

/// The same for an IPv6 capture.
const IPV6_LINKS: [(DataLink, &str); 6] = [
    (DataLink::LINUX_SLL, "linux_sll"),
    (DataLink::LINUX_SLL2, "linux_sll2"),
    (DataLink::NULL, "null"),
    (DataLink::LOOP, "loop"),
    (DataLink::RAW, "raw"),
    (DataLink::IPV6, "ipv6"),
];

/// The original capture. A checkout without the shared captures next to the repository fails
/// the test, as the corpus tests do: a conversion test that silently passes proves nothing.
fn original() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps");
    assert!(
        dir.is_dir(),
        "{} is missing: the captures live in ../shared/pcaps next to the repository",
        dir.display()
    );
    dir.join(ORIGINAL)
}

/// A directory of its own under the system's temporary directory, removed on drop (also when
/// the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("otfw-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A captured packet: when, and its bytes.
struct Packet {
    timestamp: Duration,
    data: Vec<u8>,
}

fn read_ethernet(path: &Path) -> Vec<Packet> {
    let mut reader = PcapReader::new(BufReader::new(File::open(path).unwrap())).unwrap();
    assert_eq!(reader.header().datalink, DataLink::ETHERNET);
    let mut packets = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        packets.push(Packet {
            timestamp: p.timestamp,
            data: p.data.into_owned(),
        });
    }
    packets
}

fn write_pcap(path: &Path, link: DataLink, packets: &[Packet]) {
    let header = PcapHeader {
        datalink: link,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
    for p in packets {
        writer
            .write_packet(&PcapPacket::new(p.timestamp, p.data.len() as u32, &p.data))
            .unwrap();
    }
}

/// A Modbus policy like the corpus tests', one conduit between every address and every other
/// with mid-stream flows adopted, but allowing only writes on port 502: the capture's polling
/// reads are refused (the first by function, then the connection's direction is blocked) while
/// the rest of the connection passes, so the verdicts to compare are of both kinds.
fn policy() -> CompiledPolicy {
    let text = corpus::policy("      - modbus: { port: 502, functions: [write] }\n");
    let (loaded, diagnostics) = check_str("linktypes.yaml", &text);
    loaded
        .unwrap_or_else(|| panic!("policy: {diagnostics:#?}"))
        .compiled
}

/// The per-frame JSON records of `otfw replay` of `path`, without the summary.
fn judged(policy: &CompiledPolicy, path: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    replay(
        policy,
        &[path.to_owned()],
        Checksums::Repair,
        None,
        &mut out,
    )
    .unwrap_or_else(|e| panic!("replaying {}: {e:#}", path.display()));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|record| record.get("frame").is_some())
        .collect()
}

/// Asserts that `converted` judged every frame as `reference` did (verdict, action, reason,
/// conduit, packet, requests: all but the file name), and reports the link type `links[i]`
/// (`None`: Ethernet, no `link` field) for frame `i`.
fn assert_judged_alike(
    what: &str,
    reference: &[Value],
    converted: &[Value],
    links: &[Option<&str>],
) {
    assert_eq!(converted.len(), reference.len(), "{what}: frames judged");
    let without_origin = |record: &Value| {
        let mut record = record.clone();
        let fields = record.as_object_mut().unwrap();
        fields.remove("file");
        fields.remove("link");
        record
    };
    for ((r, c), link) in reference.iter().zip(converted).zip(links) {
        assert_eq!(
            c.get("link").and_then(Value::as_str),
            *link,
            "{what}: frame {}: link",
            c["frame"]
        );
        assert_eq!(
            without_origin(c),
            without_origin(r),
            "{what}: frame {} judged differently",
            r["frame"]
        );
    }
}

/// The packet `frame` (Ethernet, IPv4 or IPv6) as captured with `link`.
fn encapsulate(link: DataLink, frame: &[u8]) -> Vec<u8> {
    let ethernet = Ethernet2HeaderSlice::from_slice(frame).unwrap();
    let ether_type = ethernet.ether_type();
    let payload = &frame[Ethernet2Header::LEN..];
    let family: u32 = match ether_type {
        EtherType::IPV4 => 2,
        EtherType::IPV6 => 24,
        other => panic!("ethertype {other:?} in a test capture of IP"),
    };
    let header = match link {
        DataLink::LINUX_SLL => {
            let mut address = [0u8; 8];
            address[..6].copy_from_slice(&ethernet.source());
            LinuxSllHeader {
                packet_type: LinuxSllPacketType::HOST,
                arp_hrd_type: ArpHardwareId::ETHERNET,
                sender_address_valid_length: 6,
                sender_address: address,
                protocol_type: LinuxSllProtocolType::EtherType(ether_type),
            }
            .to_bytes()
            .to_vec()
        }
        DataLink::LINUX_SLL2 => {
            // Protocol, reserved, interface index, ARPHRD_ETHER, PACKET_HOST, address length,
            // address (8 bytes).
            let mut h = ether_type.0.to_be_bytes().to_vec();
            h.extend_from_slice(&[0, 0]);
            h.extend_from_slice(&3u32.to_be_bytes());
            h.extend_from_slice(&1u16.to_be_bytes());
            h.extend_from_slice(&[0, 6]);
            h.extend_from_slice(&ethernet.source());
            h.extend_from_slice(&[0, 0]);
            h
        }
        // The capturing host's byte order: this one's, whatever the file's (pcap-file writes
        // big-endian files).
        DataLink::NULL => family.to_ne_bytes().to_vec(),
        DataLink::LOOP => family.to_be_bytes().to_vec(),
        DataLink::RAW | DataLink::Unknown(12 | 14) | DataLink::IPV4 | DataLink::IPV6 => Vec::new(),
        other => panic!("no conversion to {other:?}"),
    };
    [&header[..], payload].concat()
}

/// `frame` (Ethernet, IPv4, TCP) as IPv6: the IPv4 addresses in the low bits of 2001:db8::/96,
/// the TTL as hop limit, the TCP checksum computed anew.
fn to_ipv6(frame: &[u8]) -> Vec<u8> {
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (packet.net, packet.transport)
    else {
        panic!("not TCP over IPv4: {frame:02x?}");
    };
    let v4 = ip.header();
    let mapped = |a: [u8; 4]| {
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6[12..].copy_from_slice(&a);
        v6
    };
    let segment_len = tcp.slice().len();
    let ip6 = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: segment_len as u16,
        next_header: IpNumber::TCP,
        hop_limit: v4.ttl(),
        source: mapped(v4.source()),
        destination: mapped(v4.destination()),
    };
    let mut header = tcp.to_header();
    header.checksum = header.calc_checksum_ipv6(&ip6, tcp.payload()).unwrap();
    let ethernet = Ethernet2Header {
        ether_type: EtherType::IPV6,
        ..Ethernet2HeaderSlice::from_slice(frame).unwrap().to_header()
    };
    [
        &ethernet.to_bytes()[..],
        &ip6.to_bytes(),
        &header.to_bytes(),
        tcp.payload(),
    ]
    .concat()
}

/// Writes `packets` converted into each of `links` and asserts each replays as `reference`
/// (the replay of the Ethernet capture of `packets`).
fn check_conversions(
    dir: &TempDir,
    policy: &CompiledPolicy,
    stem: &str,
    packets: &[Packet],
    reference: &[Value],
    links: &[(DataLink, &str)],
) {
    for &(link, name) in links {
        let number = u32::from(link);
        let path = dir.file(&format!("{stem}-{number}.pcap"));
        let converted: Vec<Packet> = packets
            .iter()
            .map(|p| Packet {
                timestamp: p.timestamp,
                data: encapsulate(link, &p.data),
            })
            .collect();
        write_pcap(&path, link, &converted);
        let judged = judged(policy, &path);
        assert_judged_alike(
            &format!("{stem} as {name} ({number})"),
            reference,
            &judged,
            &vec![Some(name); packets.len()],
        );
    }
}

#[test]
fn every_link_type_is_judged_as_ethernet() {
    let original = original();
    let dir = TempDir::new("linktypes");
    let ipv4 = read_ethernet(&original);
    let ipv6: Vec<Packet> = ipv4
        .iter()
        .map(|p| Packet {
            timestamp: p.timestamp,
            data: to_ipv6(&p.data),
        })
        .collect();
    let ipv6_original = dir.file("ipv6-ethernet.pcap");
    write_pcap(&ipv6_original, DataLink::ETHERNET, &ipv6);

    let policy = policy();
    for (stem, packets, reference, links) in [
        ("ipv4", &ipv4, &original, &IPV4_LINKS[..]),
        ("ipv6", &ipv6, &ipv6_original, &IPV6_LINKS[..]),
    ] {
        let reference = judged(&policy, reference);
        assert_eq!(reference.len(), packets.len());
        // Not a comparison of one verdict only.
        for verdict in ["pass", "drop"] {
            assert!(
                reference.iter().any(|r| r["verdict"] == verdict),
                "{stem}: no frame judged {verdict}"
            );
        }
        check_conversions(&dir, &policy, stem, packets, &reference, links);
    }
}

#[test]
fn pcapng_interfaces_of_different_link_types() {
    let original = original();
    let dir = TempDir::new("linktypes-pcapng");
    let packets = read_ethernet(&original);
    let policy = policy();
    let reference = judged(&policy, &original);

    // Interface 0 Ethernet, 1 Linux cooked v2, 2 an 802.11 interface without packets (no
    // obstacle). The packets alternate between the first two.
    let path = dir.file("mixed.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    for linktype in [
        DataLink::ETHERNET,
        DataLink::LINUX_SLL2,
        DataLink::IEEE802_11,
    ] {
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype,
                snaplen: 0,
                options: Vec::new(),
            })
            .unwrap();
    }
    let mut links = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let (interface_id, data, link) = if i % 2 == 0 {
            (0, p.data.clone(), None)
        } else {
            let data = encapsulate(DataLink::LINUX_SLL2, &p.data);
            (1, data, Some("linux_sll2"))
        };
        links.push(link);
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id,
                timestamp: p.timestamp,
                original_len: data.len() as u32,
                data: Cow::Owned(data),
                options: Vec::new(),
            })
            .unwrap();
    }
    drop(writer);

    let frames = capture::read(&path).unwrap();
    assert_eq!(frames.len(), packets.len());
    assert_eq!(frames[0].link, capture::LinkType::Ethernet);
    assert_eq!(frames[1].link, capture::LinkType::LinuxSll2);
    assert_judged_alike("mixed pcapng", &reference, &judged(&policy, &path), &links);
}

#[test]
fn unsupported_link_types_are_refused_by_name() {
    let dir = TempDir::new("linktypes-unsupported");
    let frame = vec![0u8; 64];
    let packet = || Packet {
        timestamp: Duration::ZERO,
        data: frame.clone(),
    };

    let pcap = dir.file("wifi.pcap");
    write_pcap(&pcap, DataLink::IEEE802_11, &[packet()]);
    let e = capture::frames(&pcap).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "capture {}: link type IEEE802_11 (105) is not supported; otfw reads Ethernet, \
             Linux cooked (v1, v2), BSD loopback, raw IPv4/IPv6",
            pcap.display()
        )
    );

    let unnamed = dir.file("unnamed.pcap");
    write_pcap(&unnamed, DataLink::Unknown(4000), &[packet()]);
    let e = capture::frames(&unnamed).unwrap_err();
    assert!(
        format!("{e:#}").contains(": link type 4000 is not supported; otfw reads Ethernet"),
        "{e:#}"
    );

    // In pcapng, the interface a packet arrives on decides.
    let pcapng = dir.file("wifi.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&pcapng).unwrap()).unwrap();
    for linktype in [DataLink::ETHERNET, DataLink::IEEE802_11] {
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype,
                snaplen: 0,
                options: Vec::new(),
            })
            .unwrap();
    }
    for interface_id in [0, 1] {
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id,
                timestamp: Duration::ZERO,
                original_len: frame.len() as u32,
                data: Cow::Borrowed(&frame),
                options: Vec::new(),
            })
            .unwrap();
    }
    drop(writer);
    let e = capture::frames(&pcapng).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "capture {}: interface 1 (frame 2): link type IEEE802_11 (105) is not supported; \
             otfw reads Ethernet, Linux cooked (v1, v2), BSD loopback, raw IPv4/IPv6",
            pcapng.display()
        )
    );
}

#[test]
fn a_packet_shorter_than_its_link_header_is_an_error() {
    let dir = TempDir::new("linktypes-truncated");
    let path = dir.file("short.pcap");
    let packets = [Packet {
        timestamp: Duration::ZERO,
        data: vec![0; 10],
    }];
    write_pcap(&path, DataLink::LINUX_SLL, &packets);
    let e = capture::frames(&path).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "capture {}: frame 1: Linux cooked (v1) header truncated: 10 of 16 bytes",
            path.display()
        )
    );
}
