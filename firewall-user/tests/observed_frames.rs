//! The frames the datapath copies for the inventory (`OBSERVED`) and for learning
//! (`LEARN_FRAMES`), through the real XDP program (BPF_PROG_TEST_RUN): a flow's answer once, an
//! identity answer, nothing else of an established flow; while `LEARN_UNTIL` lies ahead every
//! Modbus frame, and after it nothing (the deadline cleared by the datapath). The inspectors'
//! first-use copies (`OBSERVED_USES`): a request segment once per connection and new function,
//! unit, command or (service, class) pair, decoded by the controller's inventory from the
//! message the record names. Needs root and BPF; fails (never skips) without them.

#[path = "common/enip.rs"]
mod enip_common;
#[path = "common/modbus.rs"]
mod modbus_common;

use aya::maps::{MapData, RingBuf};
use etherparse::{SlicedPacket, TransportSlice};
use firewall_common::observed::{
    OBSERVED_FLOW_ANSWERED, OBSERVED_IDENTITY, OBSERVED_LEARN, OBSERVED_RATE_LIMITED,
    OBSERVED_RING_FULL, OBSERVED_SENT, OBSERVED_USE,
};
use modbus_common::*;
use otfw::inventory::{
    live::{decode, monotonic_ns, observe, Clock},
    observe::Observer,
    Conversation,
};

/// Every record waiting in `ring`: (kind, TCP source port, SYN, ACK, payload).
fn drain(ring: &mut RingBuf<MapData>) -> Vec<(u8, u16, bool, bool, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(record) = ring.next() {
        let r = decode(&record).expect("a record of the datapath's shape");
        assert_eq!(
            r.frame.len(),
            r.frame_len as usize,
            "short frames are copied whole"
        );
        let p = SlicedPacket::from_ethernet(r.frame).expect("the copy is the frame");
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP: {:?}", r.frame);
        };
        out.push((
            r.kind,
            t.source_port(),
            t.syn(),
            t.ack(),
            t.payload().to_vec(),
        ));
    }
    out
}

/// A Read Device Identification response (basic objects, one object: the vendor name).
fn identification_response() -> Vec<u8> {
    let vendor = b"otfw test";
    let mut data = vec![14, 1, 1, 0, 0, 1, 0, vendor.len() as u8];
    data.extend_from_slice(vendor);
    adu(1, 43, &data)
}

#[test]
fn flow_answers_identities_and_learning() {
    let mut dp = datapath(&policy(r#"functions: [read, "43/14"]"#, ""));
    let mut observed = dp.take_observed().expect("the OBSERVED ring");
    let mut learned = dp.take_learn_frames().expect("the LEARN_FRAMES ring");

    // The SYN-ACK establishes the flow: copied once, and nothing else of the handshake.
    let mut c = Conn::new(40000, 502);
    c.open(&mut dp);
    let got = drain(&mut observed);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, got[0].1, got[0].2, got[0].3),
        (OBSERVED_FLOW_ANSWERED, 502, true, true)
    );

    // A read and its response on the established flow: nothing.
    assert!(c.send(&mut dp, &read(3, 0, 1)).passed());
    assert!(c.reply(&mut dp, &adu(1, 3, &[2, 0, 7])).passed());
    assert_eq!(drain(&mut observed), vec![]);

    // The PLC's device identification: copied, payload and all.
    assert!(c.send(&mut dp, &mei(14)).passed());
    let answer = identification_response();
    c.reply(&mut dp, &answer);
    let got = drain(&mut observed);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (OBSERVED_IDENTITY, 502));
    assert_eq!(got[0].4, answer);
    let stats = dp.observed_stats().unwrap();
    assert_eq!(stats[OBSERVED_SENT as usize], 2, "{stats:?}");
    assert_eq!(stats[OBSERVED_RATE_LIMITED as usize], 0, "{stats:?}");
    assert_eq!(stats[OBSERVED_RING_FULL as usize], 0, "{stats:?}");
    assert_eq!(drain(&mut learned), vec![], "not learning");

    // Learning: every Modbus frame, both ways.
    dp.set_learn_until(monotonic_ns() + 60_000_000_000).unwrap();
    assert!(c.send(&mut dp, &read(3, 0, 2)).passed());
    assert!(c.reply(&mut dp, &adu(1, 3, &[4, 0, 7, 0, 8])).passed());
    let got = drain(&mut learned);
    let kinds: Vec<(u8, u16)> = got.iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(kinds, vec![(OBSERVED_LEARN, 40000), (OBSERVED_LEARN, 502)]);
    assert_eq!(got[0].4, read(3, 0, 2));
    assert_eq!(dp.learn_stats().unwrap(), (2, 0));

    // A deadline past: nothing copied, and the datapath switched learning off itself.
    let past = monotonic_ns() - 1;
    dp.set_learn_until(past).unwrap();
    assert!(c.send(&mut dp, &read(3, 0, 1)).passed());
    assert_eq!(drain(&mut learned), vec![]);
    assert_eq!(dp.learn_until().unwrap(), 0, "the deadline was cleared");
    assert_eq!(dp.learn_stats().unwrap(), (2, 0));
}

