//! The frames the datapath benchmark runs through `BPF_PROG_TEST_RUN`: one per case, built with
//! etherparse (headers, checksums) and hand-written application payloads (Modbus/TCP ADUs,
//! EtherNet/IP encapsulations), between the two hosts of the benchmark policy.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc8];
/// `office/hmi` in the benchmark policy.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// `plant/plc` in the benchmark policy.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);

pub const MODBUS_PORT: u16 = 502;
pub const ENIP_PORT: u16 = 44818;
pub const ENIP_IO_PORT: u16 = 2222;
/// The plain TCP port the benchmark conduit allows.
pub const TCP_PORT: u16 = 8080;
/// A port no conduit allows.
pub const DENIED_PORT: u16 = 23;

/// The client's initial sequence number.
const ISN: u32 = 1000;

/// A TCP segment from the client to the server; `syn` opens, otherwise ACK|PSH with `payload`
/// as the first bytes of the stream (sequence number ISN + 1, where the SYN says it starts).
pub fn tcp(sport: u16, dport: u16, syn: bool, payload: &[u8]) -> Vec<u8> {
    let seq = if syn { ISN } else { ISN + 1 };
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT.octets(), SERVER.octets(), 64)
        .tcp(sport, dport, seq, 64240);
    let builder = if syn {
        builder.syn()
    } else {
        builder.ack(2000).psh()
    };
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, payload)
        .expect("writing to a Vec cannot fail");
    frame
}

/// The server's SYN-ACK to `tcp(sport, dport, true, ..)`: it answers the flow, which the
/// datapath then holds as established (an unanswered flow waits in another table).
pub fn syn_ack(sport: u16, dport: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(SERVER_MAC, CLIENT_MAC)
        .ipv4(SERVER.octets(), CLIENT.octets(), 64)
        .tcp(dport, sport, 1999, 64240)
        .syn()
        .ack(ISN + 1);
    let mut frame = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut frame, &[])
        .expect("writing to a Vec cannot fail");
    frame
}

/// A TCP SYN of flood frame number `n` to `dport`: from one of the 126 addresses of the
/// client's network (198.51.100.1-126) and one of 60,000 source ports, so 7.5 million frames
/// pass before a tuple repeats.
pub fn flood(n: u32, dport: u16) -> Vec<u8> {
    let host = 1 + (n % 126) as u8;
    let sport = 1024 + ((n / 126) % 60_000) as u16;
    let [a, b, c, _] = CLIENT.octets();
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4([a, b, c, host], SERVER.octets(), 64)
        .tcp(sport, dport, ISN, 64240)
        .syn();
    let mut frame = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut frame, &[])
        .expect("writing to a Vec cannot fail");
    frame
}

/// A UDP datagram from the client to the server.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT.octets(), SERVER.octets(), 64)
        .udp(sport, dport);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, payload)
        .expect("writing to a Vec cannot fail");
    frame
}

/// One TCP connection from the client's `sport` to the server's `dport`, with the next
/// sequence number of each side: a handshake and data segments in both directions, as the
/// inspectors need to see them to follow a stream.
pub struct Stream {
    sport: u16,
    dport: u16,
    client_seq: u32,
    server_seq: u32,
}

impl Stream {
    pub fn new(sport: u16, dport: u16) -> Stream {
        Stream {
            sport,
            dport,
            client_seq: ISN,
            server_seq: SERVER_ISN,
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self) -> Vec<Vec<u8>> {
        let syn = self.segment(true, Flags::Syn, &[]);
        self.client_seq += 1;
        let syn_ack = self.segment(false, Flags::SynAck, &[]);
        self.server_seq += 1;
        vec![syn, syn_ack, self.segment(true, Flags::Ack, &[])]
    }

    /// The client's next data segment, without moving the stream on: the frame a case repeats.
    pub fn peek(&self, payload: &[u8]) -> Vec<u8> {
        self.segment(true, Flags::PshAck, payload)
    }

    pub fn send(&mut self, payload: &[u8]) -> Vec<u8> {
        let frame = self.peek(payload);
        self.client_seq = self.client_seq.wrapping_add(payload.len() as u32);
        frame
    }

    /// The server's next segment, without advancing the stream (the frame a timing loop
    /// repeats).
    pub fn peek_reply(&self, payload: &[u8]) -> Vec<u8> {
        self.segment(false, Flags::PshAck, payload)
    }

    pub fn reply(&mut self, payload: &[u8]) -> Vec<u8> {
        let frame = self.segment(false, Flags::PshAck, payload);
        self.server_seq = self.server_seq.wrapping_add(payload.len() as u32);
        frame
    }

    fn segment(&self, from_client: bool, flags: Flags, payload: &[u8]) -> Vec<u8> {
        let (src_mac, dst_mac, src, dst, sport, dport, seq, ack) = if from_client {
            let (s, d) = (self.sport, self.dport);
            (
                CLIENT_MAC,
                SERVER_MAC,
                CLIENT,
                SERVER,
                s,
                d,
                self.client_seq,
                self.server_seq,
            )
        } else {
            let (s, d) = (self.dport, self.sport);
            (
                SERVER_MAC,
                CLIENT_MAC,
                SERVER,
                CLIENT,
                s,
                d,
                self.server_seq,
                self.client_seq,
            )
        };
        let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src.octets(), dst.octets(), 64)
            .tcp(sport, dport, seq, 64240);
        let builder = match flags {
            Flags::Syn => builder.syn(),
            Flags::SynAck => builder.syn().ack(ack),
            Flags::Ack => builder.ack(ack),
            Flags::PshAck => builder.ack(ack).psh(),
        };
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder
            .write(&mut frame, payload)
            .expect("writing to a Vec cannot fail");
        frame
    }
}

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    SynAck,
    Ack,
    PshAck,
}

