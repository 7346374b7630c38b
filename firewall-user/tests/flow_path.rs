//! Table tests of the datapath's shortcuts: the flow entry that answers a tracked flow's
//! packets without zone resolution, the decision cache of denied untracked packets, and the
//! host table consulted before the tries. Each shortcut must decide exactly as the long way
//! would (the verdicts are checked row by row, as in every table test), and must be taken when
//! it should (counted in `PATH_STATS`). Needs root and BPF; fails (never skips) without them.

#[allow(dead_code)]
mod common;

use common::{
    frames::ip,
    policy::{it_ot, it_ot_shifted, Conduit, Policy},
    table::{case, drop, frame, frame_on, load, monitor, pass, reset, run, Step, NONE},
    TestInterface,
};
use firewall_common::{
    config::FLAG_TRACE,
    counters::{
        Traffic, PATH_DENIAL_CACHED, PATH_DENIAL_STORED, PATH_FLOW_HIT, PATH_STATS_LEN,
        VERDICT_DROP, VERDICT_MONITOR, VERDICT_PASS, VERDICT_RESET,
    },
    event::{EVENTS_RATE_LIMITED, EVENTS_SENT},
    flow::{DenyKey, DENY_TCP_SYN, MAX_DENIALS},
    reason::Reason::{
        self, FlowQuota, MidstreamDenied, NoConduit, NotTracked, PolicyRevoked, ReverseSyn,
        Spoofed, Unzoned,
    },
};
use otfw::datapath::Datapath;
use std::collections::{HashMap, HashSet};

const IT4: &str = "10.0.2.10";
const OT4: &str = "10.0.1.20";
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn paths(dp: &Datapath) -> [u64; PATH_STATS_LEN as usize] {
    dp.path_stats().expect("reading PATH_STATS")
}

/// Runs `cases` on a freshly loaded datapath (a table checks the counters of the whole run) and
/// returns it with how often each shortcut was taken: (flow hits, denials stored, denials
/// decided from the cache).
fn run_counting(cases: Vec<common::table::Case>) -> (Datapath, [u64; 3]) {
    let mut dp = load();
    run(&mut dp, cases);
    let p = paths(&dp);
    let counts = [
        p[PATH_FLOW_HIT as usize],
        p[PATH_DENIAL_STORED as usize],
        p[PATH_DENIAL_CACHED as usize],
    ];
    (dp, counts)
}

#[test]
fn flow_entry() {
    let p = it_ot();
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let mut dp = load();

    // Each side's first packet resolves zones (the SYN while opening the flow, the SYN-ACK
    // on its side's first arrival); every later packet is answered by the entry alone.
    let (_, [hits, ..]) = run_counting(vec![case(
        "established flow, both directions",
        &p,
        vec![
            frame(c.syn(40000, 502), pass("modbus").creates()),
            frame(s.syn_ack(502, 40000), pass("modbus")),
            frame(c.ack(40000, 502), pass("modbus")),
            frame(s.ack(502, 40000), pass("modbus")),
            frame(c.ack(40000, 502), pass("modbus")),
            frame(c.ack(40000, 502), pass("modbus")),
            frame(c.ack(40000, 502), pass("modbus")),
        ],
    )]);
    assert_eq!(hits, 5, "packets answered by the flow entry alone");

    // A swap re-decides the flow once (from whichever side speaks first), and the ports
    // checked under the older policy are checked again under the new one.
    let (_, [hits, ..]) = run_counting(vec![case(
        "revalidated after a swap, then answered by the entry again",
        &p,
        vec![
            frame(c.syn(40001, 502), pass("modbus").creates()),
            frame(s.syn_ack(502, 40001), pass("modbus")),
            Step::Install(it_ot_shifted()),
            frame(s.ack(502, 40001), pass("modbus").revalidates()),
            frame(c.ack(40001, 502), pass("modbus")),
            frame(c.ack(40001, 502), pass("modbus")),
            frame(s.ack(502, 40001), pass("modbus")),
            Step::Install(it_ot()),
            frame(c.ack(40001, 502), pass("modbus").revalidates()),
            frame(c.ack(40001, 502), pass("modbus")),
        ],
    )]);
    assert_eq!(
        hits, 3,
        "after each swap only re-checked sides hit the entry"
    );

    // Two swaps in a row while the flow is idle: the entry's epoch names neither slot's
    // generation any more by the time it is seen, and it is still re-decided, exactly once.
    let zones_only = Policy::new()
        .zone("it", &["10.0.2.0/24", "2001:db8:2::/64"])
        .zone("ot", &["10.0.1.0/24", "2001:db8:1::/64"]);
    run(
        &mut dp,
        vec![
            case(
                "two swaps while idle, the conduit kept",
                &p,
                vec![
                    frame(c.udp(5000, 161, b"get"), pass("snmp").creates()),
                    Step::Install(zones_only.clone()),
                    Step::Install(it_ot_shifted()),
                    frame(s.udp(161, 5000, b"response"), pass("snmp").revalidates()),
                    frame(c.udp(5000, 161, b"get"), pass("snmp")),
                ],
            ),
            case(
                "two swaps while idle, the conduit gone",
                &p,
                vec![
                    frame(c.udp(5001, 161, b"get"), pass("snmp").creates()),
                    Step::Install(it_ot_shifted()),
                    Step::Install(zones_only),
                    frame(
                        s.udp(161, 5001, b"response"),
                        drop(PolicyRevoked, NONE).revokes(),
                    ),
                    frame(s.udp(161, 5001, b"response"), drop(NoConduit, NONE)),
                ],
            ),
            case(
                "echo: the request's flow answers replies, not requests the other way",
                &p,
                vec![
                    frame(c.echo_request(7, 1), pass("ping").creates()),
                    frame(s.echo_reply(7, 1), pass("ping")),
                    frame(s.echo_request(7, 2), drop(NoConduit, NONE)),
                    frame(c.echo_reply(7, 2), drop(NotTracked, NONE)),
                    frame(c.echo_request(7, 3), pass("ping")),
                ],
            ),
        ],
    );
}

