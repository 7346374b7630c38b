//! The answers a live server gives to refused Modbus requests. In a capture the server
//! answered the request the client sent; behind otfw with `on_deny: refuse` the server gets
//! the request neutralised (its function code replaced by an unassigned one) and answers with
//! an exception, illegal function. Replay puts that exception in place of the captured answer
//! before judging, so that the datapath restores it for the client as it would live and the
//! rest of the connection is decided as it would be live, instead of ending in
//! `modbus_refused_answer`.
//!
//! The exception rarely has the captured answer's length: the server's sequence numbers after
//! it, and the client's acknowledgements of them, are shifted by the difference for the rest of
//! the connection, and the IP length and checksums follow. Retransmitted answers are replaced
//! alike, and SACK blocks follow the acknowledgements. What is not followed: an answer whose
//! MBAP header is split across segments (framing of the server's stream resumes at the next
//! segment), and a refused request whose header was in an earlier segment than its function
//! code.

use std::{collections::HashMap, net::IpAddr, ops::Range};

use etherparse::{Ipv4HeaderSlice, NetSlice, SlicedPacket, TransportSlice};
use firewall_common::counters::VERDICT_REFUSE;

use crate::{datapath::Decision, offload};

/// The MBAP header (7 bytes) and the function code.
const HEADER: usize = 8;
/// The exception code servers answer an unassigned function code with.
const ILLEGAL_FUNCTION: u8 = 1;

type Endpoint = (IpAddr, u16);

/// What was done to one frame before judging.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Captured answers (or the parts of them in this frame) replaced by the exception the live
    /// server sends.
    pub substituted: usize,
    /// Sequence or acknowledgement number moved by substitutions earlier in the connection.
    pub shifted: bool,
}

/// The connections with refused requests, across the captures of one replay.
#[derive(Default)]
pub struct LiveAnswers {
    /// By (client, server).
    connections: HashMap<(Endpoint, Endpoint), Connection>,
}

#[derive(Default)]
struct Connection {
    /// Refused requests awaiting their answer, by (transaction, unit): the function code the
    /// server got instead of the client's.
    refused: HashMap<(u16, u8), u8>,
    /// Captured answers replaced, in stream order.
    substitutions: Vec<Substitution>,
    /// Where the next MBAP header of the server's stream starts (captured numbering), once
    /// known.
    next_answer: Option<u32>,
}

struct Substitution {
    /// The captured answer: server sequence number and length.
    start: u32,
    len: u32,
    /// What the live server sends in its place.
    exception: Vec<u8>,
}

/// The parts of a TCP segment rewriting needs, as offsets into the frame.
struct Segment {
    src: Endpoint,
    dst: Endpoint,
    /// Offset of the IP header, and whether it is IPv4 (else IPv6).
    ip: usize,
    ipv4: bool,
    tcp: usize,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    payload: Range<usize>,
}

