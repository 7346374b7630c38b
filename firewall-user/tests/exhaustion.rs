//! Exhaustion: a host in an allowed zone that opens flows as fast as it can must not push out
//! the established flows of another zone, nor their inspectors' state, and state that is lost
//! anyway is never trusted. Runs the real program through BPF_PROG_TEST_RUN; needs root and BPF
//! and fails (never skips) without them.

#[path = "common/modbus.rs"]
mod modbus_common;

use firewall_common::{
    counters::{FLOW_ADOPTED, FLOW_PROMOTED, VERDICT_RESET},
    flow::{FlowKey, MAX_EMBRYOS},
    reason::Reason,
};
use modbus_common::{datapath, read, segment, write_single_register, Conn, CLIENT, SERVER};
use otfw::datapath::Datapath;

/// Zones `ctl` (the HMI), `rogue` (a compromised host in another zone that may also poll the
/// PLC) and `cell` (the PLC), both allowed to read holding registers over Modbus.
const POLICY: &str = "version: 1
gateway:
  bridge: br-test
defaults:
  action: deny
  midstream: adopt
zones:
  ctl:
    networks: [10.0.1.0/24]
  cell:
    networks: [10.0.2.0/24]
  rogue:
    networks: [10.0.3.0/24]
conduits:
  - name: plc
    from: ctl
    to: cell
    allow:
      - modbus: { functions: [read_holding_registers] }
  - name: rogue-plc
    from: rogue
    to: cell
    allow:
      - modbus: { functions: [read_holding_registers] }
";

const ROGUE: [u8; 4] = [10, 0, 3, 66];

fn rogue_frame(sport: u16, seq: u32, ack: u32, flags: &str) -> Vec<u8> {
    segment(ROGUE, SERVER, sport, 502, seq, ack, flags, &[])
}

fn plc_frame(dport: u16, seq: u32, ack: u32, flags: &str) -> Vec<u8> {
    segment(SERVER, ROGUE, 502, dport, seq, ack, flags, &[])
}

fn run(dp: &mut Datapath, frame: &[u8]) -> otfw::datapath::Decision {
    dp.run_frame(frame).expect("BPF_PROG_TEST_RUN")
}

fn flow_events(dp: &Datapath) -> Vec<u64> {
    dp.counters().expect("reading counters").flows.to_vec()
}

/// The HMI's connection, in the initiator's direction as the inspectors key it.
fn hmi_key(conn: &Conn) -> FlowKey {
    let mut key = FlowKey {
        sport: conn.sport,
        dport: conn.dport,
        proto: 6,
        ..FlowKey::default()
    };
    key.src[10..12].copy_from_slice(&[0xff, 0xff]);
    key.src[12..].copy_from_slice(&CLIENT);
    key.dst[10..12].copy_from_slice(&[0xff, 0xff]);
    key.dst[12..].copy_from_slice(&SERVER);
    key
}

#[test]
fn syn_flood_keeps_other_zones_flows_and_inspector_state() {
    let mut dp = datapath(POLICY);
    let mut hmi = Conn::new(40000, 502);
    hmi.open(&mut dp);
    assert!(
        hmi.send(&mut dp, &read(3, 0, 10)).passed(),
        "the HMI's read"
    );
    let (modbus_states, _) = dp.inspector_states();
    assert_eq!(
        modbus_states, 1,
        "state is kept for the answered connection only"
    );
    let before = flow_events(&dp);

    // More SYNs than the table of unanswered flows holds, every one a new flow of `rogue`.
    let flood = MAX_EMBRYOS + MAX_EMBRYOS / 4;
    let mut passed = 0u32;
    for i in 0..flood {
        let sport = 1024 + (i % 60000) as u16;
        let seq = i.wrapping_mul(7919);
        // Distinct tuples: the source port and, past 60000, the source address' last byte.
        let mut frame = rogue_frame(sport, seq, 0, "S");
        if i >= 60000 {
            frame = segment([10, 0, 3, 67], SERVER, sport, 502, seq, 0, "S", &[]);
        }
        passed += run(&mut dp, &frame).passed() as u32;
    }
    let after = flow_events(&dp);
    println!(
        "SYN flood from zone rogue: {flood} SYNs sent, {passed} passed; unanswered-flow table \
         holds {MAX_EMBRYOS}; flows created {}, promoted {}",
        after[0] - before[0],
        after[FLOW_PROMOTED as usize] - before[FLOW_PROMOTED as usize]
    );
    assert_eq!(passed, flood, "the SYNs are allowed by rogue-plc");
    assert_eq!(
        after[FLOW_PROMOTED as usize], before[FLOW_PROMOTED as usize],
        "no SYN of the flood was answered"
    );
    let (modbus_states, _) = dp.inspector_states();
    assert_eq!(modbus_states, 1, "the flood left no inspector state behind");

    // The HMI's connection goes on where it was: same flow (not adopted again), same framing
    // (a write is still refused, a read still passes).
    let adopted = after[FLOW_ADOPTED as usize];
    let d = hmi.send(&mut dp, &read(3, 0, 10));
    assert!(d.passed(), "the HMI's read after the flood: {d:?}");
    assert_eq!(d.adus.len(), 1, "framed as one ADU");
    let d = hmi.send(&mut dp, &write_single_register(0, 1));
    assert_eq!(d.reason, Reason::ModbusFunctionDenied, "{d:?}");
    assert_eq!(
        flow_events(&dp)[FLOW_ADOPTED as usize],
        adopted,
        "nothing adopted"
    );
}