#[test]
fn flow_memo_never_outlives_its_flow() {
    // Each CPU remembers the flows it passed in the current clock tick and answers their next
    // packets of the tick without the flow lookup (counted as flow hits). A flow ended in that
    // tick must not be recalled: the packet after a RST is decided as one of no flow (adopted
    // mid-stream, which the table counts), from either side. Several rounds, so that most run
    // inside one tick.
    let p = it_ot();
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let cases = (0..4u16)
        .map(|round| {
            let port = 40100 + round;
            case(
                "a flow reset in the middle of a tick",
                &p,
                vec![
                    frame(c.syn(port, 502), pass("modbus").creates()),
                    frame(s.syn_ack(502, port), pass("modbus")),
                    frame(c.ack(port, 502), pass("modbus")),
                    frame(c.ack(port, 502), pass("modbus")),
                    frame(s.ack(502, port), pass("modbus")),
                    frame(s.ack(502, port), pass("modbus")),
                    frame(c.tcp(port, 502, "R", 1001, 0, &[]), pass("modbus").closes()),
                    frame(s.ack(502, port), pass("modbus").adopts()),
                    frame(c.tcp(port, 502, "R", 1001, 0, &[]), pass("modbus").closes()),
                    frame(c.ack(port, 502), pass("modbus").adopts()),
                    frame(c.ack(port, 502), pass("modbus")),
                ],
            )
        })
        .collect();
    let (_, [hits, ..]) = run_counting(cases);
    // Per round: the client's ACKs and RST, the server's ACKs (their ports were checked at the
    // SYN and the SYN-ACK), and the client's last ACK (its port checked at the adoption).
    assert_eq!(
        hits,
        4 * 6,
        "packets answered by the flow entry or the memo"
    );
}

/// What the readers of the counters see: passes, flow hits, and conduit `conduit`'s passed
/// packets and bytes in the generation `epoch`.
/// `conduit`'s traffic of `verdict` in the generation `epoch`, as readers see it.
fn traffic(dp: &Datapath, epoch: u32, conduit: &str, verdict: u32) -> Traffic {
    let generation = dp
        .generations()
        .find(|g| g.epoch == epoch)
        .expect("the generation is installed");
    dp.generation_traffic(generation)
        .expect("reading the conduit counters")
        .into_iter()
        .find(|t| t.conduit == conduit)
        .expect("the conduit is in the generation")
        .by_verdict[verdict as usize]
}

fn seen(dp: &Datapath, epoch: u32, conduit: &str) -> [u64; 4] {
    let reasons = dp.counters().expect("reading the counters").reasons;
    let traffic = traffic(dp, epoch, conduit, VERDICT_PASS);
    [
        reasons[Reason::None as usize][VERDICT_PASS as usize],
        paths(dp)[PATH_FLOW_HIT as usize],
        traffic.packets,
        traffic.bytes,
    ]
}

