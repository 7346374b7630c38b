//! Modbus/TCP inspection in the datapath (root): the real object through BPF_PROG_TEST_RUN,
//! one table row or scenario per case of issue 3.

#[path = "common/modbus.rs"]
mod modbus_common;

use firewall_common::reason::Reason;
use modbus_common::*;

#[test]
fn loads_within_the_verifier_budget() {
    let dp = datapath(&policy("functions: [read]", ""));
    let main = dp.verified_instructions().unwrap();
    let modbus = dp.modbus_verified_instructions().unwrap();
    println!("verified instructions: otfw {main}, otfw_modbus {modbus}");
    assert!(main < 1_000_000 && modbus < 1_000_000);
}

#[test]
fn smoke() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = Conn::new(40000, 502);
    c.open(&mut dp);
    let d = c.send(&mut dp, &read(3, 0, 10));
    assert!(d.passed(), "{d:?}");
    let d = c.send(&mut dp, &write_single_register(0, 10));
    assert_eq!(d.reason, Reason::ModbusFunctionDenied, "{d:?}");
}

/// A fresh connection on `dp` (new source port each time), opened with its handshake.
fn conn(dp: &mut otfw::datapath::Datapath, sport: u16) -> Conn {
    let mut c = Conn::new(sport, 502);
    c.open(dp);
    c
}

fn expect(d: &otfw::datapath::Decision, reason: Reason, what: &str) {
    assert_eq!(d.reason, reason, "{what}: {d:?}");
    if reason == Reason::None {
        assert!(d.passed(), "{what}: {d:?}");
    } else {
        assert!(d.dropped(), "{what}: {d:?}");
    }
}

/// Every function code 1..127 against each preset, one connection per request.
#[test]
fn function_codes_by_preset() {
    let read: &[u8] = &[1, 2, 3, 4, 20, 24, 43];
    let write: &[u8] = &[5, 6, 15, 16, 21, 22, 23];
    let diagnostics: &[u8] = &[7, 8, 11, 12, 17];
    let program: &[u8] = &[40, 42, 90, 125, 126];
    let all: Vec<u8> = (1..=127).collect();
    for (preset, allowed) in [
        ("read", read),
        ("write", write),
        ("diagnostics", diagnostics),
        ("program", program),
        ("all", &all[..]),
    ] {
        let mut dp = datapath(&policy(&format!("functions: [{preset}]"), ""));
        for (i, function) in (1..=127u8).enumerate() {
            let mut c = conn(&mut dp, 20000 + i as u16);
            let d = c.send(&mut dp, &request(function));
            let want = if allowed.contains(&function) {
                Reason::None
            } else {
                Reason::ModbusFunctionDenied
            };
            expect(&d, want, &format!("preset {preset}, function {function}"));
            assert_eq!(d.adus.len(), 1);
            assert_eq!(d.adus[0].function, function);
        }
    }
    // Exception codes are never requests, whatever the rule.
    let mut dp = datapath(&policy("functions: [all]", ""));
    let mut c = conn(&mut dp, 30000);
    let d = c.send(&mut dp, &adu(1, 0x83, &[0, 0, 0, 1]));
    expect(&d, Reason::ModbusFunctionDenied, "function 131");
}

#[test]
fn functions_by_name_and_number() {
    let mut dp = datapath(&policy(
        "functions: [read_holding_registers, 6, write_multiple_registers]",
        "",
    ));
    for (i, (function, want)) in [
        (3, Reason::None),
        (6, Reason::None),
        (16, Reason::None),
        (4, Reason::ModbusFunctionDenied),
        (5, Reason::ModbusFunctionDenied),
        (90, Reason::ModbusFunctionDenied),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = conn(&mut dp, 21000 + i as u16);
        expect(
            &c.send(&mut dp, &request(function)),
            want,
            &format!("fc {function}"),
        );
    }
}

