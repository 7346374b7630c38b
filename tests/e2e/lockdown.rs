//! Lockdown for incident response with real traffic: a Modbus write and a plain TCP conduit
//! work, `otfw lockdown read-only` refuses the write within a second while reads go on and
//! closes the TCP conduit, the lockdown survives a controller restart and applies to a reloaded
//! policy, `isolate ZONE` cuts the zone off and nothing else, and `release` restores the policy
//! in full.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use otfw_tests::{
    free_loopback_addr, require_modbus_peers, scrape, Lab, ModbusClient, ModbusOp, ModbusResult,
    Table, TcpOutcome,
};
use serde_json::Value;

use crate::common::{self, otfw, otfw_logged, v4, Firewall};

/// The pinned instance of this test (pins and lockdown order removed at the end).
const INSTANCE: &str = "otfwt-lockdown";
const TIMEOUT: Duration = Duration::from_secs(2);
/// Reads of the HMI's polling, one every 50 ms: more than the phases it runs through take.
const POLLS: usize = 2_000;

/// Engineering may read and write the PLC over Modbus and reach its TCP 5020; the client may
/// read; the client may also reach the engineering station on TCP 5021 (no cell involved).
const POLICY: &str = "\
version: 1
gateway: { interfaces: [otfwt-client, otfwt-eng, otfwt-plc] }
defaults: { action: deny, intra_zone: allow, unzoned: deny, non_ip: [arp] }
zones:
  enterprise: { networks: [198.51.100.0/26], hosts: { client: 198.51.100.10 } }
  engineering: { networks: [198.51.100.64/26] }
  cell: { networks: [198.51.100.128/26], hosts: { plc: 198.51.100.130 } }
conduits:
  - name: engineering
    from: engineering
    to: cell/plc
    on_deny: refuse
    allow:
      - modbus: { functions: [read, write] }
      - tcp: { ports: [5020] }
  - name: client-reads
    from: enterprise/client
    to: cell/plc
    allow: [{ modbus: { functions: [read] } }]
  - name: client-to-engineering
    from: enterprise/client
    to: engineering
    allow: [{ tcp: { ports: [5021] } }]
";

/// `otfw lockdown ARGS --instance INSTANCE`, printed for the test log; how long it took.
fn lockdown(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let mut all = vec!["lockdown"];
    all.extend_from_slice(args);
    all.extend(["--instance", INSTANCE]);
    let out = otfw_logged(&all);
    let took = started.elapsed();
    eprintln!("(in {took:.1?})");
    (out, took)
}

/// An order that must be in force when `otfw lockdown` returns, within a second: the
/// controller's `event` about it.
fn in_force(fw: &mut Firewall, args: &[&str], event_name: &str) -> Value {
    let (out, took) = lockdown(args);
    assert!(out.status.success(), "otfw lockdown {args:?} failed");
    assert!(took < Duration::from_secs(1), "{args:?} took {took:?}");
    event(fw, event_name)
}

/// Removes the instance's pins and lockdown order when the test ends, passed or failed.
/// Declared before the lab, so it runs after the lab has ended the controller.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::remove_inventory(INSTANCE);
        let _ =
            std::fs::remove_file(Path::new("/var/lib/otfw").join(format!("{INSTANCE}.lockdown")));
        if Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists() {
            let _ = otfw(&["stop", "--instance", INSTANCE]);
        }
    }
}

fn start(lab: &Lab, metrics: SocketAddr) -> Firewall {
    let metrics = metrics.to_string();
    Firewall::start_with(
        lab,
        POLICY,
        &["--metrics", &metrics, "--instance", INSTANCE],
    )
}

