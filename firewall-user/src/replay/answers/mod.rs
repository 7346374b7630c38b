//! The answers a live server gives to refused requests. In a capture the server answered the
//! request the client sent; behind otfw with `on_deny: refuse` the server gets the request
//! neutralised (a Modbus function code or a CIP service code replaced by one nothing
//! implements) and answers with an error. Replay puts that error in place of the captured
//! answer before judging, so that the datapath restores it for the client as it would live and
//! the rest of the connection is decided as it would be live, instead of ending in
//! `modbus_refused_answer` or `enip_refused_answer`.
//!
//! This module is the protocol-independent part: the connections followed, the server stream's
//! edits with the sequence numbers they move (`stream`), and the rewriting of frames
//! (`segment`). The live error rarely has the captured answer's length: the server's sequence
//! numbers after it, and the client's acknowledgements of them, are shifted by the difference
//! for the rest of the connection, and the IP length and checksums follow. Retransmitted
//! answers are replaced alike, and SACK blocks follow the acknowledgements. What an answer is
//! and which one answers a refused request is the protocol's: `modbus` (by transaction and unit
//! id) and `enip` (by the order of SendRRData requests and replies). Not followed: an answer
//! whose header (or, for EtherNet/IP, whose part up to the entry to replace) is split across
//! segments (framing of the server's stream resumes at the next segment).

mod enip;
mod modbus;
mod segment;
mod stream;

use std::collections::HashMap;

use firewall_common::counters::VERDICT_REFUSE;

use crate::{datapath::Decision, offload};
use segment::{rewrite, sack_edges, segment, Endpoint};
use stream::{Edits, Framing};

/// What was done to one frame before judging.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Captured answers (or the parts of them in this frame) replaced by the error the live
    /// server sends.
    pub substituted: usize,
    /// Sequence or acknowledgement number moved by substitutions earlier in the connection.
    pub shifted: bool,
}

/// The connections followed, across the captures of one replay.
#[derive(Default)]
pub struct LiveAnswers {
    /// By (client, server).
    connections: HashMap<(Endpoint, Endpoint), Connection>,
}

struct Connection {
    protocol: Protocol,
    /// The server's stream: its framing, and what the live server sends instead.
    answers: Framing,
    edits: Edits,
}

/// What a connection's protocol knows of its refused requests.
enum Protocol {
    Modbus(modbus::Refusals),
    Enip(enip::Refusals),
}

impl Protocol {
    /// The server's messages starting in `payload` at `seq`; for each answer to a refused
    /// request, the edits that make it the live server's.
    fn answers(&mut self, framing: &mut Framing, seq: u32, payload: &[u8], edits: &mut Edits) {
        match self {
            Protocol::Modbus(m) => {
                for (at, total) in framing.messages::<modbus::Adus>(seq, payload) {
                    m.answer(seq.wrapping_add(at as u32), &payload[at..], total, edits);
                }
            }
            Protocol::Enip(e) => {
                for (at, total) in framing.messages::<enip::Messages>(seq, payload) {
                    e.answer(seq.wrapping_add(at as u32), &payload[at..], total, edits);
                }
            }
        }
    }
}

impl LiveAnswers {
    /// Rewrites `frame` as it reaches the gateway live: answers to refused requests replaced
    /// by the live server's error, sequence and acknowledgement numbers moved accordingly.
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
            if c.edits.is_empty() {
                return Rewrite::default();
            }
            let checksum_ok = offload::tcp_checksum_ok(frame).unwrap_or(true);
            let ack = s.ack.map(|_| s.tcp + 8);
            let mut shifted = false;
            for at in ack.into_iter().chain(sack_edges(frame, &s)) {
                let captured = u32::from_be_bytes(frame[at..at + 4].try_into().unwrap());
                let live = c.edits.live_seq(captured);
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
        let payload = &frame[s.payload.clone()];
        c.protocol
            .answers(&mut c.answers, s.seq, payload, &mut c.edits);
        let spliced = c.edits.splice(s.seq, payload);
        let seq = c.edits.live_seq(s.seq);
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

    /// Learns from `judged` (the frame as run) and the datapath's decision: the requests it
    /// refused, from the bytes it neutralised (their answers are to be replaced), and for
    /// EtherNet/IP every request that reached the server (replies answer them in order).
    pub fn after_judging(&mut self, judged: &[u8], d: &Decision) {
        if !d.passed() {
            return;
        }
        let refused = d.verdict == VERDICT_REFUSE as u8;
        let modbus = refused
            && d.adus
                .iter()
                .any(|a| a.direction == "request" && a.reason != "none");
        let enip = d.cip.iter().any(|r| r.kind == "command");
        if !modbus && !enip && self.connections.is_empty() {
            return;
        }
        let Some(s) = segment(judged) else {
            return;
        };
        let key = (s.src, s.dst);
        if !modbus && !enip && !self.connections.contains_key(&key) {
            return;
        }
        let sent = &judged[s.payload.clone()];
        // The only bytes of a request the datapath changes are the codes it neutralises.
        let forwarded = refused
            .then(|| segment(&d.frame_out).map(|out| &d.frame_out[out.payload]))
            .flatten()
            .filter(|f| f.len() == sent.len());
        let c = self.connections.entry(key).or_insert_with(|| Connection {
            protocol: if enip {
                Protocol::Enip(enip::Refusals::default())
            } else {
                Protocol::Modbus(modbus::Refusals::default())
            },
            answers: Framing::default(),
            edits: Edits::default(),
        });
        match &mut c.protocol {
            Protocol::Modbus(m) => {
                if let Some(forwarded) = forwarded.filter(|_| modbus) {
                    m.learn(sent, forwarded);
                }
            }
            Protocol::Enip(e) => e.sent(s.seq, sent, forwarded),
        }
    }
}

/// The byte offsets where a request segment as forwarded differs from the one sent.
fn neutralised<'a>(sent: &'a [u8], forwarded: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    sent.iter()
        .zip(forwarded)
        .enumerate()
        .filter(|(_, (was, is))| was != is)
        .map(|(at, _)| at)
}

#[cfg(test)]
mod frames;