#[test]
fn diagnostics_sub_functions_and_mei_types() {
    /// A rule and its rows: (request, expected reason).
    type Case<'a> = (&'a str, &'a [(Vec<u8>, Reason)]);
    let cases: &[Case] = &[
        (
            "functions: [diagnostics]",
            &[
                (diagnostics(0), Reason::None),
                (diagnostics(10), Reason::None),
                (diagnostics(1), Reason::ModbusSubFunctionDenied),
                (diagnostics(4), Reason::ModbusSubFunctionDenied),
                (diagnostics(300), Reason::None),
            ],
        ),
        (
            "functions: [diagnostics, \"8/1\"]",
            &[
                (diagnostics(1), Reason::None),
                (diagnostics(4), Reason::ModbusSubFunctionDenied),
            ],
        ),
        (
            "functions: [\"8/0\"]",
            &[
                (diagnostics(0), Reason::None),
                (diagnostics(2), Reason::ModbusSubFunctionDenied),
                (diagnostics(300), Reason::ModbusSubFunctionDenied),
            ],
        ),
        (
            "functions: [all]",
            &[
                (diagnostics(1), Reason::None),
                (diagnostics(4), Reason::None),
            ],
        ),
        (
            "functions: [read]",
            &[
                (mei(14), Reason::None),
                (mei(13), Reason::ModbusSubFunctionDenied),
                (diagnostics(0), Reason::ModbusFunctionDenied),
            ],
        ),
        (
            "functions: [encapsulated_interface_transport]",
            &[(mei(13), Reason::None), (mei(14), Reason::None)],
        ),
        (
            "functions: [\"43/13\"]",
            &[
                (mei(13), Reason::None),
                (mei(14), Reason::ModbusSubFunctionDenied),
            ],
        ),
    ];
    for (rule, rows) in cases {
        let mut dp = datapath(&policy(rule, ""));
        for (i, (req, want)) in rows.iter().enumerate() {
            let mut c = conn(&mut dp, 22000 + i as u16);
            expect(&c.send(&mut dp, req), *want, &format!("{rule}: row {i}"));
        }
    }
}

#[test]
fn unit_ids() {
    let mut dp = datapath(&policy("functions: [read], units: [1, 255]", ""));
    for (i, (unit, want)) in [
        (1, Reason::None),
        (255, Reason::None),
        (0, Reason::ModbusUnitDenied),
        (2, Reason::ModbusUnitDenied),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = conn(&mut dp, 23000 + i as u16);
        let d = c.send(&mut dp, &adu(unit, 3, &[0, 0, 0, 1]));
        expect(&d, want, &format!("unit {unit}"));
    }
}

#[test]
fn address_range_edges() {
    let rule =
        "functions: [read, write], addresses: { holding_registers: [\"100-199\", \"300-309\"], \
                coils: [\"0-15\"] }";
    let mut dp = datapath(&policy(rule, ""));
    let denied = Reason::ModbusAddressDenied;
    let rows: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("first allowed", read(3, 100, 1), Reason::None),
        ("last allowed", read(3, 199, 1), Reason::None),
        ("whole range", read(3, 100, 100), Reason::None),
        ("one before", read(3, 99, 1), denied),
        ("one past", read(3, 200, 1), denied),
        ("straddling the end", read(3, 190, 11), denied),
        ("straddling the start", read(3, 99, 2), denied),
        ("spanning two ranges", read(3, 150, 125), denied),
        ("second range", read(3, 300, 10), Reason::None),
        (
            "input registers unrestricted",
            read(4, 5000, 10),
            Reason::None,
        ),
        ("coils inside", read(1, 0, 16), Reason::None),
        ("coils straddling", read(1, 8, 9), denied),
        (
            "discrete inputs unrestricted",
            read(2, 60000, 100),
            Reason::None,
        ),
        (
            "write single register inside",
            write_single_register(199, 1),
            Reason::None,
        ),
        (
            "write single register outside",
            write_single_register(200, 1),
            denied,
        ),
        (
            "write single coil outside",
            write_single_coil(16, 0),
            denied,
        ),
        (
            "write registers straddling",
            write_registers(195, 10),
            denied,
        ),
        ("write coils inside", write_coils(0, 16), Reason::None),
        (
            "mask write outside",
            adu(1, 22, &[0, 50, 0xff, 0xff, 0, 0]),
            denied,
        ),
        (
            "fc23 both inside",
            read_write(100, 10, 300, 2),
            Reason::None,
        ),
        ("fc23 write outside", read_write(100, 10, 250, 2), denied),
        ("fc23 read outside", read_write(0, 10, 300, 2), denied),
    ];
    for (i, (what, req, want)) in rows.into_iter().enumerate() {
        let mut c = conn(&mut dp, 24000 + i as u16);
        expect(&c.send(&mut dp, &req), want, what);
    }
}

