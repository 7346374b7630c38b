//! `on_deny: refuse` for EtherNet/IP in the datapath (root): a refused CIP request of
//! SendRRData reaches the target neutralised in place (its service code replaced by a reserved
//! one), the target's "service not supported" error is restored for the client as its own
//! service's error with the rule's general status, and the session lives on. Every rewrite is
//! checked byte for byte against the frame that went in, with the TCP checksum recomputed here.

#[path = "common/enip.rs"]
mod enip_common;
#[path = "common/modbus.rs"]
mod modbus_common;
#[path = "common/rewrite.rs"]
mod rewrite;

use enip_common::*;
use firewall_common::{
    counters::{VERDICT_DROP, VERDICT_PASS, VERDICT_REFUSE, VERDICT_RESET},
    enip::{ENIP_REFUSALS_MAX, MAX_MSP_COUNT},
    reason::Reason,
};
use modbus_common::{datapath, Conn};
use otfw::{
    datapath::{Datapath, Decision},
    policy::enip::{REFUSE_SERVICE, REFUSE_STATUS},
};
use rewrite::rewritten;

/// The CIP service byte of a SendRRData message (null address item first), and the general
/// status of a reply.
const SERVICE: usize = 40;
const STATUS: usize = 42;
const WRITE_TAG: u8 = 0x4D;

fn refusing() -> Datapath {
    datapath(&policy("services: [read]", "    on_deny: refuse"))
}

fn session(dp: &mut Datapath, sport: u16) -> Conn {
    let mut c = Conn::new(sport, 44818);
    c.open(dp);
    let d = c.send(dp, &register_session());
    assert!(d.passed() && d.reason == Reason::None, "{d:?}");
    let d = c.reply(dp, &register_reply(SESSION));
    assert!(d.passed() && d.reason == Reason::None, "{d:?}");
    c
}

/// The target's reply to a SendRRData request: a CIP reply with this service byte and general
/// status, no additional status.
fn reply(service: u8, status: u8) -> Vec<u8> {
    rr(SESSION, &[service, 0, status, 0])
}

/// The target's error for the neutral service.
fn unsupported() -> Vec<u8> {
    reply(0x80 | REFUSE_SERVICE, 0x08)
}

fn send(dp: &mut Datapath, c: &mut Conn, payload: &[u8]) -> (Vec<u8>, Decision) {
    let frame = c.client_frame(c.cseq, "PA", payload);
    (frame, c.send(dp, payload))
}

fn answer(dp: &mut Datapath, c: &mut Conn, payload: &[u8]) -> (Vec<u8>, Decision) {
    let frame = c.server_frame(c.sseq, "PA", payload);
    (frame, c.reply(dp, payload))
}

fn expect_reset(d: &Decision, reason: Reason) {
    assert_eq!(
        (d.reason, d.verdict as u32),
        (reason, VERDICT_RESET),
        "{d:?}"
    );
}

/// The target's error for the neutral service answers the refused top-level write: it is
/// restored for the client. Then the session goes on: a read and its reply pass untouched.
fn restored_then_a_read_passes(dp: &mut Datapath, c: &mut Conn) {
    let (frame, d) = answer(dp, c, &unsupported());
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    rewritten(
        &frame,
        &d.frame_out,
        &[(SERVICE, 0x80 | WRITE_TAG), (STATUS, REFUSE_STATUS)],
    );
    let (frame, d) = send(dp, c, &rr(SESSION, &read_tag("Speed")));
    assert_eq!((d.reason, d.verdict as u32), (Reason::None, VERDICT_PASS));
    assert_eq!(d.frame_out, frame);
    let (frame, d) = answer(dp, c, &reply(0xCC, 0));
    assert_eq!((d.reason, d.verdict as u32), (Reason::None, VERDICT_PASS));
    assert_eq!(d.frame_out, frame);
}

