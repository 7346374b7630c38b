//! TCP-level evasions on inspected flows (root): segments the firewall could frame but the
//! server's stack would not deliver byte for byte as framed are refused with their own reason,
//! never framed, so the stream the inspector follows stays the stream the server reads. The
//! real object through BPF_PROG_TEST_RUN. The EtherNet/IP inspector, which shares the stream
//! layer, is checked in `enip_datapath.rs`.

#[path = "common/frames.rs"]
#[allow(dead_code)]
mod frames;
#[path = "common/mangle.rs"]
mod mangle;
#[path = "common/modbus.rs"]
mod modbus_common;

use firewall_common::{
    counters::{FLOW_ADOPTED, FLOW_CLOSED, VERDICT_DROP, VERDICT_MONITOR},
    reason::Reason,
};
use mangle::{bad_checksum, urgent, with_ttl};
use modbus_common::{datapath, policy, read, run, write_single_register, Conn};
use otfw::datapath::{Datapath, Decision};

fn expect(d: &Decision, reason: Reason, what: &str) {
    assert_eq!(d.reason, reason, "{what}: {d:?}");
    if reason == Reason::None {
        assert!(d.passed(), "{what}: {d:?}");
    } else {
        assert!(d.dropped(), "{what}: {d:?}");
        assert_eq!(
            d.verdict as u32, VERDICT_DROP,
            "{what}: dropped, never reset"
        );
    }
}

fn conn(dp: &mut Datapath, sport: u16) -> Conn {
    let mut c = Conn::new(sport, 502);
    c.open(dp);
    c
}

#[test]
fn urgent_data_is_refused_and_the_stream_does_not_move() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = conn(&mut dp, 41000);
    let r = read(3, 0, 1);
    // The urgent byte would be taken out of the stream: the server would read 11 bytes here.
    let f = urgent(c.client_frame(c.cseq, "PA", &r), 1);
    expect(&run(&mut dp, &f), Reason::TcpUrgent, "URG with a read");
    // An urgent pointer announced on a pure ACK marks a byte still to come.
    let f = urgent(c.client_frame(c.cseq, "A", &[]), 4);
    expect(&run(&mut dp, &f), Reason::TcpUrgent, "URG on a pure ACK");
    expect(&c.send(&mut dp, &r), Reason::None, "the read without URG");
    expect(&c.send(&mut dp, &r), Reason::None, "and the next");
}

#[test]
fn a_bad_checksum_is_refused_and_the_real_bytes_are_framed() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let c = conn(&mut dp, 41100);
    let seq = c.cseq;
    // A decoy the server discards: were it framed, the write sent in its place at the same
    // sequence numbers would be a "retransmission" of an allowed read.
    let decoy = bad_checksum(c.client_frame(seq, "PA", &read(3, 0, 1)));
    expect(&run(&mut dp, &decoy), Reason::TcpBadChecksum, "decoy read");
    let w = c.client_frame(seq, "PA", &write_single_register(0, 1));
    expect(
        &run(&mut dp, &w),
        Reason::ModbusFunctionDenied,
        "the write the server reads",
    );

    let mut c = conn(&mut dp, 41101);
    // A decoy header that would make the firewall skip the next bytes as the rest of an ADU.
    let mut long = read(3, 0, 1);
    long[5] = 200;
    let decoy = bad_checksum(c.client_frame(c.cseq, "PA", &long[..12]));
    expect(
        &run(&mut dp, &decoy),
        Reason::TcpBadChecksum,
        "decoy prefix",
    );
    expect(&c.send(&mut dp, &read(3, 0, 1)), Reason::None, "read");
    // Responses are checked the same way.
    let mut response = vec![0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7];
    let f = bad_checksum(c.server_frame(c.sseq, "PA", &response));
    expect(&run(&mut dp, &f), Reason::TcpBadChecksum, "response");
    response[10] = 8;
    expect(&c.reply(&mut dp, &response), Reason::None, "real response");
}

