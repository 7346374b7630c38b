//! The frames the datapath copies for the inventory (`OBSERVED`) and for learning
//! (`LEARN_FRAMES`), through the real XDP program (BPF_PROG_TEST_RUN): a flow's answer once, an
//! identity answer, nothing else of an established flow; while `LEARN_UNTIL` lies ahead every
//! Modbus frame, and after it nothing (the deadline cleared by the datapath). Needs root and
//! BPF; fails (never skips) without them.

#[path = "common/modbus.rs"]
mod modbus_common;

use aya::maps::{MapData, RingBuf};
use etherparse::{SlicedPacket, TransportSlice};
use firewall_common::observed::{
    OBSERVED_FLOW_ANSWERED, OBSERVED_IDENTITY, OBSERVED_LEARN, OBSERVED_RATE_LIMITED,
    OBSERVED_RING_FULL, OBSERVED_SENT,
};
use modbus_common::*;
use otfw::inventory::live::{decode, monotonic_ns};

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