#[test]
fn quantity_limits_and_byte_counts() {
    let mut dp = datapath(&policy("functions: [all]", ""));
    let bad = Reason::ModbusBadQuantity;
    let mut wrong_count = write_registers(0, 2);
    wrong_count[12] = 5;
    let mut coil_count = write_coils(0, 9);
    coil_count[12] = 1;
    let rows: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("read coils 2000", read(1, 0, 2000), Reason::None),
        ("read coils 2001", read(1, 0, 2001), bad),
        ("read discrete inputs 0", read(2, 0, 0), bad),
        ("read holding 125", read(3, 0, 125), Reason::None),
        ("read holding 126", read(3, 0, 126), bad),
        ("read input 0", read(4, 0, 0), bad),
        ("write coils 1968", write_coils(0, 1968), Reason::None),
        ("write coils 1969", write_coils(0, 1969), bad),
        ("write registers 123", write_registers(0, 123), Reason::None),
        ("write registers 124", adu(1, 16, &[0, 0, 0, 124, 248]), bad),
        ("write registers byte count", wrong_count, bad),
        ("write coils byte count", coil_count, bad),
        ("fc23 write 121", read_write(0, 125, 0, 121), Reason::None),
        (
            "fc23 write 122",
            adu(1, 23, &[0, 0, 0, 1, 0, 0, 0, 122, 244]),
            bad,
        ),
        ("fc23 read 126", read_write(0, 126, 0, 1), bad),
        (
            "write single coil 0x1234",
            write_single_coil(0, 0x1234),
            Reason::ModbusBadValue,
        ),
    ];
    for (i, (what, req, want)) in rows.into_iter().enumerate() {
        let mut c = conn(&mut dp, 25000 + i as u16);
        expect(&c.send(&mut dp, &req), want, what);
    }
}

#[test]
fn sanity_protocol_id_length_trailing_bytes() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut bad_protocol = read(3, 0, 1);
    bad_protocol[3] = 1;
    let mut long = read(3, 0, 1);
    long[5] = 10;
    long.extend_from_slice(&[0, 0, 0, 0]);
    let mut short = read(3, 0, 1);
    short[5] = 2;
    let mut trailing = read(3, 0, 1);
    trailing.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let mut huge = read(3, 0, 1);
    huge[4] = 1;
    let rows: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("protocol id 1", bad_protocol, Reason::ModbusBadProtocolId),
        (
            "length longer than the layout",
            long,
            Reason::ModbusBadLength,
        ),
        (
            "length shorter than the layout",
            short,
            Reason::ModbusBadLength,
        ),
        ("length above 254", huge, Reason::ModbusBadLength),
        ("trailing bytes", trailing, Reason::ModbusTrailingBytes),
        (
            "not modbus",
            b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n".to_vec(),
            Reason::ModbusBadProtocolId,
        ),
    ];
    for (i, (what, req, want)) in rows.into_iter().enumerate() {
        let mut c = conn(&mut dp, 26000 + i as u16);
        expect(&c.send(&mut dp, &req), want, what);
        // The connection is blocked from now on (`on_deny: drop`).
        expect(
            &c.send(&mut dp, &read(3, 0, 1)),
            Reason::ModbusBlocked,
            what,
        );
    }
}