#[test]
fn a_refused_request_is_neutralised_and_its_answer_restored() {
    let mut dp = refusing();
    let mut c = session(&mut dp, 46000);
    let (frame, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("Speed")));
    assert!(d.passed(), "{d:?}");
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::CipServiceDenied, VERDICT_REFUSE)
    );
    assert_eq!(d.cip[1].verdict, "refuse");
    assert_eq!(d.cip[1].reason, "cip_service_denied");
    assert_eq!(d.cip[0].verdict, "pass", "the command itself is allowed");
    rewritten(&frame, &d.frame_out, &[(SERVICE, REFUSE_SERVICE)]);

    restored_then_a_read_passes(&mut dp, &mut c);

    let traffic = dp.enip_traffic().unwrap();
    assert!(
        traffic
            .iter()
            .any(|t| t.service == "write_tag" && t.verdict == "refuse" && t.requests == 1),
        "{traffic:#?}"
    );
    assert!(
        traffic
            .iter()
            .any(|t| t.service == "read_tag" && t.verdict == "pass" && t.requests == 1),
        "{traffic:#?}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for position in 0..3 {
        let mut dp = refusing();
        let mut c = session(&mut dp, 46100 + position as u16);
        let mut msgs: Vec<Vec<u8>> = (0..3).map(|_| rr(SESSION, &read_tag("A"))).collect();
        msgs[position] = rr(SESSION, &write_tag("A"));
        let at = msgs[..position].iter().map(Vec::len).sum::<usize>();
        let (frame, d) = send(&mut dp, &mut c, &msgs.concat());
        assert_eq!(
            d.verdict as u32, VERDICT_REFUSE,
            "position {position}: {d:?}"
        );
        rewritten(&frame, &d.frame_out, &[(at + SERVICE, REFUSE_SERVICE)]);
        // The replies, in one segment, in order: only the refused one's is restored.
        let mut replies: Vec<Vec<u8>> = (0..3).map(|_| reply(0xCC, 0)).collect();
        replies[position] = unsupported();
        let (frame, d) = answer(&mut dp, &mut c, &replies.concat());
        assert_eq!(
            (d.reason, d.verdict as u32),
            (Reason::None, VERDICT_PASS),
            "{d:?}"
        );
        let at = replies[..position].iter().map(Vec::len).sum::<usize>();
        rewritten(
            &frame,
            &d.frame_out,
            &[
                (at + SERVICE, 0x80 | WRITE_TAG),
                (at + STATUS, REFUSE_STATUS),
            ],
        );
    }
}

#[test]
fn answers_that_cannot_be_restored_reset_the_connection() {
    let mut ctx = unsupported();
    ctx[12] ^= 1;
    let rows = [
        ("the write executed", reply(0x80 | WRITE_TAG, 0)),
        (
            "success for the neutral service",
            reply(0x80 | REFUSE_SERVICE, 0),
        ),
        ("another service", reply(0xCC, 0x08)),
        ("another sender context", ctx),
    ];
    for (i, (what, bad)) in rows.into_iter().enumerate() {
        let mut dp = refusing();
        let mut c = session(&mut dp, 46200 + i as u16);
        let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
        assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{what}");
        let (_, d) = answer(&mut dp, &mut c, &bad);
        assert!(
            d.passed(),
            "{what}: the reply becomes a reset to the client: {d:?}"
        );
        expect_reset(&d, Reason::EnipRefusedAnswer);
    }
    // A reply too long to be read while a refused request awaits its answer.
    let mut dp = refusing();
    let mut c = session(&mut dp, 46210);
    send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
    let (_, d) = answer(&mut dp, &mut c, &rr(SESSION, &vec![0xCC; 1100]));
    expect_reset(&d, Reason::EnipRefusedAnswer);
}

#[test]
fn split_requests_and_answers() {
    let msg = rr(SESSION, &write_tag("A"));
    // Split after the service byte: it passed in the first segment, the refusal fails closed.
    let mut dp = refusing();
    let mut c = session(&mut dp, 46300);
    let (_, d) = send(&mut dp, &mut c, &msg[..SERVICE + 1]);
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    let (_, d) = send(&mut dp, &mut c, &msg[SERVICE + 1..]);
    expect_reset(&d, Reason::EnipRefusedSplit);
    // Split before it: the second segment carries it and is neutralised.
    let mut c = session(&mut dp, 46301);
    send(&mut dp, &mut c, &msg[..SERVICE]);
    let (frame, d) = send(&mut dp, &mut c, &msg[SERVICE..]);
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    rewritten(&frame, &d.frame_out, &[(0, REFUSE_SERVICE)]);
    // The answer split the same way: restoring it needs its service byte.
    let a = unsupported();
    let (_, d) = answer(&mut dp, &mut c, &a[..SERVICE + 1]);
    assert_eq!(d.verdict as u32, VERDICT_PASS, "{d:?}");
    let (_, d) = answer(&mut dp, &mut c, &a[SERVICE + 1..]);
    expect_reset(&d, Reason::EnipRefusedSplit);
}

