//! EtherNet/IP and CIP through the bridge with real peers: cpppo's Logix simulator in the
//! PLC's namespace (bound to the PLC's address) and two clients (cpppo's client, pycomm3),
//! with `otfw run` inspecting every encapsulation message and every CIP request. The tags are
//! read back from the simulator's own memory (SIGUSR1 dump), never through the firewall, to
//! show that a refused write changed nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use otfw_tests::{
    enip_initial as initial, require_enip_peers, CipReply, EnipClient, EnipOp, EnipResult,
    EnipServer, Lab,
};
use serde_json::{json, Value};

use crate::common::{self, Firewall};

/// Every client exchange (connect, RegisterSession, each request) waits this long.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long `otfw run` may take to print an `enip_denied` event after the request.
const EVENT: Duration = Duration::from_secs(5);
const PORT: u16 = 44818;

const READ_ONLY: &str = "{ services: [read] }";

/// The CIP service a refused write asks for, and the general status `on_deny: refuse` answers
/// it with by default (privilege violation).
const WRITE_TAG: u8 = 0x4D;
const PRIVILEGE_VIOLATION: u8 = 0x0F;
/// A refused request is answered within one round trip: far sooner than the client's timeout
/// (a round trip in the lab takes milliseconds).
const ROUND_TRIP: Duration = Duration::from_secs(1);

fn setup(on_deny: &str, client_rule: &str) -> (Lab, Firewall, EnipServer) {
    setup_with(on_deny, client_rule, &[])
}

/// As [`setup`], the simulator started with `server_options` (`enip_server.py`'s).
fn setup_with(
    on_deny: &str,
    client_rule: &str,
    server_options: &[&str],
) -> (Lab, Firewall, EnipServer) {
    require_enip_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = common::lab(&common::plant_hosts());
    let fw = Firewall::start(
        &lab,
        &common::plant_policy("enip", on_deny, client_rule, "{ services: [read, write] }"),
    );
    let server = lab
        .enip_server_with("plc", PORT, server_options)
        .unwrap_or_else(|e| panic!("{e:#}"));
    (lab, fw, server)
}

fn run(
    lab: &Lab,
    client: EnipClient,
    from: &str,
    to: SocketAddr,
    ops: &[EnipOp],
) -> Vec<EnipResult> {
    let started = Instant::now();
    let results = lab
        .enip(client, from, to, TIMEOUT, ops)
        .unwrap_or_else(|e| panic!("{}: {e:#}", client.name()));
    // What each client saw, for the test log (`--nocapture`).
    for (op, result) in ops.iter().zip(&results) {
        eprintln!("{:<8} {from:<6} {op:<40} {result:?}", client.name());
    }
    eprintln!("{:<8} ({:.1?})", client.name(), started.elapsed());
    results
}

fn one(lab: &Lab, client: EnipClient, from: &str, to: SocketAddr, op: EnipOp) -> EnipResult {
    run(lab, client, from, to, &[op]).remove(0)
}

fn tag(name: &str) -> String {
    name.to_string()
}

