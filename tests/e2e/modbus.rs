//! Modbus/TCP through the bridge with real peers: a pymodbus server in the PLC's namespace and
//! three clients (pymodbus, mbpoll, tokio-modbus), with `otfw run` inspecting every request.
//! The server's registers are read back from its own memory (SIGUSR1 dump), never through the
//! firewall, to show that a refused write changed nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use otfw_tests::{
    modbus_initial as initial, require_modbus_peers, Datastore, Lab, ModbusClient, ModbusOp,
    ModbusResult, Table,
};
use serde_json::Value;

use crate::common::{self, Firewall};

/// Every client call waits this long for an answer (and as long for its connection).
const TIMEOUT: Duration = Duration::from_secs(2);
/// The unit id every request addresses (the server answers on every id).
const UNIT: u8 = 1;
/// How long `otfw run` may take to print a `modbus_denied` event after the request.
const EVENT: Duration = Duration::from_secs(5);

const READ_ONLY: &str = "{ functions: [read] }";

fn setup(on_deny: &str, client_rule: &str) -> (Lab, Firewall, otfw_tests::ModbusServer) {
    require_modbus_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = common::lab(&common::plant_hosts());
    let fw = Firewall::start(
        &lab,
        &common::plant_policy(
            "modbus",
            on_deny,
            client_rule,
            "{ functions: [read, write] }",
        ),
    );
    let server = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    (lab, fw, server)
}

fn run(
    lab: &Lab,
    client: ModbusClient,
    from: &str,
    to: SocketAddr,
    ops: &[ModbusOp],
) -> Vec<ModbusResult> {
    let started = Instant::now();
    let results = lab
        .modbus(client, from, to, UNIT, TIMEOUT, ops)
        .unwrap_or_else(|e| panic!("{}: {e:#}", client.name()));
    // What each client saw, for the test log (`--nocapture`).
    for (op, result) in ops.iter().zip(&results) {
        eprintln!("{:<12} {from:<6} {op:<30} {result:?}", client.name());
    }
    eprintln!("{:<12} ({:.1?})", client.name(), started.elapsed());
    results
}

fn one(lab: &Lab, client: ModbusClient, from: &str, to: SocketAddr, op: ModbusOp) -> ModbusResult {
    run(lab, client, from, to, &[op]).remove(0)
}

fn bits(values: impl IntoIterator<Item = bool>) -> Vec<u16> {
    values.into_iter().map(u16::from).collect()
}

/// Reads of every table on the read-only conduit return the server's initial values.
fn reads_return_the_right_values(lab: &Lab, client: ModbusClient, plc: SocketAddr) {
    let ops = [
        ModbusOp::Read(Table::HoldingRegisters, 0, 8),
        ModbusOp::Read(Table::InputRegisters, 90, 10),
        ModbusOp::Read(Table::Coils, 0, 10),
        ModbusOp::Read(Table::DiscreteInputs, 5, 6),
    ];
    let results = run(lab, client, "client", plc, &ops);
    let expected = [
        ModbusResult::Ok((0..8).map(initial::holding_register).collect()),
        ModbusResult::Ok((90..100).map(initial::input_register).collect()),
        ModbusResult::Ok(bits((0..10).map(initial::coil))),
        ModbusResult::Ok(bits((5..11).map(initial::discrete_input))),
    ];
    assert_eq!(
        results,
        expected,
        "{}: reads on the read-only conduit",
        client.name()
    );
}