#[test]
fn refusals_awaiting_answers_are_bounded() {
    let mut dp = refusing();
    let mut c = session(&mut dp, 46400);
    for i in 0..ENIP_REFUSALS_MAX {
        let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
        assert_eq!(d.verdict as u32, VERDICT_REFUSE, "refusal {i}: {d:?}");
    }
    let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
    expect_reset(&d, Reason::EnipRefusalsFull);
    // Answered, the table frees its entries.
    let mut c = session(&mut dp, 46401);
    for _ in 0..2 * ENIP_REFUSALS_MAX {
        let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
        assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
        let (_, d) = answer(&mut dp, &mut c, &unsupported());
        assert_eq!(d.verdict as u32, VERDICT_PASS, "{d:?}");
    }
}

#[test]
fn replies_are_ranked_from_the_first_request_seen() {
    let mut dp = refusing();
    // Adopted mid-stream (no handshake seen): the first frame is the reply to a request sent
    // before the firewall followed the connection. It answers nothing refused here, and the
    // next reply is still the first request's.
    let mut c = Conn::new(46450, 44818);
    let (frame, d) = answer(&mut dp, &mut c, &reply(0xCC, 0));
    assert_eq!((d.reason, d.verdict as u32), (Reason::None, VERDICT_PASS));
    assert_eq!(d.frame_out, frame);
    let (frame, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    rewritten(&frame, &d.frame_out, &[(SERVICE, REFUSE_SERVICE)]);
    restored_then_a_read_passes(&mut dp, &mut c);
    // An unsolicited reply on a followed connection shifts nothing either.
    let mut c = session(&mut dp, 46451);
    answer(&mut dp, &mut c, &reply(0xCC, 0));
    let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    restored_then_a_read_passes(&mut dp, &mut c);
}

#[test]
fn other_denials_fall_back_to_drop() {
    let mut dp = refusing();
    let rows = [
        (
            "a packet's entry inside a packet (its reply cannot be located)",
            rr(SESSION, &msp(&[read_tag("A"), msp(&[write_tag("A")])])),
            Reason::CipServiceDenied,
        ),
        (
            "an encapsulation command",
            cancel(),
            Reason::EnipCommandDenied,
        ),
        (
            "a malformed request",
            rr(SESSION, &[0x4C, 9]),
            Reason::CipMalformed,
        ),
    ];
    for (i, (what, msg, reason)) in rows.into_iter().enumerate() {
        let mut c = session(&mut dp, 46500 + i as u16);
        let (_, d) = send(&mut dp, &mut c, &msg);
        assert_eq!(
            (d.reason, d.verdict as u32),
            (reason, VERDICT_DROP),
            "{what}: {d:?}"
        );
        assert!(d.dropped(), "{what}");
    }
}

/// An encapsulation command the rule does not allow (Cancel, 0x73).
fn cancel() -> Vec<u8> {
    encap(0x73, SESSION, &[])
}

#[test]
fn the_policy_sets_the_codes() {
    let mut dp = datapath(&policy(
        "services: [read], refuse: { service: 0x64, status: 0x08 }",
        "    on_deny: refuse",
    ));
    let mut c = session(&mut dp, 46600);
    let (frame, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
    rewritten(&frame, &d.frame_out, &[(SERVICE, 0x64)]);
    let a = reply(0x80 | 0x64, 0x08);
    let (frame, d) = answer(&mut dp, &mut c, &a);
    assert_eq!(d.verdict as u32, VERDICT_PASS, "{d:?}");
    rewritten(
        &frame,
        &d.frame_out,
        &[(SERVICE, 0x80 | WRITE_TAG), (STATUS, 0x08)],
    );
    // A code an object may implement is not a neutral one; status 0 would be success.
    for bad in [
        "refuse: { service: 0x4D }",
        "refuse: { service: 0x80 }",
        "refuse: { status: 0 }",
        "refuse: { code: 1 }",
    ] {
        let yaml = policy(&format!("services: [read], {bad}"), "");
        assert!(!compiles(&yaml), "{bad}");
    }
}

/// A Multiple Service Packet reply (general status 0x1E, embedded service error) of `replies`.
fn msp_reply(replies: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0x8A, 0, 0x1E, 0];
    v.extend(msp_data(replies));
    rr(SESSION, &v)
}

/// Where entry `k` of the Multiple Service Packet whose count is at `data` starts in `msg`
/// (offsets count from the count).
fn msp_entry(msg: &[u8], data: usize, k: usize) -> usize {
    data + u16::from_le_bytes([msg[data + 2 + 2 * k], msg[data + 3 + 2 * k]]) as usize
}

/// The count of a request built by `msp` (service, a 2-word path) and of a reply (service,
/// reserved, general status, no additional status).
const MSP_REQUEST: usize = SERVICE + 6;
const MSP_REPLY: usize = SERVICE + 4;

/// The Multiple Service Packet reply of `entries` answers the refused writes at positions
/// `refused` (their entries the neutral service's error): each is restored, nothing else
/// changes. Then the session goes on: a read passes untouched.
fn msp_restored(dp: &mut Datapath, c: &mut Conn, entries: &[Vec<u8>], refused: &[usize]) {
    let a = msp_reply(entries);
    let (frame, d) = answer(dp, c, &a);
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    let restored: Vec<(usize, u8)> = refused
        .iter()
        .flat_map(|&k| {
            let at = msp_entry(&a, MSP_REPLY, k);
            [(at, 0x80 | WRITE_TAG), (at + 2, REFUSE_STATUS)]
        })
        .collect();
    rewritten(&frame, &d.frame_out, &restored);
    let (frame, d) = send(dp, c, &rr(SESSION, &read_tag("A")));
    assert_eq!((d.reason, d.verdict as u32), (Reason::None, VERDICT_PASS));
    assert_eq!(d.frame_out, frame);
}

#[test]
fn requests_inside_a_multiple_service_packet() {
    let mut dp = refusing();
    let mut c = session(&mut dp, 46700);
    let msg = rr(
        SESSION,
        &msp(&[read_tag("A"), write_tag("B"), read_tag("C"), write_tag("D")]),
    );
    let (frame, d) = send(&mut dp, &mut c, &msg);
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::CipServiceDenied, VERDICT_REFUSE),
        "{d:?}"
    );
    let verdicts: Vec<&str> = d.cip.iter().map(|r| r.verdict).collect();
    assert_eq!(
        verdicts,
        ["pass", "pass", "pass", "refuse", "pass", "refuse"]
    );
    rewritten(
        &frame,
        &d.frame_out,
        &[
            (msp_entry(&msg, MSP_REQUEST, 1), REFUSE_SERVICE),
            (msp_entry(&msg, MSP_REQUEST, 3), REFUSE_SERVICE),
        ],
    );
    let read = vec![0xCC, 0, 0, 0, 0xC3, 0, 1, 0];
    let neutral = vec![0x80 | REFUSE_SERVICE, 0, 0x08, 0];
    msp_restored(
        &mut dp,
        &mut c,
        &[read.clone(), neutral.clone(), read.clone(), neutral.clone()],
        &[1, 3],
    );

    // The entry of the refused request must be the neutral service's error.
    let mut c = session(&mut dp, 46701);
    let msg = rr(SESSION, &msp(&[read_tag("A"), write_tag("B")]));
    send(&mut dp, &mut c, &msg);
    let (_, d) = answer(&mut dp, &mut c, &msp_reply(&[read.clone(), read.clone()]));
    expect_reset(&d, Reason::EnipRefusedAnswer);

    // A packet as full of refused writes as a packet can be (more than a flow keeps entries):
    // one entry holds every position of the same reply and service, restored at each.
    let mut c = session(&mut dp, 46702);
    let n = MAX_MSP_COUNT as usize;
    let msg = rr(SESSION, &msp(&vec![write_tag("B"); n]));
    let (frame, d) = send(&mut dp, &mut c, &msg);
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    let neutralised: Vec<(usize, u8)> = (0..n)
        .map(|k| (msp_entry(&msg, MSP_REQUEST, k), REFUSE_SERVICE))
        .collect();
    rewritten(&frame, &d.frame_out, &neutralised);
    let all: Vec<usize> = (0..n).collect();
    msp_restored(&mut dp, &mut c, &vec![neutral.clone(); n], &all);
    // A packet one entry longer is malformed.
    let mut c = session(&mut dp, 46703);
    let (_, d) = send(
        &mut dp,
        &mut c,
        &rr(SESSION, &msp(&vec![write_tag("B"); n + 1])),
    );
    assert_eq!(d.reason, Reason::CipBadMsp, "{d:?}");

    // Refused requests of more services in one packet than a flow keeps entries.
    let mut c = session(&mut dp, 46704);
    let services = [0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x15];
    assert!(services.len() > ENIP_REFUSALS_MAX);
    let requests: Vec<Vec<u8>> = services
        .iter()
        .map(|&service| req(service, &cat(&[class8(0x64), inst8(1)]), &[]))
        .collect();
    let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &msp(&requests)));
    expect_reset(&d, Reason::EnipRefusalsFull);
}