/// The `enip_denied` event `otfw run` prints for the next refused request.
fn denied_event(fw: &mut Firewall) -> Value {
    let line = fw
        .process
        .wait_for_line(|l| l.contains(r#""event":"enip_denied""#), EVENT)
        .unwrap_or_else(|e| panic!("no enip_denied event: {e:#}"));
    serde_json::from_str(&line).unwrap()
}

/// ListIdentity, Read Tag (plain, inside Unconnected Send, connected) and a Multiple Service
/// Packet of reads all pass the read-only conduit and return the simulator's values.
fn reads_work(lab: &Lab, client: EnipClient, plc: SocketAddr) {
    let mut ops = vec![EnipOp::ListIdentity];
    let mut expected = vec![EnipResult::done()];
    if client == EnipClient::Cpppo {
        // pycomm3 only discovers over UDP by broadcast.
        ops.push(EnipOp::ListIdentityUdp);
        expected.push(EnipResult::done());
    }
    ops.extend([
        EnipOp::Read(tag("Line1_Speed")),
        EnipOp::ReadUcs(tag("Recipe_Setpoint")),
        EnipOp::ReadConnected(tag("Secret")),
        EnipOp::Read(tag("Secret[2]")),
        EnipOp::MultiRead(vec![tag("Line1_Speed"), tag("Secret"), tag("Line1_Count")]),
    ]);
    expected.extend([
        EnipResult::values([initial::LINE1_SPEED]),
        EnipResult::values([initial::RECIPE_SETPOINT]),
        EnipResult::values(initial::SECRET),
        EnipResult::values([initial::SECRET[2]]),
        EnipResult::Ok(json!([
            [initial::LINE1_SPEED],
            initial::SECRET,
            [initial::LINE1_COUNT]
        ])),
    ]);
    assert_eq!(
        run(lab, client, "client", plc, &ops),
        expected,
        "{}: reads on the read-only conduit",
        client.name()
    );
}

/// The four shapes of a write: plain, inside Unconnected Send, connected, inside a Multiple
/// Service Packet (with a read in front of it for cpppo).
fn writes(value: i64) -> [EnipOp; 4] {
    [
        EnipOp::Write(tag("Line1_Speed"), value),
        EnipOp::WriteUcs(tag("Recipe_Setpoint"), value),
        EnipOp::WriteConnected(tag("Line1_Speed"), value),
        EnipOp::WriteMsp(tag("Recipe_Setpoint"), value),
    ]
}

/// Each refused write produced one `enip_denied` event for a write_tag.
fn write_events(fw: &mut Firewall, client: EnipClient, verdict: &str) {
    for expected_tag in [
        "Line1_Speed",
        "Recipe_Setpoint",
        "Line1_Speed",
        "Recipe_Setpoint",
    ] {
        let event = denied_event(fw);
        let name = client.name();
        assert_eq!(event["reason"], "cip_service_denied", "{name}: {event}");
        assert_eq!(event["service"], "write_tag", "{name}: {event}");
        assert_eq!(event["tag"], expected_tag, "{name}: {event}");
        assert_eq!(event["verdict"], verdict, "{name}: {event}");
        assert_eq!(event["conduit"], "client-reads", "{name}: {event}");
    }
}

/// On a read-only conduit with `on_deny: drop`, both clients read the right values and every
/// shape of write times out (the request and the rest of its connection are dropped); the
/// simulator's tags are unchanged. The engineering conduit writes, and the value changes.
#[test]
fn read_only_conduit_drops_writes_engineering_writes() {
    let (lab, mut fw, mut server) = setup("drop", READ_ONLY);
    let plc = server.addr;
    for (index, client) in EnipClient::ALL.into_iter().enumerate() {
        let name = client.name();
        reads_work(&lab, client, plc);

        let refused = run(&lab, client, "client", plc, &writes(4321));
        assert_eq!(
            refused,
            vec![EnipResult::Timeout; 4],
            "{name}: writes on the read-only conduit"
        );
        write_events(&mut fw, client, "drop");
        assert_eq!(
            server.tags().unwrap(),
            EnipServer::initial_tags(),
            "{name}: the refused writes changed the simulator's tags"
        );

        // The engineering conduit allows writes: the value changes, as the simulator's own
        // memory and a read through the firewall both show.
        let value = 1600 + i64::try_from(index).unwrap();
        let ops = [
            EnipOp::Write(tag("Line1_Speed"), value),
            EnipOp::WriteUcs(tag("Recipe_Setpoint"), value),
            EnipOp::WriteMsp(tag("Secret[1]"), value),
        ];
        assert_eq!(
            run(&lab, client, "eng", plc, &ops),
            vec![EnipResult::done(); 3],
            "{name}: writes on the engineering conduit"
        );
        let tags = server.tags().unwrap();
        assert_eq!(tags["Line1_Speed"], value, "{name}");
        assert_eq!(tags["Recipe_Setpoint"], value, "{name}");
        assert_eq!(tags["Secret"][1], value, "{name}");
        assert_eq!(
            one(
                &lab,
                client,
                "client",
                plc,
                EnipOp::Read(tag("Line1_Speed"))
            ),
            EnipResult::values([value]),
            "{name}: the client reads what engineering wrote"
        );
        // Put the tags back so that the next client starts from the initial values
        // (pycomm3's Multiple Service Packet also wrote Line1_Count).
        let restore = [
            EnipOp::Write(tag("Line1_Speed"), initial::LINE1_SPEED),
            EnipOp::Write(tag("Recipe_Setpoint"), initial::RECIPE_SETPOINT),
            EnipOp::Write(tag("Secret[1]"), initial::SECRET[1]),
            EnipOp::Write(tag("Line1_Count"), initial::LINE1_COUNT),
        ];
        assert_eq!(
            run(&lab, client, "eng", plc, &restore),
            vec![EnipResult::done(); 4]
        );
        assert_eq!(server.tags().unwrap(), EnipServer::initial_tags(), "{name}");
    }
}

/// With `on_deny: reset`, a refused write closes the connection on both ends: both clients
/// see a reset, and the simulator's tags are unchanged; a read on the next connection passes.
#[test]
fn read_only_conduit_resets_writes() {
    let (lab, mut fw, mut server) = setup("reset", READ_ONLY);
    let plc = server.addr;
    for client in EnipClient::ALL {
        let name = client.name();
        let mut ops = writes(-7).to_vec();
        ops.push(EnipOp::Read(tag("Line1_Speed")));
        let mut expected = vec![EnipResult::Reset; 4];
        expected.push(EnipResult::values([initial::LINE1_SPEED]));
        assert_eq!(run(&lab, client, "client", plc, &ops), expected, "{name}");
        write_events(&mut fw, client, "reset");
        assert_eq!(server.tags().unwrap(), EnipServer::initial_tags(), "{name}");
    }
}

/// A `tags` allowlist: reading the listed tags passes in every shape; reading `Secret` is
/// refused in every shape, alone or in a Multiple Service Packet with a listed tag.
#[test]
fn tags_allowlist_allows_listed_tags_only() {
    let (lab, mut fw, mut server) = setup("reset", r#"{ services: [read], tags: ["Line1_*"] }"#);
    let plc = server.addr;
    for client in EnipClient::ALL {
        let name = client.name();
        let listed = [
            EnipOp::ListIdentity,
            EnipOp::Read(tag("Line1_Speed")),
            EnipOp::ReadUcs(tag("Line1_Count")),
            EnipOp::ReadConnected(tag("Line1_Speed")),
            EnipOp::MultiRead(vec![tag("Line1_Speed"), tag("Line1_Count")]),
        ];
        assert_eq!(
            run(&lab, client, "client", plc, &listed),
            [
                EnipResult::done(),
                EnipResult::values([initial::LINE1_SPEED]),
                EnipResult::values([initial::LINE1_COUNT]),
                EnipResult::values([initial::LINE1_SPEED]),
                EnipResult::Ok(json!([[initial::LINE1_SPEED], [initial::LINE1_COUNT]])),
            ],
            "{name}: reads of listed tags"
        );
        let unlisted = [
            EnipOp::Read(tag("Secret")),
            EnipOp::ReadUcs(tag("Secret[0]")),
            EnipOp::ReadConnected(tag("Secret")),
            EnipOp::MultiRead(vec![tag("Line1_Speed"), tag("Secret")]),
            EnipOp::Read(tag("Recipe_Setpoint")),
        ];
        assert_eq!(
            run(&lab, client, "client", plc, &unlisted),
            vec![EnipResult::Reset; 5],
            "{name}: reads of tags the rule does not list"
        );
        for expected_tag in ["Secret", "Secret", "Secret", "Secret", "Recipe_Setpoint"] {
            let event = denied_event(&mut fw);
            assert_eq!(event["reason"], "cip_tag_denied", "{name}: {event}");
            assert_eq!(event["service"], "read_tag", "{name}: {event}");
            assert_eq!(event["tag"], expected_tag, "{name}: {event}");
        }
    }
    assert_eq!(server.tags().unwrap(), EnipServer::initial_tags());
}

/// The four shapes of a write followed by a read of its tag on the same session, in the order
/// of [`writes`] (so [`write_events`] applies): each with the replies the refused write gets
/// (a Multiple Service Packet's: its read of `Line1_Speed` served, the write refused) and the
/// value the read returns, the tag's initial one. `status`: the general status the client
/// gets for a refused request.
fn writes_then_reads(value: i64, status: u8) -> [(EnipOp, Vec<CipReply>, i64); 4] {
    let refused = CipReply::error(WRITE_TAG, status);
    [
        (
            EnipOp::WriteRead(tag("Line1_Speed"), value),
            vec![refused.clone()],
            initial::LINE1_SPEED,
        ),
        (
            EnipOp::WriteUcsRead(tag("Recipe_Setpoint"), value),
            vec![refused.clone()],
            initial::RECIPE_SETPOINT,
        ),
        (
            EnipOp::WriteConnectedRead(tag("Line1_Speed"), value),
            vec![refused.clone()],
            initial::LINE1_SPEED,
        ),
        (
            EnipOp::WriteMspRead(tag("Recipe_Setpoint"), value),
            vec![CipReply::read([initial::LINE1_SPEED]), refused],
            initial::RECIPE_SETPOINT,
        ),
    ]
}

/// With `on_deny: refuse`, every shape of write on the read-only conduit (plain SendRRData,
/// inside an Unconnected Send, connected, inside a Multiple Service Packet with a read) gets,
/// within one round trip, a CIP error for its own service (Write Tag | 0x80) with general
/// status 0x0F, privilege violation: otfw sent the simulator the request with a reserved
/// service code, and restored the simulator's "service not supported" for the client. The
/// read that follows on the same session (and the same connection, for the connected write)
/// is served with the tag's unchanged value, and the simulator's memory holds the initial
/// values. Both clients; each refusal is an `enip_denied` event with verdict `refuse`.
#[test]
fn read_only_conduit_refuses_writes_in_band() {
    writes_are_refused_in_band(READ_ONLY, PRIVILEGE_VIOLATION);
}

/// The rule's `refuse` codes: the refused request goes to the simulator with another reserved
/// service code (0x64, which it answers "service not supported" too), and the client gets the
/// rule's general status (0x10, device state conflict) for its own service.
#[test]
fn refusal_codes_are_the_rules() {
    writes_are_refused_in_band(
        "{ services: [read], refuse: { service: 0x64, status: 0x10 } }",
        0x10,
    );
}

/// Every shape of write on the conduit of `rule` (reads only, `on_deny: refuse`) is refused
/// with general `status` and the session goes on: see
/// [`read_only_conduit_refuses_writes_in_band`].
fn writes_are_refused_in_band(rule: &str, status: u8) {
    let (lab, mut fw, mut server) = setup("refuse", rule);
    let plc = server.addr;
    for client in EnipClient::ALL {
        let name = client.name();
        let cases = writes_then_reads(-7, status);
        let ops: Vec<EnipOp> = cases.iter().map(|(op, ..)| op.clone()).collect();
        let results = run(&lab, client, "client", plc, &ops);
        for ((op, refused, value), result) in cases.iter().zip(results) {
            let EnipResult::Session(steps) = result else {
                panic!("{name} {op}: not a session: {result:?}");
            };
            let seen: Vec<&EnipResult> = steps.iter().map(|step| &step.result).collect();
            assert_eq!(
                seen,
                [
                    &EnipResult::Replies(refused.clone()),
                    &EnipResult::Replies(vec![CipReply::read([*value])]),
                ],
                "{name} {op}: the write refused for its own service, then the read served"
            );
            let (write, read) = (&steps[0], &steps[1]);
            assert!(
                write.session.is_some() && write.port.is_some(),
                "{name} {op}: {write:?}"
            );
            assert_eq!(
                (read.session, read.port),
                (write.session, write.port),
                "{name} {op}: the read went on the write's session and TCP connection"
            );
            for step in &steps {
                assert!(
                    step.elapsed < ROUND_TRIP,
                    "{name} {op}: a reply took {:?}",
                    step.elapsed
                );
            }
        }
        write_events(&mut fw, client, "refuse");
        assert_eq!(
            server.tags().unwrap(),
            EnipServer::initial_tags(),
            "{name}: the refused writes changed the simulator's tags"
        );
    }
}

/// A target that cannot answer the reserved service code with a CIP error gets the connection
/// reset (fail closed, `enip_refused_answer`): cpppo's simulator as shipped answers the
/// neutralised write with an encapsulation error and no CIP reply. The write is still refused
/// (the simulator's tags are unchanged) and reported as such; the client sees its connection
/// reset instead of a reply.
#[test]
fn refusal_resets_a_connection_whose_target_cannot_answer_it() {
    let (lab, mut fw, mut server) = setup_with("refuse", READ_ONLY, &["--as-shipped"]);
    let plc = server.addr;
    for client in EnipClient::ALL {
        let name = client.name();
        let op = EnipOp::WriteRead(tag("Line1_Speed"), -7);
        let result = one(&lab, client, "client", plc, op);
        let EnipResult::Session(steps) = result else {
            panic!("{name}: not a session: {result:?}");
        };
        let seen: Vec<&EnipResult> = steps.iter().map(|step| &step.result).collect();
        assert_eq!(seen, [&EnipResult::Reset], "{name}: {steps:?}");
        let event = denied_event(&mut fw);
        assert_eq!(event["reason"], "cip_service_denied", "{name}: {event}");
        assert_eq!(event["verdict"], "refuse", "{name}: {event}");
        assert_eq!(server.tags().unwrap(), EnipServer::initial_tags(), "{name}");
    }
    let stats = common::stats(&mut fw.process);
    let resets = stats["reasons"]["enip_refused_answer"]["reset"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        resets >= 2,
        "a connection reset per client for the simulator's answer: {stats}"
    );
}
