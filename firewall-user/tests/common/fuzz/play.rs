//! Plays a conversation through the real XDP program (BPF_PROG_TEST_RUN) and checks, frame
//! by frame, that the program never aborts, that every decision is accounted to exactly one
//! reason (drops to a reason of their own, passes to none unless refused in-band), and feeds
//! the frames it let through, as it let them through (the output frame, after rewrites), to the
//! server-side receivers whose streams the oracle judges.

use std::collections::BTreeMap;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use firewall_common::{
    counters::{
        VERDICT_COUNT, VERDICT_DROP, VERDICT_MONITOR, VERDICT_PASS, VERDICT_REFUSE, VERDICT_RESET,
    },
    reason::{Reason, REASON_COUNT},
};
use otfw::datapath::Datapath;

use super::generate::Protocol;
use super::oracle::{self, Judgement};
use super::receiver::{Overlap, Receiver};
use super::schedule::{Conversation, Event, Spoil};
use crate::enip_common as enip;
use crate::frames::{tcp_header, Ip};

/// The XDP actions `Decision` has no method for: a program error, and the fast path's.
const XDP_ABORTED: u32 = 0;
const XDP_REDIRECT: u32 = 4;

/// The endpoints and headers of a conversation: the client-to-server shape and a second
/// shape some segments of the same flow are sent with.
#[derive(Clone)]
pub struct Shapes {
    pub v6: bool,
    pub main: Ip,
    pub other: Ip,
    pub sport: u16,
    pub dport: u16,
    pub client_isn: u32,
    pub server_isn: u32,
}

/// Everything one conversation produced, for the campaign's tally and for reports.
#[derive(Default)]
pub struct Outcome {
    pub frames: u64,
    pub passed: u64,
    pub dropped: u64,
    pub reset: u64,
    /// Decisions by `[reason][verdict]`, as the trace reported them.
    pub decisions: Vec<[u64; VERDICT_COUNT as usize]>,
    /// Broken invariants: the program aborted, a run failed, an unaccounted decision, a
    /// forbidden request in a server stream.
    pub findings: Vec<String>,
    /// Requests the server read (first-wins receiver), by judgement.
    pub allowed: u64,
    pub neutralised: u64,
    /// One line per frame: what was sent and what the program did.
    pub log: Vec<String>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            decisions: vec![[0; VERDICT_COUNT as usize]; REASON_COUNT as usize],
            ..Outcome::default()
        }
    }
}

/// A client segment as the server's stack sees it: parsed from the frame the program let
/// through, with its checksum verified.
struct Delivered {
    seq: u32,
    syn: bool,
    fin: bool,
    rst: bool,
    urg: bool,
    checksum_ok: bool,
    payload: Vec<u8>,
}

fn parse(frame: &[u8]) -> Option<Delivered> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
        return None;
    };
    let header = tcp.to_header();
    let checksum_ok = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => {
            header
                .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                .ok()
                == Some(header.checksum)
        }
        Some(NetSlice::Ipv6(ip)) => {
            header
                .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                .ok()
                == Some(header.checksum)
        }
        _ => false,
    };
    Some(Delivered {
        seq: header.sequence_number,
        syn: header.syn,
        fin: header.fin,
        rst: header.rst,
        urg: header.urg,
        checksum_ok,
        payload: tcp.payload().to_vec(),
    })
}

fn flags(syn: bool, ack: bool, fin: bool, psh: bool) -> String {
    let mut f = String::new();
    for (on, c) in [(syn, 'S'), (ack, 'A'), (fin, 'F'), (psh, 'P')] {
        if on {
            f.push(c);
        }
    }
    f
}

struct Player<'a> {
    dp: &'a mut Datapath,
    protocol: Protocol,
    shapes: &'a Shapes,
    receivers: [Receiver; 2],
    /// Bytes of the first-wins stream already answered by the server, and the server's next
    /// sequence offset.
    answered: usize,
    server_sent: u32,
    out: Outcome,
}