#[test]
fn retransmissions_are_neutralised_again_and_recorded_once() {
    let mut dp = refusing();
    let mut c = session(&mut dp, 46800);
    // An allowed request re-sent before it is acknowledged: its reply is still the first.
    let (frame, _) = send(&mut dp, &mut c, &rr(SESSION, &read_tag("A")));
    let again = modbus_common::run(&mut dp, &frame);
    assert_eq!(
        (again.reason, again.verdict as u32),
        (Reason::None, VERDICT_PASS)
    );
    answer(&mut dp, &mut c, &reply(0xCC, 0));
    // A refused request re-sent: the same bytes reach the target, one refusal awaits.
    let (frame, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
    rewritten(&frame, &d.frame_out, &[(SERVICE, REFUSE_SERVICE)]);
    let again = modbus_common::run(&mut dp, &frame);
    assert_eq!(again.verdict as u32, VERDICT_REFUSE, "{again:?}");
    assert_eq!(again.frame_out, d.frame_out, "neutralised again");
    let (frame, d) = answer(&mut dp, &mut c, &unsupported());
    rewritten(
        &frame,
        &d.frame_out,
        &[(SERVICE, 0x80 | WRITE_TAG), (STATUS, REFUSE_STATUS)],
    );
    // The next request's reply is not taken for another refusal.
    send(&mut dp, &mut c, &rr(SESSION, &read_tag("A")));
    let (frame, d) = answer(&mut dp, &mut c, &reply(0xCC, 0));
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    assert_eq!(d.frame_out, frame);
}

/// The router's error for an Unconnected Send (general status 0x01, extended status 0x0204:
/// connection request timed out).
fn routing_error() -> Vec<u8> {
    rr(SESSION, &[0xD2, 0, 0x01, 1, 0x04, 0x02])
}

#[test]
fn requests_routed_by_an_unconnected_send() {
    // A write routed by an Unconnected Send: the embedded service byte is neutralised; the
    // target's error comes back as the Unconnected Send's reply and is restored.
    let mut dp = refusing();
    let mut c = session(&mut dp, 46800);
    let msg = rr(SESSION, &unconnected_send(&write_tag("A")));
    let (frame, d) = send(&mut dp, &mut c, &msg);
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::CipServiceDenied, VERDICT_REFUSE),
        "{d:?}"
    );
    let verdicts: Vec<&str> = d.cip.iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts, ["pass", "pass", "refuse"]);
    // The embedded request follows the Unconnected Send's service, path (2 words), priority,
    // timeout ticks and its own size.
    let embedded = SERVICE + 2 + 4 + 4;
    assert_eq!(msg[embedded], WRITE_TAG);
    rewritten(&frame, &d.frame_out, &[(embedded, REFUSE_SERVICE)]);
    restored_then_a_read_passes(&mut dp, &mut c);

    // The router may answer instead, with its own error: that passes as it is, and the
    // refusal is settled.
    let (_, d) = send(&mut dp, &mut c, &msg);
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    let (frame, d) = answer(&mut dp, &mut c, &routing_error());
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    assert_eq!(d.frame_out, frame);
    let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &read_tag("A")));
    assert!(d.passed(), "{d:?}");
    let (frame, d) = answer(&mut dp, &mut c, &reply(0xCC, 0));
    assert_eq!(d.frame_out, frame, "nothing left to restore: {d:?}");

    // A router's error where no Unconnected Send was refused is not an answer to the neutral
    // service: the connection is reset.
    let mut c = session(&mut dp, 46801);
    send(&mut dp, &mut c, &rr(SESSION, &write_tag("A")));
    let (_, d) = answer(&mut dp, &mut c, &routing_error());
    expect_reset(&d, Reason::EnipRefusedAnswer);
}

