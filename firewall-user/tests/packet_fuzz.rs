//! Packet fuzzing of the real XDP program through BPF_PROG_TEST_RUN (root): seeded TCP
//! conversations (SYN, SYN-ACK, data both ways) carrying Modbus/TCP and EtherNet/IP requests,
//! from the captures in ../shared/pcaps and generated (every Modbus function code, sizes, unit
//! ids; EtherNet/IP commands; CIP Read/Write Tag, attribute services, Multiple Service Packet
//! and Unconnected Send nesting, Forward_Open/Forward_Close), mutated field by field and on the
//! wire (resegmentation at any byte, pipelining, reordering, duplication, overlapping
//! retransmissions with other bytes, segments lost behind the gateway, urgent data, bad
//! checksums, data on the SYN and after a FIN, VLAN tags, IPv4 options and IPv6 extension
//! headers, a second header shape within one flow).
//!
//! Campaigns, each under a read-only policy (`oracle::MODBUS_RULE`, `oracle::ENIP_RULE`):
//! Modbus with `on_deny: drop`, Modbus with `on_deny: refuse`, EtherNet/IP with `on_deny: drop`.
//! Invariants, on every conversation:
//!
//! (a) the client bytes the program let through (its output frames, after rewrites), put in
//!     order as the server's TCP stack would (`fuzz::receiver`: first-wins and last-wins for
//!     overlapping out-of-order data, RST only at `rcv_nxt`, nothing after a FIN, no
//!     connection without a SYN unless adopted mid-stream), decode with `otfw::decode` into
//!     requests the policy allows; a refused Modbus request may only arrive neutralised
//!     (function 60, answered with an exception);
//! (b) every decision is accounted to exactly one reason (a drop to a reason of its own, a
//!     plain pass to none), and the datapath's reason counters equal the decisions traced;
//! (c) the program never returns XDP_ABORTED and BPF_PROG_TEST_RUN never fails.
//!
//! Reproducible: the seed is printed. Environment:
//! - `OTFW_FUZZ_SEED`: the run's seed (decimal or 0x-hex; `random` picks one from the clock and
//!   prints it); default a fixed seed, so the test command is deterministic;
//! - `OTFW_FUZZ_ITERATIONS`: conversations per campaign (default 2000: about 40 seconds for
//!   the three campaigns in the test command's debug build);
//! - `OTFW_FUZZ_FIRST`: the first conversation's number (to replay one a report names);
//! - `OTFW_FUZZ_LOG` (set to anything): print every frame of every conversation with the
//!   program's decision.
//!
//! A longer run: `OTFW_FUZZ_SEED=random OTFW_FUZZ_ITERATIONS=100000 cargo test --release -p
//! firewall-user --test packet_fuzz -- --nocapture`. A finding prints the seed, the
//! conversation number and its frames, cut down to the events still needed for the finding.

#[allow(dead_code)]
#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/enip.rs"]
mod enip_common;
#[allow(dead_code)]
#[path = "common/frames.rs"]
mod frames;
#[path = "common/fuzz/mod.rs"]
mod fuzz;
#[path = "common/modbus.rs"]
mod modbus_common;
#[path = "common/pcaps.rs"]
mod pcaps;

use firewall_common::{counters::VERDICT_COUNT, reason::REASON_COUNT};
use fuzz::{
    generate::{self, Protocol, Unit},
    oracle,
    play::{self, Outcome, Shapes},
    rng::Rng,
    schedule::{self, Conversation},
};
use otfw::datapath::Datapath;

const DEFAULT_SEED: u64 = 0x07f3_2026_1203_0001;
const DEFAULT_ITERATIONS: u64 = 2000;
/// Conversations between two comparisons of the reason counters with the traced decisions.
const COUNTER_CHECK_EVERY: u64 = 64;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if name == "OTFW_FUZZ_SEED" && v == "random" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        return Some(now.as_nanos() as u64);
    }
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v}: expected a number (or 0x-hex)")))
}

struct Settings {
    seed: u64,
    iterations: u64,
    first: u64,
    /// Print every frame of every conversation and its decision.
    log: bool,
}

fn settings() -> Settings {
    Settings {
        seed: env_u64("OTFW_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        iterations: env_u64("OTFW_FUZZ_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS),
        first: env_u64("OTFW_FUZZ_FIRST").unwrap_or(0),
        log: std::env::var_os("OTFW_FUZZ_LOG").is_some(),
    }
}