/// Identity answers are copied whoever looks at the flow: the Modbus inspector for an inspected
/// conduit (above), the main program for a conduit that only allows the port. Both while
/// learning, once each (the inspector's copy is not repeated by the main program's).
#[test]
fn identities_of_flows_inspected_or_not() {
    let plain = policy("functions: [read]", "").replace(
        "      - modbus: { functions: [read] }",
        "      - tcp: { ports: [502] }",
    );
    assert!(plain.contains("tcp: { ports: [502] }"), "{plain}");
    let inspected = policy(r#"functions: [read, "43/14"]"#, "");
    for (name, yaml) in [("plain", &plain), ("inspected", &inspected)] {
        let mut dp = datapath(yaml);
        let mut observed = dp.take_observed().expect("the OBSERVED ring");
        let mut c = Conn::new(40000, 502);
        c.open(&mut dp);
        assert_eq!(drain(&mut observed).len(), 1, "{name}: the flow's answer");

        // An ordinary answer is not copied; an identity answer is, once.
        assert!(c.send(&mut dp, &read(3, 0, 1)).passed(), "{name}");
        assert!(c.reply(&mut dp, &adu(1, 3, &[2, 0, 7])).passed(), "{name}");
        assert_eq!(drain(&mut observed), vec![], "{name}");
        assert!(c.send(&mut dp, &mei(14)).passed(), "{name}");
        let answer = identification_response();
        assert!(c.reply(&mut dp, &answer).passed(), "{name}");
        let got = drain(&mut observed);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!((got[0].0, got[0].1), (OBSERVED_IDENTITY, 502), "{name}");
        assert_eq!(got[0].4, answer, "{name}");

        // Learning copies every frame to its own ring; the identity copy is still one.
        dp.set_learn_until(monotonic_ns() + 60_000_000_000).unwrap();
        assert!(c.send(&mut dp, &mei(14)).passed(), "{name}");
        assert!(c.reply(&mut dp, &answer).passed(), "{name}");
        let got = drain(&mut observed);
        assert_eq!(got.len(), 1, "{name} while learning: {got:?}");
        assert_eq!(got[0].0, OBSERVED_IDENTITY, "{name}");
        assert_eq!(dp.learn_stats().unwrap(), (2, 0), "{name}");
    }
}

/// Every record waiting in `ring`, TCP or UDP: (kind, source port, payload).
fn drain_any(ring: &mut RingBuf<MapData>) -> Vec<(u8, u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(record) = ring.next() {
        let r = decode(&record).expect("a record of the datapath's shape");
        let p = SlicedPacket::from_ethernet(r.frame).expect("the copy is the frame");
        let (port, payload) = match p.transport {
            Some(TransportSlice::Tcp(t)) => (t.source_port(), t.payload().to_vec()),
            Some(TransportSlice::Udp(u)) => (u.source_port(), u.payload().to_vec()),
            _ => panic!("neither TCP nor UDP: {:?}", r.frame),
        };
        out.push((r.kind, port, payload));
    }
    out
}

/// ListIdentity replies of inspected EtherNet/IP flows: over TCP the inspector finds them among
/// the answers it frames (and no other answer is copied); over UDP the main program finds them
/// by their first bytes. One copy each.
#[test]
fn enip_identity_answers() {
    use enip_common::*;
    let mut dp = datapath(&policy("commands: [list_identity, register_session]", ""));
    let mut observed = dp.take_observed().expect("the OBSERVED ring");
    let reply = encap(0x63, 0, &[1, 0, 0x0c, 0, 4, 0, 1, 2, 3, 4]);

    let mut c = Conn::new(40002, 44818);
    c.open(&mut dp);
    assert_eq!(drain_any(&mut observed).len(), 1, "the flow's answer");
    assert!(c.send(&mut dp, &register_session()).passed());
    assert!(c.reply(&mut dp, &register_reply(SESSION)).passed());
    assert_eq!(drain_any(&mut observed), vec![], "an ordinary answer");
    assert!(c.send(&mut dp, &list_identity()).passed());
    assert!(c.reply(&mut dp, &reply).passed());
    assert_eq!(
        drain_any(&mut observed),
        vec![(OBSERVED_IDENTITY, 44818, reply.clone())],
        "TCP"
    );

    // UDP: the first reply is the flow's answer (copied as that); the next is an identity
    // answer.
    let ask = udp(CLIENT, SERVER, 2000, 44818, &list_identity());
    let answer = udp(SERVER, CLIENT, 44818, 2000, &reply);
    assert!(run(&mut dp, &ask).passed());
    assert!(run(&mut dp, &answer).passed());
    assert_eq!(
        drain_any(&mut observed),
        vec![(OBSERVED_FLOW_ANSWERED, 44818, reply.clone())],
        "UDP, the flow's answer"
    );
    assert!(run(&mut dp, &ask).passed());
    assert!(run(&mut dp, &answer).passed());
    assert_eq!(
        drain_any(&mut observed),
        vec![(OBSERVED_IDENTITY, 44818, reply)],
        "UDP"
    );
}

/// Every first-use record waiting in `ring`: (the record's bytes, the TCP payload from the
/// message it names), each checked to be a client's request segment.
fn uses(ring: &mut RingBuf<MapData>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(record) = ring.next() {
        let r = decode(&record).expect("a record of the datapath's shape");
        assert_eq!(r.kind, OBSERVED_USE);
        let p = SlicedPacket::from_ethernet(r.frame).expect("the copy is the frame");
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP: {:?}", r.frame);
        };
        assert!(t.source_port() >= 40000, "a client's segment");
        let from = usize::from(r.message);
        out.push((record.to_vec(), t.payload()[from..].to_vec()));
    }
    out
}