/// Runs `frame` (conduit `snmp`'s) `n` times in a timed loop with tracing off, as on a live
/// gateway: every run must pass, the memo must hold back the passes it answered (all but each
/// tick's first), and readers must see each pass exactly once, in `epoch`'s traffic. Returns
/// what they see (as `seen`).
fn passes_seen_once(dp: &mut Datapath, epoch: u32, frame: &[u8], n: u64) -> [u64; 4] {
    let before = seen(dp, epoch, "snmp");
    dp.set_config_flags(0, FLAG_TRACE).expect("tracing off");
    let run = dp.time_frame(frame, n as u32).expect("timed test run");
    assert_eq!(run.action, XDP_PASS);
    assert!(
        dp.held_back_passes().expect("reading the memo") > 0,
        "the memo holds back the passes it answered (all but each tick's first)"
    );
    let after = [
        before[0] + n,
        before[1] + n,
        before[2] + n,
        before[3] + n * frame.len() as u64,
    ];
    assert_eq!(seen(dp, epoch, "snmp"), after, "passes held back are seen");
    after
}

#[test]
fn passes_held_back_by_the_flow_memo() {
    // On a live gateway (no decision trace), a memo hit on a flow without an inspector is
    // counted in the memo's slot instead of the counter maps: readers add what the slots
    // hold, and a slot taken for another lookup moves its counts into the maps. Either way each
    // pass is seen exactly once: as a pass, a flow hit, and its conduit's packet and bytes in
    // the generation that decided it, never in a later generation's.
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let get = c.udp(5000, 161, b"get");
    let len = get.len() as u64;
    const N: u64 = 2000;
    let mut dp = load();
    let first = dp.install(&it_ot().compile()).expect("installing").epoch;
    dp.enable_trace().expect("tracing on");
    // Opens and establishes the flow; `run_frame` pins this thread to its CPU, whose memo the
    // runs below all use.
    for f in [&get, &s.udp(161, 5000, b"response"), &get] {
        assert!(dp.run_frame(f).expect("test run").passed());
    }
    let after = passes_seen_once(&mut dp, first, &get, N);

    // After a swap the flow's next packet misses the memo and moves the slot's counts into
    // the maps, to the generation that decided them; the packet itself (re-decided) counts in
    // the new one.
    let second = dp
        .install(&it_ot_shifted().compile())
        .expect("installing")
        .epoch;
    dp.enable_trace().expect("tracing on");
    let d = dp.run_frame(&get).expect("test run");
    assert!(d.passed());
    assert_eq!(d.epoch, second);
    assert_eq!(dp.held_back_passes().expect("reading the memo"), 0);
    let moved = seen(&dp, first, "snmp");
    assert_eq!(
        moved[2..],
        after[2..],
        "the first generation's traffic, now in its slot"
    );
    assert_eq!(moved[..2], [after[0] + 1, after[1]], "passes and flow hits");
    assert_eq!(seen(&dp, second, "snmp")[2..], [1, len]);

    // Counts held back under a generation whose slot has since been given to another (two
    // swaps) are passes and flow hits still, but never that other generation's traffic.
    dp.set_config_flags(0, FLAG_TRACE).expect("tracing off");
    dp.time_frame(&get, N as u32).expect("timed test run");
    assert!(dp.held_back_passes().expect("reading the memo") > 0);
    let totals = seen(&dp, second, "snmp");
    dp.install(&it_ot().compile()).expect("installing");
    let fourth = dp
        .install(&it_ot_shifted().compile())
        .expect("installing")
        .epoch;
    dp.enable_trace().expect("tracing on");
    assert!(dp.run_frame(&get).expect("test run").passed());
    assert_eq!(dp.held_back_passes().expect("reading the memo"), 0);
    assert_eq!(
        seen(&dp, fourth, "snmp"),
        [totals[0] + 1, totals[1], 1, len],
        "the re-decided packet is the fourth generation's only traffic"
    );
}