impl Player<'_> {
    fn run(&mut self, from_client: bool, what: String, frame: &[u8], lost: bool) {
        self.out.frames += 1;
        let d = match self.dp.run_frame(frame) {
            Ok(d) => d,
            Err(e) => {
                self.out
                    .findings
                    .push(format!("BPF_PROG_TEST_RUN failed on {what}: {e:#}"));
                return;
            }
        };
        let verdict = u32::from(d.verdict);
        self.out.log.push(format!(
            "{} {what}: action {} {} {}",
            if from_client { "client" } else { "server" },
            d.action,
            firewall_common::counters::VERDICT_NAMES
                .get(verdict as usize)
                .unwrap_or(&"?"),
            d.reason.name()
        ));
        if let Some(row) = self.out.decisions.get_mut(d.reason as usize) {
            if let Some(cell) = row.get_mut(verdict as usize) {
                *cell += 1;
            }
        }
        let forwarded = d.passed() || d.action == XDP_REDIRECT;
        let consistent = if d.dropped() {
            verdict == VERDICT_DROP && d.reason != Reason::None
        } else if forwarded {
            match verdict {
                VERDICT_PASS => d.reason == Reason::None,
                // Passed for monitoring, with refused requests neutralised, or turned into a
                // RST that continues to the server: each names its reason.
                VERDICT_MONITOR | VERDICT_REFUSE | VERDICT_RESET => d.reason != Reason::None,
                _ => false,
            }
        } else if d.reset() {
            verdict == VERDICT_RESET && d.reason != Reason::None
        } else {
            false
        };
        if d.action == XDP_ABORTED {
            self.out.findings.push(format!("XDP_ABORTED on {what}"));
        } else if !consistent {
            self.out.findings.push(format!(
                "{what}: action {} with verdict {verdict} and reason {}: not accounted to exactly one reason",
                d.action,
                d.reason.name()
            ));
        }
        if d.dropped() {
            self.out.dropped += 1;
        } else if d.reset() {
            self.out.reset += 1;
        } else {
            self.out.passed += 1;
        }
        if !from_client || !forwarded || lost {
            return;
        }
        let Some(seg) = parse(&d.frame_out) else {
            self.out.findings.push(format!(
                "{what}: the passed frame is no TCP segment any more"
            ));
            return;
        };
        if !seg.checksum_ok {
            // The server's stack discards it. A frame the program rewrote must still verify.
            if d.frame_out != frame {
                self.out.findings.push(format!(
                    "{what}: the program rewrote the segment and its TCP checksum is wrong"
                ));
            }
            return;
        }
        if seg.urg && !seg.payload.is_empty() {
            self.out.findings.push(format!(
                "{what}: urgent data passed; the server takes the urgent byte out of the stream"
            ));
        }
        for r in &mut self.receivers {
            r.segment(seg.seq, seg.syn, seg.fin, seg.rst, &seg.payload);
        }
    }

    fn client(&mut self, seq: u32, flags: &str, payload: &[u8], shape: &Ip) -> Vec<u8> {
        let ack = self
            .shapes
            .server_isn
            .wrapping_add(1)
            .wrapping_add(self.server_sent);
        let h = tcp_header(self.shapes.sport, self.shapes.dport, flags, seq, ack);
        shape.tcp_with(h, payload)
    }

    fn server(&mut self, flags: &str, payload: &[u8]) -> Vec<u8> {
        let seq = if flags.contains('S') {
            self.shapes.server_isn
        } else {
            self.shapes
                .server_isn
                .wrapping_add(1)
                .wrapping_add(self.server_sent)
        };
        let ack = self.receivers[0]
            .rcv_nxt()
            .unwrap_or(self.shapes.client_isn.wrapping_add(1));
        let h = tcp_header(self.shapes.dport, self.shapes.sport, flags, seq, ack);
        self.shapes.main.reply().tcp_with(h, payload)
    }

    /// The server's answers to the requests it read since its last answer.
    fn answers(&mut self) -> Vec<u8> {
        let stream = &self.receivers[0].stream;
        let mut out = Vec::new();
        loop {
            let rest = &stream[self.answered..];
            match self.protocol {
                Protocol::Modbus => {
                    let Ok(Some((adu, used))) = otfw::decode::modbus::split_adu(rest) else {
                        break;
                    };
                    // "Illegal function" for everything: a valid answer to any request, and
                    // the one a refused (neutralised) request gets.
                    let t = adu.transaction.to_be_bytes();
                    out.extend_from_slice(&[t[0], t[1], 0, 0, 0, 3, adu.unit]);
                    out.extend_from_slice(&[adu.pdu[0] | 0x80, 1]);
                    self.answered += used;
                }
                Protocol::Enip => {
                    let Ok(Some((message, used))) = otfw::decode::cip::split_message(rest) else {
                        break;
                    };
                    if message.command == 0x65 {
                        out.extend(enip::register_reply(enip::SESSION));
                    }
                    if let Some(serial) = forward_open_serial(&message) {
                        // Accepted, with the ids the generated SendUnitData use.
                        out.extend(enip::forward_open_reply(
                            enip::SESSION,
                            serial,
                            super::generate::CONNECTION_ID,
                            super::generate::CONNECTION_ID + 1,
                        ));
                    }
                    self.answered += used;
                }
            }
        }
        out
    }

    fn event(&mut self, index: usize, event: &Event, stream: &[u8]) {
        let isn = self.shapes.client_isn;
        let base = isn.wrapping_add(1);
        match event {
            Event::Syn(data) => {
                let frame = self.client(isn, "S", data, &self.shapes.main.clone());
                self.run(true, format!("#{index} SYN +{}", data.len()), &frame, false);
            }
            Event::SynAck => {
                let frame = self.server("SA", &[]);
                self.run(false, format!("#{index} SYN-ACK"), &frame, false);
            }
            Event::Ack => {
                let frame = self.client(base, "A", &[], &self.shapes.main.clone());
                self.run(true, format!("#{index} ACK"), &frame, false);
            }
            Event::Data {
                at,
                bytes,
                fin,
                spoil,
                lost,
                other_shape,
            } => {
                let shape = if *other_shape {
                    self.shapes.other.clone()
                } else {
                    self.shapes.main.clone()
                };
                let seq = base.wrapping_add(*at as u32);
                let f = flags(false, true, *fin, !bytes.is_empty());
                let mut frame = self.client(seq, &f, bytes, &shape);
                match spoil {
                    Spoil::None => {}
                    Spoil::Urgent => urgent(&mut frame),
                    Spoil::BadChecksum => otfw::offload::set_tcp_checksum(&mut frame, false),
                }
                let what = format!(
                    "#{index} data at {at} len {} {f}{}{}{}: {:02x?}",
                    bytes.len(),
                    match spoil {
                        Spoil::None => "",
                        Spoil::Urgent => " urgent",
                        Spoil::BadChecksum => " bad-checksum",
                    },
                    if *lost { " lost-after-gateway" } else { "" },
                    if *other_shape { " other-shape" } else { "" },
                    bytes
                );
                self.run(true, what, &frame, *lost);
            }
            Event::Resend => {
                let from = self.receivers[0].stream.len();
                for at in (from..stream.len()).step_by(64) {
                    let bytes = &stream[at..(at + 64).min(stream.len())];
                    let seq = base.wrapping_add(at as u32);
                    let frame = self.client(seq, "AP", bytes, &self.shapes.main.clone());
                    let what = format!("#{index} resend at {at} len {}: {bytes:02x?}", bytes.len());
                    self.run(true, what, &frame, false);
                    let frame = self.server("A", &[]);
                    self.run(false, format!("#{index} ACK"), &frame, false);
                }
            }
            Event::ServerAck => {
                let frame = self.server("A", &[]);
                self.run(false, format!("#{index} ACK"), &frame, false);
            }
            Event::ServerAnswer => {
                let answer = self.answers();
                if answer.is_empty() {
                    return;
                }
                let frame = self.server("PA", &answer);
                self.server_sent = self.server_sent.wrapping_add(answer.len() as u32);
                self.run(
                    false,
                    format!("#{index} answer {:02x?}", answer),
                    &frame,
                    false,
                );
            }
        }
    }
}