/// The `modbus_denied` event `otfw run` prints for the next refused request.
fn denied_event(fw: &mut Firewall) -> Value {
    let line = fw
        .process
        .wait_for_line(|l| l.contains(r#""event":"modbus_denied""#), EVENT)
        .unwrap_or_else(|e| panic!("no modbus_denied event: {e:#}"));
    serde_json::from_str(&line).unwrap()
}

/// A write_single_register from the client on its read-only conduit: the client sees `seen`,
/// and `otfw run` reports the refusal with `verdict`.
fn write_is_refused(
    lab: &Lab,
    fw: &mut Firewall,
    client: ModbusClient,
    plc: SocketAddr,
    register: u16,
    seen: ModbusResult,
    verdict: &str,
) {
    let refused = one(
        lab,
        client,
        "client",
        plc,
        ModbusOp::WriteRegister(register, 5555),
    );
    assert_eq!(
        refused,
        seen,
        "{}: write on the read-only conduit",
        client.name()
    );
    let event = denied_event(fw);
    assert_eq!(event["reason"], "modbus_function_denied", "{event}");
    assert_eq!(event["function"], 6, "{event}");
    assert_eq!(event["address"], register, "{event}");
    assert_eq!(event["verdict"], verdict, "{event}");
    assert_eq!(event["conduit"], "client-reads", "{event}");
}

/// On a read-only conduit with `on_deny: drop`, every client reads the right values and a
/// write times out (the request and everything after it on that connection is dropped); the
/// server's registers are unchanged. The engineering conduit writes, and the value changes.
#[test]
fn read_only_conduit_drops_writes_engineering_writes() {
    let (lab, mut fw, mut server) = setup("drop", READ_ONLY);
    let plc = server.addr;
    for (index, client) in ModbusClient::ALL.into_iter().enumerate() {
        let name = client.name();
        let offset = u16::try_from(index).unwrap();
        reads_return_the_right_values(&lab, client, plc);

        let register = 20 + offset;
        write_is_refused(
            &lab,
            &mut fw,
            client,
            plc,
            register,
            ModbusResult::Timeout,
            "drop",
        );
        let coil = 30 + offset;
        let refused = one(
            &lab,
            client,
            "client",
            plc,
            ModbusOp::WriteCoil(coil, !initial::coil(coil)),
        );
        assert_eq!(
            refused,
            ModbusResult::Timeout,
            "{name}: coil write on the read-only conduit"
        );
        assert_eq!(denied_event(&mut fw)["function"], 5);
        assert_eq!(
            server.datastore().unwrap(),
            Datastore::initial(),
            "{name}: the refused writes changed the server's datastore"
        );

        // The engineering conduit allows writes: the value changes, as the server's own
        // memory and a read through the firewall both show.
        let written = 40 + offset;
        let value = 7000 + offset;
        let ops = [
            ModbusOp::WriteRegister(written, value),
            ModbusOp::WriteCoil(coil, !initial::coil(coil)),
            ModbusOp::Read(Table::HoldingRegisters, written, 1),
        ];
        assert_eq!(
            run(&lab, client, "eng", plc, &ops),
            [
                ModbusResult::Ok(vec![]),
                ModbusResult::Ok(vec![]),
                ModbusResult::Ok(vec![value])
            ],
            "{name}: writes on the engineering conduit"
        );
        let store = server.datastore().unwrap();
        assert_eq!(
            store.holding_registers[usize::from(written)],
            value,
            "{name}"
        );
        assert_eq!(
            store.coils[usize::from(coil)],
            !initial::coil(coil),
            "{name}"
        );
        assert_eq!(
            one(
                &lab,
                client,
                "client",
                plc,
                ModbusOp::Read(Table::HoldingRegisters, written, 1)
            ),
            ModbusResult::Ok(vec![value]),
            "{name}: the client reads what engineering wrote"
        );
        // Put the datastore back so that the next client starts from the initial values.
        let restore = [
            ModbusOp::WriteRegister(written, initial::holding_register(written)),
            ModbusOp::WriteCoil(coil, initial::coil(coil)),
        ];
        assert_eq!(
            run(&lab, client, "eng", plc, &restore),
            [ModbusResult::Ok(vec![]), ModbusResult::Ok(vec![])]
        );
    }
}

/// With `on_deny: reset`, a refused write closes the connection on both ends: every client
/// sees a reset (about one retransmission timeout later), and the server is unchanged.
#[test]
fn read_only_conduit_resets_writes() {
    let (lab, mut fw, mut server) = setup("reset", READ_ONLY);
    let plc = server.addr;
    for (index, client) in ModbusClient::ALL.into_iter().enumerate() {
        let name = client.name();
        let offset = u16::try_from(index).unwrap();
        reads_return_the_right_values(&lab, client, plc);
        let register = 50 + offset;
        write_is_refused(
            &lab,
            &mut fw,
            client,
            plc,
            register,
            ModbusResult::Reset,
            "reset",
        );
        // Function 16 (two values: mbpoll too) is refused the same way; a read on the
        // client's next connection passes again.
        let ops = [
            ModbusOp::WriteRegisters(register, vec![1, 2]),
            ModbusOp::Read(Table::HoldingRegisters, register, 2),
        ];
        assert_eq!(
            run(&lab, client, "client", plc, &ops),
            [
                ModbusResult::Reset,
                ModbusResult::Ok(vec![
                    initial::holding_register(register),
                    initial::holding_register(register + 1)
                ])
            ],
            "{name}"
        );
        assert_eq!(denied_event(&mut fw)["function"], 16);
        assert_eq!(server.datastore().unwrap(), Datastore::initial(), "{name}");
    }
}

/// An `addresses` rule: reads inside the allowed range pass, a read straddling its edge (and
/// one wholly outside) is refused, for every client.
#[test]
fn address_range_rule_allows_inside_and_refuses_straddling() {
    let rule =
        r#"{ functions: [read], addresses: { holding_registers: ["10-19"], coils: ["0-15"] } }"#;
    let (lab, mut fw, mut server) = setup("reset", rule);
    let plc = server.addr;
    for client in ModbusClient::ALL {
        let name = client.name();
        let inside = [
            ModbusOp::Read(Table::HoldingRegisters, 10, 10),
            ModbusOp::Read(Table::HoldingRegisters, 19, 1),
            ModbusOp::Read(Table::Coils, 0, 16),
            // Tables the rule does not list are not limited.
            ModbusOp::Read(Table::InputRegisters, 50, 5),
        ];
        assert_eq!(
            run(&lab, client, "client", plc, &inside),
            [
                ModbusResult::Ok((10..20).map(initial::holding_register).collect()),
                ModbusResult::Ok(vec![initial::holding_register(19)]),
                ModbusResult::Ok(bits((0..16).map(initial::coil))),
                ModbusResult::Ok((50..55).map(initial::input_register).collect()),
            ],
            "{name}: reads inside the allowed ranges"
        );
        for (op, address, quantity) in [
            (ModbusOp::Read(Table::HoldingRegisters, 15, 10), 15, 10),
            (ModbusOp::Read(Table::HoldingRegisters, 9, 2), 9, 2),
            (ModbusOp::Read(Table::Coils, 8, 9), 8, 9),
            (ModbusOp::Read(Table::HoldingRegisters, 30, 1), 30, 1),
        ] {
            assert_eq!(
                one(&lab, client, "client", plc, op.clone()),
                ModbusResult::Reset,
                "{name}: {op} is not inside one allowed range"
            );
            let event = denied_event(&mut fw);
            assert_eq!(event["reason"], "modbus_address_denied", "{event}");
            assert_eq!(event["address"], address, "{event}");
            assert_eq!(event["quantity"], quantity, "{event}");
        }
    }
    assert_eq!(server.datastore().unwrap(), Datastore::initial());
}

/// SIGUSR1, then the number of flows `otfw run` has created so far (its `stats` event).
fn flows_created(fw: &mut Firewall) -> u64 {
    let pid = libc::pid_t::try_from(fw.process.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let line = fw
        .process
        .wait_for_line(|l| l.contains(r#""event":"stats""#), EVENT)
        .unwrap_or_else(|e| panic!("no stats event: {e:#}"));
    let stats: Value = serde_json::from_str(&line).unwrap();
    stats["flows"]["created"].as_u64().unwrap_or(0)
}

/// On a read-only conduit with `on_deny: refuse`, every client's write is answered at once
/// with an exception for its own function code (illegal function), the next read on the same
/// connection returns the right values (pymodbus and tokio-modbus keep one connection for
/// both; mbpoll opens one per request), and the server's registers are unchanged: the server
/// only ever saw the neutralised request.
#[test]
fn read_only_conduit_refuses_writes_and_keeps_the_connection() {
    let (lab, mut fw, mut server) = setup("refuse", READ_ONLY);
    let plc = server.addr;
    for (index, client) in ModbusClient::ALL.into_iter().enumerate() {
        let name = client.name();
        let register = 50 + u16::try_from(index).unwrap();
        let before = flows_created(&mut fw);
        let ops = [
            ModbusOp::WriteRegister(register, 4242),
            ModbusOp::Read(Table::HoldingRegisters, register, 2),
            ModbusOp::WriteRegisters(register, vec![1, 2]),
            ModbusOp::Read(Table::InputRegisters, 0, 1),
        ];
        let results = run(&lab, client, "client", plc, &ops);
        assert_eq!(
            results,
            [
                ModbusResult::Exception(1),
                ModbusResult::Ok(vec![
                    initial::holding_register(register),
                    initial::holding_register(register + 1)
                ]),
                ModbusResult::Exception(1),
                ModbusResult::Ok(vec![initial::input_register(0)]),
            ],
            "{name}: refused writes and the reads after them"
        );
        // The events come first: reading the stats event skips every line before it.
        let event = denied_event(&mut fw);
        assert_eq!(event["reason"], "modbus_function_denied", "{event}");
        assert_eq!(event["verdict"], "refuse", "{event}");
        assert_eq!(event["function"], 6, "{event}");
        assert_eq!(denied_event(&mut fw)["function"], 16);
        let connections = flows_created(&mut fw) - before;
        let expected = if client == ModbusClient::Mbpoll { 4 } else { 1 };
        eprintln!("{name}: {connections} connection(s) for 4 requests");
        assert_eq!(connections, expected, "{name}: connections used");
        assert_eq!(
            server.datastore().unwrap(),
            Datastore::initial(),
            "{name}: a refused write changed the server's datastore"
        );
    }
}
