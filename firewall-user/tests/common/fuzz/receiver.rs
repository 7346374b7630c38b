//! The server's TCP receive side, as the oracle needs it: which client bytes the server's
//! application reads, in which order, from the segments the datapath let through.
//!
//! A receiver delivers bytes in sequence order from `rcv_nxt` on; bytes before `rcv_nxt` were
//! read already and a copy of them changes nothing; bytes after a gap wait (out of order, up to
//! the window) until the gap is filled. Stacks differ only in which copy of a byte waiting out
//! of order wins when two segments overlap there: BSD-derived stacks and Windows keep the first,
//! Linux may keep the later one (a segment covering a queued one replaces it). The oracle runs
//! both `FirstWins` and `LastWins` over the same segments and judges both streams, so a request
//! that reaches either kind of server is found. A RST is accepted only at exactly `rcv_nxt`
//! (RFC 5961, which Linux implements; any other RST is answered with a challenge ACK), and
//! nothing is read past a FIN.

use std::collections::BTreeMap;

/// Which copy of an out-of-order byte a receiver keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    FirstWins,
    LastWins,
}

/// The receive window of the fuzzed server: what its SYN-ACK advertises.
pub const WINDOW: i64 = 64240;

#[derive(Clone, Debug)]
pub struct Receiver {
    overlap: Overlap,
    /// The sequence number of stream byte 0 (the client's ISN + 1), once a SYN arrived.
    base: Option<u32>,
    /// What the application has read.
    pub stream: Vec<u8>,
    waiting: BTreeMap<i64, u8>,
    fin_at: Option<i64>,
    pub closed: bool,
}

impl Receiver {
    pub fn new(overlap: Overlap) -> Receiver {
        Receiver {
            overlap,
            base: None,
            stream: Vec::new(),
            waiting: BTreeMap::new(),
            fin_at: None,
            closed: false,
        }
    }

    /// A receiver for a connection established before the datapath saw it (mid-stream
    /// adoption): stream byte 0 is at `base`.
    pub fn established(overlap: Overlap, base: u32) -> Receiver {
        let mut r = Receiver::new(overlap);
        r.base = Some(base);
        r
    }

    /// The next sequence number the server expects (what it acknowledges).
    pub fn rcv_nxt(&self) -> Option<u32> {
        let base = self.base?;
        let fin = u32::from(self.fin_at.is_some_and(|f| f == self.stream.len() as i64));
        Some(
            base.wrapping_add(self.stream.len() as u32)
                .wrapping_add(fin),
        )
    }

    /// A segment that reached the server with a valid checksum.
    pub fn segment(&mut self, seq: u32, syn: bool, fin: bool, rst: bool, payload: &[u8]) {
        if self.closed {
            return;
        }
        let base = match (self.base, syn) {
            (None, true) => {
                self.base = Some(seq.wrapping_add(1));
                seq.wrapping_add(1)
            }
            // No connection without a SYN; a SYN on an open connection is challenged.
            (None, false) => return,
            (Some(_), true) => return,
            (Some(b), false) => b,
        };
        // Data on a SYN (TCP Fast Open) starts after the SYN's own sequence number.
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let start = i64::from(data_seq.wrapping_sub(base) as i32);
        let next = self.stream.len() as i64;
        if rst {
            if start == next {
                self.closed = true;
            }
            return;
        }
        for (i, &byte) in payload.iter().enumerate() {
            let at = start + i as i64;
            if at < next || at - next >= WINDOW || self.fin_at.is_some_and(|f| at >= f) {
                continue;
            }
            match self.overlap {
                Overlap::FirstWins => {
                    self.waiting.entry(at).or_insert(byte);
                }
                Overlap::LastWins => {
                    self.waiting.insert(at, byte);
                }
            }
        }
        if fin && self.fin_at.is_none() && start + payload.len() as i64 >= next {
            self.fin_at = Some(start + payload.len() as i64);
        }
        while let Some(byte) = self.waiting.remove(&(self.stream.len() as i64)) {
            self.stream.push(byte);
        }
    }
}