/// The connection serial number of a Forward_Open (or Large_Forward_Open) sent straight to
/// the Connection Manager in a SendRRData, which the server accepts.
fn forward_open_serial(message: &otfw::decode::cip::Message) -> Option<u16> {
    if message.command != 0x6F {
        return None;
    }
    let mut r = otfw::decode::Reader::new(message.data);
    r.take(6, "interface handle and timeout").ok()?;
    let items = otfw::decode::cip::items(&mut r).ok()?;
    let cip = items.iter().find(|i| i.kind == 0xB2)?.data;
    let (&service, rest) = cip.split_first()?;
    let path_words = *rest.first()? as usize;
    let path = rest.get(1..1 + 2 * path_words)?;
    if !matches!(service, 0x54 | 0x5B) || path.get(..2) != Some(&[0x20, 0x06]) {
        return None;
    }
    // Priority and ticks, O->T id, T->O id, then the connection serial number.
    let data = rest.get(1 + 2 * path_words..)?;
    Some(u16::from_le_bytes([*data.get(10)?, *data.get(11)?]))
}

/// Sets URG with the urgent pointer at the segment's first byte, checksum valid.
fn urgent(frame: &mut [u8]) {
    let l4 = match SlicedPacket::from_ethernet(frame) {
        Ok(SlicedPacket {
            transport: Some(TransportSlice::Tcp(tcp)),
            ..
        }) => tcp.slice().as_ptr() as usize - frame.as_ptr() as usize,
        _ => return,
    };
    frame[l4 + 13] |= 0x20;
    frame[l4 + 18..l4 + 20].copy_from_slice(&1u16.to_be_bytes());
    otfw::offload::repair_tcp_checksum(frame);
}