#[test]
fn unanswered_udp_flows_are_memoised() {
    // A UDP flow nobody answers (implicit I/O whose other direction is multicast, syslog)
    // stays unanswered for its life. Its initiator's datagrams are answered by the memo like
    // an established flow's (held back in the slot), every one counted once, the flow still
    // one unanswered entry; the answer promotes it as before, and the initiator's datagrams
    // after that pass through the established entry.
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let get = c.udp(5001, 161, b"trap");
    const N: u64 = 2000;
    let mut dp = load();
    let epoch = dp.install(&it_ot().compile()).expect("installing").epoch;
    dp.enable_trace().expect("tracing on");
    assert!(dp.run_frame(&get).expect("test run").passed());
    passes_seen_once(&mut dp, epoch, &get, N);
    let sweep = dp.sweep_flows().expect("sweeping");
    assert_eq!(
        (sweep.embryonic, sweep.established),
        (1, 0),
        "still one unanswered flow"
    );

    // The answer promotes the flow; the initiator's next datagrams (in the same tick or not)
    // are the established flow's.
    dp.enable_trace().expect("tracing on");
    assert!(dp
        .run_frame(&s.udp(161, 5001, b"ack"))
        .expect("test run")
        .passed());
    for _ in 0..3 {
        let d = dp.run_frame(&get).expect("test run");
        assert!(d.passed());
        assert_eq!(d.reason, Reason::None);
    }
    let sweep = dp.sweep_flows().expect("sweeping");
    assert_eq!(
        (sweep.embryonic, sweep.established),
        (0, 1),
        "promoted once"
    );
    // A datagram from the responder's side of another port stays decided by the policy: the
    // memo of the initiator's flow stands for nothing else.
    assert!(dp
        .run_frame(&s.udp(161, 5002, b"unasked"))
        .expect("test run")
        .dropped());
}

/// What readers see of a denial's drops: [its reason's drops, denials decided from the cache,
/// `conduit`'s dropped packets and bytes in the generation `epoch`].
fn dropped(dp: &Datapath, epoch: u32, reason: Reason, conduit: &str) -> [u64; 4] {
    let reasons = dp.counters().expect("reading the counters").reasons;
    let traffic = traffic(dp, epoch, conduit, VERDICT_DROP);
    [
        reasons[reason as usize][VERDICT_DROP as usize],
        paths(dp)[PATH_DENIAL_CACHED as usize],
        traffic.packets,
        traffic.bytes,
    ]
}

/// Events offered to the ring so far (sent or refused by the rate limit).
fn events_offered(dp: &Datapath) -> u64 {
    let e = dp.event_stats().expect("reading EVENT_STATS");
    e[EVENTS_SENT as usize] + e[EVENTS_RATE_LIMITED as usize]
}