#[test]
fn a_rst_with_a_bad_checksum_does_not_end_inspection() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = conn(&mut dp, 41200);
    let rst = bad_checksum(c.client_frame(c.cseq, "R", &[]));
    expect(&run(&mut dp, &rst), Reason::TcpBadChecksum, "forged RST");
    // The connection lives on and its framing with it.
    expect(&c.send(&mut dp, &read(3, 0, 1)), Reason::None, "read");
    expect(
        &c.send(&mut dp, &write_single_register(0, 1)),
        Reason::ModbusFunctionDenied,
        "write",
    );
}

#[test]
fn data_on_a_syn_is_refused() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let c = Conn::new(41300, 502);
    let syn = c.client_frame(c.cseq.wrapping_sub(1), "S", &read(3, 0, 1));
    expect(&run(&mut dp, &syn), Reason::TcpDataOnSyn, "SYN with a read");
    let mut c = Conn::new(41300, 502);
    c.open(&mut dp);
    expect(
        &c.send(&mut dp, &read(3, 0, 1)),
        Reason::None,
        "after a plain SYN",
    );
}

#[test]
fn a_lowered_ttl_is_refused() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = conn(&mut dp, 41400);
    // The handshake came with TTL 64; a segment with TTL 1 may expire behind the bridge.
    let low = with_ttl(c.client_frame(c.cseq, "PA", &read(3, 0, 1)), 1);
    expect(&run(&mut dp, &low), Reason::TcpTtlLowered, "TTL 1");
    expect(
        &c.send(&mut dp, &read(3, 0, 1)),
        Reason::None,
        "TTL 64 again",
    );
    // Each side has its own: the server's replies are not held to the client's TTL.
    let reply = with_ttl(
        c.server_frame(c.sseq, "PA", &[0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7]),
        63,
    );
    expect(
        &run(&mut dp, &reply),
        Reason::TcpTtlLowered,
        "server TTL 63",
    );
}

#[test]
fn data_after_a_fin_is_refused() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = conn(&mut dp, 41500);
    expect(&c.send(&mut dp, &read(3, 0, 1)), Reason::None, "read");
    let fin_at = c.cseq;
    let fin = c.client_frame(fin_at, "FA", &[]);
    expect(&run(&mut dp, &fin), Reason::None, "FIN");
    // The server's stream ended at the FIN: bytes after it are discarded.
    let after = c.client_frame(fin_at, "PA", &write_single_register(0, 1));
    expect(
        &run(&mut dp, &after),
        Reason::TcpDataAfterFin,
        "data after FIN",
    );
    let moved = c.client_frame(fin_at.wrapping_add(10), "FA", &[]);
    expect(
        &run(&mut dp, &moved),
        Reason::TcpDataAfterFin,
        "a FIN elsewhere",
    );
    expect(&run(&mut dp, &fin), Reason::None, "the FIN retransmitted");
    // The other side still sends until its own FIN.
    expect(
        &c.reply(&mut dp, &[0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7]),
        Reason::None,
        "response after the client's FIN",
    );

    // A FIN carrying data: the data is the stream's last bytes.
    let c = conn(&mut dp, 41501);
    let r = read(3, 0, 1);
    let last = c.client_frame(c.cseq, "FPA", &r);
    expect(&run(&mut dp, &last), Reason::None, "read with FIN");
    let next = c.client_frame(c.cseq.wrapping_add(r.len() as u32), "PA", &r);
    expect(
        &run(&mut dp, &next),
        Reason::TcpDataAfterFin,
        "read after it",
    );
}

#[test]
fn data_after_a_rst_is_refused_until_a_new_connection() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let c = conn(&mut dp, 41600);
    let rst = c.client_frame(c.cseq, "R", &[]);
    expect(&run(&mut dp, &rst), Reason::None, "RST");
    let d = run(&mut dp, &c.client_frame(c.cseq, "PA", &read(3, 0, 1)));
    expect(&d, Reason::TcpDataAfterRst, "data after the RST");
    let d = run(
        &mut dp,
        &c.server_frame(c.sseq, "PA", &[0, 1, 0, 0, 0, 3, 1, 3, 0]),
    );
    expect(&d, Reason::TcpDataAfterRst, "server data after the RST");
    // A new connection on the same ports starts afresh.
    let mut c = Conn::new(41600, 502);
    c.cseq = 0x1000_0000;
    c.open(&mut dp);
    expect(
        &c.send(&mut dp, &read(3, 0, 1)),
        Reason::None,
        "new connection",
    );
}

