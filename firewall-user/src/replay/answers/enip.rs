//! EtherNet/IP: the live target answers a refused CIP request (its service code neutralised to
//! a reserved one) with the error "service not supported": `neutral | 0x80, 0, 0x08, 0`, no
//! additional status, no reply data. It takes the place of the captured CIP reply in the
//! SendRRData reply, or of the request's entry in a Multiple Service Packet reply (the packet's
//! offsets after it move, and its general status becomes 0x1E, embedded service error, if it
//! was 0); the unconnected data item's length and the encapsulation length follow.
//!
//! A target answers the requests of a connection in order: the reply to the n-th SendRRData
//! request that reached it is its n-th SendRRData reply, as the datapath pairs them. So every
//! EtherNet/IP connection is followed from its first request the datapath saw: the client's
//! stream is framed to count the SendRRData requests that passed and to find, from the service
//! bytes the datapath neutralised, which request of which message was refused; the server's
//! stream to count the replies; the reply must echo the request's sender context (else the
//! capture lacks the target's reply and nothing is replaced). A request routed by Unconnected
//! Sends is located through them, as the datapath does; a router's own error (0xD2) answering
//! it stays as captured (the request never reached its target). Not followed: a refused request whose encapsulation header was
//! in an earlier segment, and a reply whose part up to the entry to replace (headers, items,
//! the Multiple Service Packet's offsets) is not in the segment it starts in.

use std::collections::HashMap;

use firewall_common::enip::{
    CMD_SEND_RR_DATA, CMD_SEND_UNIT_DATA, ENCAP_LEN, ITEM_CONNECTED_ADDRESS, ITEM_CONNECTED_DATA,
    ITEM_NULL, ITEM_UNCONNECTED_DATA, MAX_DEPTH, SVC_MSP, SVC_UNCONNECTED_SEND, WHOLE_REPLY,
};

use super::{
    neutralised,
    stream::{Edits, Frames, Framing},
};

/// Where the CIP request (or reply) of a SendRRData message starts: after the encapsulation
/// header, the CPF header, a null address item and the unconnected data item's header.
const CIP: usize = 40;
/// The general status a target answers an unsupported service with.
const SERVICE_NOT_SUPPORTED: u8 = 0x08;
/// The reply service of a router's own error for an Unconnected Send.
const ROUTER_ERROR: u8 = SVC_UNCONNECTED_SEND | 0x80;
/// The general status of a Multiple Service Packet reply with an error among its entries.
const EMBEDDED_SERVICE_ERROR: u8 = 0x1E;

/// Encapsulation messages framed by their header's length.
pub(super) struct Messages;