#[test]
fn pipelined_requests_with_a_denied_one() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let r = read(3, 0, 1);
    let w = write_single_register(0, 1);
    for (i, layout) in [[&w, &r, &r], [&r, &w, &r], [&r, &r, &w]]
        .iter()
        .enumerate()
    {
        let mut c = conn(&mut dp, 27000 + i as u16);
        let payload: Vec<u8> = layout.iter().flat_map(|a| a.iter().copied()).collect();
        let d = c.send(&mut dp, &payload);
        expect(&d, Reason::ModbusFunctionDenied, &format!("write at {i}"));
        assert_eq!(d.adus.last().unwrap().function, 6);
        assert_eq!(d.adus.len(), i + 1, "framing stops at the denied ADU");
    }
    let mut c = conn(&mut dp, 27010);
    let all_reads: Vec<u8> = (0..32).flat_map(|a| read(3, a, 1)).collect();
    let d = c.send(&mut dp, &all_reads);
    expect(&d, Reason::None, "32 reads");
    assert_eq!(d.adus.len(), 32);
    assert!(d
        .adus
        .iter()
        .all(|a| a.verdict == "pass" && a.function == 3));
    let mut c = conn(&mut dp, 27011);
    let too_many: Vec<u8> = (0..33).flat_map(|a| read(3, a, 1)).collect();
    expect(
        &c.send(&mut dp, &too_many),
        Reason::ModbusTooManyAdus,
        "33 reads",
    );
}

#[test]
fn one_byte_per_segment() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = conn(&mut dp, 28000);
    let mut reqs = read(3, 7, 2);
    reqs.extend(read(4, 1, 1));
    for (i, byte) in reqs.iter().enumerate() {
        let d = c.send(&mut dp, &[*byte]);
        expect(&d, Reason::None, &format!("read byte {i}"));
        // The decision falls on the byte that completes the request prefix.
        let decided = i == 11 || i == 23;
        assert_eq!(d.adus.len(), decided as usize, "byte {i}");
    }
    let w = write_registers(0, 2);
    for (i, byte) in w.iter().enumerate() {
        let d = c.send(&mut dp, &[*byte]);
        if i < 12 {
            expect(&d, Reason::None, &format!("write prefix byte {i}"));
        } else {
            expect(
                &d,
                Reason::ModbusFunctionDenied,
                "the byte completing the prefix",
            );
            break;
        }
    }
}

#[test]
fn mbap_header_split() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    for (i, cut) in [1usize, 3, 4, 6, 7, 8, 11].into_iter().enumerate() {
        let mut c = conn(&mut dp, 29000 + i as u16);
        let r = read(3, 0, 1);
        expect(&c.send(&mut dp, &r[..cut]), Reason::None, "first part");
        let mut rest = r[cut..].to_vec();
        rest.extend(read(3, 1, 1));
        let d = c.send(&mut dp, &rest);
        expect(&d, Reason::None, &format!("cut at {cut}"));
        assert_eq!(d.adus.len(), 2);
        let w = write_single_coil(0, 0);
        expect(
            &c.send(&mut dp, &w[..cut]),
            Reason::None,
            "write first part",
        );
        expect(
            &c.send(&mut dp, &w[cut..]),
            Reason::ModbusFunctionDenied,
            &format!("write cut at {cut}"),
        );
    }
    // A header split whose first part already cannot be MBAP.
    let mut c = conn(&mut dp, 29100);
    expect(
        &c.send(&mut dp, &[0, 1, 0, 9]),
        Reason::ModbusTrailingBytes,
        "bad partial",
    );
}