/// The server's initial sequence number.
const SERVER_ISN: u32 = 5000;

/// An ARP request from the client for the server's address, padded to the Ethernet minimum.
pub fn arp_request() -> Vec<u8> {
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[0x08, 0x06]);
    // Ethernet/IPv4, request.
    frame.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&CLIENT.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&SERVER.octets());
    frame.resize(60, 0);
    frame
}

/// One Modbus/TCP ADU: Read Holding Registers (3), unit 1, 10 registers from `address`.
pub fn modbus_read(transaction: u16, address: u16) -> Vec<u8> {
    let mut adu = Vec::with_capacity(12);
    adu.extend_from_slice(&transaction.to_be_bytes());
    // Protocol id 0, then the length of what follows the length field: unit, function, data.
    adu.extend_from_slice(&[0, 0, 0, 6, 1, 3]);
    adu.extend_from_slice(&address.to_be_bytes());
    adu.extend_from_slice(&10u16.to_be_bytes());
    adu
}

/// The server's answer to `modbus_read(transaction, _)`: ten register values.
pub fn modbus_read_response(transaction: u16) -> Vec<u8> {
    let mut adu = Vec::with_capacity(29);
    adu.extend_from_slice(&transaction.to_be_bytes());
    // Unit, function, byte count and 20 data bytes follow the length field.
    adu.extend_from_slice(&[0, 0, 0, 23, 1, 3, 20]);
    adu.extend((0..20u8).map(|i| i.wrapping_mul(7)));
    adu
}

/// `count` Read Holding Registers ADUs back to back, as a pipelining master sends them.
pub fn modbus_pipelined(count: u16) -> Vec<u8> {
    (0..count)
        .flat_map(|i| modbus_read(i + 1, i * 10))
        .collect()
}

/// CIP Read Tag (0x4C) of one element of `tag` (an ANSI extended symbolic segment).
fn cip_read_tag(tag: &str) -> Vec<u8> {
    let mut path = vec![0x91, tag.len() as u8];
    path.extend_from_slice(tag.as_bytes());
    if path.len() % 2 == 1 {
        path.push(0);
    }
    let mut request = vec![0x4C, (path.len() / 2) as u8];
    request.extend_from_slice(&path);
    request.extend_from_slice(&1u16.to_le_bytes());
    request
}

/// CIP Multiple Service Packet (0x0A) to the Message Router carrying Read Tag requests for
/// `tags`.
fn cip_multiple_service(tags: &[String]) -> Vec<u8> {
    let requests: Vec<Vec<u8>> = tags.iter().map(|t| cip_read_tag(t)).collect();
    // Class 0x02 (Message Router), instance 1.
    let mut packet = vec![0x0A, 2, 0x20, 0x02, 0x24, 0x01];
    let mut data = Vec::new();
    data.extend_from_slice(&(requests.len() as u16).to_le_bytes());
    // Offsets count from the start of the service count.
    let mut offset = 2 + 2 * requests.len();
    for request in &requests {
        data.extend_from_slice(&(offset as u16).to_le_bytes());
        offset += request.len();
    }
    for request in &requests {
        data.extend_from_slice(request);
    }
    packet.extend_from_slice(&data);
    packet
}

/// The session handle the benchmark's server hands out.
pub const ENIP_SESSION: u32 = 0x1234_5678;

