//! A TCP conversation as the fuzzer plays it: the events in order (handshake, client segments
//! of the request stream, the server's acknowledgements and answers), and the mutations that
//! turn a well-behaved client into a hostile one: resegmentation at any byte, pipelining,
//! reordering, duplication, overlapping retransmissions carrying other bytes (a forbidden twin
//! of the same length), segments lost behind the gateway and sent again, urgent data, bad
//! checksums, data on the SYN, data after a FIN, and a second shape (VLAN tags, IP options,
//! IPv6 extension headers) for some segments of the same flow.

use super::generate::{Protocol, Unit, CIP_FORBIDDEN, MODBUS_FORBIDDEN};
use super::rng::Rng;

/// How a client segment is spoilt on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoil {
    None,
    Urgent,
    BadChecksum,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// The client's SYN, with data on it (TCP Fast Open) if not empty.
    Syn(Vec<u8>),
    SynAck,
    /// The client's ACK of the SYN-ACK.
    Ack,
    /// A client segment carrying `bytes` at stream offset `at` (may be negative or beyond the
    /// stream).
    Data {
        at: i64,
        bytes: Vec<u8>,
        fin: bool,
        spoil: Spoil,
        /// Lost between the gateway and the server even if the datapath passes it.
        lost: bool,
        /// Sent with the conversation's second shape.
        other_shape: bool,
    },
    /// The server acknowledges what it has read.
    ServerAck,
    /// The server answers every request it has read and not answered yet.
    ServerAnswer,
    /// The client, as its stack would after a loss, sends the stream again from the first byte
    /// the server has not acknowledged, in segments of at most 64 bytes, each acknowledged.
    Resend,
}

/// A conversation: whether the connection predates the datapath (no handshake seen: the flow
/// is adopted mid-stream), and its events.
#[derive(Clone, Debug)]
pub struct Conversation {
    pub midstream: bool,
    pub events: Vec<Event>,
    /// The client's request stream (what `Resend` sends again).
    pub stream: Vec<u8>,
}

/// The client's request stream: the units back to back, and a twin of the same length in
/// which one unit asks for a forbidden operation.
pub struct Stream {
    pub bytes: Vec<u8>,
    pub twin: Vec<u8>,
}

impl Stream {
    pub fn new(rng: &mut Rng, protocol: Protocol, units: &[Unit]) -> Stream {
        let bytes: Vec<u8> = units.iter().flat_map(|u| u.bytes.clone()).collect();
        let mut twin = bytes.clone();
        let mut starts = Vec::new();
        let mut at = 0;
        for u in units {
            if let Some(op) = u.operation_at.filter(|&o| o < u.bytes.len()) {
                starts.push(at + op);
            }
            at += u.bytes.len();
        }
        if starts.is_empty() {
            if !twin.is_empty() {
                let i = rng.below(twin.len());
                twin[i] ^= 0x04;
            }
        } else {
            let op = *rng.pick(&starts);
            twin[op] = match protocol {
                Protocol::Modbus => *rng.pick(&MODBUS_FORBIDDEN),
                Protocol::Enip => *rng.pick(&CIP_FORBIDDEN),
            };
        }
        Stream { bytes, twin }
    }
}

/// Cuts `len` bytes into segments: whole units several to a segment (pipelining), cuts at
/// random points, one byte per segment, or MSS-like runs.
fn cuts(rng: &mut Rng, len: usize, unit_ends: &[usize]) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = match rng.below(5) {
        0 => unit_ends
            .iter()
            .copied()
            .filter(|_| rng.chance(50))
            .collect(),
        1 => unit_ends.to_vec(),
        2 if len <= 160 => (1..len).collect(),
        3 => (0..rng.range(1, 6))
            .map(|_| rng.below(len.max(1)))
            .collect(),
        _ => {
            let mss = rng.range(1, 40);
            (1..len).filter(|p| p % mss == 0).collect()
        }
    };
    points.push(len);
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        if p > start && p <= len {
            out.push((start, p - start));
            start = p;
        }
    }
    out
}

fn data(at: usize, bytes: &[u8]) -> Event {
    Event::Data {
        at: at as i64,
        bytes: bytes.to_vec(),
        fin: false,
        spoil: Spoil::None,
        lost: false,
        other_shape: false,
    }
}