#[test]
fn retransmissions_and_reordering() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    // A retransmission of a dropped (denied) segment is dropped again.
    let mut c = conn(&mut dp, 31000);
    let seq = c.cseq;
    let w = write_single_register(0, 1);
    expect(&c.send(&mut dp, &w), Reason::ModbusFunctionDenied, "write");
    let again = c.client_frame(seq, "PA", &w);
    expect(
        &run(&mut dp, &again),
        Reason::ModbusBlocked,
        "retransmitted write",
    );

    // An identical retransmission of a passed segment is re-inspected and passes.
    let mut c = conn(&mut dp, 31001);
    let seq = c.cseq;
    let r = read(3, 0, 1);
    expect(&c.send(&mut dp, &r), Reason::None, "read");
    expect(
        &run(&mut dp, &c.client_frame(seq, "PA", &r)),
        Reason::None,
        "same read again",
    );
    // The same range with different bytes: a write in place of the read.
    let swapped = c.client_frame(seq, "PA", &write_single_register(0, 1));
    expect(
        &run(&mut dp, &swapped),
        Reason::ModbusFunctionDenied,
        "write in its place",
    );

    // Overlapping retransmission carrying different bytes past the old data.
    let mut c = conn(&mut dp, 31002);
    let seq = c.cseq;
    let r = read(3, 0, 1);
    expect(&c.send(&mut dp, &r), Reason::None, "read");
    let mut overlap = r[6..].to_vec();
    overlap.extend(write_single_register(0, 1));
    let f = c.client_frame(seq + 6, "PA", &overlap);
    expect(
        &run(&mut dp, &f),
        Reason::ModbusRetransmission,
        "overlap, not acknowledged",
    );
    // Once the server acknowledged the old part, only the new part is framed: the write.
    let ack = c.server_frame(c.sseq, "A", &[]);
    let ack = {
        let mut a = ack;
        // ack number = client's next sequence number (the read was received)
        let at = 14 + 20 + 8;
        a[at..at + 4].copy_from_slice(&c.cseq.to_be_bytes());
        fix_tcp_checksum(&mut a);
        a
    };
    expect(&run(&mut dp, &ack), Reason::None, "server ACK");
    expect(
        &run(&mut dp, &f),
        Reason::ModbusFunctionDenied,
        "overlap, acknowledged",
    );

    // A segment from the future (an earlier one missing) is dropped; in order it passes.
    let mut c = conn(&mut dp, 31003);
    let seq = c.cseq;
    let first = read(3, 0, 1);
    let second = read(3, 1, 1);
    let later = c.client_frame(seq + first.len() as u32, "PA", &second);
    expect(&run(&mut dp, &later), Reason::ModbusOutOfOrder, "gap");
    expect(&c.send(&mut dp, &first), Reason::None, "first");
    expect(&run(&mut dp, &later), Reason::None, "second, now in order");

    // Sequence numbers wrap: the connection starts just below 2^32 (see Conn::new).
    let mut c = conn(&mut dp, 31004);
    for i in 0..4 {
        expect(
            &c.send(&mut dp, &read(3, i, 1)),
            Reason::None,
            "across the wrap",
        );
    }
}

/// Sets the TCP checksum of an IPv4 frame built by `segment` after editing it.
fn fix_tcp_checksum(frame: &mut [u8]) {
    let sum = {
        let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(tcp))) =
            (&p.net, &p.transport)
        else {
            panic!("not tcp")
        };
        tcp.to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap()
    };
    frame[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn midstream_flows_sync_on_whole_adus() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let c = Conn::new(32000, 502);
    let mut two = read(3, 0, 1);
    two.extend(read(3, 5, 2));
    let d = run(&mut dp, &c.client_frame(1000, "PA", &two));
    expect(&d, Reason::None, "two whole ADUs");
    let d = run(&mut dp, &c.client_frame(1024, "PA", &read(3, 0, 1)[..5]));
    expect(&d, Reason::None, "synced: a split header is followed");
    let c = Conn::new(32001, 502);
    let d = run(&mut dp, &c.client_frame(1000, "PA", &read(3, 0, 1)[..9]));
    expect(&d, Reason::ModbusUnframed, "part of an ADU");
    let d = run(
        &mut dp,
        &c.client_frame(1000, "PA", b"\x16\x03\x01\x02\x00\x01\x00\x01"),
    );
    expect(&d, Reason::ModbusUnframed, "not modbus");
    let c = Conn::new(32002, 502);
    let d = run(
        &mut dp,
        &c.client_frame(1000, "PA", &write_single_coil(0, 0)),
    );
    expect(&d, Reason::ModbusFunctionDenied, "a whole write");
}

