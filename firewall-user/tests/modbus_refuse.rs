//! `on_deny: refuse` for Modbus/TCP in the datapath (root): a refused request reaches the
//! server neutralised in place (its function code replaced by an unassigned one), the server's
//! exception is restored for the client, and the connection lives on. Every rewrite is checked
//! byte for byte against the frame that went in, with the TCP checksum recomputed here.

#[path = "common/modbus.rs"]
mod modbus_common;
#[path = "common/rewrite.rs"]
mod rewrite;

use firewall_common::{
    counters::{VERDICT_DROP, VERDICT_PASS, VERDICT_REFUSE, VERDICT_RESET},
    modbus::REFUSALS_MAX,
    reason::Reason,
};
use modbus_common::{adu, datapath, policy, read, run, write_single_register, Conn};
use otfw::datapath::Datapath;
use rewrite::rewritten;

const NEUTRAL: u8 = 60;

fn refusing(extra_rule: &str) -> Datapath {
    datapath(&policy(
        &format!("functions: [read]{extra_rule}"),
        "    on_deny: refuse",
    ))
}

fn conn(dp: &mut Datapath, sport: u16) -> Conn {
    let mut c = Conn::new(sport, 502);
    c.open(dp);
    c
}

/// A server's exception answer to transaction `tid`: function byte `function`, code `code`.
fn exception(tid: u16, function: u8, code: u8) -> Vec<u8> {
    let mut v = tid.to_be_bytes().to_vec();
    v.extend([0, 0, 0, 3, 1, function, code]);
    v
}

fn with_tid(mut a: Vec<u8>, tid: u16) -> Vec<u8> {
    a[..2].copy_from_slice(&tid.to_be_bytes());
    a
}

fn read_answer(tid: u16) -> Vec<u8> {
    let mut v = tid.to_be_bytes().to_vec();
    v.extend([0, 0, 0, 5, 1, 3, 2, 0x03, 0xe8]);
    v
}

#[test]
fn a_refused_request_is_neutralised_and_its_answer_restored() {
    let mut dp = refusing("");
    let mut c = conn(&mut dp, 45000);
    let w = with_tid(write_single_register(0, 1), 7);
    let frame = c.client_frame(c.cseq, "PA", &w);
    let d = run(&mut dp, &frame);
    c.cseq = c.cseq.wrapping_add(w.len() as u32);
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.verdict as u32, VERDICT_REFUSE);
    assert_eq!(d.reason, Reason::ModbusFunctionDenied);
    assert_eq!(d.adus[0].verdict, "refuse");
    rewritten(&frame, &d.frame_out, &[(7, NEUTRAL)]);

    // pymodbus answers an unknown function with 0x80 | its code; the client sees its own.
    let answer = exception(7, 0x80 | NEUTRAL, 1);
    let frame = c.server_frame(c.sseq, "PA", &answer);
    let d = c.reply(&mut dp, &answer);
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.verdict as u32, VERDICT_PASS, "{d:?}");
    rewritten(&frame, &d.frame_out, &[(7, 0x86), (8, 1)]);
    assert_eq!(d.adus[0].direction, "exception");
    assert_eq!((d.adus[0].function, d.adus[0].sub), (6, 1));

    // The connection goes on: a read passes untouched, and its answer too.
    let r = with_tid(read(3, 0, 1), 8);
    let frame = c.client_frame(c.cseq, "PA", &r);
    let d = c.send(&mut dp, &r);
    assert_eq!((d.reason, d.verdict as u32), (Reason::None, VERDICT_PASS));
    assert_eq!(d.frame_out, frame);
    let d = c.reply(&mut dp, &read_answer(8));
    assert_eq!((d.reason, d.verdict as u32), (Reason::None, VERDICT_PASS));
}

#[test]
fn servers_answering_with_0x80_and_other_policy_codes() {
    let mut dp = refusing(", refuse: { function: 0x33, exception: 2 }");
    let mut c = conn(&mut dp, 45100);
    let w = with_tid(adu(1, 16, &[0, 0, 0, 1, 2, 0, 9]), 3);
    let frame = c.client_frame(c.cseq, "PA", &w);
    let d = c.send(&mut dp, &w);
    rewritten(&frame, &d.frame_out, &[(7, 0x33)]);
    // Some servers answer an unknown function with 0x80 alone.
    let answer = exception(3, 0x80, 1);
    let frame = c.server_frame(c.sseq, "PA", &answer);
    let d = c.reply(&mut dp, &answer);
    rewritten(&frame, &d.frame_out, &[(7, 0x90), (8, 2)]);
}

