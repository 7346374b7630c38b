//! EtherNet/IP and CIP inspection in the datapath (root): the real object through
//! BPF_PROG_TEST_RUN, one table row or scenario per case of issue 4.

#[path = "common/enip.rs"]
mod enip_common;
#[path = "common/mangle.rs"]
mod mangle;
#[path = "common/modbus.rs"]
mod modbus_common;

use enip_common::*;
use firewall_common::reason::Reason;
use modbus_common::{datapath, run, swap, Conn, CLIENT, SERVER};
use otfw::datapath::{Datapath, Decision};

#[test]
fn loads_within_the_verifier_budget() {
    let dp = datapath(&policy("services: [read]", ""));
    let main = dp.verified_instructions().unwrap();
    let (enip, io) = dp.enip_verified_instructions().unwrap();
    println!("verified instructions: otfw {main}, otfw_enip {enip}, otfw_enip_io {io}");
    assert!(main < 1_000_000 && enip < 1_000_000 && io < 1_000_000);
}

/// A connection opened with its handshake and a registered session.
fn session(dp: &mut Datapath, sport: u16) -> Conn {
    let mut c = Conn::new(sport, 44818);
    c.open(dp);
    expect(&c.send(dp, &register_session()), Reason::None, "register");
    expect(
        &c.reply(dp, &register_reply(SESSION)),
        Reason::None,
        "register reply",
    );
    c
}

fn expect(d: &Decision, reason: Reason, what: &str) {
    assert_eq!(d.reason, reason, "{what}: {d:?}");
    if reason == Reason::None {
        assert!(d.passed(), "{what}: {d:?}");
    } else {
        assert!(d.dropped(), "{what}: {d:?}");
    }
}

/// Sends `cip` in SendRRData on a fresh session and expects `reason`.
fn check(dp: &mut Datapath, sport: u16, cip: &[u8], reason: Reason, what: &str) -> Decision {
    let mut c = session(dp, sport);
    let d = c.send(dp, &rr(SESSION, cip));
    expect(&d, reason, what);
    d
}

#[test]
fn commands() {
    let mut dp = datapath(&policy("services: [read]", ""));
    let allowed = [
        ("list_identity", encap(0x63, 0, &[])),
        ("list_services", encap(0x04, 0, &[])),
        ("list_interfaces", encap(0x64, 0, &[])),
        ("unregister_session", encap(0x66, SESSION, &[])),
        ("send_rr_data", rr(SESSION, &get_attr(1, 1, 1))),
    ];
    for (i, (what, msg)) in allowed.iter().enumerate() {
        let mut c = session(&mut dp, 1000 + i as u16);
        expect(&c.send(&mut dp, msg), Reason::None, what);
    }
    for (i, (what, cmd)) in [
        ("nop", 0x00u16),
        ("indicate_status", 0x72),
        ("cancel", 0x73),
        ("reserved", 0x99),
    ]
    .iter()
    .enumerate()
    {
        let mut c = session(&mut dp, 1100 + i as u16);
        expect(
            &c.send(&mut dp, &encap(*cmd, SESSION, &[])),
            Reason::EnipCommandDenied,
            what,
        );
    }
    // Header sanity: status on a request, lengths a command does not allow.
    let mut bad_status = encap(0x63, 0, &[]);
    bad_status[8] = 1;
    let mut c = session(&mut dp, 1200);
    expect(
        &c.send(&mut dp, &bad_status),
        Reason::EnipBadHeader,
        "status",
    );
    let mut c = session(&mut dp, 1201);
    expect(
        &c.send(&mut dp, &encap(0x63, 0, &[0; 4])),
        Reason::EnipBadHeader,
        "list_identity with data",
    );
    // A narrower command list.
    let mut dp = datapath(&policy("commands: [list_identity]", ""));
    let mut c = Conn::new(1300, 44818);
    c.open(&mut dp);
    expect(
        &c.send(&mut dp, &list_identity()),
        Reason::None,
        "list_identity",
    );
    expect(
        &c.send(&mut dp, &register_session()),
        Reason::EnipCommandDenied,
        "register_session not listed",
    );
}

#[test]
fn udp_list_identity_and_trailing_bytes() {
    let mut dp = datapath(&policy("services: [read]", ""));
    let d = run(&mut dp, &udp(CLIENT, SERVER, 2000, 44818, &list_identity()));
    expect(&d, Reason::None, "udp list_identity");
    let mut two = list_identity();
    two.extend_from_slice(&[0, 0, 0]);
    let d = run(&mut dp, &udp(CLIENT, SERVER, 2001, 44818, &two));
    expect(
        &d,
        Reason::EnipTrailingBytes,
        "trailing bytes in a datagram",
    );
}