/// Plays `units` as one conversation and mutates it `mutations` times.
pub fn conversation(
    rng: &mut Rng,
    protocol: Protocol,
    units: &[Unit],
    mutations: usize,
) -> (Conversation, Stream) {
    let stream = Stream::new(rng, protocol, units);
    let mut ends = Vec::new();
    let mut at = 0;
    for u in units {
        at += u.bytes.len();
        ends.push(at);
    }
    let len = stream.bytes.len();
    let midstream = rng.chance(10);
    let mut events = Vec::new();
    if !midstream {
        events.extend([Event::Syn(Vec::new()), Event::SynAck, Event::Ack]);
    }
    for (start, n) in cuts(rng, len, &ends) {
        events.push(data(start, &stream.bytes[start..start + n]));
        match rng.below(10) {
            0..=2 => events.push(Event::ServerAck),
            3..=5 => events.push(Event::ServerAnswer),
            _ => {}
        }
    }
    events.push(Event::ServerAnswer);
    for _ in 0..mutations {
        mutate(rng, &mut events, &stream, midstream);
    }
    events.extend([Event::Resend, Event::ServerAnswer]);
    let conversation = Conversation {
        midstream,
        events,
        stream: stream.bytes.clone(),
    };
    (conversation, stream)
}

fn data_indexes(events: &[Event]) -> Vec<usize> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Data { .. }))
        .map(|(i, _)| i)
        .collect()
}

fn mutate(rng: &mut Rng, events: &mut Vec<Event>, stream: &Stream, midstream: bool) {
    let segments = data_indexes(events);
    if segments.is_empty() {
        return;
    }
    let i = *rng.pick(&segments);
    let len = stream.bytes.len();
    let Event::Data { at, bytes, .. } = events[i].clone() else {
        unreachable!()
    };
    // Retransmissions are of the stream; a junk segment off the stream is not resent.
    let on_stream = at >= 0 && (at as usize) < len;
    match rng.below(10) {
        // Reordering: the segment swaps place with the next event.
        0 if i + 1 < events.len() => events.swap(i, i + 1),
        // Duplication, later.
        1 => {
            let to = rng.range(i + 1, events.len());
            events.insert(to, events[i].clone());
        }
        // An overlapping retransmission carrying the twin's bytes: before or after the
        // original, reaching into its neighbours.
        2 | 3 if on_stream => {
            let from = (at - rng.below(8) as i64).max(0) as usize;
            let to = (at as usize + bytes.len() + rng.below(8)).min(len);
            if from < to {
                let to_pos = rng.below(events.len() + 1);
                events.insert(to_pos, data(from, &stream.twin[from..to]));
            }
        }
        // Lost behind the gateway, then retransmitted (as sent, or as the twin) later.
        4 if on_stream => {
            if let Event::Data { lost, .. } = &mut events[i] {
                *lost = true;
            }
            let source = if rng.chance(50) {
                &stream.bytes
            } else {
                &stream.twin
            };
            let end = (at as usize + bytes.len()).min(len);
            let resend = data(at as usize, &source[at as usize..end]);
            let to = rng.range(i + 1, events.len());
            events.insert(to, Event::ServerAck);
            events.insert(to + 1, resend);
        }
        5 if on_stream => {
            if let Event::Data { spoil, .. } = &mut events[i] {
                *spoil = if rng.chance(50) {
                    Spoil::Urgent
                } else {
                    Spoil::BadChecksum
                };
            }
            // The sender's retransmission of the spoilt segment (the twin's bytes, at times).
            let source = if rng.chance(50) {
                &stream.bytes
            } else {
                &stream.twin
            };
            let end = (at as usize + bytes.len()).min(len);
            let to = rng.range(i + 1, events.len());
            events.insert(to, data(at as usize, &source[at as usize..end]));
        }
        // A FIN on the segment; what follows is data after the FIN.
        6 if rng.chance(30) => {
            if let Event::Data { fin, .. } = &mut events[i] {
                *fin = true;
            }
        }
        7 => {
            if let Event::Data { other_shape, .. } = &mut events[i] {
                *other_shape = true;
            }
        }
        // Data on the SYN: the stream's first bytes (or the twin's).
        8 if !midstream => {
            let n = rng.range(1, len.clamp(1, 32)).min(len);
            let source = if rng.chance(50) {
                &stream.bytes
            } else {
                &stream.twin
            };
            events[0] = Event::Syn(source[..n].to_vec());
        }
        // A segment with bytes the stream never had, anywhere near it.
        _ => {
            let at = rng.below(len + 8) as i64 - 4;
            let n = rng.range(1, 16);
            let junk: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            let to = rng.below(events.len() + 1);
            let mut e = data(0, &junk);
            if let Event::Data { at: a, .. } = &mut e {
                *a = at;
            }
            events.insert(to, e);
        }
    }
}