/// Found by the packet fuzzer (`packet_fuzz.rs`, `on_deny: refuse`): a segment whose refused
/// requests are neutralised passes, so every other byte in it must have been decided or carried.
/// Before the fix, a header prefix carried after a refused request was forgotten (the next
/// segment was framed from its own first byte while the server joined the two), and in a
/// segment that must be whole ADUs (mid-stream sync, a retransmission) the bytes after an
/// unframed ADU that followed a refused request passed undecided.
#[test]
fn refused_requests_leave_no_byte_undecided() {
    use firewall_common::counters::VERDICT_REFUSE;
    let mut dp = datapath(&policy(
        "functions: [read], addresses: { holding_registers: [\"0-99\"] }",
        "    on_deny: refuse",
    ));
    let neutral = |d: &otfw::datapath::Decision, at: usize| {
        // Ethernet + IPv4 + TCP without options, then the payload.
        d.frame_out[14 + 20 + 20 + at]
    };
    // The refused read carries the first six bytes of the next ADU's header: tid, protocol
    // 0, length 6. The next segment, `01 06 00 00 00 06`, completes it for the server as unit
    // 1, write_single_register 0 := 6; framed from its own first byte it would look like the
    // start of a read's header.
    let mut c = conn(&mut dp, 33000);
    let mut first = read(3, 500, 1);
    first.extend([0x00, 0x09, 0x00, 0x00, 0x00, 0x06]);
    let d = c.send(&mut dp, &first);
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    assert_eq!(d.reason, Reason::ModbusAddressDenied, "{d:?}");
    let d = c.send(&mut dp, &[0x01, 0x06, 0x00, 0x00, 0x00, 0x06]);
    assert!(d.passed(), "{d:?}");
    assert_eq!(
        d.verdict as u32, VERDICT_REFUSE,
        "the write is refused: {d:?}"
    );
    assert_eq!(d.reason, Reason::ModbusFunctionDenied, "{d:?}");
    assert_eq!(neutral(&d, 1), 60, "the server reads the write neutralised");

    // Mid-stream, a segment must be whole plausible ADUs: a refused read, then an ADU with
    // protocol id 0xaf6c, then a write. The write was never framed: nothing passes.
    let c = Conn::new(33001, 502);
    let mut segment = read(3, 500, 1);
    segment.extend([0x76, 0x9e, 0xaf, 0x6c, 0x00, 0x02, 0xff, 0x2b]);
    segment.extend(write_single_register(0, 6));
    let d = run(&mut dp, &c.client_frame(1000, "PA", &segment));
    expect(
        &d,
        Reason::ModbusUnframed,
        "refused read, bad header, write",
    );
    // The same with the segment ending inside the second ADU's header.
    let c = Conn::new(33002, 502);
    let mut segment = read(3, 500, 1);
    segment.extend(&write_single_register(0, 6)[..5]);
    let d = run(&mut dp, &c.client_frame(1000, "PA", &segment));
    expect(&d, Reason::ModbusUnframed, "refused read, part of a header");
    // A whole refused request still syncs a mid-stream flow and passes neutralised.
    let c = Conn::new(33003, 502);
    let d = run(&mut dp, &c.client_frame(1000, "PA", &read(3, 500, 1)));
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.verdict as u32, VERDICT_REFUSE, "{d:?}");
    assert_eq!(neutral(&d, 7), 60);
}