/// The Multiple Service Packet reply `a` passes with its entry `k`, the target's error for the
/// neutral service, restored as the refused write's.
fn entry_restored(dp: &mut Datapath, c: &mut Conn, a: &[u8], k: usize) {
    let (frame, d) = answer(dp, c, a);
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    let at = msp_entry(a, MSP_REPLY, k);
    rewritten(
        &frame,
        &d.frame_out,
        &[(at, 0x80 | WRITE_TAG), (at + 2, REFUSE_STATUS)],
    );
}

#[test]
fn unconnected_sends_and_multiple_service_packets_nest_both_ways() {
    let read = vec![0xCC, 0, 0, 0, 0xC3, 0, 1, 0];
    let neutral = vec![0x80 | REFUSE_SERVICE, 0, 0x08, 0];

    // An Unconnected Send inside a packet: its entry of the packet's reply is the target's.
    let mut dp = refusing();
    let mut c = session(&mut dp, 46900);
    let msg = rr(
        SESSION,
        &msp(&[read_tag("A"), unconnected_send(&write_tag("B"))]),
    );
    let (frame, d) = send(&mut dp, &mut c, &msg);
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    let embedded = msp_entry(&msg, MSP_REQUEST, 1) + 2 + 4 + 4;
    assert_eq!(msg[embedded], WRITE_TAG);
    rewritten(&frame, &d.frame_out, &[(embedded, REFUSE_SERVICE)]);
    let a = msp_reply(&[read.clone(), neutral.clone()]);
    entry_restored(&mut dp, &mut c, &a, 1);

    // A packet inside an Unconnected Send: the Unconnected Send's reply is the packet's.
    let mut c = session(&mut dp, 46901);
    let msg = rr(
        SESSION,
        &unconnected_send(&msp(&[write_tag("B"), read_tag("A")])),
    );
    let (frame, d) = send(&mut dp, &mut c, &msg);
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    let packet = SERVICE + 2 + 4 + 4;
    assert_eq!(msg[packet], 0x0A);
    let count = packet + 6;
    let write = msp_entry(&msg, count, 0);
    assert_eq!(msg[write], WRITE_TAG);
    rewritten(&frame, &d.frame_out, &[(write, REFUSE_SERVICE)]);
    let a = msp_reply(&[neutral.clone(), read.clone()]);
    entry_restored(&mut dp, &mut c, &a, 0);
}