/// The one conversation an observer fed `records` knows.
fn conversation(records: &[(Vec<u8>, Vec<u8>)]) -> Conversation {
    let clock = Clock::now();
    let mut o = Observer::default();
    for (bytes, _) in records {
        observe(&mut o, &decode(bytes).unwrap(), &clock);
    }
    let mut all: Vec<_> = o.inventory.conversations.into_values().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all.pop().unwrap()
}

#[test]
fn modbus_first_uses_of_a_connection() {
    let mut dp = datapath(&policy(r#"functions: [read, "8/0"]"#, ""));
    let mut observed = dp.take_observed().expect("the OBSERVED ring");
    let mut ring = dp.take_observed_uses().expect("the OBSERVED_USES ring");
    let mut c = Conn::new(40000, 502);
    c.open(&mut dp);
    assert_eq!(uses(&mut ring), vec![], "the handshake uses nothing");

    // The first read: copied from its ADU on. The same read again, and the answers: nothing.
    let first = read(3, 0, 1);
    assert!(c.send(&mut dp, &first).passed());
    assert!(c.reply(&mut dp, &adu(1, 3, &[2, 0, 7])).passed());
    assert!(c.send(&mut dp, &read(3, 100, 4)).passed());
    let mut got = uses(&mut ring);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, first);

    // Two ADUs in one segment, the second a new function: the record names the second.
    let known = read(3, 0, 1);
    let new = read(4, 10, 2);
    let both = [known.clone(), new.clone()].concat();
    assert!(c.send(&mut dp, &both).passed());
    let more = uses(&mut ring);
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0].1, new);
    got.extend(more);

    // A known function for another unit, and a diagnostics sub-function: each news.
    let other_unit = adu(7, 3, &[0, 0, 0, 1]);
    assert!(c.send(&mut dp, &other_unit).passed());
    assert!(c.send(&mut dp, &diagnostics(0)).passed());
    let more = uses(&mut ring);
    assert_eq!(more.len(), 2, "{more:?}");
    got.extend(more);

    // A write the rule denies is still what the client used: copied, and the flow blocked.
    let write = write_single_register(0, 10);
    assert!(!c.send(&mut dp, &write).passed());
    let more = uses(&mut ring);
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0].1, write);
    got.extend(more);

    let stats = dp.uses_stats().unwrap();
    assert_eq!(stats[OBSERVED_SENT as usize], 5, "{stats:?}");
    assert_eq!(stats[OBSERVED_RATE_LIMITED as usize], 0, "{stats:?}");
    // The flow answer alone went to OBSERVED.
    let answers = drain(&mut observed);
    assert_eq!(answers.len(), 1, "{answers:?}");

    // A new connection on the same ports starts over.
    let mut again = Conn::new(40000, 502);
    again.cseq = c.cseq.wrapping_add(100_000);
    again.open(&mut dp);
    assert!(again.send(&mut dp, &read(3, 0, 1)).passed());
    assert_eq!(uses(&mut ring).len(), 1);

    // What the inventory makes of the copies: every function and unit the client used.
    let m = conversation(&got)
        .modbus
        .expect("Modbus requests in the inventory");
    let functions: Vec<&str> = m.functions.keys().map(String::as_str).collect();
    assert_eq!(functions, ["3", "4", "6", "8/0"]);
    assert_eq!(m.units.keys().copied().collect::<Vec<_>>(), [1, 7]);
}

