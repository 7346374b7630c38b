//! `otfw replay`: every frame of one or more captures through the real XDP program
//! (BPF_PROG_TEST_RUN), in order, with the maps carried from frame to frame, so flows behave as
//! on a live bridge. One JSON object per frame, then a summary. Captures of other link types
//! than Ethernet are judged as if their packets had arrived on an Ethernet port (`capture`).
//! With a `write` path, the frames the gateway would forward are written there as it would
//! forward them (refused Modbus and CIP requests neutralised, answers restored), dropped ones
//! left out. The captured answer to a refused request is replaced, before judging, by the error
//! the live server sends to the neutralised request ([`answers`]).
//!
//! What a capture cannot tell: the bridge port a frame arrived on (anti-spoofing is not checked:
//! every frame counts as arriving on a permitted port), and real time (flows do not expire
//! between frames, however far apart their timestamps are).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

mod answers;

use anyhow::{Context as _, Result};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use firewall_common::counters::{VERDICT_NAMES, VERDICT_REFUSE};
use serde::Serialize;

use crate::{
    capture,
    datapath::Datapath,
    offload::{self, Checksums},
    policy::compiled::CompiledPolicy,
};

#[derive(Serialize)]
struct FrameRecord<'a> {
    file: &'a str,
    frame: usize,
    /// The link type the frame was captured with (`linux_sll`, `null`, `raw`, ...) when it was
    /// not Ethernet: the frame was judged with a synthesised Ethernet header.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'static str>,
    /// `pass`, `drop` or `refuse`: what happened to the frame (`refuse`: forwarded with its
    /// refused Modbus or CIP requests neutralised, `on_deny: refuse`).
    verdict: &'static str,
    /// The accounting verdict: `pass`, `drop`, `monitor` (passed, would be dropped in enforce
    /// mode), `reset` (dropped and answered with a TCP reset) or `refuse`.
    action: &'static str,
    reason: &'static str,
    conduit: Option<&'a str>,
    /// A one-line description of the frame (protocol, addresses, ports) for the reader.
    packet: String,
    /// `repaired` when the captured TCP checksum was wrong and recomputed before judging
    /// (`--checksums repair`, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<&'static str>,
    /// `substituted` when the frame carries the answer to a refused request: the captured
    /// answer was replaced by the error the live server sends to the neutralised request
    /// (what the frame's verdict is about), not judged itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'static str>,
    /// `shifted` when its sequence or acknowledgement number was moved to follow an earlier
    /// substituted answer of a different length.
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<&'static str>,
    /// Modbus ADUs whose header the inspector decided in this frame.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    adus: &'a [crate::datapath::Adu],
    /// EtherNet/IP requests (commands, CIP requests with embedded ones, implicit I/O) the
    /// inspector saw in this frame.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cip: &'a [crate::datapath::CipRequest],
}

#[derive(Serialize, Default)]
pub struct Summary {
    pub files: usize,
    pub frames: usize,
    pub passed: usize,
    /// Frames forwarded with refused requests neutralised in them (`on_deny: refuse`).
    pub refused: usize,
    pub dropped: usize,
    /// Frames by accounting verdict.
    pub by_action: BTreeMap<&'static str, usize>,
    /// Frames not passed cleanly, by reason.
    pub by_reason: BTreeMap<&'static str, usize>,
    /// Frames by deciding conduit and accounting verdict.
    pub by_conduit: BTreeMap<String, BTreeMap<&'static str, usize>>,
    /// TCP checksums recomputed before judging (`Checksums::Repair`).
    pub checksums_repaired: usize,
    /// Frames whose captured answer to a refused request was replaced by the live server's
    /// error (counted by verdict as well).
    pub answers_substituted: usize,
    /// Frames whose sequence or acknowledgement number followed a substituted answer.
    pub sequence_shifted: usize,
}