#[test]
fn a_flow_its_inspector_reset_is_gone_for_the_next_segment() {
    // The packets of a busy flow are answered from each CPU's memo of the flows it passed in
    // the current clock tick. A RST the inspector accepts ends the flow in that tick: the next
    // segment must be decided as one of no flow (adopted mid-stream, counted), not recalled as
    // the flow that was. Several rounds, so that most run inside one tick.
    let mut dp = datapath(&policy("functions: [read]", ""));
    for round in 0..4u16 {
        let mut c = conn(&mut dp, 41700 + round);
        for _ in 0..3 {
            expect(&c.send(&mut dp, &read(3, 0, 1)), Reason::None, "read");
        }
        let before = dp.counters().expect("reading the counters").flows;
        let rst = c.client_frame(c.cseq, "R", &[]);
        expect(&run(&mut dp, &rst), Reason::None, "RST");
        let d = run(&mut dp, &c.client_frame(c.cseq, "PA", &read(3, 0, 1)));
        expect(&d, Reason::TcpDataAfterRst, "data after the RST");
        let after = dp.counters().expect("reading the counters").flows;
        assert_eq!(
            (
                after[FLOW_CLOSED as usize] - before[FLOW_CLOSED as usize],
                after[FLOW_ADOPTED as usize] - before[FLOW_ADOPTED as usize],
            ),
            (1, 1),
            "round {round}: the RST closes the flow and the next segment finds none"
        );
    }
}

#[test]
fn monitor_mode_records_and_passes_unframed() {
    let mut dp = datapath(&policy("functions: [read]", "    mode: monitor"));
    let c = conn(&mut dp, 41700);
    let f = urgent(c.client_frame(c.cseq, "PA", &read(3, 0, 1)), 1);
    let d = run(&mut dp, &f);
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.reason, Reason::TcpUrgent);
    assert_eq!(d.verdict as u32, VERDICT_MONITOR);
    assert!(d.adus.is_empty(), "not framed: {d:?}");
}

#[test]
fn never_answered_with_a_reset() {
    // A reset for a forged segment would tear down the connection it imitates.
    let mut dp = datapath(&policy("functions: [read]", "    on_deny: reset"));
    let mut c = conn(&mut dp, 41800);
    let f = bad_checksum(c.client_frame(c.cseq, "PA", &read(3, 0, 1)));
    expect(&run(&mut dp, &f), Reason::TcpBadChecksum, "bad checksum");
    expect(
        &c.send(&mut dp, &read(3, 0, 1)),
        Reason::None,
        "connection intact",
    );
}

/// A datapath allowing Modbus reads from `fd00:1::/64` to `fd00:2::/64`, with one connection
/// from port `sport` opened (client stream at 100, server stream at 500); returns the client's
/// direction.
fn ipv6_connection(sport: u16) -> (Datapath, frames::Ip) {
    let yaml = "version: 1
gateway: { bridge: br-test }
defaults: { action: deny, midstream: adopt }
zones:
  ctl: { networks: ['fd00:1::/64'] }
  cell: { networks: ['fd00:2::/64'] }
conduits:
  - name: plc
    from: ctl
    to: cell
    allow:
      - modbus: { functions: [read] }
";
    let mut dp = datapath(yaml);
    let fwd = frames::ip("fd00:1::10", "fd00:2::20");
    let back = fwd.reply();
    let ok = |d: Decision, what: &str| expect(&d, Reason::None, what);
    ok(run(&mut dp, &fwd.tcp(sport, 502, "S", 99, 0, &[])), "SYN");
    ok(
        run(&mut dp, &back.tcp(502, sport, "SA", 499, 100, &[])),
        "SYN-ACK",
    );
    (dp, fwd)
}

