//! TCP-level evasions against the real servers through the bridge: a client on a read-only
//! conduit sends a write in segments the firewall could frame but the server's stack would not
//! deliver as framed (`tests/peers/tcp_evasion.py`: urgent data, a bad checksum, a TTL of 1,
//! data on a SYN, data after a FIN or a RST). Each is refused with its own reason and never
//! framed (no write is ever counted as refused by the inspector, which would mean it was
//! framed), the server's data is unchanged (read from its memory), and where the connection
//! can go on, a read on the same connection right after still returns the right value.

use std::time::Duration;

use otfw_tests::{
    modbus_initial as initial, require_enip_peers, require_modbus_peers, venv_python,
};
use otfw_tests::{repo_root, Lab};
use serde_json::Value;

use crate::common::{self, Firewall};

const CASES: [&str; 6] = [
    "urgent",
    "bad_checksum",
    "ttl",
    "data_on_syn",
    "after_fin",
    "after_rst",
];
/// The reason each case must be counted under on the client's conduit.
const REASONS: [(&str, &str); 6] = [
    ("urgent", "tcp_urgent"),
    ("bad_checksum", "tcp_bad_checksum"),
    ("ttl", "tcp_ttl_lowered"),
    ("data_on_syn", "tcp_data_on_syn"),
    ("after_fin", "tcp_data_after_fin"),
    ("after_rst", "tcp_data_after_rst"),
];
/// Cases after which the connection is still usable.
const CONTINUING: [&str; 3] = ["urgent", "bad_checksum", "ttl"];

/// Runs every case from the client host against `port` on the PLC; returns the peer's lines.
fn attack(lab: &Lab, protocol: &str, port: u16) -> Vec<Value> {
    let python = venv_python().unwrap_or_else(|e| panic!("{e:#}"));
    let script = repo_root().join("tests/peers/tcp_evasion.py");
    let plc = lab.host("plc").ipv4_addr().to_string();
    let mut args = vec![
        python.to_string_lossy().into_owned(),
        script.to_string_lossy().into_owned(),
        protocol.to_string(),
        plc,
        port.to_string(),
    ];
    args.extend(CASES.iter().map(|c| c.to_string()));
    let out = lab
        .exec_timeout("client", &args, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("tcp_evasion.py: {e:#}"));
    assert!(out.success(), "tcp_evasion.py failed: {}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    for line in &lines {
        eprintln!("{protocol}: {line}");
    }
    assert_eq!(lines.len(), CASES.len(), "{}", out.stdout);
    lines
}

/// Every case's reason counted, nothing framed as a refused request (`denied` reasons), and
/// the connection usable after the cases that keep it, reading `expected`.
fn check(lines: &[Value], stats: &Value, denied: &[&str], expected: Value) {
    let reasons = &stats["reasons"];
    for (case, reason) in REASONS {
        let dropped = reasons[reason]["drop"].as_u64().unwrap_or(0);
        eprintln!("{case:<13} {reason:<20} dropped {dropped}");
        assert!(dropped >= 1, "{case}: no {reason} drop in {stats}");
    }
    for reason in denied {
        assert!(
            reasons[*reason].is_null(),
            "a write was framed and refused by the inspector ({reason}): {stats}"
        );
    }
    for line in lines {
        let case = line["case"].as_str().unwrap();
        if CONTINUING.contains(&case) {
            assert_eq!(
                line["after"]["ok"], expected,
                "{case}: the read after it on the same connection: {line}"
            );
        }
    }
}

#[test]
fn modbus_server_never_sees_what_the_firewall_could_not_frame() {
    require_modbus_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = common::lab(&common::plant_hosts());
    let mut fw = Firewall::start(
        &lab,
        &common::plant_policy(
            "modbus",
            "drop",
            "{ functions: [read] }",
            "{ functions: [read, write] }",
        ),
    );
    let mut server = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let lines = attack(&lab, "modbus", 502);
    let stats = common::stats(&mut fw.process);
    check(
        &lines,
        &stats,
        &["modbus_function_denied", "modbus_blocked"],
        Value::from(initial::holding_register(0)),
    );
    let store = server.datastore().unwrap();
    assert_eq!(
        store.holding_registers[0],
        initial::holding_register(0),
        "holding register 0 changed"
    );
}

#[test]
fn enip_server_never_sees_what_the_firewall_could_not_frame() {
    require_enip_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = common::lab(&common::plant_hosts());
    let mut fw = Firewall::start(
        &lab,
        &common::plant_policy(
            "enip",
            "drop",
            "{ services: [read] }",
            "{ services: [read, write] }",
        ),
    );
    let mut server = lab
        .enip_server("plc", 44818)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let lines = attack(&lab, "enip", 44818);
    let stats = common::stats(&mut fw.process);
    let initial = otfw_tests::EnipServer::initial_tags();
    check(
        &lines,
        &stats,
        &["cip_service_denied", "enip_blocked"],
        initial["Line1_Speed"].clone(),
    );
    assert_eq!(server.tags().unwrap(), initial, "tags changed");
}