/// Replays `captures` under `policy`, writing JSON lines to `out`.
pub fn replay(
    policy: &CompiledPolicy,
    captures: &[PathBuf],
    checksums: Checksums,
    write: Option<&Path>,
    out: &mut impl Write,
) -> Result<Summary> {
    let mut writer = write.map(capture::Writer::create).transpose()?;
    let mut datapath = Datapath::load()?;
    let mut policy = policy.clone();
    // The ingress port is unknown in a capture (see the module comment).
    policy.zone_ports.clear();
    for (_, info) in policy.zone_info.iter_mut() {
        info.flags &= !firewall_common::zone::ZONE_FLAG_PORTS;
    }
    let generation = datapath.install(&policy)?.clone();
    datapath.enable_trace()?;

    let mut summary = Summary::default();
    let mut answers = answers::LiveAnswers::default();
    for path in captures {
        let frames = capture::read(path)?;
        let file = path.display().to_string();
        summary.files += 1;
        for (i, captured) in frames.into_iter().enumerate() {
            let (mut frame, link, timestamp) = (captured.data, captured.link, captured.timestamp);
            let repaired =
                checksums == Checksums::Repair && offload::repair_tcp_checksum(&mut frame);
            summary.checksums_repaired += repaired as usize;
            let live = answers.before_judging(&mut frame);
            summary.answers_substituted += (live.substituted != 0) as usize;
            summary.sequence_shifted += live.shifted as usize;
            let frame = &frame;
            let d = datapath
                .run_frame(frame)
                .with_context(|| format!("{file}: frame {}", i + 1))?;
            answers.after_judging(frame, &d);
            let action = VERDICT_NAMES
                .get(d.verdict as usize)
                .copied()
                .unwrap_or("unknown");
            let refused = d.passed() && d.verdict == VERDICT_REFUSE as u8;
            let verdict = match (d.passed(), refused) {
                (true, true) => "refuse",
                (true, false) => "pass",
                (false, _) => "drop",
            };
            if let Some(writer) = writer.as_mut() {
                if d.passed() {
                    writer.write(timestamp, &d.frame_out)?;
                }
            }
            let conduit = generation.names.conduit(d.conduit_id);
            let record = FrameRecord {
                file: &file,
                frame: i + 1,
                link: (link != capture::LinkType::Ethernet).then(|| link.name()),
                verdict,
                action,
                reason: d.reason.name(),
                conduit: conduit.filter(|_| d.conduit_id != firewall_common::conduit::CONDUIT_NONE),
                packet: describe(frame),
                checksum: repaired.then_some("repaired"),
                answer: (live.substituted != 0).then_some("substituted"),
                sequence: live.shifted.then_some("shifted"),
                adus: &d.adus,
                cip: &d.cip,
            };
            serde_json::to_writer(&mut *out, &record)?;
            out.write_all(b"\n")?;
            summary.frames += 1;
            if refused {
                summary.refused += 1;
            } else if d.passed() {
                summary.passed += 1;
            } else {
                summary.dropped += 1;
            }
            *summary.by_action.entry(action).or_default() += 1;
            if d.reason != firewall_common::reason::Reason::None {
                *summary.by_reason.entry(d.reason.name()).or_default() += 1;
            }
            *summary
                .by_conduit
                .entry(conduit.unwrap_or("(unknown)").to_owned())
                .or_default()
                .entry(action)
                .or_default() += 1;
        }
    }
    #[derive(Serialize)]
    struct Wrapper<'a> {
        summary: &'a Summary,
    }
    if let Some(writer) = writer {
        writer.finish()?;
    }
    serde_json::to_writer(&mut *out, &Wrapper { summary: &summary })?;
    out.write_all(b"\n")?;
    Ok(summary)
}

/// "tcp 10.0.0.1:1234 > 10.0.0.2:502", "arp", ... for humans reading the replay.
pub fn describe(frame: &[u8]) -> String {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return "malformed".to_owned();
    };
    let (src, dst) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().to_string(),
            ip.header().destination_addr().to_string(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            format!("[{}]", ip.header().source_addr()),
            format!("[{}]", ip.header().destination_addr()),
        ),
        Some(NetSlice::Arp(_)) => return "arp".to_owned(),
        None => {
            return match p.link.as_ref().and_then(|l| l.to_header()) {
                Some(etherparse::LinkHeader::Ethernet2(h)) => {
                    format!("ethertype 0x{:04x}", h.ether_type.0)
                }
                _ => "non-ip".to_owned(),
            }
        }
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let mut flags = String::new();
            for (set, c) in [
                (t.syn(), 'S'),
                (t.ack(), '.'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
            ] {
                if set {
                    flags.push(c);
                }
            }
            format!(
                "tcp {src}:{} > {dst}:{} [{flags}] len {}",
                t.source_port(),
                t.destination_port(),
                t.payload().len()
            )
        }
        Some(TransportSlice::Udp(u)) => format!(
            "udp {src}:{} > {dst}:{} len {}",
            u.source_port(),
            u.destination_port(),
            u.payload().len()
        ),
        Some(TransportSlice::Icmpv4(i)) => format!("icmp {src} > {dst} type {}", i.type_u8()),
        Some(TransportSlice::Icmpv6(i)) => format!("icmp6 {src} > {dst} type {}", i.type_u8()),
        _ => format!("ip {src} > {dst}"),
    }
}