/// `otfw replay` of a capture in which the target executed two writes the policy refuses (one
/// top-level, one inside a Multiple Service Packet): their captured replies are replaced by the
/// target's error for the neutral service, which the datapath restores, and the session goes
/// on with the rest of the server's sequence numbers moved.
#[test]
fn replay_answers_refused_requests_as_the_target_would() {
    let mut c = Conn::new(46800, 44818);
    let mut frames = Vec::new();
    let client = |c: &mut Conn, payload: &[u8], frames: &mut Vec<Vec<u8>>| {
        frames.push(c.client_frame(c.cseq, "PA", payload));
        c.cseq = c.cseq.wrapping_add(payload.len() as u32);
    };
    let server = |c: &mut Conn, payload: &[u8], frames: &mut Vec<Vec<u8>>| {
        frames.push(c.server_frame(c.sseq, "PA", payload));
        c.sseq = c.sseq.wrapping_add(payload.len() as u32);
    };
    frames.push(c.client_frame(c.cseq.wrapping_sub(1), "S", &[]));
    frames.push(c.server_frame(c.sseq.wrapping_sub(1), "SA", &[]));
    client(&mut c, &register_session(), &mut frames);
    server(&mut c, &register_reply(SESSION), &mut frames);
    // The write succeeded, with 1 word of additional status: 2 bytes longer than the error.
    client(&mut c, &rr(SESSION, &write_tag("B")), &mut frames);
    server(
        &mut c,
        &rr(SESSION, &[0xCD, 0, 0, 1, 0x11, 0x22]),
        &mut frames,
    );
    let read = vec![0xCC, 0, 0, 0, 0xC3, 0, 1, 0];
    client(
        &mut c,
        &rr(SESSION, &msp(&[read_tag("A"), write_tag("B")])),
        &mut frames,
    );
    let mut msp_ok = vec![0x8A, 0, 0, 0];
    msp_ok.extend(msp_data(&[read.clone(), vec![0xCD, 0, 0, 0]]));
    server(&mut c, &rr(SESSION, &msp_ok), &mut frames);
    client(&mut c, &rr(SESSION, &read_tag("A")), &mut frames);
    server(&mut c, &rr(SESSION, &read), &mut frames);
    frames.push(c.client_frame(c.cseq, "A", &[]));

    let dir = std::env::temp_dir();
    let (captured, written) = (
        dir.join(format!("otfw-enip-replay-{}.pcap", std::process::id())),
        dir.join(format!("otfw-enip-replay-{}-out.pcap", std::process::id())),
    );
    let mut w = otfw::capture::Writer::create(&captured).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(std::time::Duration::from_millis(i as u64), f)
            .unwrap();
    }
    w.finish().unwrap();
    let (loaded, diagnostics) =
        otfw::policy::check_str("p.yaml", &policy("services: [read]", "    on_deny: refuse"));
    let compiled = loaded
        .unwrap_or_else(|| panic!("{diagnostics:#?}"))
        .compiled;
    let mut out = Vec::new();
    let summary = otfw::replay::replay(
        &compiled,
        std::slice::from_ref(&captured),
        otfw::offload::Checksums::Repair,
        Some(&written),
        &mut out,
    )
    .unwrap();
    let forwarded = otfw::capture::frames(&written).unwrap();
    let _ = (
        std::fs::remove_file(&captured),
        std::fs::remove_file(&written),
    );
    let records: Vec<serde_json::Value> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let field = |i: usize, f: &str| records[i][f].as_str().unwrap_or("").to_owned();
    let verdicts: Vec<String> = (0..frames.len()).map(|i| field(i, "verdict")).collect();
    assert_eq!(
        verdicts,
        [
            "pass", "pass", "pass", "pass", "refuse", "pass", "refuse", "pass", "pass", "pass",
            "pass"
        ],
        "{records:#?}"
    );
    let answers: Vec<String> = (0..frames.len()).map(|i| field(i, "answer")).collect();
    assert_eq!(
        answers,
        [
            "",
            "",
            "",
            "",
            "",
            "substituted",
            "",
            "substituted",
            "",
            "",
            ""
        ]
    );
    let shifted: Vec<String> = (0..frames.len()).map(|i| field(i, "sequence")).collect();
    assert_eq!(
        shifted,
        ["", "", "", "", "", "", "shifted", "shifted", "shifted", "shifted", "shifted"]
    );
    assert_eq!((summary.answers_substituted, summary.dropped), (2, 0));

    // What the client gets: its own service's error with the rule's status, the packet's
    // other entry as the target sent it.
    let payload = |frame: &[u8]| match etherparse::SlicedPacket::from_ethernet(frame)
        .unwrap()
        .transport
    {
        Some(etherparse::TransportSlice::Tcp(t)) => t.payload().to_vec(),
        _ => panic!("not TCP"),
    };
    let restored = payload(&forwarded[5]);
    assert_eq!(
        restored,
        rr(SESSION, &[0x80 | WRITE_TAG, 0, REFUSE_STATUS, 0])
    );
    let mut msp_refused = vec![0x8A, 0, 0x1E, 0];
    msp_refused.extend(msp_data(&[
        read.clone(),
        vec![0x80 | WRITE_TAG, 0, REFUSE_STATUS, 0],
    ]));
    assert_eq!(payload(&forwarded[7]), rr(SESSION, &msp_refused));
    assert_eq!(payload(&forwarded[9]), rr(SESSION, &read));
}