#[test]
fn enip_first_uses_of_a_connection() {
    use enip_common::*;
    let mut dp = datapath(&policy("services: [read]", ""));
    let mut ring = dp.take_observed_uses().expect("the OBSERVED_USES ring");
    let mut c = Conn::new(40001, 44818);
    c.open(&mut dp);
    assert!(c.send(&mut dp, &register_session()).passed());
    assert!(c.reply(&mut dp, &register_reply(SESSION)).passed());
    let mut got = uses(&mut ring);
    assert_eq!(got.len(), 1, "RegisterSession: {got:?}");
    assert_eq!(got[0].1, register_session());

    // A Read Tag: a new command and a new pair. Again, or another tag: nothing new.
    let read = rr(SESSION, &read_tag("Line1_Speed"));
    assert!(c.send(&mut dp, &read).passed());
    assert!(c.send(&mut dp, &read).passed());
    assert!(c
        .send(&mut dp, &rr(SESSION, &read_tag("Line2_Speed")))
        .passed());
    let more = uses(&mut ring);
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0].1, read);
    got.extend(more);

    // Get Attribute Single of the Identity object, then inside a Multiple Service Packet
    // with a Read Tag: the MSP itself is the news of the second.
    let get = rr(SESSION, &get_attr(1, 1, 7));
    assert!(c.send(&mut dp, &get).passed());
    let packet = rr(SESSION, &msp(&[read_tag("A"), get_attr(1, 1, 1)]));
    let d = c.send(&mut dp, &packet);
    assert!(d.passed(), "{d:?}");
    let more = uses(&mut ring);
    assert_eq!(more.len(), 2, "{more:?}");
    assert_eq!((&more[0].1, &more[1].1), (&get, &packet));
    got.extend(more);

    // A message split over two segments: framed across them, not copied (a copy of the second
    // segment could not show it); its use is found when it comes whole.
    let set = rr(SESSION, &get_attr(0xf5, 1, 1));
    assert!(c.send(&mut dp, &set[..30]).passed());
    assert!(c.send(&mut dp, &set[30..]).passed());
    assert_eq!(uses(&mut ring), vec![]);
    assert!(c.send(&mut dp, &set).passed());
    let more = uses(&mut ring);
    assert_eq!(more.len(), 1, "{more:?}");
    got.extend(more);

    let e = conversation(&got)
        .enip
        .expect("EtherNet/IP requests in the inventory");
    assert_eq!(e.commands.keys().copied().collect::<Vec<_>>(), [0x65, 0x6f]);
    let services: Vec<&str> = e.services.keys().map(String::as_str).collect();
    assert_eq!(
        services,
        ["0x0a@0x02", "0x0e@0x01", "0x0e@0xf5", "0x4c@tag"]
    );
}