/// An EtherNet/IP encapsulation: 24-byte header (command, length, session, status, sender
/// context, options), then `body`.
fn encapsulation(command: u16, session: u32, body: &[u8]) -> Vec<u8> {
    let mut encapsulation = Vec::with_capacity(24 + body.len());
    encapsulation.extend_from_slice(&command.to_le_bytes());
    encapsulation.extend_from_slice(&(body.len() as u16).to_le_bytes());
    encapsulation.extend_from_slice(&session.to_le_bytes());
    encapsulation.extend_from_slice(&0u32.to_le_bytes()); // status
    encapsulation.extend_from_slice(b"otfwbnch"); // sender context
    encapsulation.extend_from_slice(&0u32.to_le_bytes()); // options
    encapsulation.extend_from_slice(body);
    encapsulation
}

/// An EtherNet/IP SendRRData (0x6F) encapsulation carrying one unconnected CIP message.
fn enip_send_rr_data(cip: &[u8]) -> Vec<u8> {
    let mut items = Vec::new();
    items.extend_from_slice(&0u32.to_le_bytes()); // interface handle: CIP
    items.extend_from_slice(&0u16.to_le_bytes()); // timeout
    items.extend_from_slice(&2u16.to_le_bytes()); // item count
    items.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // null address item
    items.extend_from_slice(&0x00B2u16.to_le_bytes()); // unconnected data item
    items.extend_from_slice(&(cip.len() as u16).to_le_bytes());
    items.extend_from_slice(cip);
    encapsulation(0x006F, ENIP_SESSION, &items)
}

/// RegisterSession (0x65), protocol version 1; the reply carries the session handle.
pub fn enip_register_session(reply: bool) -> Vec<u8> {
    let session = if reply { ENIP_SESSION } else { 0 };
    encapsulation(0x0065, session, &[1, 0, 0, 0])
}

/// The connection triple of the benchmark's Forward_Open: serial, vendor, originator serial.
const CONNECTION_SERIAL: u16 = 0x0042;
const VENDOR: u16 = 0x004d;
const ORIGINATOR_SERIAL: u32 = 0x0000_1234;
/// The connection ids: O->T chosen by the target in its reply, T->O by the originator.
pub const IO_O2T: u32 = 0x5500_0042;
const IO_T2O: u32 = 0x7700_0001;

/// The requested packet interval, 1 s, with the largest timeout multiplier (x512): the
/// connection's idle timeout (about 8.5 minutes) outlasts the benchmark's pauses between
/// preparing a case and timing it.
const RPI_US: u32 = 1_000_000;
const TIMEOUT_MULTIPLIER: u8 = 7;

/// Forward_Open (0x54) to the Connection Manager for a class 1 (cyclic I/O) connection with a
/// connection path to the Message Router.
pub fn enip_forward_open() -> Vec<u8> {
    let mut cip = vec![0x54, 2, 0x20, 0x06, 0x24, 0x01];
    cip.extend_from_slice(&[0x0A, 0x05]); // priority/tick, timeout ticks
    cip.extend_from_slice(&0u32.to_le_bytes()); // O->T id: the target chooses
    cip.extend_from_slice(&IO_T2O.to_le_bytes());
    cip.extend_from_slice(&CONNECTION_SERIAL.to_le_bytes());
    cip.extend_from_slice(&VENDOR.to_le_bytes());
    cip.extend_from_slice(&ORIGINATOR_SERIAL.to_le_bytes());
    cip.extend_from_slice(&[TIMEOUT_MULTIPLIER, 0, 0, 0]); // then reserved
    for _ in 0..2 {
        cip.extend_from_slice(&RPI_US.to_le_bytes());
        cip.extend_from_slice(&0x43f4u16.to_le_bytes()); // point-to-point, 500 bytes
    }
    cip.push(0x81); // transport: server, class 1
    let path = [0x01, 0x00, 0x20, 0x02, 0x24, 0x01];
    cip.push((path.len() / 2) as u8);
    cip.extend_from_slice(&path);
    enip_send_rr_data(&cip)
}

/// The target's successful Forward_Open reply (0xD4) naming both connection ids.
pub fn enip_forward_open_reply() -> Vec<u8> {
    let mut cip = vec![0xD4, 0, 0, 0];
    cip.extend_from_slice(&IO_O2T.to_le_bytes());
    cip.extend_from_slice(&IO_T2O.to_le_bytes());
    cip.extend_from_slice(&CONNECTION_SERIAL.to_le_bytes());
    cip.extend_from_slice(&VENDOR.to_le_bytes());
    cip.extend_from_slice(&ORIGINATOR_SERIAL.to_le_bytes());
    cip.extend_from_slice(&RPI_US.to_le_bytes()); // O->T actual packet interval
    cip.extend_from_slice(&RPI_US.to_le_bytes()); // T->O actual packet interval
    cip.extend_from_slice(&[0, 0]); // application reply size, reserved
    enip_send_rr_data(&cip)
}