#[test]
fn sessions() {
    let mut dp = datapath(&policy("services: [read]", ""));
    // No RegisterSession on a connection followed from its SYN.
    let mut c = Conn::new(3000, 44818);
    c.open(&mut dp);
    expect(
        &c.send(&mut dp, &rr(SESSION, &get_attr(1, 1, 1))),
        Reason::EnipBadSession,
        "no session",
    );
    // The wrong handle.
    let mut c = session(&mut dp, 3001);
    expect(
        &c.send(&mut dp, &rr(SESSION + 1, &get_attr(1, 1, 1))),
        Reason::EnipBadSession,
        "wrong handle",
    );
    // Mid-stream: the first valid message teaches the handle.
    let mut c = Conn::new(3002, 44818);
    expect(
        &c.send(&mut dp, &rr(0x99, &get_attr(1, 1, 1))),
        Reason::None,
        "adopted",
    );
    expect(
        &c.send(&mut dp, &rr(0x99, &get_attr(1, 1, 2))),
        Reason::None,
        "same handle",
    );
    expect(
        &c.send(&mut dp, &rr(0x98, &get_attr(1, 1, 2))),
        Reason::EnipBadSession,
        "other handle",
    );
}

#[test]
fn cpf_items() {
    let mut dp = datapath(&policy("services: [read]", ""));
    let cip = get_attr(1, 1, 1);
    let mut body = cpf(&[]);
    body[6] = 2; // count 2 with no items
    for (i, (what, msg)) in [
        ("count without items", encap(0x6F, SESSION, &body)),
        (
            "connected address on SendRRData",
            encap(
                0x6F,
                SESSION,
                &cpf(&[
                    [0xA1u8, 0, 4, 0, 1, 0, 0, 0].to_vec(),
                    [&[0xB2u8, 0][..], &(cip.len() as u16).to_le_bytes(), &cip].concat(),
                ]),
            ),
        ),
        (
            "item longer than the message",
            encap(
                0x6F,
                SESSION,
                &cpf(&[
                    [0u8, 0, 0, 0].to_vec(),
                    [
                        &[0xB2u8, 0][..],
                        &(cip.len() as u16 + 4).to_le_bytes(),
                        &cip,
                    ]
                    .concat(),
                ]),
            ),
        ),
        ("bytes after the items", {
            let mut m = rr(SESSION, &cip);
            m.extend_from_slice(&[0, 0]);
            let len = (m.len() - 24) as u16;
            m[2..4].copy_from_slice(&len.to_le_bytes());
            m
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = session(&mut dp, 3100 + i as u16);
        expect(&c.send(&mut dp, &msg), Reason::EnipBadCpf, what);
    }
}

/// (request, name) of each service kind the presets distinguish.
fn services() -> Vec<(&'static str, Vec<u8>)> {
    let cm = cat(&[class8(6), inst8(1)]);
    vec![
        (
            "get_attributes_all",
            req(0x01, &cat(&[class8(1), inst8(1)]), &[]),
        ),
        (
            "get_attribute_list",
            req(0x03, &cat(&[class8(1), inst8(1)]), &[1, 0, 1, 0]),
        ),
        ("get_attribute_single", get_attr(1, 1, 7)),
        ("read_tag", read_tag("Counter")),
        (
            "read_tag_fragmented",
            req(0x52, &tag_path("Counter"), &[1, 0, 0, 0, 0, 0]),
        ),
        (
            "get_instance_attribute_list",
            req(0x55, &cat(&[class8(0x6B), inst8(0)]), &[1, 0, 1, 0]),
        ),
        ("forward_open", forward_open(1, 3, false)),
        ("large_forward_open", forward_open(2, 3, true)),
        ("forward_close", forward_close(9)),
        (
            "set_attributes_all",
            req(0x02, &cat(&[class8(1), inst8(1)]), &[0]),
        ),
        ("set_attribute_single", set_attr(1, 1, 7)),
        ("write_tag", write_tag("Counter")),
        (
            "read_modify_write_tag",
            req(0x4E, &tag_path("Counter"), &[2, 0, 1, 0, 1, 0]),
        ),
        (
            "write_tag_fragmented",
            req(
                0x53,
                &tag_path("Counter"),
                &[0xC3, 0, 1, 0, 0, 0, 0, 0, 7, 0],
            ),
        ),
        ("reset", req(0x05, &cat(&[class8(1), inst8(1)]), &[])),
        ("start", req(0x06, &cat(&[class8(0x8E), inst8(1)]), &[])),
        ("stop", req(0x07, &cat(&[class8(0x8E), inst8(1)]), &[])),
        (
            "execute_pccc",
            req(
                0x4B,
                &cat(&[class8(0x67), inst8(1)]),
                &[7, 0x4d, 0, 1, 2, 3, 4, 0x0f, 0, 1, 0, 0xa2],
            ),
        ),
        (
            "unconnected_send(get)",
            unconnected_send(&get_attr(1, 1, 1)),
        ),
        (
            "multiple_service_packet(get)",
            msp(&[get_attr(1, 1, 1), read_tag("A")]),
        ),
        ("forward_open_on_cm_only", req(0x54, &cm, &[])),
    ]
}

#[test]
fn service_presets() {
    let read = [
        "get_attributes_all",
        "get_attribute_list",
        "get_attribute_single",
        "read_tag",
        "read_tag_fragmented",
        "get_instance_attribute_list",
        "forward_open",
        "large_forward_open",
        "forward_close",
        "unconnected_send(get)",
        "multiple_service_packet(get)",
    ];
    let write = [
        "set_attributes_all",
        "set_attribute_single",
        "write_tag",
        "read_modify_write_tag",
        "write_tag_fragmented",
    ];
    let admin = ["reset", "start", "stop", "execute_pccc"];
    for (preset, allowed) in [
        ("read", &read[..]),
        ("write", &write[..]),
        ("admin", &admin[..]),
    ] {
        let mut dp = datapath(&policy(&format!("services: [{preset}]"), ""));
        for (i, (name, cip)) in services().into_iter().enumerate() {
            let want = if name == "forward_open_on_cm_only" {
                // A Forward_Open without its parameters cannot be parsed: denied either way.
                if preset == "read" {
                    Reason::CipMalformed
                } else {
                    Reason::CipServiceDenied
                }
            } else if allowed.contains(&name) {
                Reason::None
            } else {
                Reason::CipServiceDenied
            };
            check(
                &mut dp,
                4000 + i as u16,
                &cip,
                want,
                &format!("{preset}: {name}"),
            );
        }
    }
    let mut dp = datapath(&policy("services: [all]", ""));
    for (i, (name, cip)) in services().into_iter().enumerate() {
        let want = if name == "forward_open_on_cm_only" {
            Reason::CipMalformed
        } else {
            Reason::None
        };
        check(
            &mut dp,
            4100 + i as u16,
            &cip,
            want,
            &format!("all: {name}"),
        );
    }
}

#[test]
fn class_specific_codes() {
    // 0x4E: Forward_Close on the Connection Manager, Read-Modify-Write on a tag.
    let mut dp = datapath(&policy("services: [forward_close]", ""));
    check(
        &mut dp,
        5000,
        &forward_close(1),
        Reason::None,
        "0x4E on class 6",
    );
    check(
        &mut dp,
        5001,
        &req(0x4E, &tag_path("X"), &[2, 0, 1, 0, 1, 0]),
        Reason::CipServiceDenied,
        "0x4E on a tag",
    );
    // 0x52: Read Tag Fragmented on a tag, Unconnected Send on the Connection Manager.
    let mut dp = datapath(&policy("services: [read_tag_fragmented]", ""));
    check(
        &mut dp,
        5002,
        &req(0x52, &tag_path("X"), &[1, 0, 0, 0, 0, 0]),
        Reason::None,
        "0x52 on a tag",
    );
    check(
        &mut dp,
        5003,
        &unconnected_send(&read_tag("X")),
        Reason::CipServiceDenied,
        "0x52 on class 6",
    );
    // 0x4B: Execute PCCC only on the PCCC object.
    let mut dp = datapath(&policy(
        "objects: [{ class: 0x67, services: [execute_pccc] }]",
        "",
    ));
    check(
        &mut dp,
        5004,
        &req(0x4B, &cat(&[class8(0x67), inst8(1)]), &[0]),
        Reason::None,
        "0x4B on 0x67",
    );
    check(
        &mut dp,
        5005,
        &req(0x4B, &cat(&[class8(0x01), inst8(1)]), &[0]),
        Reason::CipServiceDenied,
        "0x4B on 0x01",
    );
}

#[test]
fn segment_widths_and_paths() {
    let mut dp = datapath(&policy(
        "objects: [{ class: 0x01, services: [set_attribute_single] }]",
        "",
    ));
    let set = |class: Vec<u8>, inst: Vec<u8>| req(0x10, &cat(&[class, inst, attr8(1)]), &[1, 0]);
    let rows = [
        ("8-bit", set(class8(1), inst8(1)), Reason::None),
        ("16-bit", set(class16(1), inst16(1)), Reason::None),
        ("32-bit instance", set(class16(1), inst32(1)), Reason::None),
        ("32-bit class", set(class32(1), inst8(1)), Reason::None),
        (
            "16-bit class 0x0100",
            set(class16(0x100), inst8(1)),
            Reason::CipServiceDenied,
        ),
        (
            "32-bit class 0x10001",
            set(class32(0x1_0001), inst8(1)),
            Reason::CipBadPath,
        ),
        (
            "other class",
            set(class8(0xF5), inst8(1)),
            Reason::CipServiceDenied,
        ),
        (
            "two classes",
            req(0x10, &cat(&[class8(1), class8(0xF5), attr8(1)]), &[1, 0]),
            Reason::CipBadPath,
        ),
        (
            "no class",
            req(0x10, &cat(&[inst8(1), attr8(1)]), &[1, 0]),
            Reason::CipBadPath,
        ),
        (
            "port segment",
            req(0x10, &cat(&[vec![0x01, 0x00], class8(1)]), &[1, 0]),
            Reason::CipBadPath,
        ),
        (
            "cut-off segment",
            req(0x10, &[0x20, 0x01, 0x25, 0x00], &[]),
            Reason::CipBadPath,
        ),
        (
            "path longer than the request",
            vec![0x10, 9, 0x20, 0x01],
            Reason::CipMalformed,
        ),
        (
            "response bit",
            req(0x90, &cat(&[class8(1), inst8(1)]), &[]),
            Reason::CipMalformed,
        ),
        (
            "class and tag",
            req(0x10, &cat(&[class8(1), sym("X")]), &[1, 0]),
            Reason::CipBadPath,
        ),
    ];
    for (i, (what, cip, want)) in rows.into_iter().enumerate() {
        check(&mut dp, 6000 + i as u16, &cip, want, what);
    }
}

#[test]
fn nesting() {
    let mut dp = datapath(&policy("services: [read]", ""));
    let w = || set_attr(1, 1, 1);
    let rows = [
        (
            "reads in MSP",
            msp(&[get_attr(1, 1, 1), read_tag("A"), read_tag("B.C")]),
            Reason::None,
        ),
        (
            "write in MSP",
            msp(&[get_attr(1, 1, 1), write_tag("A")]),
            Reason::CipServiceDenied,
        ),
        (
            "admin in MSP",
            msp(&[req(0x05, &cat(&[class8(1), inst8(1)]), &[])]),
            Reason::CipServiceDenied,
        ),
        (
            "read via US",
            unconnected_send(&read_tag("A")),
            Reason::None,
        ),
        (
            "write via US",
            unconnected_send(&w()),
            Reason::CipServiceDenied,
        ),
        (
            "MSP in US",
            unconnected_send(&msp(&[read_tag("A"), write_tag("B")])),
            Reason::CipServiceDenied,
        ),
        (
            "US in MSP",
            msp(&[read_tag("A"), unconnected_send(&write_tag("B"))]),
            Reason::CipServiceDenied,
        ),
        (
            "read MSP in US",
            unconnected_send(&msp(&[read_tag("A"), read_tag("B")])),
            Reason::None,
        ),
        (
            "too deep",
            unconnected_send(&unconnected_send(&unconnected_send(&read_tag("A")))),
            Reason::CipTooDeep,
        ),
    ];
    for (i, (what, cip, want)) in rows.into_iter().enumerate() {
        let d = check(&mut dp, 7000 + i as u16, &cip, want, what);
        if what == "MSP in US" {
            // Records name the embedded requests with their depth.
            let names: Vec<(&str, u8)> = d
                .cip
                .iter()
                .filter(|r| r.kind == "cip")
                .map(|r| (r.service.as_str(), r.depth))
                .collect();
            assert_eq!(
                names,
                [
                    ("unconnected_send", 0),
                    ("multiple_service_packet", 1),
                    ("read_tag", 2),
                    ("write_tag", 2)
                ],
                "{d:?}"
            );
        }
    }
    // Bad MSP layouts.
    let good = msp(&[read_tag("A"), read_tag("B")]);
    // Service, path size, 4 path bytes, then count at 6, offsets at 8 and 10.
    let patch = |at: usize, v: u16| {
        let mut m = good.clone();
        m[at..at + 2].copy_from_slice(&v.to_le_bytes());
        m
    };
    let rows = [
        (
            "count larger than the message",
            patch(6, 40),
            Reason::CipBadMsp,
        ),
        ("count zero", patch(6, 0), Reason::CipBadMsp),
        (
            "first offset past the table",
            patch(8, 7),
            Reason::CipBadMsp,
        ),
        ("decreasing offsets", patch(10, 5), Reason::CipBadMsp),
        ("offset past the end", patch(10, 200), Reason::CipBadMsp),
        (
            "embedded request cut short",
            {
                let mut m = msp(&[read_tag("A"), vec![0x4C]]);
                m.truncate(m.len());
                m
            },
            Reason::CipMalformed,
        ),
    ];
    for (i, (what, cip, want)) in rows.into_iter().enumerate() {
        check(&mut dp, 7100 + i as u16, &cip, want, what);
    }
    // Unconnected Send whose sizes disagree.
    let mut us = unconnected_send(&read_tag("A"));
    us.push(0);
    check(
        &mut dp,
        7200,
        &us,
        Reason::CipMalformed,
        "US with a trailing byte",
    );
}

#[test]
fn tags() {
    let mut dp = datapath(&policy(
        r#"services: [read], tags: ["Line1_*", "Recipe.Setpoint"]"#,
        "",
    ));
    let rows = [
        ("prefix", read_tag("Line1_Speed"), Reason::None),
        ("prefix, other case", read_tag("LINE1_speed"), Reason::None),
        (
            "not the prefix",
            read_tag("Line2_Speed"),
            Reason::CipTagDenied,
        ),
        ("exact member", read_tag("Recipe.Setpoint"), Reason::None),
        (
            "other member",
            read_tag("Recipe.Other"),
            Reason::CipTagDenied,
        ),
        (
            "element of an allowed tag",
            req(
                0x4C,
                &cat(&[tag_path("Recipe.Setpoint"), elem8(3)]),
                &[1, 0],
            ),
            Reason::None,
        ),
        ("parent only", read_tag("Recipe"), Reason::CipTagDenied),
        (
            "by symbol instance",
            req(0x4C, &cat(&[class8(0x6B), inst8(5)]), &[1, 0]),
            Reason::CipTagDenied,
        ),
        (
            "in MSP",
            msp(&[read_tag("Line1_A"), read_tag("Secret")]),
            Reason::CipTagDenied,
        ),
        (
            "too long",
            read_tag(&format!("Line1_{}", "x".repeat(70))),
            Reason::CipTagTooLong,
        ),
    ];
    for (i, (what, cip, want)) in rows.into_iter().enumerate() {
        let d = check(&mut dp, 8000 + i as u16, &cip, want, what);
        if what == "exact member" {
            assert_eq!(d.cip[1].tag, "Recipe.Setpoint");
        }
    }
    assert!(!compiles(&policy(r#"tags: ["A*B"]"#, "")));
}

#[test]
fn split_and_pipelined() {
    let mut dp = datapath(&policy("services: [read]", ""));
    // Byte by byte, header included: every byte but the last passes; the last decides.
    for (i, (cip, want)) in [
        (read_tag("A"), Reason::None),
        (write_tag("A"), Reason::CipServiceDenied),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = session(&mut dp, 9000 + i as u16);
        let msg = rr(SESSION, &cip);
        for (k, b) in msg.iter().enumerate() {
            let d = c.send(&mut dp, &[*b]);
            if k + 1 < msg.len() {
                expect(&d, Reason::None, &format!("byte {k}"));
            } else {
                expect(&d, want, "last byte");
            }
        }
    }
    // Pipelined: a write behind a read in one segment.
    let mut c = session(&mut dp, 9100);
    let mut two = rr(SESSION, &read_tag("A"));
    two.extend(rr(SESSION, &write_tag("A")));
    expect(
        &c.send(&mut dp, &two),
        Reason::CipServiceDenied,
        "write behind a read",
    );
    // Split in the middle of the second message, header included.
    let mut c = session(&mut dp, 9101);
    let mut two = rr(SESSION, &read_tag("A"));
    let first = two.len();
    two.extend(rr(SESSION, &write_tag("A")));
    expect(
        &c.send(&mut dp, &two[..first + 10]),
        Reason::None,
        "first part",
    );
    expect(
        &c.send(&mut dp, &two[first + 10..]),
        Reason::CipServiceDenied,
        "rest",
    );
    // The blocked connection stays blocked.
    expect(
        &c.send(&mut dp, &rr(SESSION, &read_tag("A"))),
        Reason::EnipBlocked,
        "blocked",
    );
    // Mid-stream bytes that are not a message.
    let mut c = Conn::new(9102, 44818);
    expect(
        &c.send(&mut dp, &[1, 2, 3, 4, 5]),
        Reason::EnipUnframed,
        "garbage mid-stream",
    );
    // A request longer than the inspector parses.
    let mut c = session(&mut dp, 9103);
    let big = rr(SESSION, &req(0x4C, &tag_path("A"), &vec![0; 1100]));
    expect(&c.send(&mut dp, &big), Reason::EnipTooLong, "too long");
    // Requests are bounded per message (32) and per segment (96): pipelined packets of 20
    // reads (21 requests each) pass while the segment holds at most 96 requests.
    let reads = rr(SESSION, &msp(&vec![read_tag("A"); 20]));
    for (n, want) in [(4, Reason::None), (5, Reason::CipTooDeep)] {
        let mut c = session(&mut dp, 9104 + n);
        let segment = reads.repeat(n as usize);
        expect(&c.send(&mut dp, &segment), want, &format!("{n} packets"));
    }
}

/// Opens a connection with Forward_Open (class `class`), returns the session connection.
fn open(dp: &mut Datapath, sport: u16, serial: u16, class: u8) -> Conn {
    let mut c = session(dp, sport);
    expect(
        &c.send(dp, &rr(SESSION, &forward_open(serial, class, false))),
        Reason::None,
        "forward_open",
    );
    expect(
        &c.reply(
            dp,
            &forward_open_reply(SESSION, serial, 0x5500_0000 + serial as u32, 0x7700_0001),
        ),
        Reason::None,
        "forward_open reply",
    );
    c
}

#[test]
fn connected_messaging() {
    let mut dp = datapath(&policy("services: [read]", ""));
    let mut c = open(&mut dp, 10000, 21, 3);
    let id = 0x5500_0000 + 21;
    expect(
        &c.send(&mut dp, &unit(SESSION, id, 1, &read_tag("A"))),
        Reason::None,
        "connected read",
    );
    let d = c.send(&mut dp, &unit(SESSION, id, 2, &write_tag("A")));
    expect(&d, Reason::CipServiceDenied, "connected write");
    let mut c = open(&mut dp, 10001, 22, 3);
    let id = 0x5500_0000 + 22;
    let mut other = session(&mut dp, 10002);
    expect(
        &other.send(&mut dp, &unit(SESSION, 0x1234, 1, &read_tag("A"))),
        Reason::EnipUnknownConnection,
        "unknown connection",
    );
    let mut c2 = session(&mut dp, 10003);
    expect(
        &c2.send(&mut dp, &rr(SESSION, &forward_close(22))),
        Reason::None,
        "forward_close on another connection (does not know the ids)",
    );
    expect(
        &c.send(&mut dp, &unit(SESSION, id, 1, &read_tag("A"))),
        Reason::None,
        "still open",
    );
    expect(
        &c.send(&mut dp, &rr(SESSION, &forward_close(22))),
        Reason::None,
        "forward_close",
    );
    expect(
        &c.send(&mut dp, &unit(SESSION, id, 2, &read_tag("A"))),
        Reason::EnipUnknownConnection,
        "closed",
    );
}

#[test]
fn implicit_io() {
    let io = |sport, dport, id| udp(CLIENT, SERVER, sport, dport, &io_datagram(id, 1, &[0; 8]));
    let back = |id| udp(SERVER, CLIENT, 2222, 2222, &io_datagram(id, 1, &[0; 8]));
    let mut dp = datapath(&policy("services: [read], io: true", ""));
    // Without a Forward_Open.
    expect(
        &run(&mut dp, &io(2222, 2222, 0x5500_0000 + 31)),
        Reason::EnipIoNoConnection,
        "no forward_open",
    );
    dp.clear_flows().unwrap();
    // A class 1 connection opens the pinhole both ways.
    let mut c = open(&mut dp, 11000, 31, 1);
    expect(
        &run(&mut dp, &io(2222, 2222, 0x5500_0000 + 31)),
        Reason::None,
        "o->t",
    );
    expect(&run(&mut dp, &back(0x7700_0001)), Reason::None, "t->o");
    expect(
        &run(&mut dp, &io(2222, 2222, 0x5500_0099)),
        Reason::EnipIoNoConnection,
        "other id",
    );
    expect(
        &run(&mut dp, &udp(CLIENT, SERVER, 2222, 2222, &[1, 2, 3])),
        Reason::EnipIoMalformed,
        "malformed",
    );
    // Forward_Close closes it.
    expect(
        &c.send(&mut dp, &rr(SESSION, &forward_close(31))),
        Reason::None,
        "forward_close",
    );
    expect(
        &run(&mut dp, &io(2222, 2222, 0x5500_0000 + 31)),
        Reason::EnipIoNoConnection,
        "closed",
    );
    // A class 3 (explicit) connection opens no pinhole.
    let _c = open(&mut dp, 11001, 32, 3);
    expect(
        &run(&mut dp, &io(2222, 2222, 0x5500_0000 + 32)),
        Reason::EnipIoNoConnection,
        "class 3",
    );
    // Every datagram counted once, by its verdict (the I/O program counts its one record
    // inline, not through the request inspector's counting loop).
    let traffic = dp.enip_traffic().unwrap();
    let io_count = |verdict: &str| -> u64 {
        traffic
            .iter()
            .filter(|t| t.command == "implicit_io" && t.verdict == verdict)
            .map(|t| t.requests)
            .sum()
    };
    assert_eq!(io_count("pass"), 2, "{traffic:#?}");
    assert_eq!(io_count("drop"), 5, "{traffic:#?}");
    // Without `io: true` nothing on 2222 is admitted.
    let mut dp = datapath(&policy("services: [read]", ""));
    let _c = open(&mut dp, 11002, 33, 1);
    expect(
        &run(&mut dp, &io(2222, 2222, 0x5500_0000 + 33)),
        Reason::NoConduit,
        "io off",
    );
}

/// A policy change re-decides the connections Forward_Open opened, as it re-decides flows: a
/// change that only renumbers the conduit (one added above it) keeps implicit I/O and connected
/// messaging running, and one that no longer allows what opened them ends them.
#[test]
fn connections_are_re_decided_after_a_swap() {
    let io = |id| udp(CLIENT, SERVER, 2222, 2222, &io_datagram(id, 1, &[0; 8]));
    // One more conduit above the EtherNet/IP one: every conduit id after it moves by one.
    let renumbered = |enip: &str| {
        policy(enip, "").replace(
            "conduits:\n",
            "conduits:\n  - name: first\n    from: cell\n    to: ctl\n    allow:\n      \
             - tcp: { ports: [9] }\n",
        )
    };
    let mut dp = datapath(&policy("services: [read], io: true", ""));
    let mut explicit = open(&mut dp, 12000, 41, 3);
    let mut class1 = open(&mut dp, 12001, 42, 1);
    let (explicit_id, io_id) = (0x5500_0000 + 41, 0x5500_0000 + 42);
    let read = |c: &mut Conn, dp: &mut Datapath, seq| {
        c.send(dp, &unit(SESSION, explicit_id, seq, &read_tag("A")))
    };
    expect(
        &read(&mut explicit, &mut dp, 1),
        Reason::None,
        "connected read",
    );
    expect(&run(&mut dp, &io(io_id)), Reason::None, "I/O");

    swap(&mut dp, &renumbered("services: [read], io: true"));
    expect(
        &read(&mut explicit, &mut dp, 2),
        Reason::None,
        "connected read, conduit renumbered",
    );
    expect(
        &run(&mut dp, &io(io_id)),
        Reason::None,
        "I/O, conduit renumbered",
    );
    // (On the other session: a denial blocks the session it arrives on.)
    expect(
        &class1.send(&mut dp, &unit(SESSION, explicit_id, 3, &write_tag("A"))),
        Reason::CipServiceDenied,
        "connected write, still checked",
    );
    // And back: renumbered again, still running.
    swap(&mut dp, &policy("services: [read], io: true", ""));
    expect(
        &read(&mut explicit, &mut dp, 4),
        Reason::None,
        "connected read, back",
    );
    expect(&run(&mut dp, &io(io_id)), Reason::None, "I/O, back");

    // A rule that no longer allows Forward_Open no longer honours what it opened.
    swap(&mut dp, &renumbered("services: [read_tag]"));
    expect(
        &read(&mut explicit, &mut dp, 5),
        Reason::EnipUnknownConnection,
        "connected read, Forward_Open no longer allowed",
    );
    let d = run(&mut dp, &io(io_id));
    assert!(d.dropped(), "I/O without `io: true`: {d:?}");
}

/// Each CPU remembers what the policy allows per rule and class (`ENIP_CLASS_MEMO`), absence
/// included; an answer remembered under one policy never decides a request under another, the
/// one back in the same slot two swaps later included. Each request is sent several times (on
/// fresh sessions) so that whichever CPU runs the next one has remembered it.
#[test]
fn class_answers_follow_the_policy_in_force() {
    const TIMES: u16 = 4;
    let read = || read_tag("A");
    // Execute PCCC: a class-specific code (0x4B), allowed only where an object names it.
    let pccc = || req(0x4B, &cat(&[class8(0x67), inst8(1)]), &[0]);
    let mut dp = datapath(&policy("services: [read]", ""));
    let mut port = 13000;
    let mut each = |dp: &mut Datapath, cip: &[u8], reason: Reason, what: &str| {
        for _ in 0..TIMES {
            check(dp, port, cip, reason, what);
            port += 1;
        }
    };
    each(&mut dp, &read(), Reason::None, "read, allowed");
    each(
        &mut dp,
        &pccc(),
        Reason::CipServiceDenied,
        "PCCC object, no entry",
    );
    // Same rule, same class, another answer.
    swap(&mut dp, &policy("services: [write]", ""));
    each(
        &mut dp,
        &read(),
        Reason::CipServiceDenied,
        "read, no longer allowed",
    );
    // The first policy's slot again, under a new epoch: nothing remembered from the swap
    // before it, nor from the first time the slot held this policy.
    swap(
        &mut dp,
        &policy(
            "services: [read], objects: [{ class: 0x67, services: [execute_pccc] }]",
            "",
        ),
    );
    each(&mut dp, &read(), Reason::None, "read, allowed again");
    each(&mut dp, &pccc(), Reason::None, "PCCC object, now allowed");
    swap(&mut dp, &policy("services: [write]", ""));
    each(
        &mut dp,
        &pccc(),
        Reason::CipServiceDenied,
        "PCCC object, no entry again",
    );
}

#[test]
fn monitor_and_reset() {
    let mut dp = datapath(&policy("services: [read]", "    mode: monitor"));
    let mut c = session(&mut dp, 12000);
    let d = c.send(&mut dp, &rr(SESSION, &write_tag("A")));
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.reason, Reason::CipServiceDenied);
    assert_eq!(d.cip[1].verdict, "monitor");
    let d = c.send(&mut dp, &rr(SESSION, &read_tag("A")));
    assert!(d.passed() && d.reason == Reason::None, "{d:?}");
    let mut dp = datapath(&policy("services: [read]", "    on_deny: reset"));
    let mut c = session(&mut dp, 12001);
    let d = c.send(&mut dp, &rr(SESSION, &write_tag("A")));
    assert_eq!(d.reason, Reason::CipServiceDenied);
    assert!(
        d.passed(),
        "the refused segment becomes a reset to the server: {d:?}"
    );
    let d = c.send(&mut dp, &rr(SESSION, &read_tag("A")));
    assert!(d.reset(), "{d:?}");
    // Counters by conduit, service and verdict.
    let traffic = dp.enip_traffic().unwrap();
    assert!(
        traffic
            .iter()
            .any(|t| t.service == "write_tag" && t.verdict == "reset" && t.requests == 1),
        "{traffic:#?}"
    );
}

/// Requests are counted one by one, also where the datapath batches a run of records with the
/// same counter into one update (the reads of a Multiple Service Packet).
#[test]
fn requests_are_counted_one_by_one() {
    let mut dp = datapath(&policy("services: [read]", "    on_deny: refuse"));
    let mut c = session(&mut dp, 12100);
    let d = c.send(&mut dp, &rr(SESSION, &msp(&vec![read_tag("A"); 10])));
    assert!(d.passed() && d.reason == Reason::None, "{d:?}");
    // Runs broken by a refused write, and a read of another kind of path between reads.
    let mut mixed = vec![read_tag("A"); 3];
    mixed.push(write_tag("B"));
    mixed.extend(vec![read_tag("A"); 2]);
    mixed.push(get_attr(1, 1, 7));
    mixed.push(read_tag("C"));
    let d = c.send(&mut dp, &rr(SESSION, &msp(&mixed)));
    assert_eq!(d.reason, Reason::CipServiceDenied, "{d:?}");
    let traffic = dp.enip_traffic().unwrap();
    let count = |command: &str, service: &str, verdict: &str| -> u64 {
        traffic
            .iter()
            .filter(|t| t.command == command && t.service == service && t.verdict == verdict)
            .map(|t| t.requests)
            .sum()
    };
    let rr = "send_rr_data";
    assert_eq!(count(rr, "read_tag", "pass"), 16, "{traffic:#?}");
    assert_eq!(count(rr, "write_tag", "refuse"), 1, "{traffic:#?}");
    assert_eq!(
        count(rr, "multiple_service_packet", "pass"),
        2,
        "{traffic:#?}"
    );
    assert_eq!(count(rr, "", "pass"), 2, "{traffic:#?}");
    assert_eq!(count("register_session", "", "pass"), 1, "{traffic:#?}");
}

/// The TCP delivery checks of the shared stream layer (`tcp_delivery.rs` for Modbus) refuse the
/// same segments on EtherNet/IP, always as a drop.
#[test]
fn undeliverable_segments_are_refused() {
    use firewall_common::counters::VERDICT_DROP;
    use mangle::{bad_checksum, urgent, with_ttl};
    let dropped = |d: &Decision, reason: Reason, what: &str| {
        expect(d, reason, what);
        assert_eq!(
            d.verdict as u32, VERDICT_DROP,
            "{what}: dropped, never reset"
        );
    };
    let mut dp = datapath(&policy("services: [read]", ""));
    let mut c = session(&mut dp, 43000);
    let msg = rr(SESSION, &read_tag("counter"));
    let f = bad_checksum(c.client_frame(c.cseq, "PA", &msg));
    dropped(&run(&mut dp, &f), Reason::TcpBadChecksum, "bad checksum");
    let f = urgent(c.client_frame(c.cseq, "PA", &msg), 3);
    dropped(&run(&mut dp, &f), Reason::TcpUrgent, "urgent");
    let f = with_ttl(c.client_frame(c.cseq, "PA", &msg), 2);
    dropped(&run(&mut dp, &f), Reason::TcpTtlLowered, "TTL 2");
    expect(&c.send(&mut dp, &msg), Reason::None, "the read as sent");
    let fin_at = c.cseq;
    expect(
        &run(&mut dp, &c.client_frame(fin_at, "FA", &[])),
        Reason::None,
        "FIN",
    );
    let f = c.client_frame(fin_at, "PA", &msg);
    dropped(&run(&mut dp, &f), Reason::TcpDataAfterFin, "after FIN");

    let c = Conn::new(43001, 44818);
    let syn = c.client_frame(c.cseq.wrapping_sub(1), "S", &register_session());
    dropped(&run(&mut dp, &syn), Reason::TcpDataOnSyn, "SYN with data");
}

/// The request counters are exact while the datapath holds counts back per CPU (`CountMemo`):
/// a new generation starts at zero, and what the generation two swaps back counted (in the
/// same slot) never reappears in it.
#[test]
fn request_counters_are_exact_across_swaps() {
    let yaml = policy("services: [read]", "    on_deny: refuse");
    let mut dp = datapath(&yaml);
    let count = |dp: &Datapath, service: &str, verdict: &str| -> u64 {
        dp.enip_traffic()
            .unwrap()
            .iter()
            .filter(|t| t.service == service && t.verdict == verdict)
            .map(|t| t.requests)
            .sum()
    };
    let mut c = session(&mut dp, 12200);
    for _ in 0..5 {
        expect(
            &c.send(&mut dp, &rr(SESSION, &read_tag("A"))),
            Reason::None,
            "read",
        );
    }
    let d = c.send(&mut dp, &rr(SESSION, &write_tag("B")));
    assert_eq!(d.reason, Reason::CipServiceDenied, "{d:?}");
    assert_eq!(count(&dp, "read_tag", "pass"), 5);
    assert_eq!(count(&dp, "write_tag", "refuse"), 1);
    swap(&mut dp, &yaml);
    assert_eq!(count(&dp, "read_tag", "pass"), 0);
    let mut c2 = session(&mut dp, 12201);
    for _ in 0..2 {
        expect(
            &c2.send(&mut dp, &rr(SESSION, &read_tag("A"))),
            Reason::None,
            "read",
        );
    }
    assert_eq!(count(&dp, "read_tag", "pass"), 2);
    swap(&mut dp, &yaml);
    let mut c3 = session(&mut dp, 12202);
    expect(
        &c3.send(&mut dp, &rr(SESSION, &read_tag("A"))),
        Reason::None,
        "read",
    );
    assert_eq!(count(&dp, "read_tag", "pass"), 1, "generation 3");
    assert_eq!(count(&dp, "write_tag", "refuse"), 0, "generation 3");
}