#[test]
fn responses_are_accounted_not_policed() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = conn(&mut dp, 33000);
    expect(&c.send(&mut dp, &read(3, 0, 2)), Reason::None, "request");
    let d = c.reply(&mut dp, &adu(1, 3, &[4, 0, 1, 0, 2]));
    expect(&d, Reason::None, "response");
    assert_eq!(d.adus[0].direction, "response");
    let d = c.reply(&mut dp, &adu(1, 0x83, &[2]));
    expect(&d, Reason::None, "exception without request");
    assert_eq!(d.adus[0].direction, "unsolicited");
    expect(&c.send(&mut dp, &read(3, 0, 2)), Reason::None, "request");
    let d = c.reply(&mut dp, &adu(1, 0x83, &[2]));
    assert_eq!(d.adus[0].direction, "exception");
    assert_eq!(d.adus[0].sub, 2);
    // Garbage from the server passes (responses are not policed).
    expect(
        &c.reply(&mut dp, b"garbage!"),
        Reason::None,
        "garbage response",
    );
    let traffic = dp.modbus_traffic().unwrap();
    let count = |kind: &str, function: u8| {
        traffic
            .iter()
            .filter(|t| t.kind == kind && t.function == function && t.conduit == "plc")
            .map(|t| t.adus)
            .sum::<u64>()
    };
    assert_eq!(count("pass", 3), 2, "{traffic:?}");
    assert_eq!(count("response", 3), 1, "{traffic:?}");
    assert_eq!(count("exception", 3), 1, "{traffic:?}");
    assert_eq!(count("unsolicited", 3), 1, "{traffic:?}");
    assert_eq!(dp.modbus_responses_unframed().unwrap(), 1);
}

#[test]
fn denied_requests_are_counted_and_reported() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut events = dp.take_modbus_events().unwrap();
    let mut c = conn(&mut dp, 34000);
    expect(
        &c.send(&mut dp, &write_registers(40, 3)),
        Reason::ModbusFunctionDenied,
        "write",
    );
    let traffic = dp.modbus_traffic().unwrap();
    assert!(
        traffic
            .iter()
            .any(|t| t.function == 16 && t.kind == "drop" && t.adus == 1),
        "{traffic:?}"
    );
    let item = events.next().expect("one event");
    let e = otfw::datapath::ModbusDenied::decode(&item, None).unwrap();
    assert_eq!(
        (e.function, e.address, e.quantity, e.reason, e.verdict),
        (16, 40, 3, "modbus_function_denied", "drop")
    );
    assert_eq!((e.src.as_str(), e.dport), ("10.0.1.10", 502));
    drop(item);
    assert!(events.next().is_none(), "one event per denied request");
}

/// The ADU counters are exact while the datapath holds counts back per CPU (`CountMemo`):
/// many counters competing for the memo's entries (every count lands once, whichever entry it
/// passed through), and across policy swaps (a new generation starts at zero, and the counts
/// of the generation two swaps back, which used the same slot, never reappear in it).
#[test]
fn adu_counters_are_exact_across_swaps_and_memo_evictions() {
    let yaml = policy("functions: [read]", "");
    let mut dp = datapath(&yaml);
    let count = |dp: &otfw::datapath::Datapath, kind: &str, function: u8| {
        dp.modbus_traffic()
            .unwrap()
            .iter()
            .filter(|t| t.kind == kind && t.function == function && t.conduit == "plc")
            .map(|t| t.adus)
            .sum::<u64>()
    };
    let mut c = conn(&mut dp, 36000);
    // Generation 1: eight request counters (four allowed reads, four denied writes) and the
    // answers' counter, interleaved, each a different number of times.
    let reads = [1u8, 2, 3, 4];
    let writes = [5u8, 6, 15, 16];
    for round in 0..6u16 {
        for (i, &f) in reads.iter().enumerate() {
            if round as usize <= i + 1 {
                expect(&c.send(&mut dp, &read(f, 0, 1)), Reason::None, "read");
            }
        }
        expect(
            &c.reply(&mut dp, &adu(1, 3, &[2, 0, 7])),
            Reason::None,
            "answer",
        );
    }
    let write = |f: u8| match f {
        5 => write_single_coil(0, 0xff00),
        6 => write_single_register(0, 1),
        15 => write_coils(0, 8),
        _ => write_registers(0, 1),
    };
    let mut port = 36100;
    for (i, &f) in writes.iter().enumerate() {
        for _ in 0..=i {
            // A denied write blocks its connection: one connection per write.
            let mut w = conn(&mut dp, port);
            port += 1;
            expect(
                &w.send(&mut dp, &write(f)),
                Reason::ModbusFunctionDenied,
                "write",
            );
        }
    }
    for (i, &f) in reads.iter().enumerate() {
        assert_eq!(count(&dp, "pass", f), i as u64 + 2, "read {f}");
    }
    for (i, &f) in writes.iter().enumerate() {
        assert_eq!(count(&dp, "drop", f), i as u64 + 1, "write {f}");
    }
    assert_eq!(count(&dp, "response", 3), 6);

    // Generation 2 (the other slot): starts at zero.
    swap(&mut dp, &yaml);
    assert_eq!(count(&dp, "pass", 3), 0);
    let mut c2 = conn(&mut dp, 37000);
    for _ in 0..3 {
        expect(&c2.send(&mut dp, &read(3, 0, 1)), Reason::None, "read");
    }
    assert_eq!(count(&dp, "pass", 3), 3);

    // Generation 3 (the first one's slot again): nothing of generation 1 comes back, not even
    // what the memo still held of it when a count of generation 3 took its entry.
    swap(&mut dp, &yaml);
    let mut c3 = conn(&mut dp, 38000);
    for &f in &reads {
        expect(&c3.send(&mut dp, &read(f, 0, 1)), Reason::None, "read");
    }
    expect(
        &c3.reply(&mut dp, &adu(1, 3, &[2, 0, 7])),
        Reason::None,
        "answer",
    );
    for &f in &reads {
        assert_eq!(count(&dp, "pass", f), 1, "read {f} in generation 3");
    }
    assert_eq!(count(&dp, "response", 3), 1);
    for &f in &writes {
        assert_eq!(count(&dp, "drop", f), 0, "write {f} in generation 3");
    }
}