/// The target's answer to `enip_read_tag`: success, one DINT.
pub fn enip_read_tag_response() -> Vec<u8> {
    let mut cip = vec![0xCC, 0, 0, 0];
    cip.extend_from_slice(&0x00C4u16.to_le_bytes()); // data type: DINT
    cip.extend_from_slice(&1500i32.to_le_bytes());
    enip_send_rr_data(&cip)
}

pub fn enip_read_tag() -> Vec<u8> {
    enip_send_rr_data(&cip_read_tag("Line1_Speed"))
}

pub fn enip_multiple_service(count: usize) -> Vec<u8> {
    let tags: Vec<String> = (0..count).map(|i| format!("Line1_Tag{i}")).collect();
    enip_send_rr_data(&cip_multiple_service(&tags))
}

/// A class 1 implicit I/O datagram: sequenced address item and connected data item.
pub fn enip_io() -> Vec<u8> {
    let mut packet = Vec::new();
    packet.extend_from_slice(&2u16.to_le_bytes()); // item count
    packet.extend_from_slice(&0x8002u16.to_le_bytes()); // sequenced address item
    packet.extend_from_slice(&8u16.to_le_bytes());
    packet.extend_from_slice(&IO_O2T.to_le_bytes()); // connection id
    packet.extend_from_slice(&42u32.to_le_bytes()); // encapsulation sequence number
    let data = [0u8; 32];
    packet.extend_from_slice(&0x00B1u16.to_le_bytes()); // connected data item
    packet.extend_from_slice(&(2 + data.len() as u16).to_le_bytes());
    packet.extend_from_slice(&42u16.to_le_bytes()); // CIP sequence count
    packet.extend_from_slice(&data);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TransportSlice};

    #[test]
    fn frames_parse_as_what_they_claim() {
        let frame = tcp(40000, MODBUS_PORT, false, &modbus_pipelined(8));
        let parsed = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = parsed.transport else {
            panic!("not TCP")
        };
        assert_eq!(tcp.destination_port(), MODBUS_PORT);
        assert_eq!(tcp.payload().len(), 8 * 12);
        assert_eq!(&tcp.payload()[12..14], &[0, 2]);
        assert_eq!(arp_request().len(), 60);
    }

    #[test]
    fn responses_answer_their_requests() {
        // Modbus: same transaction, unit and function; the length field covers the rest, the
        // byte count the ten registers asked for.
        let (request, response) = (modbus_read(1, 0), modbus_read_response(1));
        assert_eq!(response[..2], request[..2]);
        assert_eq!(
            u16::from_be_bytes([response[4], response[5]]) as usize,
            response.len() - 6
        );
        assert_eq!(response[6..8], request[6..8]);
        assert_eq!(response[8] as usize, 2 * 10);
        // EtherNet/IP: SendRRData in the session, the reply service (0x4C | 0x80) with success.
        let reply = enip_read_tag_response();
        let length = u16::from_le_bytes([reply[2], reply[3]]) as usize;
        assert_eq!(reply.len(), 24 + length);
        assert_eq!(reply[..2], enip_read_tag()[..2]);
        assert_eq!(
            u32::from_le_bytes(reply[4..8].try_into().unwrap()),
            ENIP_SESSION
        );
        assert_eq!(reply[24 + 16..24 + 20], [0xCC, 0, 0, 0]);
    }

    #[test]
    fn enip_lengths_are_consistent() {
        let packet = enip_multiple_service(10);
        let length = u16::from_le_bytes([packet[2], packet[3]]) as usize;
        assert_eq!(packet.len(), 24 + length);
        // The unconnected data item's length covers the CIP request to the end.
        let item_len = u16::from_le_bytes([packet[24 + 14], packet[24 + 15]]) as usize;
        assert_eq!(24 + 16 + item_len, packet.len());
        // Ten offsets, the first just past them.
        let cip = &packet[24 + 16..];
        assert_eq!(cip[0], 0x0A);
        assert_eq!(u16::from_le_bytes([cip[6], cip[7]]), 10);
        assert_eq!(u16::from_le_bytes([cip[8], cip[9]]), 22);
        assert_eq!(cip[6 + 22], 0x4C);
    }
}