#[test]
fn drops_held_back_by_the_denial_memo() {
    // On a live gateway (no decision trace), a repeated denial that this CPU's memo answers
    // and that is dropped is counted in the memo's slot, not in the counter maps, and offers
    // one event per timer tick. Readers add what the slots hold; a slot taken for another
    // denial moves its counts into the maps. Either way each drop is seen exactly once: as its
    // reason's drop, a denial decided from the cache, and its conduit's packet and bytes in the
    // generation that decided it.
    let lo = otfw::datapath::ifindex("lo").expect("ifindex of lo");
    let s = ip(OT4, IT4);
    let syn = s.syn(40000, 502);
    let len = syn.len() as u64;
    const N: u64 = 2000;
    let mut dp = load();
    let first = dp.install(&it_ot().compile()).expect("installing").epoch;
    dp.enable_trace().expect("tracing on");
    // Decided through zones and conduits, remembered in the cache and this CPU's memo
    // (`run_frame` pins this thread to its CPU, whose memo the runs below all use).
    assert!(dp.run_frame(&syn).expect("test run").dropped());
    let before = dropped(&dp, first, NoConduit, NONE);
    let offered = events_offered(&dp);
    dp.set_config_flags(0, FLAG_TRACE).expect("tracing off");
    let run = dp.time_frame(&syn, N as u32).expect("timed test run");
    assert_eq!(run.action, XDP_DROP);
    assert!(
        dp.held_back_drops().expect("reading the memo") > 0,
        "the memo holds back the drops it answered"
    );
    let after = [
        before[0] + N,
        before[1] + N,
        before[2] + N,
        before[3] + N * len,
    ];
    assert_eq!(
        dropped(&dp, first, NoConduit, NONE),
        after,
        "drops held back are seen"
    );
    // Thousands of repeats within a few timer ticks offer an event per tick, not per drop.
    let repeats_offered = events_offered(&dp) - offered;
    assert!(
        (1..N / 2).contains(&repeats_offered),
        "{repeats_offered} events offered for {N} repeats of one denial"
    );

    // Another denial taking the memo's slot moves the slot's counts into the maps.
    let key = |dport: u16| {
        let mut key = DenyKey {
            ifindex: lo,
            ..DenyKey::default()
        };
        key.tuple.src = mapped(OT4);
        key.tuple.dst = mapped(IT4);
        key.tuple.dport = dport;
        key.tuple.proto = 6;
        key.tuple._pad[0] = DENY_TCP_SYN;
        key.memo_index()
    };
    let rival = (503..u16::MAX)
        .find(|&dport| key(dport) == key(502))
        .expect("a denied port whose key shares the memo slot");
    dp.enable_trace().expect("tracing on");
    assert!(dp
        .run_frame(&s.syn(40000, rival))
        .expect("test run")
        .dropped());
    assert_eq!(dp.held_back_drops().expect("reading the memo"), 0);
    let moved = dropped(&dp, first, NoConduit, NONE);
    assert_eq!(
        moved,
        [after[0] + 1, after[1], after[2] + 1, after[3] + len],
        "the held-back drops and the rival's own"
    );

    // After a swap the tuple's next packet is decided afresh, and the counts the memo held
    // under the first generation go to its slot, never the second's.
    dp.set_config_flags(0, FLAG_TRACE).expect("tracing off");
    dp.time_frame(&syn, N as u32).expect("timed test run");
    assert!(dp.held_back_drops().expect("reading the memo") > 0);
    let totals = dropped(&dp, first, NoConduit, NONE);
    let second = dp
        .install(&it_ot_shifted().compile())
        .expect("installing")
        .epoch;
    dp.enable_trace().expect("tracing on");
    assert!(dp.run_frame(&syn).expect("test run").dropped());
    assert_eq!(dp.held_back_drops().expect("reading the memo"), 0);
    assert_eq!(dropped(&dp, first, NoConduit, NONE)[2..], totals[2..]);
    assert_eq!(
        dropped(&dp, second, NoConduit, NONE),
        [totals[0] + 1, totals[1], 1, len],
        "the re-decided packet is the second generation's only drop"
    );

    // Forgetting connections (replays, tests) empties the memo without losing its counts.
    dp.set_config_flags(0, FLAG_TRACE).expect("tracing off");
    dp.time_frame(&syn, N as u32).expect("timed test run");
    let held = dropped(&dp, second, NoConduit, NONE);
    assert!(dp.held_back_drops().expect("reading the memo") > 0);
    dp.forget_connections().expect("forgetting connections");
    assert_eq!(dp.held_back_drops().expect("reading the memo"), 0);
    assert_eq!(dropped(&dp, second, NoConduit, NONE), held);
}

#[test]
fn denial_memo_counts_only_drops() {
    // A denial whose verdict is not a drop (a reset, a monitored denial) or a traced one is
    // counted as it is made, never held back.
    let s = ip(OT4, IT4);
    let c = ip(IT4, OT4);
    let watched = Policy::new()
        .zone("it", &["10.0.2.0/24"])
        .zone("ot", &["10.0.1.0/24"])
        .conduit(Conduit::new("modbus", "it", "ot").tcp(502).monitor())
        .midstream_deny();
    for (what, policy, frame, verdict) in [
        ("reset", it_ot().reset(), s.syn(40000, 502), VERDICT_RESET),
        ("monitored", watched, c.ack(40000, 502), VERDICT_MONITOR),
        ("traced", it_ot(), s.syn(40000, 502), VERDICT_DROP),
    ] {
        let mut dp = load();
        dp.install(&policy.compile()).expect("installing");
        dp.enable_trace().expect("tracing on");
        dp.run_frame(&frame).expect("test run");
        if what != "traced" {
            dp.set_config_flags(0, FLAG_TRACE).expect("tracing off");
        }
        // One frame per run: a run repeating a frame hands each repeat what the one before
        // left in the buffer, and a reset rewrites the frame into its answer.
        for _ in 0..500 {
            dp.time_frame(&frame, 1).expect("timed test run");
        }
        assert_eq!(
            dp.held_back_drops().expect("reading the memo"),
            0,
            "{what}: nothing held back"
        );
        let counted: u64 = dp
            .counters()
            .expect("reading the counters")
            .reasons
            .iter()
            .map(|row| row[verdict as usize])
            .sum();
        assert_eq!(counted, 501, "{what}: every denial counted at once");
    }
}

