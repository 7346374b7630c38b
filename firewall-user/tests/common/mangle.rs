//! Variants of a test frame (Ethernet, IPv4, TCP without options) that a sender crafts to
//! evade inspection: another TTL, urgent data, a wrong TCP checksum. Checksums other than the
//! one meant to be wrong are recomputed, so only the intended difference remains.

#![allow(dead_code)]

use etherparse::Ipv4Header;
use otfw::offload::repair_tcp_checksum;

const L3: usize = 14;
const L4: usize = 14 + 20;

/// The frame with another IPv4 TTL, checksums valid.
pub fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    let (mut header, _) = Ipv4Header::from_slice(&frame[L3..]).expect("an IPv4 frame");
    header.time_to_live = ttl;
    header.header_checksum = header.calc_header_checksum();
    frame[L3..L3 + header.header_len()].copy_from_slice(&header.to_bytes());
    frame
}

/// The frame with URG set and the urgent pointer at `pointer`, checksum valid.
pub fn urgent(mut frame: Vec<u8>, pointer: u16) -> Vec<u8> {
    frame[L4 + 13] |= 0x20;
    frame[L4 + 18..L4 + 20].copy_from_slice(&pointer.to_be_bytes());
    repair_tcp_checksum(&mut frame);
    frame
}

/// The frame with a wrong TCP checksum.
pub fn bad_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[L4 + 16] ^= 0x40;
    frame
}