/// Plays `conversation` on `dp` (flows cleared first) and judges the server's streams.
pub fn play(
    dp: &mut Datapath,
    protocol: Protocol,
    refuse: bool,
    shapes: &Shapes,
    conversation: &Conversation,
) -> Outcome {
    dp.forget_connections()
        .expect("forgetting the connections of the previous conversation");
    let base = shapes.client_isn.wrapping_add(1);
    let receivers = if conversation.midstream {
        [
            Receiver::established(Overlap::FirstWins, base),
            Receiver::established(Overlap::LastWins, base),
        ]
    } else {
        [
            Receiver::new(Overlap::FirstWins),
            Receiver::new(Overlap::LastWins),
        ]
    };
    let mut p = Player {
        dp,
        protocol,
        shapes,
        receivers,
        answered: 0,
        server_sent: 0,
        out: Outcome::new(),
    };
    for (i, e) in conversation.events.iter().enumerate() {
        p.event(i, e, &conversation.stream);
    }
    let mut out = p.out;
    for (r, name) in p.receivers.iter().zip(["first-wins", "last-wins"]) {
        for (k, j) in oracle::judge(protocol, &r.stream, refuse)
            .into_iter()
            .enumerate()
        {
            match j {
                Judgement::Allowed if name == "first-wins" => out.allowed += 1,
                Judgement::Neutralised if name == "first-wins" => out.neutralised += 1,
                Judgement::Forbidden(why) => out.findings.push(format!(
                    "request {k} of the server's stream ({name} receiver) is forbidden: {why}"
                )),
                _ => {}
            }
        }
    }
    out
}

/// Adds one conversation's decisions to a campaign's.
pub fn add(into: &mut [[u64; VERDICT_COUNT as usize]], from: &[[u64; VERDICT_COUNT as usize]]) {
    for (a, b) in into.iter_mut().zip(from) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

/// Drops by reason name, from decisions by `[reason][verdict]`.
pub fn drops_by_reason(decisions: &[[u64; VERDICT_COUNT as usize]]) -> BTreeMap<&'static str, u64> {
    decisions
        .iter()
        .enumerate()
        .filter(|(_, row)| row[VERDICT_DROP as usize] > 0)
        .map(|(r, row)| (Reason::NAMES[r], row[VERDICT_DROP as usize]))
        .collect()
}