const CLIENT_V4: &str = "10.0.1.10";
const SERVER_V4: &str = "10.0.2.20";
const CLIENT_V6: &str = "fd00:1::10";
const SERVER_V6: &str = "fd00:2::20";

/// A header shape: VLAN tags, IPv4 options or IPv6 extension headers.
fn shape(rng: &mut Rng, v6: bool) -> frames::Ip {
    let mut ip = if v6 {
        frames::ip(CLIENT_V6, SERVER_V6)
    } else {
        frames::ip(CLIENT_V4, SERVER_V4)
    };
    for _ in 0..rng.below(3) {
        ip = ip.vlan(rng.range(1, 4094) as u16);
    }
    if v6 {
        if rng.chance(25) {
            ip = ip.hop_by_hop();
        }
        if rng.chance(25) {
            ip = ip.destination_options();
        }
        if rng.chance(15) {
            ip = ip.routing(2, rng.chance(50));
        }
    } else {
        match rng.below(6) {
            0 => ip = ip.v4_options(&[1, 1, 1, 1]),
            1 => ip = ip.v4_options(&[0x94, 4, 0, 0]),
            2 => ip = ip.v4_options(&[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            _ => {}
        }
    }
    ip
}

struct Campaign {
    name: &'static str,
    protocol: Protocol,
    refuse: bool,
}

/// A request from the captures or generated, mutated field by field if `mutated`.
fn candidate(rng: &mut Rng, protocol: Protocol, corpus: &[Unit], mutated: bool) -> Unit {
    let mut unit = if rng.chance(40) {
        generate::from_corpus(protocol, rng.pick(corpus))
    } else {
        match protocol {
            Protocol::Modbus => generate::modbus_request(rng),
            Protocol::Enip => generate::enip_message(rng),
        }
    };
    if mutated && rng.chance(30) {
        for _ in 0..rng.range(1, 2) {
            generate::mutate(rng, protocol, &mut unit);
        }
    }
    unit
}

/// One conversation's material, from its own seed.
fn conversation(
    rng: &mut Rng,
    campaign: &Campaign,
    corpus: &[Unit],
    index: u64,
) -> (Shapes, Conversation) {
    let v6 = rng.chance(30);
    let main = shape(rng, v6);
    let other = shape(rng, v6);
    let shapes = Shapes {
        v6,
        main,
        other,
        sport: 1024 + (index % 60000) as u16,
        dport: campaign.protocol.port(),
        client_isn: rng.next() as u32,
        server_isn: rng.next() as u32,
    };
    let mut units = Vec::new();
    if campaign.protocol == Protocol::Enip && rng.chance(85) {
        units.push(Unit {
            bytes: enip_common::register_session(),
            operation_at: None,
        });
    }
    // Half the conversations ask only for what the policy allows, so that the inspector's
    // state gets deep into the stream and the wire mutations (a forbidden twin in an
    // overlapping retransmission, ...) are what must be caught; the others mix in forbidden
    // and malformed requests.
    let lawful = rng.chance(50);
    for _ in 0..rng.range(1, 6) {
        let mut unit = candidate(rng, campaign.protocol, corpus, !lawful);
        if lawful {
            for _ in 0..32 {
                let allowed = oracle::judge(campaign.protocol, &unit.bytes, false)
                    .iter()
                    .all(|j| *j == oracle::Judgement::Allowed);
                if allowed {
                    break;
                }
                unit = candidate(rng, campaign.protocol, corpus, false);
            }
        }
        units.push(unit);
    }
    let mutations = if rng.chance(20) { 0 } else { rng.range(1, 4) };
    let (conversation, _) = schedule::conversation(rng, campaign.protocol, &units, mutations);
    (shapes, conversation)
}

/// The conversation cut down, event by event, to what still produces a finding.
fn minimise(
    dp: &mut Datapath,
    campaign: &Campaign,
    shapes: &Shapes,
    conversation: &Conversation,
    decisions: &mut [[u64; VERDICT_COUNT as usize]],
) -> (Conversation, Outcome) {
    let mut best = conversation.clone();
    let mut i = 0;
    while i < best.events.len() {
        let mut candidate = best.clone();
        candidate.events.remove(i);
        let out = play::play(dp, campaign.protocol, campaign.refuse, shapes, &candidate);
        play::add(decisions, &out.decisions);
        if out.findings.is_empty() {
            i += 1;
        } else {
            best = candidate;
        }
    }
    let out = play::play(dp, campaign.protocol, campaign.refuse, shapes, &best);
    play::add(decisions, &out.decisions);
    (best, out)
}

fn run(campaign: Campaign) {
    let s = settings();
    let rule = match campaign.protocol {
        Protocol::Modbus => format!("modbus: {{ {} }}", oracle::MODBUS_RULE),
        Protocol::Enip => format!("enip: {{ {} }}", oracle::ENIP_RULE),
    };
    let on_deny = if campaign.refuse { "refuse" } else { "drop" };
    // One conduit between every address (IPv4 and IPv6) with the one rule.
    let mut dp = modbus_common::datapath(&corpus::policy_on_deny(
        &format!("      - {rule}\n"),
        on_deny,
    ));
    let corpus = generate::corpus(&pcaps::dir(), campaign.protocol);
    println!(
        "{}: seed 0x{:016x} (OTFW_FUZZ_SEED), conversations {}..{} (OTFW_FUZZ_FIRST, \
         OTFW_FUZZ_ITERATIONS), {} requests from the captures",
        campaign.name,
        s.seed,
        s.first,
        s.first + s.iterations,
        corpus.len()
    );
    let mut decisions = vec![[0u64; VERDICT_COUNT as usize]; REASON_COUNT as usize];
    let (mut frames, mut passed, mut dropped, mut reset) = (0, 0, 0, 0);
    let (mut allowed, mut neutralised) = (0, 0);
    let mut findings = Vec::new();
    for index in s.first..s.first + s.iterations {
        let seed = Rng::conversation_seed(s.seed, index);
        let mut rng = Rng::new(seed);
        let (shapes, conv) = conversation(&mut rng, &campaign, &corpus, index);
        let out = play::play(&mut dp, campaign.protocol, campaign.refuse, &shapes, &conv);
        play::add(&mut decisions, &out.decisions);
        if s.log {
            println!(
                "conversation {index}{}:\n  {}",
                if conv.midstream { " (mid-stream)" } else { "" },
                out.log.join("\n  ")
            );
        }
        frames += out.frames;
        passed += out.passed;
        dropped += out.dropped;
        reset += out.reset;
        allowed += out.allowed;
        neutralised += out.neutralised;
        if !out.findings.is_empty() {
            let (small, small_out) = minimise(&mut dp, &campaign, &shapes, &conv, &mut decisions);
            let events = small.events.len();
            findings.push(format!(
                "{} conversation {index} (OTFW_FUZZ_SEED=0x{:016x} OTFW_FUZZ_FIRST={index} \
                 OTFW_FUZZ_ITERATIONS=1){}:\n  {}\n  minimal input ({events} events{}):\n    {}",
                campaign.name,
                s.seed,
                if shapes.v6 { " IPv6" } else { "" },
                out.findings.join("\n  "),
                if small.midstream { ", mid-stream" } else { "" },
                small_out.log.join("\n    ")
            ));
        }
        let done = index + 1 - s.first;
        if done.is_multiple_of(COUNTER_CHECK_EVERY) || done == s.iterations {
            let counted = dp.counters().expect("reading the reason counters").reasons;
            if counted != decisions {
                let diff: Vec<String> = counted
                    .iter()
                    .zip(&decisions)
                    .enumerate()
                    .filter(|(_, (c, d))| c != d)
                    .map(|(r, (c, d))| {
                        format!(
                            "{}: counted {c:?}, traced {d:?}",
                            firewall_common::reason::Reason::NAMES[r]
                        )
                    })
                    .collect();
                findings.push(format!(
                    "{}: after conversation {index}, the reason counters [pass, drop, monitor, \
                     reset, refuse] differ from the decisions traced:\n  {}",
                    campaign.name,
                    diff.join("\n  ")
                ));
                decisions = counted;
            }
        }
    }
    let drops: Vec<String> = play::drops_by_reason(&decisions)
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let refused: u64 = decisions.iter().map(|row| row[4]).sum();
    println!(
        "{}: {} conversations, {frames} frames: {passed} passed ({refused} with requests \
         neutralised), {dropped} dropped, {reset} answered with a reset; the servers read \
         {allowed} allowed and {neutralised} neutralised requests",
        campaign.name, s.iterations
    );
    println!("{}: drops by reason: {}", campaign.name, drops.join(", "));
    // A fuzzer whose conversations never reach the server, or are never refused, tests
    // nothing: with a few hundred conversations both happen many times over.
    if s.iterations >= 200 {
        assert!(
            allowed > 0 && dropped > 0,
            "{}: the servers read no allowed request or nothing was dropped: the generator is broken",
            campaign.name
        );
        assert!(
            !campaign.refuse || neutralised > 0,
            "{}: no refused request reached a server neutralised",
            campaign.name
        );
    }
    assert!(
        findings.is_empty(),
        "{} findings:\n{}",
        findings.len(),
        findings.join("\n\n")
    );
}

#[test]
fn modbus_read_only_drop() {
    run(Campaign {
        name: "modbus drop",
        protocol: Protocol::Modbus,
        refuse: false,
    });
}

#[test]
fn modbus_read_only_refuse() {
    run(Campaign {
        name: "modbus refuse",
        protocol: Protocol::Modbus,
        refuse: true,
    });
}

#[test]
fn enip_read_only_drop() {
    run(Campaign {
        name: "enip drop",
        protocol: Protocol::Enip,
        refuse: false,
    });
}

/// The fuzzer's own parts, so that a broken oracle cannot hide findings: a forbidden request
/// in a stream is judged so, resegmented and overlapped streams are put back in order.
#[test]
fn the_oracle_finds_what_it_must() {
    use fuzz::oracle::Judgement;
    use fuzz::receiver::{Overlap, Receiver};
    let read = modbus_common::read(3, 10, 2);
    let write = modbus_common::write_single_register(10, 1);
    assert_eq!(
        oracle::judge(Protocol::Modbus, &read, false),
        vec![Judgement::Allowed]
    );
    assert!(matches!(
        oracle::judge(Protocol::Modbus, &write, false)[0],
        Judgement::Forbidden(_)
    ));
    let mut neutral = write.clone();
    neutral[7] = oracle::NEUTRAL_FUNCTION;
    assert_eq!(
        oracle::judge(Protocol::Modbus, &neutral, true),
        vec![Judgement::Neutralised]
    );
    assert!(matches!(
        oracle::judge(Protocol::Modbus, &modbus_common::read(3, 998, 5), false)[0],
        Judgement::Forbidden(_)
    ));
    let tag = enip_common::rr(enip_common::SESSION, &enip_common::read_tag("Line1_Speed"));
    assert_eq!(
        oracle::judge(Protocol::Enip, &tag, false),
        vec![Judgement::Allowed]
    );
    let w = enip_common::rr(
        enip_common::SESSION,
        &enip_common::unconnected_send(&enip_common::write_tag("Line1_Speed")),
    );
    assert!(matches!(
        oracle::judge(Protocol::Enip, &w, false)[0],
        Judgement::Forbidden(_)
    ));
    // A member name that is not text: judged by its service and the listed prefix.
    let path = enip_common::cat(&[
        enip_common::tag_path("Line1_Speed"),
        vec![0x91, 3, 0x00, 0xff, 0x62, 0],
    ]);
    for (service, allowed) in [(0x4C, true), (0x4D, false)] {
        let m = enip_common::rr(
            enip_common::SESSION,
            &enip_common::req(service, &path, &[1, 0]),
        );
        let j = oracle::judge(Protocol::Enip, &m, false);
        assert_eq!(
            j[0] == Judgement::Allowed,
            allowed,
            "service {service:#x}: {j:?}"
        );
    }
    // Out of order, overlapping: the first copy of a waiting byte or the last one.
    for (overlap, want) in [(Overlap::FirstWins, &read), (Overlap::LastWins, &write)] {
        let mut r = Receiver::new(overlap);
        r.segment(99, true, false, false, &[]);
        r.segment(100 + 5, false, false, false, &read[5..]);
        r.segment(100 + 5, false, false, false, &write[5..]);
        assert!(r.stream.is_empty());
        r.segment(100, false, false, false, &read[..5]);
        assert_eq!(&r.stream, want, "{overlap:?}");
        // Read bytes stay read.
        r.segment(100, false, false, false, &write);
        assert_eq!(&r.stream, want);
    }
}