#[test]
fn ipv6_checksums_are_verified() {
    let (mut dp, fwd) = ipv6_connection(41900);
    let ok = |d: Decision, what: &str| expect(&d, Reason::None, what);
    ok(
        run(&mut dp, &fwd.tcp(41900, 502, "A", 100, 500, &[])),
        "ACK",
    );
    let r = read(3, 0, 1);
    let good = fwd.tcp(41900, 502, "PA", 100, 500, &r);
    let mut bad = good.clone();
    // Ethernet 14 + IPv6 40, then the TCP checksum at 16.
    bad[14 + 40 + 16] ^= 1;
    expect(&run(&mut dp, &bad), Reason::TcpBadChecksum, "bad");
    ok(run(&mut dp, &good), "good");
    // Odd payload lengths exercise the byte left over after the last 16-bit word.
    let mut odd = read(3, 0, 1);
    odd[5] = 7;
    odd.push(0);
    let d = run(&mut dp, &fwd.tcp(41900, 502, "PA", 112, 500, &odd));
    assert_ne!(d.reason, Reason::TcpBadChecksum, "odd length: {d:?}");
}

#[test]
fn long_segments_are_verified() {
    // Four 259-byte writes and a read: 1,068 bytes of TCP, two full checksum chunks and the
    // 32, 8 and 4 byte blocks of the remainder.
    let mut dp = datapath(&policy("functions: [read, write]", ""));
    let mut many = Vec::new();
    for _ in 0..4 {
        many.extend(modbus_common::write_registers(0, 123));
    }
    many.extend(read(3, 0, 1));
    let mut c = conn(&mut dp, 42000);
    let bad = bad_checksum(c.client_frame(c.cseq, "PA", &many));
    expect(&run(&mut dp, &bad), Reason::TcpBadChecksum, "bad checksum");
    expect(&c.send(&mut dp, &many), Reason::None, "valid checksum");
}

/// Every way the sum of a segment can be split into the checksum's blocks (whole 512-byte
/// chunks, then 256, 128, 64, 32, 16, 8 and 4 bytes, then one to three bytes) is exercised by
/// some payload length here, IPv4 and IPv6: a valid segment is never taken for a bad one, and a
/// single flipped bit anywhere in its payload always is.
#[test]
fn checksums_are_verified_at_every_length() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let c = conn(&mut dp, 42100);
    // Ethernet 14, IPv4 20, TCP 20.
    every_length(&mut dp, "IPv4", 14 + 20 + 20, |payload| {
        c.client_frame(c.cseq, "PA", payload)
    });
    let (mut dp, fwd) = ipv6_connection(41901);
    // Ethernet 14, IPv6 40, TCP 20.
    every_length(&mut dp, "IPv6", 14 + 40 + 20, |payload| {
        fwd.tcp(41901, 502, "PA", 100, 500, payload)
    });
}

/// Sends `frame(payload)` for payloads of every length the checksum's blocks need, valid and
/// with one bit flipped at the payload's start, middle and end (`payload_at`: the payload's
/// offset in the frame).
fn every_length(
    dp: &mut Datapath,
    family: &str,
    payload_at: usize,
    frame: impl Fn(&[u8]) -> Vec<u8>,
) {
    for len in (1..=300usize).chain(500..=530).chain([1023, 1024, 1460]) {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let good = frame(&payload);
        let d = run(dp, &good);
        assert_ne!(
            d.reason,
            Reason::TcpBadChecksum,
            "{family}, {len} bytes: {d:?}"
        );
        for at in [0, len / 2, len - 1] {
            let mut bad = good.clone();
            bad[payload_at + at] ^= 0x10;
            expect(
                &run(dp, &bad),
                Reason::TcpBadChecksum,
                &format!("{family}, {len} bytes, byte {at} flipped"),
            );
        }
    }
}
