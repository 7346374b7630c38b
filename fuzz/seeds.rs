//! Writes the seed corpora of the fuzz targets into `seeds/<target>/`: real policies of the
//! repository, small captures of synthetic frames in every link type otfw reads, datapath
//! records built from the structs the datapath writes, and Modbus/TCP and EtherNet/IP streams.
//! The output is checked in; run `cargo run --example seeds` (in fuzz/) after changing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etherparse::PacketBuilder;
use firewall_common::{
    conduit::FIRST_CONDUIT,
    counters::Trace,
    enip::{EnipEvent, EnipRecord, EnipTrace, REC_CIP, REC_COMMAND, REC_SYMBOLIC},
    event::{DatapathEvent, EVENT_ADOPTED, EVENT_DENIED, EVENT_HAS_TUPLE},
    flow::FlowKey,
    modbus::{AduTrace, ModbusEvent, ADU_REQUEST},
    reason::Reason,
};
use otfw::bench::frames;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz.parent().expect("fuzz/ is inside the repository");
    let seeds = fuzz.join("seeds");
    policies(repo, &seeds.join("policy"));
    captures(&seeds.join("capture"));
    captures(&seeds.join("inventory"));
    conversation(&seeds.join("inventory"));
    records(&seeds.join("datapath_records"));
    modbus(&seeds.join("modbus"));
    enip(&seeds.join("enip"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// The example policy, the policy with errors the CLI tests use, and every YAML block of the
/// policy reference.
fn policies(repo: &Path, dir: &Path) {
    let read = |path: &str| fs::read_to_string(repo.join(path)).unwrap();
    write(
        dir,
        "example.yaml",
        read("policies/example.yaml").as_bytes(),
    );
    let errors = read("firewall-user/tests/data/three-errors.yaml");
    write(dir, "three-errors.yaml", errors.as_bytes());
    let reference = read("policies/README.md");
    for (n, block) in reference.split("```yaml\n").skip(1).enumerate() {
        let block = block.split("```").next().unwrap();
        write(dir, &format!("reference-{n}.yaml"), block.as_bytes());
    }
}

/// The IPv4 packet of an Ethernet frame built by `bench::frames`.
fn ip_packet(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

/// A UDP datagram over IPv6 to the EtherNet/IP port (the library's frames are IPv4).
fn ipv6_udp(payload: &[u8]) -> Vec<u8> {
    let mut address = [0u8; 16];
    address[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    let (mut source, mut destination) = (address, address);
    source[15] = 1;
    destination[15] = 2;
    let builder = PacketBuilder::ethernet2(frames::CLIENT_MAC, frames::SERVER_MAC)
        .ipv6(source, destination, 64)
        .udp(50000, frames::ENIP_PORT);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

/// One capture file per link type, each with a Modbus request over IPv4 and an EtherNet/IP
/// datagram over IPv6 behind that link type's header, and a pcapng with two interfaces.
fn captures(dir: &Path) {
    let modbus_frame = frames::tcp(
        50000,
        frames::MODBUS_PORT,
        false,
        &frames::modbus_read(1, 0),
    );
    let enip_frame = ipv6_udp(&list_identity_request());
    let (modbus, enip) = (ip_packet(&modbus_frame), ip_packet(&enip_frame));
    let cooked_v1 = |protocol: u16, packet: &[u8]| {
        // Packet type (sent by us), ARPHRD_ETHER, address length 6, address, protocol.
        let mut h = vec![0, 4, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 0x01, 0, 0];
        h.extend(protocol.to_be_bytes());
        h.extend(packet);
        h
    };
    let cooked_v2 = |protocol: u16, packet: &[u8]| {
        // Protocol, reserved, interface index, ARPHRD_ETHER, packet type, address length, address.
        let mut h = protocol.to_be_bytes().to_vec();
        h.extend([0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 0x02, 0, 0, 0, 0, 0x01, 0, 0]);
        h.extend(packet);
        h
    };
    let null = |family: u32, packet: &[u8]| {
        let mut h = family.to_le_bytes().to_vec();
        h.extend(packet);
        h
    };
    let looped = |family: u32, packet: &[u8]| {
        let mut h = family.to_be_bytes().to_vec();
        h.extend(packet);
        h
    };
    let files: [(&str, DataLink, [Vec<u8>; 2]); 8] = [
        (
            "ethernet.pcap",
            DataLink::ETHERNET,
            [modbus_frame.clone(), enip_frame.clone()],
        ),
        (
            "linux_sll.pcap",
            DataLink::LINUX_SLL,
            [cooked_v1(0x0800, &modbus), cooked_v1(0x86dd, &enip)],
        ),
        (
            "linux_sll2.pcap",
            DataLink::LINUX_SLL2,
            [cooked_v2(0x0800, &modbus), cooked_v2(0x86dd, &enip)],
        ),
        (
            "null.pcap",
            DataLink::NULL,
            [null(2, &modbus), null(30, &enip)],
        ),
        (
            "loop.pcap",
            DataLink::LOOP,
            [looped(2, &modbus), looped(24, &enip)],
        ),
        ("raw.pcap", DataLink::RAW, [modbus.clone(), enip.clone()]),
        (
            "ipv4.pcap",
            DataLink::IPV4,
            [modbus.clone(), modbus.clone()],
        ),
        ("ipv6.pcap", DataLink::IPV6, [enip.clone(), enip.clone()]),
    ];
    for (name, datalink, packets) in files {
        let header = PcapHeader {
            datalink,
            ..PcapHeader::default()
        };
        let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (n, data) in packets.iter().enumerate() {
            let timestamp = Duration::from_micros(1_700_000_000_000_000 + n as u64);
            let packet = PcapPacket::new(timestamp, data.len() as u32, data);
            writer.write_packet(&packet).unwrap();
        }
        write(dir, name, &writer.into_writer());
    }

    let mut writer = PcapNgWriter::with_endianness(Vec::new(), Endianness::Big).unwrap();
    let interfaces = [
        (
            DataLink::ETHERNET,
            vec![InterfaceDescriptionOption::IfTsResol(9)],
        ),
        (DataLink::LINUX_SLL, Vec::new()),
    ];
    for (linktype, options) in interfaces {
        let block = InterfaceDescriptionBlock {
            linktype,
            snaplen: 0xffff,
            options,
        };
        writer.write_pcapng_block(block).unwrap();
    }
    let packets = [(0, modbus_frame), (1, cooked_v1(0x86dd, &enip))];
    for (interface_id, data) in packets {
        let block = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_micros(1_700_000_000_000_000),
            original_len: data.len() as u32,
            data: data.into(),
            options: Vec::new(),
        };
        writer.write_pcapng_block(block).unwrap();
    }
    write(dir, "two-interfaces.pcapng", &writer.into_inner());
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut writer = PcapWriter::new(Vec::new()).unwrap();
    for (n, data) in frames.iter().enumerate() {
        let timestamp = Duration::from_millis(1_700_000_000_000 + 10 * n as u64);
        let packet = PcapPacket::new(timestamp, data.len() as u32, data);
        writer.write_packet(&packet).unwrap();
    }
    writer.into_writer()
}

/// A whole Modbus/TCP connection (handshake, a read and a Read Device Identification with
/// their responses) and a ListIdentity exchange over UDP: what the inventory learns from.
fn conversation(dir: &Path) {
    let mut modbus = frames::Stream::new(50000, frames::MODBUS_PORT);
    let mut frames = modbus.handshake();
    frames.push(modbus.send(&frames::modbus_read(1, 0)));
    frames.push(modbus.reply(&adu(1, 1, &[3, 8, 0, 1, 0, 2, 0, 3, 0, 4])));
    frames.push(modbus.send(&adu(2, 1, &[43, 14, 1, 0])));
    frames.push(modbus.reply(&device_identification(2)));
    frames.push(frames::udp(
        50000,
        frames::ENIP_PORT,
        &list_identity_request(),
    ));
    let reply = PacketBuilder::ethernet2(frames::SERVER_MAC, frames::CLIENT_MAC)
        .ipv4(frames::SERVER.octets(), frames::CLIENT.octets(), 64)
        .udp(frames::ENIP_PORT, 50000);
    let mut frame = Vec::new();
    reply.write(&mut frame, &list_identity_reply()).unwrap();
    frames.push(frame);
    write(dir, "modbus-and-enip-conversations.pcap", &pcap(&frames));
}

/// The bytes of a record as the datapath writes it into a ring buffer or map.
fn bytes_of<T: aya::Pod>(record: &T) -> Vec<u8> {
    // SAFETY: `aya::Pod` types are plain data without implicit padding (firewall-common's
    // `user` module): every byte is initialised.
    unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

/// A record seed: the decoder selector (see the target), then the record.
fn record(dir: &Path, name: &str, selector: u8, parts: &[Vec<u8>]) {
    let mut bytes = vec![selector];
    for part in parts {
        bytes.extend(part);
    }
    write(dir, name, &bytes);
}

fn records(dir: &Path) {
    let key = FlowKey {
        src: frames::CLIENT.to_ipv6_mapped().octets(),
        dst: frames::SERVER.to_ipv6_mapped().octets(),
        sport: 49152,
        dport: 502,
        proto: 6,
        _pad: [0; 3],
    };
    let denied = DatapathEvent {
        key,
        epoch: 1,
        ifindex: 3,
        conduit: 0,
        kind: EVENT_DENIED,
        reason: Reason::NoConduit as u8,
        verdict: 1,
        flags: EVENT_HAS_TUPLE,
        _pad: [0; 2],
    };
    record(dir, "denied", 0, &[bytes_of(&denied)]);
    let adopted = DatapathEvent {
        conduit: FIRST_CONDUIT,
        kind: EVENT_ADOPTED,
        reason: 0,
        verdict: 0,
        ..denied
    };
    record(dir, "adopted", 0, &[bytes_of(&adopted)]);
    let modbus = ModbusEvent {
        key,
        epoch: 1,
        conduit: FIRST_CONDUIT,
        unit: 1,
        function: 6,
        sub: 0,
        address: 0,
        quantity: 1,
        reason: Reason::ModbusFunctionDenied as u8,
        verdict: 1,
    };
    record(dir, "modbus-denied", 1, &[bytes_of(&modbus)]);
    let mut tag = EnipRecord {
        command: 0x6f,
        class: 0,
        instance: 0,
        kind: REC_CIP,
        service: 0x4d,
        depth: 1,
        reason: Reason::CipServiceDenied as u8,
        flags: REC_SYMBOLIC,
        ..EnipRecord::default()
    };
    let name = b"Line1.Speed";
    tag.tag[..name.len()].copy_from_slice(name);
    tag.tag_len = name.len() as u8;
    let enip = EnipEvent {
        key: FlowKey {
            dport: 44818,
            ..key
        },
        epoch: 1,
        conduit: FIRST_CONDUIT + 1,
        verdict: 1,
        _pad: 0,
        record: tag,
    };
    record(dir, "enip-denied", 2, &[bytes_of(&enip)]);
    let trace = Trace {
        reason: 0,
        verdict: 0,
        conduit: FIRST_CONDUIT,
        epoch: 1,
        adus: 1,
        records: 2,
    };
    let mut adus = AduTrace {
        count: 1,
        ..AduTrace::default()
    };
    adus.adus[0].kind = ADU_REQUEST;
    adus.adus[0].unit = 1;
    adus.adus[0].function = 3;
    adus.adus[0].quantity = 4;
    record(dir, "trace-adus", 3, &[bytes_of(&trace), bytes_of(&adus)]);
    let mut cip = EnipTrace {
        count: 2,
        ..EnipTrace::default()
    };
    cip.records[0] = EnipRecord {
        command: 0x6f,
        kind: REC_COMMAND,
        ..EnipRecord::default()
    };
    cip.records[1] = tag;
    record(dir, "trace-cip", 4, &[bytes_of(&trace), bytes_of(&cip)]);
}

/// A Modbus/TCP ADU: MBAP header, unit id, then the PDU.
fn adu(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = transaction.to_be_bytes().to_vec();
    v.extend([0, 0]);
    v.extend(((pdu.len() + 1) as u16).to_be_bytes());
    v.push(unit);
    v.extend(pdu);
    v
}

/// A Read Device Identification response with the basic objects.
fn device_identification(transaction: u16) -> Vec<u8> {
    let mut identity = vec![43, 14, 1, 0x81, 0, 0, 3];
    for (id, value) in [
        (0u8, &b"Schneider Electric"[..]),
        (1, b"BMX P34 2020"),
        (2, b"v3.1"),
    ] {
        identity.push(id);
        identity.push(value.len() as u8);
        identity.extend(value);
    }
    adu(transaction, 1, &identity)
}

fn modbus(dir: &Path) {
    write(dir, "read", &frames::modbus_read(1, 0));
    write(dir, "pipelined-reads", &frames::modbus_pipelined(3));
    let mut stream = frames::modbus_read(1, 0);
    stream.extend(adu(2, 1, &[6, 0, 0, 0x10, 0x92]));
    stream.extend(adu(3, 1, &[16, 0, 10, 0, 2, 4, 0, 1, 0, 2]));
    stream.extend(adu(4, 1, &[8, 0, 0, 0xab, 0xcd]));
    stream.extend(adu(5, 1, &[0x86, 1]));
    write(dir, "mixed-stream", &stream);
    write(dir, "device-identification", &device_identification(6));
    write(
        dir,
        "device-identification-request",
        &adu(7, 1, &[43, 14, 1, 0]),
    );
}

/// An EtherNet/IP encapsulation message: command, length, session, status, context, options.
fn encapsulation(command: u16, data: &[u8]) -> Vec<u8> {
    let mut v = command.to_le_bytes().to_vec();
    v.extend((data.len() as u16).to_le_bytes());
    v.extend([0x11, 0x22, 0x33, 0x44]);
    v.extend([0; 16]);
    v.extend(data);
    v
}

fn list_identity_request() -> Vec<u8> {
    encapsulation(0x63, &[])
}

/// The ListIdentity reply of a 1756-ENBT/A: one CIP Identity item.
fn list_identity_reply() -> Vec<u8> {
    let mut identity = 1u16.to_le_bytes().to_vec(); // encapsulation protocol version
    identity.extend(2u16.to_be_bytes()); // sin_family: AF_INET
    identity.extend(frames::ENIP_PORT.to_be_bytes());
    identity.extend(frames::SERVER.octets());
    identity.extend([0; 8]); // sin_zero
    identity.extend(1u16.to_le_bytes()); // vendor: Rockwell Automation/Allen-Bradley
    identity.extend(12u16.to_le_bytes()); // device type: communications adapter
    identity.extend(58u16.to_le_bytes()); // product code
    identity.extend([4, 3]); // revision
    identity.extend(0x0030u16.to_le_bytes()); // status
    identity.extend(0x0052_4d8eu32.to_le_bytes()); // serial number
    let name = b"1756-ENBT/A";
    identity.push(name.len() as u8);
    identity.extend(name);
    identity.push(3); // state: operational
    let mut items = 1u16.to_le_bytes().to_vec();
    items.extend(0x000cu16.to_le_bytes()); // CIP Identity item
    items.extend((identity.len() as u16).to_le_bytes());
    items.extend(identity);
    encapsulation(0x63, &items)
}

fn enip(dir: &Path) {
    write(dir, "list-identity-request", &list_identity_request());
    write(dir, "list-identity-reply", &list_identity_reply());
    write(
        dir,
        "register-session",
        &frames::enip_register_session(false),
    );
    write(dir, "read-tag", &frames::enip_read_tag());
    write(
        dir,
        "multiple-service-packet",
        &frames::enip_multiple_service(3),
    );
    write(dir, "forward-open", &frames::enip_forward_open());
    write(
        dir,
        "forward-open-reply",
        &frames::enip_forward_open_reply(),
    );
    // A request path alone: class 0x6b, instance 0x1234 (16-bit), attribute 1.
    let path = [0x20, 0x6b, 0x25, 0x00, 0x34, 0x12, 0x30, 0x01];
    write(dir, "path", &path);
}
