//! Modbus/TCP: the live server answers a refused request (its function code neutralised to an
//! unassigned one) with the exception illegal function, `MBAP(length 3) unit, neutral | 0x80,
//! 01`, in place of the captured answer with the same transaction and unit id. Not followed: a
//! refused request whose MBAP header was in an earlier segment than its function code.

use std::collections::HashMap;

use super::{
    neutralised,
    stream::{Edits, Frames},
};

/// The MBAP header (7 bytes) and the function code.
const HEADER: usize = 8;
/// The exception code servers answer an unassigned function code with.
const ILLEGAL_FUNCTION: u8 = 1;

/// ADUs framed by their MBAP length.
pub(super) struct Adus;

impl Frames for Adus {
    const HEADER: usize = HEADER;
    fn total(h: &[u8]) -> Option<usize> {
        let length = u16::from_be_bytes([h[4], h[5]]) as usize;
        (length >= 2).then_some(6 + length)
    }
}

/// Refused requests awaiting their answer, by (transaction, unit): the function code the
/// server got instead of the client's.
#[derive(Default)]
pub(super) struct Refusals(HashMap<(u16, u8), u8>);

impl Refusals {
    /// Learns the refused requests of a request segment from the function codes the datapath
    /// neutralised in it.
    pub(super) fn learn(&mut self, sent: &[u8], forwarded: &[u8]) {
        for at in neutralised(sent, forwarded).filter(|&at| at >= HEADER - 1) {
            let transaction = u16::from_be_bytes([sent[at - 7], sent[at - 6]]);
            let unit = sent[at - 1];
            self.0.insert((transaction, unit), forwarded[at]);
        }
    }

    /// The answer at server sequence number `start` (`total` bytes, its header in `answer`):
    /// if it answers a refused request, replaced whole by the exception.
    pub(super) fn answer(&mut self, start: u32, answer: &[u8], total: usize, edits: &mut Edits) {
        let transaction = u16::from_be_bytes([answer[0], answer[1]]);
        let unit = answer[6];
        if let Some(neutral) = self.0.remove(&(transaction, unit)) {
            let exception = vec![
                answer[0],
                answer[1],
                answer[2],
                answer[3],
                0,
                3,
                unit,
                neutral | 0x80,
                ILLEGAL_FUNCTION,
            ];
            edits.push(start, start, total, exception);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        frames::{self, ack, assert_consistent, payload, seq},
        LiveAnswers, Rewrite,
    };
    use crate::{
        datapath::{Adu, Decision},
        offload,
    };
    use etherparse::{SlicedPacket, TransportSlice};
    use firewall_common::{counters::VERDICT_REFUSE, reason::Reason};

    /// The neutral function code the datapath gave the refused request.
    const NEUTRAL: u8 = 60;

    fn tcp(from_client: bool, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        frames::tcp(502, from_client, seq, ack, payload)
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
        assert_eq!(seq(&next), 5020);
        assert_eq!(payload(&next), read_answer(9));
        assert_consistent(&next);

        let mut acked = tcp(true, 1027, 5034, &[]);
        assert!(live.before_judging(&mut acked).shifted);
        assert_eq!(ack(&acked), Some(5031));
        assert_consistent(&acked);
        // Acknowledging part of the replaced answer: at most all of the exception.
        let mut partial = tcp(true, 1027, 5011, &[]);
        live.before_judging(&mut partial);
        assert_eq!(ack(&partial), Some(5009));
        // Before the answer nothing moves.
        let mut early = tcp(true, 1015, 5000, &[]);
        assert_eq!(live.before_judging(&mut early), Rewrite::default());
    }

    #[test]
    fn sack_blocks_follow_the_acknowledgements() {
        let mut live = answered(7);
        let mut ack = Vec::new();
        frames::builder(502, true, 1015)
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
        assert_eq!(seq(&later), 5009);
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
        assert_eq!(seq(&tail), 5009);
    }

    #[test]
    fn a_new_connection_on_the_same_ports_starts_afresh() {
        let mut live = answered(7);
        let mut syn = Vec::new();
        frames::builder(502, true, 9000)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
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
