//! The TCP segment of a frame as replay rewrites it: its parts as offsets into the frame, its
//! SACK blocks, and the rewrite of its sequence number and payload with lengths and checksums
//! following.

use std::{net::IpAddr, ops::Range};

use etherparse::{Ipv4HeaderSlice, NetSlice, SlicedPacket, TransportSlice};

use crate::offload;

pub(super) type Endpoint = (IpAddr, u16);

/// The parts of a TCP segment rewriting needs, as offsets into the frame.
pub(super) struct Segment {
    pub src: Endpoint,
    pub dst: Endpoint,
    /// Offset of the IP header, and whether it is IPv4 (else IPv6).
    pub ip: usize,
    pub ipv4: bool,
    pub tcp: usize,
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub payload: Range<usize>,
}

/// A whole TCP segment over IPv4 or IPv6 in an Ethernet frame.
pub(super) fn segment(frame: &[u8]) -> Option<Segment> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        return None;
    };
    let offset = |slice: &[u8]| slice.as_ptr() as usize - frame.as_ptr() as usize;
    let (src, dst, ip, ipv4) = match p.net.as_ref()? {
        NetSlice::Ipv4(ip) if !ip.header().is_fragmenting_payload() => {
            let h = ip.header();
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                offset(h.slice()),
                true,
            )
        }
        NetSlice::Ipv6(ip) if !ip.is_payload_fragmented() => {
            let h = ip.header();
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                offset(h.slice()),
                false,
            )
        }
        _ => return None,
    };
    let start = offset(tcp.payload());
    Some(Segment {
        src: (src, tcp.source_port()),
        dst: (dst, tcp.destination_port()),
        ip,
        ipv4,
        tcp: offset(tcp.slice()),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
        syn: tcp.syn(),
        payload: start..start + tcp.payload().len(),
    })
}

/// Frame offsets of the SACK block edges (option 5) in the TCP header of segment `s`.
pub(super) fn sack_edges(frame: &[u8], s: &Segment) -> Vec<usize> {
    let mut edges = Vec::new();
    let options = s.tcp + 20..s.payload.start;
    let mut at = options.start;
    while at < options.end {
        match frame[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let Some(&len) = frame.get(at + 1).filter(|&&l| l >= 2) else {
                    break;
                };
                let end = at + len as usize;
                if end > options.end {
                    break;
                }
                if kind == 5 {
                    edges.extend((at + 2..end).step_by(4).filter(|e| e + 4 <= end));
                }
                at = end;
            }
        }
    }
    edges
}

/// Gives segment `s` of `frame` this sequence number and, if given, this payload (the IP
/// length follows, an Ethernet trailer goes), then its checksums: right if the captured TCP
/// checksum was, else wrong again.
pub(super) fn rewrite(frame: &mut Vec<u8>, s: &Segment, seq: u32, payload: Option<Vec<u8>>) {
    let checksum_ok = offload::tcp_checksum_ok(frame).unwrap_or(true);
    if let Some(payload) = payload {
        let grown = payload.len() as i64 - s.payload.len() as i64;
        frame.truncate(s.payload.start);
        frame.extend_from_slice(&payload);
        // IPv4 total length, IPv6 payload length.
        let field = if s.ipv4 { s.ip + 2 } else { s.ip + 4 };
        let length = u16::from_be_bytes([frame[field], frame[field + 1]]);
        let length = (length as i64 + grown).clamp(0, u16::MAX as i64) as u16;
        frame[field..field + 2].copy_from_slice(&length.to_be_bytes());
        if s.ipv4 {
            if let Ok(h) = Ipv4HeaderSlice::from_slice(&frame[s.ip..]) {
                let sum = h.to_header().calc_header_checksum();
                frame[s.ip + 10..s.ip + 12].copy_from_slice(&sum.to_be_bytes());
            }
        }
    }
    frame[s.tcp + 4..s.tcp + 8].copy_from_slice(&seq.to_be_bytes());
    offload::set_tcp_checksum(frame, checksum_ok);
}