#[test]
fn flow_entry_and_ports() {
    // A zone bound to ports: the entry remembers the port each side arrived on, and a packet
    // of the same flow arriving elsewhere is checked again, and refused.
    let port = TestInterface::create("otfwfp0");
    let lo = otfw::datapath::ifindex("lo").expect("ifindex of lo");
    let p = it_ot().ports("it", &["lo"]);
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let (_, [hits, ..]) = run_counting(vec![case(
        "a flow's side arriving on another port",
        &p,
        vec![
            frame_on(lo, c.syn(40000, 502), pass("modbus").creates()),
            frame_on(port.ifindex, s.syn_ack(502, 40000), pass("modbus")),
            frame_on(lo, c.ack(40000, 502), pass("modbus")),
            frame_on(port.ifindex, c.ack(40000, 502), drop(Spoofed, NONE)),
            frame_on(port.ifindex, c.ack(40000, 502), drop(Spoofed, NONE)),
            frame_on(lo, c.ack(40000, 502), pass("modbus")),
            // The responder's zone has no ports: it may move.
            frame_on(lo, s.ack(502, 40000), pass("modbus")),
            frame_on(lo, s.ack(502, 40000), pass("modbus")),
        ],
    )]);
    // The client's two ACKs from lo, and the server's second ACK from its new port.
    assert_eq!(hits, 3, "packets answered by the flow entry alone");
}

#[test]
fn decision_cache() {
    let port = TestInterface::create("otfwfp1");
    let p = it_ot();
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let allow_back = it_ot().conduit(Conduit::new("back", "ot", "it").tcp(502));

    let (_, [_, stored, cached]) = run_counting(vec![case(
        "a repeated denied tuple is decided from the cache",
        &p,
        vec![
            frame(s.syn(40000, 502), drop(NoConduit, NONE)),
            frame(s.syn(40000, 502), drop(NoConduit, NONE)),
            frame(s.syn(40000, 502), drop(NoConduit, NONE)),
            // A SYN flood varying its source port is one decision.
            frame(s.syn(40005, 502), drop(NoConduit, NONE)),
            frame(s.syn(40006, 502), drop(NoConduit, NONE)),
            // Another kind of segment of the same tuple is another decision.
            frame(s.ack(40000, 502), drop(NotTracked, NONE)),
            frame(s.ack(40000, 502), drop(NotTracked, NONE)),
            // A mid-stream segment's source port matters (it could be adopted the other way):
            // another port, another decision.
            frame(s.ack(40001, 502), drop(NotTracked, NONE)),
            // A swap to a policy allowing the tuple: the cached denial does not apply.
            Step::Install(allow_back.clone()),
            frame(s.syn(40000, 502), pass("back").creates()),
            frame(c.syn_ack(502, 40000), pass("back")),
            // And back: denied again, decided afresh under the new epoch.
            Step::Install(it_ot()),
            frame(s.syn(40001, 502), drop(NoConduit, NONE)),
            frame(s.syn(40001, 502), drop(NoConduit, NONE)),
        ],
    )]);
    assert_eq!(
        (stored, cached),
        (4, 6),
        "(denials stored, decided from the cache)"
    );

    // The cached decision keeps what makes the verdict: the conduit (its mode and deny
    // behaviour apply again), and that a spoofed source is never answered with a reset.
    let restricted = it_ot().ports("it", &["lo"]).reset();
    let watched = Policy::new()
        .zone("it", &["10.0.2.0/24"])
        .zone("ot", &["10.0.1.0/24"])
        .conduit(Conduit::new("modbus", "it", "ot").tcp(502).monitor())
        .midstream_deny();
    let (mut dp, [_, stored, cached]) = run_counting(vec![
        case(
            "reset repeated from the cache",
            &p.clone().reset(),
            vec![
                frame(s.syn(40002, 502), reset(NoConduit, NONE)),
                frame(s.syn(40002, 502), reset(NoConduit, NONE)),
            ],
        ),
        case(
            "spoofed: never reset, also from the cache",
            &restricted,
            vec![
                frame_on(port.ifindex, c.syn(40000, 502), drop(Spoofed, NONE)),
                frame_on(port.ifindex, c.syn(40000, 502), drop(Spoofed, NONE)),
                // The same tuple from the zone's own port is another decision.
                frame(c.syn(40000, 502), pass("modbus").creates()),
            ],
        ),
        case(
            "monitor repeated from the cache",
            &watched,
            vec![
                frame(c.ack(40000, 502), monitor(MidstreamDenied, "modbus")),
                frame(c.ack(40000, 502), monitor(MidstreamDenied, "modbus")),
            ],
        ),
        case(
            "unzoned denial repeated",
            &p,
            vec![
                frame(ip("192.0.2.1", OT4).syn(1, 502), drop(Unzoned, NONE)),
                frame(ip("192.0.2.1", OT4).syn(1, 502), drop(Unzoned, NONE)),
            ],
        ),
    ]);
    assert_eq!(
        (stored, cached),
        (4, 4),
        "(denials stored, decided from the cache)"
    );

    // Bounded: a flood of distinct denied tuples never grows the cache past its size.
    let before = dp.denial_count();
    assert!(before <= MAX_DENIALS as usize);
    let flood = MAX_DENIALS + 2048;
    for i in 0..flood {
        let src = format!("10.0.1.{}", 1 + (i % 250));
        // Distinct in what the cache keys on (the source port is not: see the SYN flood above).
        let dport = 1024 + (i / 250) as u16;
        let d = dp
            .run_frame(&ip(&src, IT4).syn(40000, dport))
            .expect("running a flood frame");
        assert!(d.dropped(), "flood frame {i} was not dropped");
    }
    let after = dp.denial_count();
    assert!(
        after <= MAX_DENIALS as usize && after > MAX_DENIALS as usize / 2,
        "decision cache holds {after} entries after {flood} distinct denials (size {MAX_DENIALS})"
    );
}