impl LiveAnswers {
    /// Rewrites `frame` as it reaches the gateway live: answers to refused requests replaced
    /// by the exception, sequence and acknowledgement numbers moved accordingly.
    pub fn before_judging(&mut self, frame: &mut Vec<u8>) -> Rewrite {
        if self.connections.is_empty() {
            return Rewrite::default();
        }
        let Some(s) = segment(frame) else {
            return Rewrite::default();
        };
        if s.syn {
            // A new connection on the same addresses and ports starts afresh.
            self.connections.remove(&(s.src, s.dst));
            self.connections.remove(&(s.dst, s.src));
            return Rewrite::default();
        }
        if let Some(c) = self.connections.get(&(s.src, s.dst)) {
            // From the client: it acknowledges (and selectively acknowledges) the server's
            // stream as captured.
            let checksum_ok = offload::tcp_checksum_ok(frame).unwrap_or(true);
            let ack = s.ack.map(|_| s.tcp + 8);
            let mut shifted = false;
            for at in ack.into_iter().chain(sack_edges(frame, &s)) {
                let captured = u32::from_be_bytes(frame[at..at + 4].try_into().unwrap());
                let live = c.live_seq(captured);
                if live != captured {
                    frame[at..at + 4].copy_from_slice(&live.to_be_bytes());
                    shifted = true;
                }
            }
            if shifted {
                offload::set_tcp_checksum(frame, checksum_ok);
            }
            return Rewrite {
                substituted: 0,
                shifted,
            };
        }
        let Some(c) = self.connections.get_mut(&(s.dst, s.src)) else {
            return Rewrite::default();
        };
        c.find_answers(s.seq, &frame[s.payload.clone()]);
        let spliced = c.splice(s.seq, &frame[s.payload.clone()]);
        let seq = c.live_seq(s.seq);
        let substituted = spliced.as_ref().map_or(0, |(_, n)| *n);
        if substituted == 0 && seq == s.seq {
            return Rewrite::default();
        }
        rewrite(frame, &s, seq, spliced.map(|(p, _)| p));
        Rewrite {
            substituted,
            shifted: seq != s.seq,
        }
    }

    /// Learns the requests the datapath refused in `judged` (the frame as run) from the bytes
    /// it neutralised: their answers are to be replaced.
    pub fn after_judging(&mut self, judged: &[u8], d: &Decision) {
        let refused = d.passed()
            && d.verdict == VERDICT_REFUSE as u8
            && d.adus
                .iter()
                .any(|a| a.direction == "request" && a.reason != "none");
        if !refused {
            return;
        }
        let (Some(s), Some(out)) = (segment(judged), segment(&d.frame_out)) else {
            return;
        };
        let (sent, forwarded) = (&judged[s.payload.clone()], &d.frame_out[out.payload]);
        if sent.len() != forwarded.len() {
            return;
        }
        let connection = self.connections.entry((s.src, s.dst)).or_default();
        // The only bytes of a request the datapath changes are function codes.
        for (at, (&was, &is)) in sent.iter().zip(forwarded).enumerate() {
            if was != is && at >= HEADER - 1 {
                let transaction = u16::from_be_bytes([sent[at - 7], sent[at - 6]]);
                let unit = sent[at - 1];
                connection.refused.insert((transaction, unit), is);
            }
        }
    }
}

impl Connection {
    /// Frames the server's stream from `seq` on (what it has not framed before) and records a
    /// substitution for each answer to a refused request whose header is in `payload`.
    fn find_answers(&mut self, seq: u32, payload: &[u8]) {
        let mut at = match self.next_answer {
            // A gap in the capture (or the first segment seen): assume an answer starts here.
            None => 0,
            Some(next) => match next.wrapping_sub(seq) as i32 {
                off if off < 0 => 0,
                off if off as usize >= payload.len() => return,
                off => off as usize,
            },
        };
        while at < payload.len() {
            let Some(h) = payload.get(at..at + HEADER) else {
                // A header split across segments: framing resumes with the next one.
                self.next_answer = None;
                return;
            };
            let transaction = u16::from_be_bytes([h[0], h[1]]);
            let length = u16::from_be_bytes([h[4], h[5]]) as usize;
            let unit = h[6];
            if length < 2 {
                self.next_answer = None;
                return;
            }
            let start = seq.wrapping_add(at as u32);
            if let Some(neutral) = self.refused.remove(&(transaction, unit)) {
                let exception = vec![
                    h[0],
                    h[1],
                    h[2],
                    h[3],
                    0,
                    3,
                    unit,
                    neutral | 0x80,
                    ILLEGAL_FUNCTION,
                ];
                self.substitutions.push(Substitution {
                    start,
                    len: 6 + length as u32,
                    exception,
                });
            }
            at += 6 + length;
            self.next_answer = Some(seq.wrapping_add(at as u32));
        }
    }