#[test]
fn a_zone_opens_no_more_than_its_share() {
    let (loaded, diagnostics) = otfw::policy::check_str("test.yaml", POLICY);
    let mut compiled = loaded
        .unwrap_or_else(|| panic!("{diagnostics:#?}"))
        .compiled;
    for (_, info) in compiled.zone_info.iter_mut() {
        info.max_flows = 3;
    }
    let mut dp = Datapath::load().expect("loading the XDP object (needs root and BPF)");
    dp.install(&compiled).expect("installing the policy");
    dp.enable_trace().expect("enabling the trace");

    // Five SYNs: none answered yet, so none holds a share.
    for port in 0..5u16 {
        let d = run(&mut dp, &rogue_frame(41000 + port, 100, 0, "S"));
        assert!(d.passed(), "SYN {port}: {d:?}");
    }
    // Their answers: three take the zone's share, the other two are refused.
    let mut verdicts = Vec::new();
    for port in 0..5u16 {
        let d = run(&mut dp, &plc_frame(41000 + port, 900, 101, "SA"));
        verdicts.push(d.reason);
    }
    assert_eq!(
        verdicts,
        [
            Reason::None,
            Reason::None,
            Reason::None,
            Reason::FlowQuota,
            Reason::FlowQuota
        ]
    );
    // A sixth connection is refused at its SYN.
    let d = run(&mut dp, &rogue_frame(41010, 100, 0, "S"));
    assert_eq!(d.reason, Reason::FlowQuota, "{d:?}");
    assert!(d.dropped());
    let shares = dp.zone_shares().expect("zone shares");
    let rogue = shares
        .iter()
        .find(|s| s.zone == "rogue")
        .expect("zone rogue");
    assert_eq!((rogue.flows, rogue.max_flows), (3, 3), "{shares:?}");

    // Another zone is not affected.
    let mut hmi = Conn::new(40000, 502);
    hmi.open(&mut dp);
    assert!(hmi.send(&mut dp, &read(3, 0, 1)).passed());

    // A connection that ends gives its place back.
    let d = run(&mut dp, &rogue_frame(41000, 101, 901, "R"));
    assert!(d.passed(), "{d:?}");
    let d = run(&mut dp, &rogue_frame(41010, 100, 0, "S"));
    assert!(d.passed(), "a SYN once the share has room: {d:?}");
    let d = run(&mut dp, &plc_frame(41010, 900, 101, "SA"));
    assert!(d.passed(), "{d:?}");
    let shares = dp.zone_shares().expect("zone shares");
    let rogue = shares
        .iter()
        .find(|s| s.zone == "rogue")
        .expect("zone rogue");
    assert_eq!(rogue.flows, 3, "{shares:?}");
}

#[test]
fn lost_inspector_state_resets_the_connection() {
    let mut dp = datapath(POLICY);
    let mut hmi = Conn::new(40000, 502);
    hmi.open(&mut dp);
    assert!(hmi.send(&mut dp, &read(3, 0, 10)).passed());
    // Half an ADU: the next segment starts in the middle of it, where a framing restarted
    // from scratch would believe whatever the client put there.
    let adu = read(3, 0, 10);
    assert!(hmi.send(&mut dp, &adu[..5]).passed());
    dp.evict_modbus_state(&hmi_key(&hmi)).expect("evicting");

    let d = hmi.send(&mut dp, &adu[5..]);
    assert_eq!(d.reason, Reason::InspectorStateLost, "{d:?}");
    assert_eq!(d.verdict, VERDICT_RESET as u8);
    // Reset onward: the server's end closes at once.
    assert!(d.passed(), "the segment goes on as a RST: {d:?}");
    // Every later segment, either side, is answered with a reset.
    let d = hmi.send(&mut dp, &read(3, 0, 10));
    assert!(d.reset(), "{d:?}");
    let d = hmi.reply(&mut dp, &[0, 1, 0, 0, 0, 3, 1, 3, 0]);
    assert!(d.reset(), "{d:?}");
}

#[test]
fn a_new_connection_after_lost_state_is_followed_from_its_syn() {
    let mut dp = datapath(POLICY);
    let mut hmi = Conn::new(40001, 502);
    hmi.open(&mut dp);
    assert_eq!(dp.inspector_states().0, 1);
    dp.evict_modbus_state(&hmi_key(&hmi)).expect("evicting");
    // The client reconnects on the same ports: its SYN and the server's SYN-ACK start fresh
    // framing (a SYN is never "lost state").
    let mut again = Conn::new(40001, 502);
    again.cseq = 0x1000_0000;
    again.open(&mut dp);
    let d = again.send(&mut dp, &read(3, 0, 10));
    assert!(d.passed(), "{d:?}");
    let d = again.send(&mut dp, &write_single_register(0, 1));
    assert_eq!(d.reason, Reason::ModbusFunctionDenied, "{d:?}");
}