/// A bare SYN asks the decision cache before the flow table (a SYN flood against a denied
/// service costs one lookup). What a remembered denial can say about a tracked flow's tuple is
/// what the flow's own check would: the responder's SYN is denied either way, by the cache with
/// its reason; the initiator's SYNs (never denied on that tuple) still reach the flow.
#[test]
fn decision_cache_before_the_flow_table() {
    let p = it_ot();
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let (_, [_, stored, cached]) = run_counting(vec![
        case(
            "the responder's SYN on a tracked flow, nothing remembered",
            &p,
            vec![
                frame(c.syn(40000, 502), pass("modbus").creates()),
                frame(s.syn_ack(502, 40000), pass("modbus")),
                frame(s.syn(502, 40000), drop(ReverseSyn, "modbus")),
                // The initiator's SYN on its own tuple is the flow's.
                frame(c.syn(40000, 502), pass("modbus")),
            ],
        ),
        case(
            "the responder's SYN on a tracked flow, a denial of its kind remembered",
            &p,
            vec![
                frame(c.syn(40001, 502), pass("modbus").creates()),
                frame(s.syn_ack(502, 40001), pass("modbus")),
                // Any source port: the cache's key leaves it out for a bare SYN.
                frame(s.syn(9999, 40001), drop(NoConduit, NONE)),
                frame(s.syn(502, 40001), drop(NoConduit, NONE)),
                // The flow itself is untouched.
                frame(c.ack(40001, 502), pass("modbus")),
                frame(s.ack(502, 40001), pass("modbus")),
                frame(c.syn(40001, 502), pass("modbus")),
            ],
        ),
    ]);
    assert_eq!(
        (stored, cached),
        (1, 1),
        "(denials stored, decided from the cache)"
    );
}

