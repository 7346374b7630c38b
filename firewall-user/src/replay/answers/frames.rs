//! Frames of one test connection (client 10.0.0.1:40000, server 10.0.0.2 on a given port) and
//! the checks of rewritten ones, for the tests of the protocols' answers.

use etherparse::{NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket, TcpHeader};

use super::segment::segment;
use crate::offload;

pub const CLIENT: [u8; 4] = [10, 0, 0, 1];
pub const SERVER: [u8; 4] = [10, 0, 0, 2];

/// A segment of the connection to server port `port` up to its TCP header, flags to be added.
pub fn builder(port: u16, from_client: bool, seq: u32) -> PacketBuilderStep<TcpHeader> {
    let (src, dst, sport, dport) = if from_client {
        (CLIENT, SERVER, 40000, port)
    } else {
        (SERVER, CLIENT, port, 40000)
    };
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64240)
}

/// A data segment (ACK, PSH).
pub fn tcp(port: u16, from_client: bool, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    builder(port, from_client, seq)
        .ack(ack)
        .psh()
        .write(&mut frame, payload)
        .unwrap();
    frame
}

pub fn payload(frame: &[u8]) -> &[u8] {
    let s = segment(frame).unwrap();
    &frame[s.payload]
}

pub fn seq(frame: &[u8]) -> u32 {
    segment(frame).unwrap().seq
}

pub fn ack(frame: &[u8]) -> Option<u32> {
    segment(frame).unwrap().ack
}

/// Checks the IPv4 header checksum and length and the TCP checksum of a rewritten frame.
pub fn assert_consistent(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(h.total_len as usize, frame.len() - 14);
    assert_eq!(offload::tcp_checksum_ok(frame), Some(true));
}