    /// The live sequence number of the server's byte `seq` (captured numbering). A byte inside
    /// a replaced answer maps into the exception (its end if the exception is shorter).
    fn live_seq(&self, seq: u32) -> u32 {
        let mut shift: i64 = 0;
        for s in &self.substitutions {
            let off = seq.wrapping_sub(s.start) as i32;
            if off < 0 {
                break;
            }
            let live_len = s.exception.len() as i64;
            if (off as u32) < s.len {
                let inside = (off as i64).min(live_len);
                return s.start.wrapping_add((shift + inside) as u32);
            }
            shift += live_len - s.len as i64;
        }
        seq.wrapping_add(shift as u32)
    }

    /// The live payload of a server segment at `seq`, and how many substitutions it touches;
    /// `None` when it touches none.
    fn splice(&self, seq: u32, payload: &[u8]) -> Option<(Vec<u8>, usize)> {
        let len = payload.len() as i64;
        let (mut live, mut at, mut touched) = (Vec::new(), 0usize, 0);
        for s in &self.substitutions {
            // The captured answer's place in this payload (it may start before it).
            let from = s.start.wrapping_sub(seq) as i32 as i64;
            let to = from + s.len as i64;
            if to <= 0 || from >= len {
                continue;
            }
            let (a, b) = (from.max(0) as usize, to.min(len) as usize);
            live.extend_from_slice(&payload[at..a]);
            // The same part of the exception; the segment holding the answer's end gets the
            // rest of it.
            let e = &s.exception;
            let first = ((a as i64 - from) as usize).min(e.len());
            let last = if b as i64 == to {
                e.len()
            } else {
                ((b as i64 - from) as usize).min(e.len())
            };
            live.extend_from_slice(&e[first..last.max(first)]);
            at = b;
            touched += 1;
        }
        if touched == 0 {
            return None;
        }
        live.extend_from_slice(&payload[at..]);
        Some((live, touched))
    }
}

