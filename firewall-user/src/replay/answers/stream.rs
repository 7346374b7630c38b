//! One direction of a captured TCP stream, protocol-independent: where its length-prefixed
//! messages start (`Framing`), and the edits that make the captured server stream the one a
//! live server sends (`Edits`), with the sequence numbers they move.

/// Where the next message of a stream starts (captured numbering), once known.
#[derive(Default)]
pub(super) struct Framing {
    next: Option<u32>,
}

/// How a protocol frames its messages: the bytes needed to know a message's length, and its
/// total length from them (`None`: not a plausible header, framing is lost).
pub(super) trait Frames {
    const HEADER: usize;
    fn total(header: &[u8]) -> Option<usize>;
}

impl Framing {
    /// The messages that start in `payload` (at `seq`) and were not framed before: their
    /// offsets in `payload` and total lengths. A gap in the capture (or the first segment seen)
    /// is assumed to start a message; a header split across segments, or an implausible one,
    /// loses framing until the next segment.
    pub(super) fn messages<F: Frames>(&mut self, seq: u32, payload: &[u8]) -> Vec<(usize, usize)> {
        let mut at = match self.next {
            None => 0,
            Some(next) => match next.wrapping_sub(seq) as i32 {
                off if off < 0 => 0,
                off if off as usize >= payload.len() => return Vec::new(),
                off => off as usize,
            },
        };
        let mut found = Vec::new();
        while at < payload.len() {
            let Some(total) = payload.get(at..at + F::HEADER).and_then(F::total) else {
                self.next = None;
                return found;
            };
            found.push((at, total));
            at += total;
            self.next = Some(seq.wrapping_add(at as u32));
        }
        found
    }
}

/// A captured byte range of the server's stream and what the live server sends in its place.
struct Edit {
    /// The answer it belongs to (edits of one answer count as one substitution).
    answer: u32,
    start: u32,
    len: u32,
    with: Vec<u8>,
}

/// The edits of one server stream, in stream order.
#[derive(Default)]
pub(super) struct Edits(Vec<Edit>);

impl Edits {
    /// Replaces the `len` bytes at `start` (after every earlier edit) with `with`, as part of
    /// the answer starting at `answer`.
    pub(super) fn push(&mut self, answer: u32, start: u32, len: usize, with: Vec<u8>) {
        self.0.push(Edit {
            answer,
            start,
            len: len as u32,
            with,
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The live sequence number of the server's byte `seq` (captured numbering). A byte inside
    /// a replaced range maps into its replacement (its end if the replacement is shorter).
    pub(super) fn live_seq(&self, seq: u32) -> u32 {
        let mut shift: i64 = 0;
        for e in &self.0 {
            let off = seq.wrapping_sub(e.start) as i32;
            if off < 0 {
                break;
            }
            let live_len = e.with.len() as i64;
            if (off as u32) < e.len {
                let inside = (off as i64).min(live_len);
                return e.start.wrapping_add((shift + inside) as u32);
            }
            shift += live_len - e.len as i64;
        }
        seq.wrapping_add(shift as u32)
    }

    /// The live payload of a server segment at `seq`, and how many answers its edits touch;
    /// `None` when it touches none.
    pub(super) fn splice(&self, seq: u32, payload: &[u8]) -> Option<(Vec<u8>, usize)> {
        let len = payload.len() as i64;
        let (mut live, mut at, mut answers) = (Vec::new(), 0usize, Vec::new());
        for e in &self.0 {
            // The captured range's place in this payload (it may start before it).
            let from = e.start.wrapping_sub(seq) as i32 as i64;
            let to = from + e.len as i64;
            if to <= 0 || from >= len {
                continue;
            }
            let (a, b) = (from.max(0) as usize, to.min(len) as usize);
            live.extend_from_slice(&payload[at..a]);
            // The same part of the replacement; the segment holding the range's end gets the
            // rest of it.
            let w = &e.with;
            let first = ((a as i64 - from) as usize).min(w.len());
            let last = if b as i64 == to {
                w.len()
            } else {
                ((b as i64 - from) as usize).min(w.len())
            };
            live.extend_from_slice(&w[first..last.max(first)]);
            at = b;
            if answers.last() != Some(&e.answer) {
                answers.push(e.answer);
            }
        }
        if answers.is_empty() {
            return None;
        }
        live.extend_from_slice(&payload[at..]);
        Some((live, answers.len()))
    }
}