impl Frames for Messages {
    const HEADER: usize = ENCAP_LEN as usize;
    /// Only a command a stream can carry is a plausible header (as the datapath frames).
    fn total(h: &[u8]) -> Option<usize> {
        matches!(
            le16(h, 0)?,
            0x00 | 0x04 | 0x63 | 0x64 | 0x65 | 0x66 | 0x6F | 0x70 | 0x72 | 0x73
        )
        .then(|| ENCAP_LEN as usize + le16(h, 2).unwrap() as usize)
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The sender context of an encapsulation message.
fn context(message: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(message.get(12..20)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// What one connection's replay knows of its SendRRData and SendUnitData requests and replies.
#[derive(Default)]
pub(super) struct Refusals {
    /// Framing of the client's stream.
    requests: Framing,
    /// SendRRData requests that reached the server, replies framed in the server's stream.
    sent: u32,
    replies: u32,
    /// Refused requests by the message carrying them.
    refused: HashMap<Answer, Refused>,
}

/// How a request's reply is found: SendRRData replies come in the order of the requests
/// (the ordinal); a SendUnitData reply echoes its request's sequence count.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    Ordinal(u32),
    Sequence(u16),
}

/// The encapsulation layout of a message carrying a CIP request or reply.
#[derive(Clone, Copy)]
struct Layout {
    /// SendUnitData: no sender context to echo, items of a connection.
    connected: bool,
    /// Where the CIP request or reply starts.
    cip: usize,
    /// Where the length of the item holding it is, and how many bytes of it precede the CIP
    /// request or reply (SendUnitData: the sequence count).
    item_length: usize,
    item_before: usize,
}

/// SendRRData: a null address item, an unconnected data item.
const UNCONNECTED: Layout = Layout {
    connected: false,
    cip: CIP,
    item_length: 38,
    item_before: 0,
};
/// SendUnitData: a connected address item (the connection id), a connected data item (the
/// sequence count, then the CIP request or reply).
const CONNECTED: Layout = Layout {
    connected: true,
    cip: 46,
    item_length: 42,
    item_before: 2,
};
/// Where a SendUnitData message's sequence count is.
const SEQUENCE: usize = 44;

struct Refused {
    /// The request's sender context, which the target's SendRRData reply echoes.
    context: u64,
    /// The service code the target got.
    neutral: u8,
    /// `WHOLE_REPLY` for a request whose reply is the whole CIP reply, else the positions of
    /// the refused requests in the Multiple Service Packet whose reply holds theirs.
    positions: Vec<u8>,
}

impl Refusals {
    /// A client segment that reached the server (`sent`, at `seq`): its SendRRData requests
    /// are counted, and the requests the datapath neutralised in it (`forwarded`, the segment
    /// as it left, when the datapath refused some) are learnt.
    pub(super) fn sent(&mut self, seq: u32, sent: &[u8], forwarded: Option<&[u8]>) {
        let messages = self.requests.messages::<Messages>(seq, sent);
        let answers: Vec<Option<(Answer, Layout)>> = messages
            .iter()
            .map(|&(at, _)| match le16(sent, at)? {
                CMD_SEND_RR_DATA => {
                    self.sent = self.sent.wrapping_add(1);
                    Some((Answer::Ordinal(self.sent.wrapping_sub(1)), UNCONNECTED))
                }
                CMD_SEND_UNIT_DATA => {
                    Some((Answer::Sequence(le16(sent, at + SEQUENCE)?), CONNECTED))
                }
                _ => None,
            })
            .collect();
        let Some(forwarded) = forwarded else {
            return;
        };
        for p in neutralised(sent, forwarded) {
            let Some(i) = messages
                .iter()
                .position(|&(at, total)| (at..at + total).contains(&p))
            else {
                continue;
            };
            let (Some((answer, layout)), (at, _)) = (answers[i], messages[i]) else {
                continue;
            };
            let Some(position) = position(&sent[at..], layout.cip, p - at) else {
                continue;
            };
            self.refused
                .entry(answer)
                .or_insert_with(|| Refused {
                    context: context(&sent[at..]).unwrap_or_default(),
                    neutral: forwarded[p],
                    positions: Vec::new(),
                })
                .positions
                .push(position);
        }
    }

    /// The server's message at sequence number `start` (`total` bytes; `reply` holds what of
    /// it and after it is in the segment): if it is the SendRRData reply to refused requests,
    /// the edits that make it the live target's.
    pub(super) fn answer(&mut self, start: u32, reply: &[u8], total: usize, edits: &mut Edits) {
        let (answer, layout) = match le16(reply, 0) {
            Some(CMD_SEND_RR_DATA) => {
                let ordinal = self.replies;
                self.replies = ordinal.wrapping_add(1);
                (Answer::Ordinal(ordinal), UNCONNECTED)
            }
            Some(CMD_SEND_UNIT_DATA) => match le16(reply, SEQUENCE) {
                Some(sequence) => (Answer::Sequence(sequence), CONNECTED),
                None => return,
            },
            _ => return,
        };
        let Some(refused) = self.refused.remove(&answer) else {
            return;
        };
        if !layout.connected && context(reply) != Some(refused.context) {
            // Not the target's reply to the refused request: the capture lacks it (a capture
            // that starts with one direction of the connection only, or lost segments).
            return;
        }
        for (at, len, with) in live_reply(reply, total, layout, &refused).unwrap_or_default() {
            edits.push(start, start.wrapping_add(at as u32), len, with);
        }
    }
}

/// The position of the CIP request whose service byte is at `at` in a `message` whose CIP
/// request starts at `cip`, as the datapath locates its reply: `WHOLE_REPLY` when its reply is the whole CIP reply,
/// else its position in the Multiple Service Packet whose reply holds it. An Unconnected Send
/// is transparent (its reply is the one of the request it carries); an entry of a packet that
/// is itself an entry of one has no position (the datapath does not refuse it in-band).
fn position(message: &[u8], cip: usize, at: usize) -> Option<u8> {
    locate(message, cip, at, Some(WHOLE_REPLY), 0)
}

/// `position`, from the request at `request` whose reply is at `here` (`None`: not locatable),
/// `depth` levels down (the datapath follows `MAX_DEPTH` of them).
fn locate(m: &[u8], request: usize, at: usize, here: Option<u8>, depth: u32) -> Option<u8> {
    if request == at {
        return here;
    }
    if depth + 1 >= MAX_DEPTH {
        return None;
    }
    let data = request + 2 + 2 * *m.get(request + 1)? as usize;
    match *m.get(request)? {
        SVC_MSP => {
            // The entry `at` falls in: the last one starting at or before it.
            let count = le16(m, data)? as usize;
            let start = |k: usize| Some(data + le16(m, data + 2 + 2 * k)? as usize);
            let k = (0..count)
                .rev()
                .find(|&k| start(k).is_some_and(|s| s <= at))?;
            let inner = (here == Some(WHOLE_REPLY)).then_some(k as u8);
            locate(m, start(k)?, at, inner, depth + 1)
        }
        SVC_UNCONNECTED_SEND => {
            let size = le16(m, data + 2)? as usize;
            let start = data + 4;
            (start..start + size)
                .contains(&at)
                .then(|| locate(m, start, at, here, depth + 1))?
        }
        _ => None,
    }
}

/// The edits (offset in the message, captured length, live bytes; in order) that make the
/// captured SendRRData or SendUnitData `reply` (of `layout`; `total` bytes, the start of it in
/// `reply`) what the target answers when the `refused` requests carry the neutral service.
/// `None` when the reply is not one a target sends to such a request (encapsulation error,
/// other items, not a CIP reply, not a Multiple Service Packet reply with the refused
/// positions) or the part of it to read is not at hand.
fn live_reply(
    reply: &[u8],
    total: usize,
    layout: Layout,
    refused: &Refused,
) -> Option<Vec<(usize, usize, Vec<u8>)>> {
    let items = if !layout.connected {
        le16(reply, 32)? == ITEM_NULL
            && le16(reply, 34)? == 0
            && le16(reply, 36)? == ITEM_UNCONNECTED_DATA
    } else {
        le16(reply, 32)? == ITEM_CONNECTED_ADDRESS
            && le16(reply, 34)? == 4
            && le16(reply, 40)? == ITEM_CONNECTED_DATA
    };
    let framed = le32(reply, 8)? == 0 && le16(reply, 30)? >= 2 && items;
    let item = (le16(reply, layout.item_length)? as usize).checked_sub(layout.item_before)?;
    let cip = layout.cip;
    let end = cip + item;
    if !framed || item < 4 || end > total || reply.get(cip)? & 0x80 == 0 {
        return None;
    }
    let error = vec![refused.neutral | 0x80, 0, SERVICE_NOT_SUPPORTED, 0];
    let mut body = Vec::new();
    let mut grown: i64 = 0;
    if refused.positions.contains(&WHOLE_REPLY) {
        // A router's error for an Unconnected Send: the request never reached its target, live
        // or captured; the reply stays.
        if reply[cip] != ROUTER_ERROR {
            body.push((cip, item, error));
            grown = 4 - item as i64;
        }
    } else {
        if reply[cip] != SVC_MSP | 0x80 {
            return None;
        }
        let data = cip + 4 + 2 * *reply.get(cip + 3)? as usize;
        let count = le16(reply, data)? as usize;
        let table = data + 2;
        if table + 2 * count > end {
            return None;
        }
        let offsets = (0..count)
            .map(|k| le16(reply, table + 2 * k).map(|o| data + o as usize))
            .collect::<Option<Vec<usize>>>()?;
        let mut live_table = Vec::with_capacity(2 * count);
        for (k, &entry) in offsets.iter().enumerate() {
            let next = offsets.get(k + 1).copied().unwrap_or(end);
            if entry < table + 2 * count || entry > next || next > end {
                return None;
            }
            let live = (entry - data) as i64 + grown;
            live_table.extend_from_slice(&u16::try_from(live).ok()?.to_le_bytes());
            if refused.positions.contains(&(k as u8)) && reply.get(entry) != Some(&ROUTER_ERROR) {
                body.push((entry, next - entry, error.clone()));
                grown += 4 - (next - entry) as i64;
            }
        }
        if refused.positions.iter().any(|&k| k as usize >= count) {
            return None;
        }
        let mut head = Vec::new();
        if reply[cip + 2] == 0 && reply[cip + 3] == 0 {
            head.push((cip + 2, 1, vec![EMBEDDED_SERVICE_ERROR]));
        }
        head.push((table, 2 * count, live_table));
        body.splice(0..0, head);
    }
    let length = |at: usize| -> Option<(usize, usize, Vec<u8>)> {
        let live = u16::try_from(le16(reply, at)? as i64 + grown).ok()?;
        Some((at, 2, live.to_le_bytes().to_vec()))
    };
    let mut edits = vec![length(2)?, length(layout.item_length)?];
    edits.extend(body);
    // Bytes the target sends as captured need no edit.
    edits.retain(|(at, len, with)| reply.get(*at..at + len) != Some(with.as_slice()));
    Some(edits)
}

#[cfg(test)]
mod tests {
    use super::super::{
        frames::{self, ack, assert_consistent, payload, seq},
        LiveAnswers, Rewrite,
    };
    use super::*;
    use crate::datapath::{CipRequest, Decision};
    use firewall_common::{counters::VERDICT_REFUSE, reason::Reason};

    const NEUTRAL: u8 = 0x7F;
    const PORT: u16 = 44818;

    fn tcp(from_client: bool, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        frames::tcp(PORT, from_client, seq, ack, payload)
    }

    /// A SendRRData message (request or reply) with sender context `context` carrying `cip`.
    fn send_rr_data(context: u8, cip: &[u8]) -> Vec<u8> {
        let mut m = vec![0x6F, 0];
        m.extend(((16 + cip.len()) as u16).to_le_bytes());
        m.extend([1, 0, 0, 0]); // session
        m.extend([0; 4]); // status
        m.extend([context, 0, 0, 0, 0, 0, 0, 0]);
        m.extend([0; 4]); // options
        m.extend([0, 0, 0, 0, 0, 0]); // interface handle, timeout
        m.extend([2, 0, 0, 0, 0, 0, 0xB2, 0]);
        m.extend((cip.len() as u16).to_le_bytes());
        m.extend(cip);
        m
    }

    /// Write Tag "A" (0x4D) with service `service`, and the target's reply to it.
    fn write_tag(service: u8) -> Vec<u8> {
        vec![service, 2, 0x91, 1, b'A', 0, 0xC4, 0, 1, 0, 7, 0, 0, 0]
    }
    const WRITE_REPLY: [u8; 4] = [0xCD, 0, 0, 0];
    /// Read Tag "A" (0x4C) and its reply (a DINT).
    const READ_TAG: [u8; 8] = [0x4C, 2, 0x91, 1, b'A', 0, 1, 0];
    const READ_REPLY: [u8; 10] = [0xCC, 0, 0, 0, 0xC4, 0, 42, 0, 0, 0];
    /// The target's error for the neutral service.
    const ERROR: [u8; 4] = [NEUTRAL | 0x80, 0, 0x08, 0];

    /// A Multiple Service Packet request or reply (`head`: service, then path or status).
    fn msp(head: &[u8], entries: &[&[u8]]) -> Vec<u8> {
        let mut m = head.to_vec();
        m.extend((entries.len() as u16).to_le_bytes());
        let mut offset = 2 + 2 * entries.len();
        for e in entries {
            m.extend((offset as u16).to_le_bytes());
            offset += e.len();
        }
        for e in entries {
            m.extend(*e);
        }
        m
    }
    /// An Unconnected Send to the Connection Manager carrying `inner`, routed to slot 0.
    fn unconnected_send(inner: &[u8]) -> Vec<u8> {
        let mut m = vec![0x52, 2, 0x20, 0x06, 0x24, 0x01, 0x0A, 0x05];
        m.extend((inner.len() as u16).to_le_bytes());
        m.extend(inner);
        if inner.len() % 2 == 1 {
            m.push(0);
        }
        m.extend([1, 0, 0x01, 0x00]);
        m
    }

    #[test]
    fn requests_are_located_as_the_datapath_does() {
        let write = write_tag(0x4D);
        let at = |cip: &[u8], needle: &[u8]| -> usize {
            let m = send_rr_data(1, cip);
            let from = CIP + 1;
            from + m[from..]
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let cases: [(Vec<u8>, Option<u8>); 5] = [
            (write.clone(), Some(WHOLE_REPLY)),
            (unconnected_send(&write), Some(WHOLE_REPLY)),
            (
                msp(&MSP_REQUEST, &[&READ_TAG, &unconnected_send(&write)]),
                Some(1),
            ),
            (
                unconnected_send(&msp(&MSP_REQUEST, &[&write, &READ_TAG])),
                Some(0),
            ),
            (
                msp(&MSP_REQUEST, &[&READ_TAG, &msp(&MSP_REQUEST, &[&write])]),
                None,
            ),
        ];
        for (i, (cip, expected)) in cases.into_iter().enumerate() {
            let m = send_rr_data(1, &cip);
            let p = if i == 0 { CIP } else { at(&cip, &write) };
            assert_eq!(position(&m, CIP, p), expected, "case {i}");
        }
    }

    const MSP_REQUEST: [u8; 6] = [0x0A, 2, 0x20, 0x02, 0x24, 0x01];
    const MSP_REPLY: [u8; 4] = [0x8A, 0, 0, 0];
    const MSP_REPLY_ERROR: [u8; 4] = [0x8A, 0, 0x1E, 0];

    /// The decision on a client segment that passed, `forwarded` as it left.
    fn passed(forwarded: Vec<u8>, refused: bool) -> Decision {
        Decision {
            action: 2,
            reason: if refused {
                Reason::CipServiceDenied
            } else {
                Reason::None
            },
            verdict: if refused { VERDICT_REFUSE as u8 } else { 0 },
            conduit_id: 0,
            epoch: 0,
            frame_out: forwarded,
            adus: Vec::new(),
            cip: vec![CipRequest {
                kind: "command",
                command: "send_rr_data".into(),
                service: String::new(),
                code: 0,
                class: 0,
                instance: 0,
                tag: String::new(),
                depth: 0,
                verdict: "pass",
                reason: "none",
            }],
        }
    }

    /// Sends `sent` (client seq `seq`) through `live` as the datapath forwarded it.
    fn send(live: &mut LiveAnswers, seq: u32, sent: &[u8], forwarded: &[u8]) {
        let judged = tcp(true, seq, 5000, sent);
        let d = passed(tcp(true, seq, 5000, forwarded), sent != forwarded);
        live.after_judging(&judged, &d);
    }

    fn neutralise(message: &mut [u8], at: usize) {
        message[at] = NEUTRAL;
    }

    /// A SendUnitData message on connection `id` with sequence count `sequence` carrying `cip`.
    fn send_unit_data(id: u32, sequence: u16, cip: &[u8]) -> Vec<u8> {
        let mut m = vec![0x70, 0];
        m.extend(((22 + cip.len()) as u16).to_le_bytes());
        m.extend([1, 0, 0, 0]); // session
        m.extend([0; 4]); // status
        m.extend([0; 8]); // sender context
        m.extend([0; 4]); // options
        m.extend([0, 0, 0, 0, 0, 0]); // interface handle, timeout
        m.extend([2, 0, 0xA1, 0, 4, 0]);
        m.extend(id.to_le_bytes());
        m.extend([0xB1, 0]);
        m.extend(((2 + cip.len()) as u16).to_le_bytes());
        m.extend(sequence.to_le_bytes());
        m.extend(cip);
        m
    }

    #[test]
    fn a_connected_reply_is_found_by_its_sequence_count() {
        let mut live = LiveAnswers::default();
        // A refused write (sequence 8) and a read (sequence 9) in one segment.
        let write = send_unit_data(0x55, 8, &write_tag(0x4D));
        let read = send_unit_data(0x55, 9, &READ_TAG);
        let sent = [write.clone(), read.clone()].concat();
        let mut forwarded = sent.clone();
        assert_eq!(forwarded[CONNECTED.cip], 0x4D);
        neutralise(&mut forwarded, CONNECTED.cip);
        send(&mut live, 1000, &sent, &forwarded);

        // The replies on the T->O connection, the read's first: only the write's changes.
        let read_reply = send_unit_data(0x77, 9, &READ_REPLY);
        let mut frame = tcp(false, 5000, 2000, &read_reply);
        assert_eq!(live.before_judging(&mut frame), Rewrite::default());
        let captured = send_unit_data(0x77, 8, &WRITE_REPLY);
        let at = 5000 + read_reply.len() as u32;
        let mut frame = tcp(false, at, 2000, &captured);
        assert_eq!(live.before_judging(&mut frame).substituted, 1);
        assert_eq!(payload(&frame), send_unit_data(0x77, 8, &ERROR));
        assert_consistent(&frame);
    }

    #[test]
    fn the_reply_to_a_refused_request_becomes_the_error_and_later_numbers_shift() {
        let mut live = LiveAnswers::default();
        // A read, then a refused write (the second SendRRData of the connection).
        let read = send_rr_data(1, &READ_TAG);
        send(&mut live, 1000, &read, &read);
        let write = send_rr_data(2, &write_tag(0x4D));
        let mut neutral = write.clone();
        neutralise(&mut neutral, CIP);
        let next = 1000 + read.len() as u32;
        send(&mut live, next, &write, &neutral);

        let read_reply = send_rr_data(1, &READ_REPLY);
        let mut frame = tcp(false, 5000, next, &read_reply);
        let before = frame.clone();
        assert_eq!(live.before_judging(&mut frame), Rewrite::default());
        assert_eq!(frame, before);

        // The captured reply: the write succeeded, with additional status 2 words long.
        let captured = send_rr_data(2, &[0xCD, 0, 0x05, 2, 1, 0, 2, 0]);
        let at = 5000 + read_reply.len() as u32;
        let mut frame = tcp(false, at, next + write.len() as u32, &captured);
        assert_eq!(
            live.before_judging(&mut frame),
            Rewrite {
                substituted: 1,
                shifted: false
            }
        );
        assert_eq!(payload(&frame), send_rr_data(2, &ERROR));
        assert_consistent(&frame);

        // 4 bytes shorter: the rest of the connection moves.
        let later = at + captured.len() as u32;
        let mut frame = tcp(false, later, 2000, &read_reply);
        assert!(live.before_judging(&mut frame).shifted);
        assert_eq!(seq(&frame), later - 4);
        assert_eq!(payload(&frame), read_reply);
        let mut frame = tcp(true, 2000, later + read_reply.len() as u32, &[]);
        assert!(live.before_judging(&mut frame).shifted);
        assert_eq!(ack(&frame), Some(later - 4 + read_reply.len() as u32));
        assert_consistent(&frame);
    }

    #[test]
    fn a_refused_request_of_a_multiple_service_packet_gets_its_entry_replaced() {
        let mut live = LiveAnswers::default();
        let write = write_tag(0x4D);
        let request = send_rr_data(3, &msp(&MSP_REQUEST, &[&READ_TAG, &write, &READ_TAG]));
        let mut neutral = request.clone();
        // The write's service byte: after the packet's header, count, 3 offsets and a read.
        neutralise(&mut neutral, CIP + 6 + 2 + 6 + READ_TAG.len());
        send(&mut live, 1000, &request, &neutral);

        let long_write_reply = [0xCD, 0, 0, 1, 9, 9];
        let captured = send_rr_data(
            3,
            &msp(&MSP_REPLY, &[&READ_REPLY, &long_write_reply, &READ_REPLY]),
        );
        let mut frame = tcp(false, 5000, 1000 + request.len() as u32, &captured);
        assert_eq!(live.before_judging(&mut frame).substituted, 1);
        let expected = send_rr_data(
            3,
            &msp(&MSP_REPLY_ERROR, &[&READ_REPLY, &ERROR, &READ_REPLY]),
        );
        assert_eq!(payload(&frame), expected);
        assert_consistent(&frame);
    }

    #[test]
    fn a_reply_split_after_its_offsets_is_replaced_in_parts() {
        let mut live = LiveAnswers::default();
        let request = send_rr_data(4, &msp(&MSP_REQUEST, &[&READ_TAG, &write_tag(0x4D)]));
        let mut neutral = request.clone();
        neutralise(&mut neutral, CIP + 6 + 2 + 4 + READ_TAG.len());
        send(&mut live, 1000, &request, &neutral);
        let captured = send_rr_data(4, &msp(&MSP_REPLY, &[&READ_REPLY, &WRITE_REPLY]));
        let cut = captured.len() - 3;
        let mut head = tcp(false, 5000, 2000, &captured[..cut]);
        let mut tail = tcp(false, 5000 + cut as u32, 2000, &captured[cut..]);
        assert_eq!(live.before_judging(&mut head).substituted, 1);
        assert_eq!(live.before_judging(&mut tail).substituted, 1);
        let mut both = payload(&head).to_vec();
        both.extend(payload(&tail));
        assert_eq!(
            both,
            send_rr_data(4, &msp(&MSP_REPLY_ERROR, &[&READ_REPLY, &ERROR]))
        );
        assert_eq!(seq(&tail), 5000 + cut as u32);
    }

    #[test]
    fn replies_answer_requests_in_order_and_other_messages_are_not_counted() {
        let mut live = LiveAnswers::default();
        // RegisterSession, then two pipelined SendRRData in one segment, the second refused.
        let register = [
            0x65, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
        ];
        send(&mut live, 1000, &register, &register);
        let read = send_rr_data(5, &READ_TAG);
        let write = send_rr_data(5, &write_tag(0x4D));
        let mut both = read.clone();
        both.extend(&write);
        let mut neutral = both.clone();
        neutralise(&mut neutral, read.len() + CIP);
        send(&mut live, 1000 + register.len() as u32, &both, &neutral);

        let mut replies = register.to_vec();
        replies.extend(send_rr_data(5, &READ_REPLY));
        replies.extend(send_rr_data(5, &WRITE_REPLY));
        let mut frame = tcp(false, 5000, 2000, &replies);
        assert_eq!(live.before_judging(&mut frame).substituted, 1);
        let mut expected = register.to_vec();
        expected.extend(send_rr_data(5, &READ_REPLY));
        expected.extend(send_rr_data(5, &ERROR));
        assert_eq!(payload(&frame), expected);
    }

    /// Sends a top-level Write Tag with sender context `context` (client seq 1000) that the
    /// datapath neutralised; returns the request.
    fn refused_write(live: &mut LiveAnswers, context: u8) -> Vec<u8> {
        let write = send_rr_data(context, &write_tag(0x4D));
        let mut neutral = write.clone();
        neutralise(&mut neutral, CIP);
        send(live, 1000, &write, &neutral);
        write
    }

    /// Passes `payload` from the server (seq `seq`) through `live`: it must be left as it is.
    fn left(live: &mut LiveAnswers, seq: u32, payload: &[u8]) {
        let mut frame = tcp(false, seq, 2000, payload);
        let before = frame.clone();
        assert_eq!(live.before_judging(&mut frame), Rewrite::default());
        assert_eq!(frame, before);
    }

    #[test]
    fn a_reply_with_another_sender_context_is_not_the_answer() {
        // The capture lacks the target's reply: its next one answers a later request.
        let mut live = LiveAnswers::default();
        refused_write(&mut live, 7);
        left(&mut live, 5000, &send_rr_data(8, &READ_REPLY));
    }

    #[test]
    fn an_encapsulation_error_or_a_retransmitted_request_changes_nothing() {
        let mut live = LiveAnswers::default();
        let write = refused_write(&mut live, 6);
        // The retransmission is neutralised again but counted once.
        let mut neutral = write.clone();
        neutralise(&mut neutral, CIP);
        send(&mut live, 1000, &write, &neutral);
        let mut error = send_rr_data(6, &WRITE_REPLY);
        error[8] = 1; // encapsulation status: invalid command
        left(&mut live, 5000, &error);
        // The next reply answers the next request, not the refused one.
        let read = send_rr_data(6, &READ_TAG);
        send(&mut live, 1000 + write.len() as u32, &read, &read);
        left(
            &mut live,
            5000 + error.len() as u32,
            &send_rr_data(6, &READ_REPLY),
        );
    }
}