#[test]
fn on_deny_reset_closes_both_ends() {
    let mut dp = datapath(&policy("functions: [read]", "    on_deny: reset"));
    let mut c = conn(&mut dp, 35000);
    expect(&c.send(&mut dp, &read(3, 0, 1)), Reason::None, "read");
    let seq = c.cseq;
    let d = c.send(&mut dp, &write_single_register(0, 1));
    assert_eq!(d.reason, Reason::ModbusFunctionDenied);
    assert!(d.passed(), "the write travels on as a reset: {d:?}");
    let out = etherparse::SlicedPacket::from_ethernet(&d.frame_out).unwrap();
    let Some(etherparse::TransportSlice::Tcp(t)) = out.transport else {
        panic!()
    };
    assert!(t.rst() && t.payload().is_empty());
    assert_eq!((t.destination_port(), t.sequence_number()), (502, seq));
    // The client's retransmission (and anything else on the flow) is answered with a reset.
    let d = run(
        &mut dp,
        &c.client_frame(seq, "PA", &write_single_register(0, 1)),
    );
    assert!(d.reset(), "{d:?}");
    assert_eq!(d.reason, Reason::ModbusBlocked);
    let out = etherparse::SlicedPacket::from_ethernet(&d.frame_out).unwrap();
    let Some(etherparse::TransportSlice::Tcp(t)) = out.transport else {
        panic!()
    };
    assert!(t.rst() && t.destination_port() == 35000);
}

#[test]
fn monitor_mode_passes_and_records() {
    let mut dp = datapath(&policy("functions: [read]", "    mode: monitor"));
    let mut c = conn(&mut dp, 36000);
    let mut payload = write_single_register(0, 1);
    payload.extend(read(3, 0, 1));
    let d = c.send(&mut dp, &payload);
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.reason, Reason::ModbusFunctionDenied);
    assert_eq!(d.verdict as u32, firewall_common::counters::VERDICT_MONITOR);
    let verdicts: Vec<&str> = d.adus.iter().map(|a| a.verdict).collect();
    assert_eq!(verdicts, ["monitor", "pass"]);
    expect(
        &c.send(&mut dp, &read(3, 0, 1)),
        Reason::None,
        "still framed after",
    );
}

#[test]
fn rule_port() {
    let mut dp = datapath(&policy("functions: [read], port: 5020", ""));
    let mut c = Conn::new(37000, 5020);
    c.open(&mut dp);
    expect(&c.send(&mut dp, &read(3, 0, 1)), Reason::None, "port 5020");
}
