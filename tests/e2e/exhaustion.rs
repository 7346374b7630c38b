//! Exhaustion in the lab: while a host of another zone floods the PLC with SYNs (more than the
//! table of unanswered flows holds, each answered by the PLC and reset by the flooding host's
//! stack), the HMI's established Modbus connection keeps polling without a single failure or
//! reconnection, and a new HMI connection still opens. Counts are printed.

use std::time::{Duration, Instant};

use otfw_tests::{
    free_loopback_addr, repo_root, require_modbus_peers, scrape, venv_python, ModbusClient,
    ModbusOp, ModbusResult, Table,
};
use serde_json::Value;

use crate::common::{self, Firewall};

/// The client (HMI) and `eng` (here a compromised host of another zone) may both read the PLC.
const POLICY: &str = "\
version: 1
gateway: { interfaces: [otfwt-client, otfwt-eng, otfwt-plc] }
defaults: { action: deny, intra_zone: allow, unzoned: deny, non_ip: [arp] }
zones:
  enterprise: { networks: [198.51.100.0/26] }
  contractors: { networks: [198.51.100.64/26] }
  cell: { networks: [198.51.100.128/26], hosts: { plc: 198.51.100.130 } }
conduits:
  - name: hmi
    from: enterprise
    to: cell/plc
    allow: [{ modbus: { functions: [read] } }]
  - name: contractor-reads
    from: contractors
    to: cell/plc
    allow: [{ modbus: { functions: [read] } }]
";

/// SYNs of the flood: more than `EMBRYOS` holds (65,536).
const FLOOD: u32 = 100_000;
/// Reads of the HMI's one connection, one every `POLL_INTERVAL`: they outlast the flood.
const POLLS: usize = 3_000;
const POLL_INTERVAL: &str = "0.005";

fn metric_lines(metrics: std::net::SocketAddr, prefix: &str) -> Vec<String> {
    scrape(metrics)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_syn_flood_from_another_zone_leaves_the_hmi_connection_polling() {
    require_modbus_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = common::lab(&common::plant_hosts());
    let metrics = free_loopback_addr().unwrap();
    let _fw = Firewall::start_with(&lab, POLICY, &["--metrics", &metrics.to_string()]);
    let server = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let plc = server.addr;
    let python = venv_python().unwrap_or_else(|e| panic!("{e:#}"));
    let peers = repo_root().join("tests").join("peers");

    // The HMI: one connection, reads back to back.
    let mut hmi = common::ModbusPolling::start(&lab, "client", plc, POLLS, POLL_INTERVAL);

    let started = Instant::now();
    let flood = lab
        .exec_timeout(
            "eng",
            &[
                python.display().to_string(),
                peers.join("syn_flood.py").display().to_string(),
                "--src".into(),
                lab.host("eng").ipv4_addr().to_string(),
                "--dst".into(),
                plc.ip().to_string(),
                "--port".into(),
                "502".into(),
                "--count".into(),
                FLOOD.to_string(),
            ],
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("the flood: {e:#}"));
    let flooded = started.elapsed();
    let sent: Value = serde_json::from_str(flood.stdout.trim())
        .unwrap_or_else(|e| panic!("flood output {:?}: {e}", flood.stdout));
    assert!(
        hmi.is_running(),
        "the HMI finished its {POLLS} reads before the flood ended ({flooded:?}): raise POLLS"
    );

    let results = hmi.finish(Duration::from_secs(120));
    let (_, ok, failed) = common::poll_tally(&results);
    eprintln!(
        "flood from zone contractors: {} SYNs sent in {}s; HMI reads on one connection: {} \
         sent, {ok} ok, {} failed",
        sent["sent"],
        sent["seconds"],
        results.len(),
        failed.len()
    );
    for line in metric_lines(metrics, "otfw_flow_events_total")
        .into_iter()
        .chain(metric_lines(metrics, "otfw_zone_flows"))
        .chain(metric_lines(metrics, "otfw_flow_table_entries"))
        .chain(metric_lines(
            metrics,
            "otfw_denied_packets_total{reason=\"flow_quota\"",
        ))
    {
        eprintln!("  {line}");
    }
    assert_eq!(results.len(), POLLS, "one result per read");
    assert!(failed.is_empty(), "HMI reads that failed: {failed:?}");
    assert_eq!(sent["sent"], FLOOD, "every SYN of the flood was sent");

    // The flood went through the datapath: it created at least a flow per SYN it sent that
    // did not repeat a tuple (random source ports: a few do).
    let created: f64 = metric_lines(metrics, "otfw_flow_events_total{event=\"created\"}")
        .first()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("otfw_flow_events_total{event=\"created\"}");
    assert!(
        created > FLOOD as f64 * 0.5,
        "flows created {created}, SYNs sent {FLOOD}"
    );

    // The PLC answered the SYNs: each flow was established (in the flooding zone's share) and
    // ended by the flooding host's reset.
    let promoted: f64 = metric_lines(metrics, "otfw_flow_events_total{event=\"promoted\"}")
        .first()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("otfw_flow_events_total{event=\"promoted\"}");
    assert!(promoted >= 1.0, "flows promoted {promoted}");

    // A new connection of the HMI's zone opens as before.
    let again = lab
        .modbus(
            ModbusClient::Pymodbus,
            "client",
            plc,
            1,
            Duration::from_secs(2),
            &[ModbusOp::Read(Table::HoldingRegisters, 0, 2)],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        matches!(&again[0], ModbusResult::Ok(v) if v.len() == 2),
        "{again:?}"
    );
}