/// A whole TCP segment over IPv4 or IPv6 in an Ethernet frame.
fn segment(frame: &[u8]) -> Option<Segment> {
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
fn sack_edges(frame: &[u8], s: &Segment) -> Vec<usize> {
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
fn rewrite(frame: &mut Vec<u8>, s: &Segment, seq: u32, payload: Option<Vec<u8>>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{Adu, Decision};
    use etherparse::{PacketBuilder, PacketBuilderStep, TcpHeader};
    use firewall_common::reason::Reason;

    const CLIENT: [u8; 4] = [10, 0, 0, 1];
    const SERVER: [u8; 4] = [10, 0, 0, 2];
    /// The neutral function code the datapath gave the refused request.
    const NEUTRAL: u8 = 60;

    /// A segment of the connection up to its TCP header, flags to be added.
    fn builder(from_client: bool, seq: u32) -> PacketBuilderStep<TcpHeader> {
        let (src, dst, sport, dport) = if from_client {
            (CLIENT, SERVER, 40000, 502)
        } else {
            (SERVER, CLIENT, 502, 40000)
        };
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, seq, 64240)
    }

    fn tcp(from_client: bool, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        builder(from_client, seq)
            .ack(ack)
            .psh()
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    /// Write Multiple Registers (16) with transaction `tid`, and its 12-byte answer.
    fn write_request(tid: u16, function: u8) -> Vec<u8> {
        let [hi, lo] = tid.to_be_bytes();
        vec![hi, lo, 0, 0, 0, 9, 1, function, 0, 0, 0, 1, 2, 0, 7]
    }
    fn write_answer(tid: u16) -> Vec<u8> {
        let [hi, lo] = tid.to_be_bytes();
        vec![hi, lo, 0, 0, 0, 6, 1, 16, 0, 0, 0, 1]
    }
    fn read_answer(tid: u16) -> Vec<u8> {
        let [hi, lo] = tid.to_be_bytes();
        vec![hi, lo, 0, 0, 0, 5, 1, 3, 2, 0, 42]
    }
    fn exception(tid: u16) -> Vec<u8> {
        let [hi, lo] = tid.to_be_bytes();
        vec![hi, lo, 0, 0, 0, 3, 1, NEUTRAL | 0x80, 1]
    }

    /// A replay that saw the datapath neutralise the write with `tid` (client seq 1000).
    fn refused(tid: u16) -> LiveAnswers {
        let mut live = LiveAnswers::default();
        let judged = tcp(true, 1000, 5000, &write_request(tid, 16));
        let d = Decision {
            action: 2,
            reason: Reason::ModbusFunctionDenied,
            verdict: VERDICT_REFUSE as u8,
            conduit_id: 0,
            epoch: 0,
            frame_out: tcp(true, 1000, 5000, &write_request(tid, NEUTRAL)),
            adus: vec![Adu {
                direction: "request",
                unit: 1,
                function: 16,
                address: 0,
                quantity: 1,
                sub: 0,
                verdict: "refuse",
                reason: "modbus_function_denied",
            }],
            cip: Vec::new(),
        };
        live.after_judging(&judged, &d);
        live
    }

    /// `refused`, and the captured answer (server seq 5000, 12 bytes) replaced.
    fn answered(tid: u16) -> LiveAnswers {
        let mut live = refused(tid);
        let mut answer = tcp(false, 5000, 1015, &write_answer(tid));
        live.before_judging(&mut answer);
        live
    }

    fn payload(frame: &[u8]) -> &[u8] {
        let s = segment(frame).unwrap();
        &frame[s.payload]
    }

    /// Checks the IPv4 header checksum and length and the TCP checksum of a rewritten frame.
    fn assert_consistent(frame: &[u8]) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.total_len as usize, frame.len() - 14);
        assert_eq!(offload::tcp_checksum_ok(frame), Some(true));
    }

    #[test]
    fn the_answer_to_a_refused_request_becomes_the_exception_and_later_numbers_shift() {
        let mut live = refused(7);
        // The captured answer, pipelined with the answer to an allowed read.
        let mut both = write_answer(7);
        both.extend(read_answer(8));
        let mut frame = tcp(false, 5000, 1015, &both);
        let r = live.before_judging(&mut frame);
        assert_eq!(
            r,
            Rewrite {
                substituted: 1,
                shifted: false
            }
        );
        let mut expected = exception(7);
        expected.extend(read_answer(8));
        assert_eq!(payload(&frame), expected);
        assert_consistent(&frame);

        // The exception is 3 bytes shorter than the captured answer.
        let mut next = tcp(false, 5023, 1027, &read_answer(9));
        let r = live.before_judging(&mut next);
        assert_eq!(
            r,
            Rewrite {
                substituted: 0,
                shifted: true
            }
        );
        assert_eq!(segment(&next).unwrap().seq, 5020);
        assert_eq!(payload(&next), read_answer(9));
        assert_consistent(&next);

        let mut ack = tcp(true, 1027, 5034, &[]);
        assert!(live.before_judging(&mut ack).shifted);
        assert_eq!(segment(&ack).unwrap().ack, Some(5031));
        assert_consistent(&ack);
        // Acknowledging part of the replaced answer: at most all of the exception.
        let mut partial = tcp(true, 1027, 5011, &[]);
        live.before_judging(&mut partial);
        assert_eq!(segment(&partial).unwrap().ack, Some(5009));
        // Before the answer nothing moves.
        let mut early = tcp(true, 1015, 5000, &[]);
        assert_eq!(live.before_judging(&mut early), Rewrite::default());
    }

    #[test]
    fn sack_blocks_follow_the_acknowledgements() {
        let mut live = answered(7);
        let mut ack = Vec::new();
        builder(true, 1015)
            .ack(5012)
            .options(&[
                etherparse::TcpOptionElement::Noop,
                etherparse::TcpOptionElement::Noop,
                etherparse::TcpOptionElement::SelectiveAcknowledgement(
                    (5023, 5034),
                    [Some((5045, 5056)), None, None],
                ),
            ])
            .unwrap()
            .write(&mut ack, &[])
            .unwrap();
        assert!(live.before_judging(&mut ack).shifted);
        let p = SlicedPacket::from_ethernet(&ack).unwrap();
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        assert_eq!(t.acknowledgment_number(), 5009);
        let sack: Vec<_> = t
            .options_iterator()
            .filter_map(|o| match o.unwrap() {
                etherparse::TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                    Some((first, rest))
                }
                _ => None,
            })
            .collect();
        assert_eq!(sack, [((5020, 5031), [Some((5042, 5053)), None, None])]);
        assert_consistent(&ack);
    }

    #[test]
    fn a_retransmitted_answer_is_replaced_alike_and_other_answers_are_left() {
        let mut live = refused(7);
        let mut first = tcp(false, 5000, 1015, &write_answer(7));
        live.before_judging(&mut first);
        let mut again = tcp(false, 5000, 1015, &write_answer(7));
        assert_eq!(live.before_judging(&mut again).substituted, 1);
        assert_eq!(again, first);
        // The refusal was answered: the same transaction id later is an ordinary answer.
        let mut later = tcp(false, 5012, 1030, &write_answer(7));
        let r = live.before_judging(&mut later);
        assert_eq!(r.substituted, 0);
        assert_eq!(payload(&later), write_answer(7));
        assert_eq!(segment(&later).unwrap().seq, 5009);
    }

    #[test]
    fn an_answer_split_across_segments_is_replaced_in_parts() {
        let mut live = refused(7);
        let answer = write_answer(7);
        let mut head = tcp(false, 5000, 1015, &answer[..10]);
        assert_eq!(live.before_judging(&mut head).substituted, 1);
        assert_eq!(payload(&head), exception(7));
        let mut tail = tcp(false, 5010, 1015, &answer[10..]);
        let r = live.before_judging(&mut tail);
        assert_eq!(
            r,
            Rewrite {
                substituted: 1,
                shifted: true
            }
        );
        assert_eq!(payload(&tail), b"");
        assert_eq!(segment(&tail).unwrap().seq, 5009);
    }

    #[test]
    fn a_new_connection_on_the_same_ports_starts_afresh() {
        let mut live = answered(7);
        let mut syn = Vec::new();
        builder(true, 9000).syn().write(&mut syn, &[]).unwrap();
        let before = syn.clone();
        assert_eq!(live.before_judging(&mut syn), Rewrite::default());
        assert_eq!(syn, before);
        let mut later = tcp(false, 5020, 9001, &read_answer(8));
        let before = later.clone();
        assert_eq!(live.before_judging(&mut later), Rewrite::default());
        assert_eq!(later, before);
    }

    #[test]
    fn a_wrong_checksum_stays_wrong() {
        let mut live = refused(7);
        let mut frame = tcp(false, 5000, 1015, &write_answer(7));
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        live.before_judging(&mut frame);
        assert_eq!(payload(&frame), exception(7));
        assert_eq!(offload::tcp_checksum_ok(&frame), Some(false));
    }

    #[test]
    fn frames_of_other_connections_and_unrefused_frames_are_untouched() {
        let mut live = refused(7);
        let mut other = tcp(false, 5000, 1015, &write_answer(7));
        other[14 + 12 + 3] = 9; // from another server
        let before = other.clone();
        assert_eq!(live.before_judging(&mut other), Rewrite::default());
        assert_eq!(other, before);
        let mut nothing = LiveAnswers::default();
        let mut frame = tcp(false, 5000, 1015, &write_answer(7));
        let before = frame.clone();
        assert_eq!(nothing.before_judging(&mut frame), Rewrite::default());
        assert_eq!(frame, before);
    }
}