/// The next `event` line of the controller.
fn event(fw: &mut Firewall, event: &str) -> Value {
    let marker = format!(r#""event":"{event}""#);
    let line = fw
        .process
        .wait_for_line(|l| l.contains(&marker), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no {event} event: {e:#}"));
    serde_json::from_str(&line).unwrap()
}

fn modbus(lab: &Lab, from: &str, plc: SocketAddr, op: ModbusOp) -> ModbusResult {
    let result = lab
        .modbus(
            ModbusClient::Pymodbus,
            from,
            plc,
            1,
            TIMEOUT,
            std::slice::from_ref(&op),
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
        .remove(0);
    eprintln!("{from:<7} {op:<30} {result:?}");
    result
}

fn tcp(lab: &Lab, from: &str, to: SocketAddr) -> TcpOutcome {
    let outcome = lab
        .tcp_echo(from, to, "ping", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{from:<7} tcp {to:<30} {outcome:?}");
    outcome
}

/// The `otfw_lockdown` samples of a scrape.
fn lockdown_metric(metrics: SocketAddr) -> Vec<String> {
    scrape(metrics)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .lines()
        .filter(|l| l.starts_with("otfw_lockdown"))
        .map(str::to_owned)
        .collect()
}

fn status() -> String {
    let out = otfw(&["status", "--instance", INSTANCE]);
    assert!(out.status.success(), "otfw status: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lockdown_read_only_and_isolate_through_a_restart_until_released() {
    require_modbus_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let _cleanup = Cleanup;
    let lab = common::lab(&common::plant_hosts());
    let metrics = free_loopback_addr().unwrap();
    let mut fw = start(&lab, metrics);
    let server = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let plc = server.addr;
    let _plc_tcp = lab.tcp_echo_server("plc", 5020).unwrap();
    let _eng_tcp = lab.tcp_echo_server("eng", 5021).unwrap();
    let plc_tcp = v4(&lab, "plc", 5020);
    let eng_tcp = v4(&lab, "eng", 5021);
    let read = ModbusOp::Read(Table::HoldingRegisters, 0, 2);
    let write = |value| ModbusOp::WriteRegister(10, value);
    let read_ok =
        |result: ModbusResult| matches!(result, ModbusResult::Ok(values) if values.len() == 2);

    // Before: the policy in full.
    assert_eq!(
        modbus(&lab, "eng", plc, write(1234)),
        ModbusResult::Ok(vec![])
    );
    assert_eq!(tcp(&lab, "eng", plc_tcp), TcpOutcome::Echoed);
    assert!(lockdown_metric(metrics)
        .iter()
        .all(|l| l.starts_with('#') || !l.contains('{')));

    // The client's HMI polls the PLC throughout the read-only lockdown, the controller's
    // restart and the reload: none of its reads may fail.
    let polling = common::ModbusPolling::start(&lab, "client", plc, POLLS, "0.05");

    // Read-only: in force when the command returns, within a second.
    let locked = in_force(&mut fw, &["read-only"], "lockdown");
    assert_eq!(locked["mode"], "read-only", "{locked}");
    assert_eq!(
        modbus(&lab, "eng", plc, write(4321)),
        ModbusResult::Exception(1)
    );
    assert!(read_ok(modbus(&lab, "eng", plc, read.clone())));
    assert!(read_ok(modbus(&lab, "client", plc, read.clone())));
    assert_ne!(tcp(&lab, "eng", plc_tcp), TcpOutcome::Echoed);
    assert_ne!(tcp(&lab, "client", eng_tcp), TcpOutcome::Echoed);
    assert!(status().contains("LOCKDOWN: read-only"), "{}", status());
    assert!(
        lockdown_metric(metrics).contains(&r#"otfw_lockdown{mode="read-only",zone=""} 1"#.into()),
        "{:?}",
        lockdown_metric(metrics)
    );

    // A restarted controller (SIGKILL: the pinned program goes on enforcing meanwhile) keeps
    // the lockdown from its start.
    common::sigkill(fw.process);
    assert_ne!(
        tcp(&lab, "eng", plc_tcp),
        TcpOutcome::Echoed,
        "without a controller"
    );
    // (Its `lockdown` event comes before `ready`, which starting waits for.)
    let mut fw = start(&lab, metrics);
    let since = locked["since"].as_str().unwrap();
    assert!(
        status().contains(&format!("LOCKDOWN: read-only since {since}")),
        "{}",
        status()
    );
    assert_eq!(
        modbus(&lab, "eng", plc, write(4321)),
        ModbusResult::Exception(1)
    );
    assert!(read_ok(modbus(&lab, "eng", plc, read.clone())));
    assert_ne!(tcp(&lab, "eng", plc_tcp), TcpOutcome::Echoed);

    // A policy reload (the file changed) is locked down as well.
    let reloaded = fw.rewrite(&POLICY.replace("ports: [5021]", "ports: [5021, 5022]"));
    assert!(
        reloaded.contains(r#""event":"policy_loaded""#),
        "{reloaded}"
    );
    assert_eq!(
        modbus(&lab, "eng", plc, write(4321)),
        ModbusResult::Exception(1)
    );
    assert_ne!(tcp(&lab, "eng", plc_tcp), TcpOutcome::Echoed);
    assert!(status().contains("LOCKDOWN: read-only"), "{}", status());

    let results = polling.stop();
    let (sent, ok, failed) = common::poll_tally(&results);
    println!(
        "HMI reads through read-only lockdown, restart and reload: sent {sent}, ok {ok}, \
         expected {sent}"
    );
    assert!(failed.is_empty(), "reads that failed: {failed:?}");
    assert!(
        sent > 10,
        "the polling should have run through the phases: {sent} reads"
    );

    // Isolating a zone the policy lacks is refused; the lockdown in force stays.
    let (out, _) = lockdown(&["isolate", "nowhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no zone `nowhere`"));
    assert_eq!(event(&mut fw, "lockdown_refused")["zone"], "nowhere");
    assert!(status().contains("LOCKDOWN: read-only"));

    // Isolate the cell: nothing in or out of it, the rest of the policy as written.
    assert_eq!(
        in_force(&mut fw, &["isolate", "cell"], "lockdown")["zone"],
        "cell"
    );
    assert_eq!(
        modbus(&lab, "client", plc, read.clone()),
        ModbusResult::ConnectFailed
    );
    assert_eq!(
        modbus(&lab, "eng", plc, read.clone()),
        ModbusResult::ConnectFailed
    );
    assert_ne!(tcp(&lab, "eng", plc_tcp), TcpOutcome::Echoed);
    assert_eq!(tcp(&lab, "client", eng_tcp), TcpOutcome::Echoed);
    assert!(
        lockdown_metric(metrics).contains(&r#"otfw_lockdown{mode="isolate",zone="cell"} 1"#.into())
    );

    // Release: the policy in force applies in full again.
    let released = in_force(&mut fw, &["release"], "lockdown_released");
    assert_eq!(released["mode"], "isolate", "{released}");
    assert_eq!(
        modbus(&lab, "eng", plc, write(99)),
        ModbusResult::Ok(vec![])
    );
    assert!(read_ok(modbus(&lab, "client", plc, read)));
    assert_eq!(tcp(&lab, "eng", plc_tcp), TcpOutcome::Echoed);
    assert!(!status().contains("LOCKDOWN"));
    assert!(!lockdown_metric(metrics).iter().any(|l| l.contains("} 1")));
    assert!(!Path::new("/var/lib/otfw")
        .join(format!("{INSTANCE}.lockdown"))
        .exists());
}