#[test]
fn pipelined_allowed_requests_pass_untouched() {
    for position in 0..3 {
        let mut dp = refusing("");
        let mut c = conn(&mut dp, 45200 + position as u16);
        let mut adus: Vec<Vec<u8>> = (0..3).map(|i| with_tid(read(3, 0, 1), 10 + i)).collect();
        adus[position] = with_tid(write_single_register(0, 1), 10 + position as u16);
        let payload: Vec<u8> = adus.concat();
        let frame = c.client_frame(c.cseq, "PA", &payload);
        let d = c.send(&mut dp, &payload);
        assert_eq!(d.verdict as u32, VERDICT_REFUSE, "position {position}");
        let verdicts: Vec<&str> = d.adus.iter().map(|a| a.verdict).collect();
        let mut expected = ["pass"; 3];
        expected[position] = "refuse";
        assert_eq!(verdicts, expected);
        rewritten(&frame, &d.frame_out, &[(12 * position + 7, NEUTRAL)]);
        // The answers, in one segment, in order: only the refused one is restored.
        let mut answers = Vec::new();
        for i in 0..3u16 {
            if i as usize == position {
                answers.extend(exception(10 + i, 0x80 | NEUTRAL, 1));
            } else {
                answers.extend(read_answer(10 + i));
            }
        }
        let frame = c.server_frame(c.sseq, "PA", &answers);
        let d = c.reply(&mut dp, &answers);
        let at = 11 * position;
        rewritten(&frame, &d.frame_out, &[(at + 7, 0x86), (at + 8, 1)]);
    }
}

#[test]
fn a_function_code_that_already_passed_resets() {
    let mut dp = refusing("");
    let mut c = conn(&mut dp, 45300);
    let w = write_single_register(0, 1);
    // MBAP and function code in one segment: the decision needs the address too.
    expect_pass(c.send(&mut dp, &w[..8]), "split prefix");
    let d = c.send(&mut dp, &w[8..]);
    assert_eq!(d.reason, Reason::ModbusRefusedSplit);
    assert_eq!(d.verdict as u32, VERDICT_RESET);
}

#[test]
fn any_other_answer_to_a_neutralised_request_resets() {
    let cases: [(&str, Vec<u8>); 3] = [
        ("normal response", with_tid(write_single_register(0, 1), 5)),
        ("other exception code", exception(5, 0x80 | NEUTRAL, 4)),
        ("other function", exception(5, 0x83, 1)),
    ];
    for (i, (what, answer)) in cases.into_iter().enumerate() {
        let mut dp = refusing("");
        let mut c = conn(&mut dp, 45400 + i as u16);
        let d = c.send(&mut dp, &with_tid(write_single_register(0, 1), 5));
        assert_eq!(d.verdict as u32, VERDICT_REFUSE);
        let d = c.reply(&mut dp, &answer);
        assert_eq!(d.reason, Reason::ModbusRefusedAnswer, "{what}: {d:?}");
        assert_eq!(d.verdict as u32, VERDICT_RESET, "{what}");
    }
}

#[test]
fn refusals_awaiting_answers_are_bounded() {
    let mut dp = refusing("");
    let mut c = conn(&mut dp, 45500);
    let bound = REFUSALS_MAX as u16;
    for tid in 0..bound {
        let d = c.send(&mut dp, &with_tid(write_single_register(0, 1), tid));
        assert_eq!(d.verdict as u32, VERDICT_REFUSE, "refusal {tid}");
    }
    let d = c.send(&mut dp, &with_tid(write_single_register(0, 1), bound));
    assert_eq!(d.reason, Reason::ModbusRefusalsFull);
    assert_eq!(d.verdict as u32, VERDICT_RESET);
}

#[test]
fn a_retransmitted_refusal_is_neutralised_again() {
    let mut dp = refusing("");
    let mut c = conn(&mut dp, 45600);
    let seq = c.cseq;
    let w = with_tid(write_single_register(0, 1), 9);
    let frame = c.client_frame(seq, "PA", &w);
    c.send(&mut dp, &w);
    let d = run(&mut dp, &frame);
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    rewritten(&frame, &d.frame_out, &[(7, NEUTRAL)]);
    // One answer restores it (one refusal remembered).
    let d = c.reply(&mut dp, &exception(9, 0x80 | NEUTRAL, 1));
    assert_eq!(d.verdict as u32, VERDICT_PASS);
}

#[test]
fn malformed_requests_fall_back_to_drop() {
    let mut dp = refusing("");
    let mut c = conn(&mut dp, 45700);
    let mut bad = read(3, 0, 1);
    bad[2] = 1; // protocol id 256
    let d = c.send(&mut dp, &bad);
    assert_eq!(d.reason, Reason::ModbusBadProtocolId);
    assert_eq!(d.verdict as u32, VERDICT_DROP);
    assert!(d.dropped());
}

fn expect_pass(d: otfw::datapath::Decision, what: &str) {
    assert!(d.passed(), "{what}: {d:?}");
    assert_eq!(d.reason, Reason::None, "{what}");
}