/// Connected explicit messaging: the CIP request of a SendUnitData message follows the
/// connected address item and the connected data item's sequence count.
const UNIT_SERVICE: usize = 46;
const UNIT_STATUS: usize = 48;

/// A session with a class 3 connection opened by Forward_Open (O->T id `O2T`).
fn connection(dp: &mut Datapath, sport: u16) -> Conn {
    let mut c = session(dp, sport);
    let (_, d) = send(dp, &mut c, &rr(SESSION, &forward_open(7, 3, false)));
    assert!(d.passed() && d.reason == Reason::None, "{d:?}");
    let (_, d) = answer(dp, &mut c, &forward_open_reply(SESSION, 7, O2T, T2O));
    assert!(d.passed() && d.reason == Reason::None, "{d:?}");
    c
}
const O2T: u32 = 0x5500_0007;
const T2O: u32 = 0x7700_0007;

#[test]
fn connected_requests_are_answered_by_their_sequence_count() {
    let mut dp = refusing();
    let mut c = connection(&mut dp, 47000);
    // A read, a refused write and a read pipelined on the connection.
    let msgs = [
        unit(SESSION, O2T, 10, &read_tag("A")),
        unit(SESSION, O2T, 11, &write_tag("A")),
        unit(SESSION, O2T, 12, &read_tag("B")),
    ];
    let (frame, d) = send(&mut dp, &mut c, &msgs.concat());
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::CipServiceDenied, VERDICT_REFUSE),
        "{d:?}"
    );
    let write = msgs[0].len() + UNIT_SERVICE;
    rewritten(&frame, &d.frame_out, &[(write, REFUSE_SERVICE)]);

    // The replies echo the sequence counts on the T->O connection: the one echoing 11 is the
    // refused write's, and only it is restored.
    let replies = [
        unit(SESSION, T2O, 10, &[0xCC, 0, 0, 0, 0xC3, 0, 1, 0]),
        unit(SESSION, T2O, 11, &[0x80 | REFUSE_SERVICE, 0, 0x08, 0]),
        unit(SESSION, T2O, 12, &[0xCC, 0, 0, 0, 0xC3, 0, 2, 0]),
    ];
    let (frame, d) = answer(&mut dp, &mut c, &replies.concat());
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    let at = replies[0].len();
    rewritten(
        &frame,
        &d.frame_out,
        &[
            (at + UNIT_SERVICE, 0x80 | WRITE_TAG),
            (at + UNIT_STATUS, REFUSE_STATUS),
        ],
    );
    // SendRRData on the same session keeps its own order: a refused write there is matched to
    // the next SendRRData reply, whatever connected replies come between.
    let (_, d) = send(&mut dp, &mut c, &rr(SESSION, &write_tag("C")));
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    let (_, d) = send(&mut dp, &mut c, &unit(SESSION, O2T, 13, &read_tag("A")));
    assert_eq!(d.verdict as u32, VERDICT_PASS, "{d:?}");
    let (frame, d) = answer(
        &mut dp,
        &mut c,
        &unit(SESSION, T2O, 13, &[0xCC, 0, 0, 0, 0xC3, 0, 1, 0]),
    );
    assert_eq!(d.frame_out, frame, "{d:?}");
    let (frame, d) = answer(&mut dp, &mut c, &unsupported());
    rewritten(
        &frame,
        &d.frame_out,
        &[(SERVICE, 0x80 | WRITE_TAG), (STATUS, REFUSE_STATUS)],
    );

    // A write inside a packet on the connection: its entry of the packet's reply.
    let msg = unit(SESSION, O2T, 14, &msp(&[read_tag("A"), write_tag("B")]));
    let (frame, d) = send(&mut dp, &mut c, &msg);
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    let count = UNIT_SERVICE + 6;
    rewritten(
        &frame,
        &d.frame_out,
        &[(msp_entry(&msg, count, 1), REFUSE_SERVICE)],
    );
    let mut packet = vec![0x8A, 0, 0x1E, 0];
    packet.extend(msp_data(&[
        vec![0xCC, 0, 0, 0, 0xC3, 0, 1, 0],
        vec![0x80 | REFUSE_SERVICE, 0, 0x08, 0],
    ]));
    let a = unit(SESSION, T2O, 14, &packet);
    let (frame, d) = answer(&mut dp, &mut c, &a);
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::None, VERDICT_PASS),
        "{d:?}"
    );
    let entry = msp_entry(&a, UNIT_SERVICE + 4, 1);
    rewritten(
        &frame,
        &d.frame_out,
        &[(entry, 0x80 | WRITE_TAG), (entry + 2, REFUSE_STATUS)],
    );

    // The reply echoing a refused write's sequence count must be the neutral service's error.
    let (_, d) = send(&mut dp, &mut c, &unit(SESSION, O2T, 15, &write_tag("A")));
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    let (_, d) = answer(&mut dp, &mut c, &unit(SESSION, T2O, 15, &[0xCD, 0, 0, 0]));
    expect_reset(&d, Reason::EnipRefusedAnswer);
}