/// Each CPU's memo of recent denials answers a repeated denial before the cache's hash lookup.
/// Its slots are shared: twenty denied tuples of two reasons take eight slots, so tuples of
/// different reasons share one (checked below), and every repeat must still get its own
/// denial, counted as decided from the cache.
#[test]
fn denial_memo_keeps_each_tuples_own_denial() {
    let lo = otfw::datapath::ifindex("lo").expect("ifindex of lo");
    let p = it_ot();
    let tuples: Vec<(String, u16, Reason)> = (0..10)
        .flat_map(|i| {
            [
                // Unzoned source.
                (format!("192.0.2.{}", 1 + i), 502, Unzoned),
                // A zone to another with no conduit for the port.
                (IT4.to_string(), 600 + i as u16, NoConduit),
            ]
        })
        .collect();
    // The slots the memo gives these keys (a bare SYN's key leaves the source port out).
    let slot_reasons: HashMap<u32, HashSet<u8>> =
        tuples
            .iter()
            .fold(HashMap::new(), |mut slots, (src, dport, reason)| {
                let mut key = DenyKey {
                    ifindex: lo,
                    ..DenyKey::default()
                };
                key.tuple.src = mapped(src);
                key.tuple.dst = mapped(OT4);
                key.tuple.dport = *dport;
                key.tuple.proto = 6;
                key.tuple._pad[0] = DENY_TCP_SYN;
                slots
                    .entry(key.memo_index())
                    .or_default()
                    .insert(*reason as u8);
                slots
            });
    assert!(
        slot_reasons.values().any(|r| r.len() == 2),
        "no memo slot is shared by tuples of both reasons: the test proves nothing ({slot_reasons:?})"
    );
    let mut steps = Vec::new();
    for round in 0..3 {
        for (src, dport, reason) in &tuples {
            let sport = 40000 + round;
            steps.push(frame_on(
                lo,
                ip(src, OT4).syn(sport, *dport),
                drop(*reason, NONE),
            ));
        }
    }
    let (_, [_, stored, cached]) =
        run_counting(vec![case("twenty tuples, three rounds", &p, steps)]);
    assert_eq!(
        (stored, cached),
        (20, 40),
        "(denials stored, decided from the cache)"
    );
}

fn mapped(v4: &str) -> [u8; 16] {
    let a: std::net::Ipv4Addr = v4.parse().expect("an IPv4 address");
    a.to_ipv6_mapped().octets()
}

#[test]
fn host_table() {
    // Named hosts and single-address networks are found by hash; the verdicts must be those
    // of the longest-prefix match: the host wins over the network around it, in both families,
    // and an IPv4-mapped IPv6 address is not the IPv4 host.
    let p = Policy::new()
        .zone("it", &["10.0.2.0/24", "2001:db8:2::/64"])
        .zone("ot", &["10.0.1.0/24", "2001:db8:1::/64"])
        .zone("eng", &["10.0.2.77/32", "2001:db8:2::77/128"])
        .host("ot", "plc", "10.0.1.20")
        .conduit(Conduit::new("it-ot", "it", "ot").tcp(502))
        .conduit(Conduit::new("eng-ot", "eng", "ot").tcp(502).tcp(44818));
    let mut dp = load();
    run(
        &mut dp,
        vec![case(
            "hosts before networks",
            &p,
            vec![
                frame(
                    ip("10.0.2.10", OT4).syn(40000, 44818),
                    drop(NoConduit, NONE),
                ),
                frame(
                    ip("10.0.2.77", OT4).syn(40000, 44818),
                    pass("eng-ot").creates(),
                ),
                frame(
                    ip("10.0.2.77", OT4).syn(40001, 502),
                    pass("eng-ot").creates(),
                ),
                frame(
                    ip("10.0.2.10", OT4).syn(40001, 502),
                    pass("it-ot").creates(),
                ),
                frame(
                    ip("2001:db8:2::77", "2001:db8:1::20").syn(40000, 44818),
                    pass("eng-ot").creates(),
                ),
                frame(
                    ip("2001:db8:2::78", "2001:db8:1::20").syn(40000, 44818),
                    drop(NoConduit, NONE),
                ),
                frame(
                    ip("::ffff:10.0.2.77", "2001:db8:1::20").syn(40000, 44818),
                    drop(Unzoned, NONE),
                ),
            ],
        )],
    );
}

#[test]
fn zone_share() {
    // Each zone may hold one established flow: the answer promotes the first; the second
    // zone-`it` SYN is refused while the first holds the share, and is not cached as a denial
    // (it passes once the share is free again).
    let p = it_ot().max_flows(1);
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let (_, [_, stored, cached]) = run_counting(vec![case(
        "one established flow per zone",
        &p,
        vec![
            frame(c.syn(40000, 502), pass("modbus").creates()),
            frame(s.syn_ack(502, 40000), pass("modbus").promotes()),
            frame(c.syn(40001, 502), drop(FlowQuota, "modbus")),
            frame(c.syn(40001, 502), drop(FlowQuota, "modbus")),
            frame(
                c.tcp(40000, 502, "R", 1001, 0, &[]),
                pass("modbus").closes(),
            ),
            frame(c.syn(40001, 502), pass("modbus").creates()),
            frame(s.syn_ack(502, 40001), pass("modbus").promotes()),
        ],
    )]);
    assert_eq!(
        (stored, cached),
        (0, 0),
        "a zone at its share is not a cached denial"
    );
}