#[test]
fn a_forward_open_the_rule_does_not_allow_is_refused_in_band() {
    // Reads by tag only: no connections may be opened.
    let mut dp = datapath(&policy("services: [read_tag]", "    on_deny: refuse"));
    let mut c = session(&mut dp, 47100);
    let (frame, d) = send(&mut dp, &mut c, &rr(SESSION, &forward_open(9, 3, false)));
    assert_eq!(
        (d.reason, d.verdict as u32),
        (Reason::CipServiceDenied, VERDICT_REFUSE),
        "{d:?}"
    );
    rewritten(&frame, &d.frame_out, &[(SERVICE, REFUSE_SERVICE)]);
    // The target's error comes back as the Forward_Open's, privilege violation.
    let (frame, d) = answer(&mut dp, &mut c, &unsupported());
    assert_eq!(d.verdict as u32, VERDICT_PASS, "{d:?}");
    rewritten(
        &frame,
        &d.frame_out,
        &[(SERVICE, 0x80 | 0x54), (STATUS, REFUSE_STATUS)],
    );
    // No connection was opened: connected traffic on the ids a reply would have given is not
    // known, and the session goes on.
    let (_, d) = send(
        &mut dp,
        &mut c,
        &unit(SESSION, 0x5500_0009, 1, &read_tag("A")),
    );
    assert_eq!(d.reason, Reason::EnipUnknownConnection, "{d:?}");
    let mut c = session(&mut dp, 47101);
    let (frame, d) = send(&mut dp, &mut c, &rr(SESSION, &read_tag("A")));
    assert_eq!((d.reason, d.verdict as u32), (Reason::None, VERDICT_PASS));
    assert_eq!(d.frame_out, frame);
}
