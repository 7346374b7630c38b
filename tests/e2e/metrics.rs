//! Observing `otfw run` on the lab: a real Prometheus scraping `/metrics`, `promtool check
//! metrics` on a real scrape, `otfw status` on the pinned state, and `denied` events.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use otfw_tests::{
    free_loopback_addr, scrape, target_binary, HostSpec, PrometheusServer, UdpOutcome,
};
use serde_json::Value;

use crate::common::{self, v4, Firewall};

/// Two zones of one /24, one conduit between them for UDP 5353.
const POLICY: &str = "\
version: 1
gateway:
  bridge: br-otfwt
defaults: { action: deny, intra_zone: allow, unzoned: deny, non_ip: [arp] }
zones:
  left:
    networks: [198.51.100.0/25]
  right:
    networks: [198.51.100.128/25]
conduits:
  - name: left-to-right
    from: left
    to: right
    allow:
      - udp: { ports: [5353] }
";

/// Datagrams sent through the conduit (each echoed) and to a port no conduit opens.
const ALLOWED: u32 = 5;
const DENIED: u32 = 3;
/// Ethernet + IPv4 + UDP headers + the peer's payload `otfw-peer seq=N` (one digit).
const FRAME: u64 = 14 + 20 + 8 + 15;

fn hosts() -> Vec<HostSpec> {
    vec![
        HostSpec::new("a", "198.51.100.1/24"),
        HostSpec::new("b", "198.51.100.129/24"),
    ]
}

/// The single value of an instant query, or None while Prometheus has no sample.
fn value(prometheus: &PrometheusServer, promql: &str) -> Option<u64> {
    let body = prometheus.query(promql).ok()?;
    let json: Value = serde_json::from_str(&body).ok()?;
    let result = json["data"]["result"].as_array()?;
    let sample = result.first()?;
    sample["value"][1]
        .as_str()?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

/// Polls until the query returns `expected` (scrapes come every second), then asserts.
fn assert_query(prometheus: &PrometheusServer, promql: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        last = value(prometheus, promql);
        if last == Some(expected) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "{promql}: Prometheus says {last:?}, expected {expected}\nprometheus log:\n{}",
        prometheus.log()
    );
}

fn otfw_status(args: &[&str]) -> std::process::Output {
    let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
    Command::new(otfw)
        .arg("status")
        .args(args)
        .output()
        .expect("run otfw status")
}

#[test]
fn prometheus_scrapes_exactly_what_was_allowed_and_denied() {
    let lab = common::lab(&hosts());
    let metrics = free_loopback_addr().unwrap();
    let fw = Firewall::start_with(&lab, POLICY, &["--metrics", &metrics.to_string()]);
    let prometheus = PrometheusServer::start(metrics).unwrap_or_else(|e| panic!("{e:#}"));
    assert_query(&prometheus, "up{job=\"otfw\"}", 1);

    let _echo = lab.udp_echo_server("b", 5353).unwrap();
    let _closed = lab.udp_echo_server("b", 5354).unwrap();
    let timeout = Duration::from_millis(500);
    let allowed = lab
        .udp_exchange("a", v4(&lab, "b", 5353), ALLOWED, timeout)
        .unwrap();
    assert_eq!(
        allowed,
        UdpOutcome {
            sent: ALLOWED,
            received: ALLOWED,
            refused: 0
        }
    );
    let denied = lab
        .udp_exchange("a", v4(&lab, "b", 5354), DENIED, timeout)
        .unwrap();
    assert_eq!((denied.sent, denied.received), (DENIED, 0));

    // Each allowed datagram and its echo pass on the conduit, in one flow; each denied one is
    // dropped for want of a conduit. ARP is counted apart, under `(none)` with verdict pass.
    let conduit = "conduit=\"left-to-right\",from_zone=\"left\",to_zone=\"right\",protocol=\"udp\"";
    assert_query(
        &prometheus,
        &format!("otfw_conduit_packets_total{{{conduit},verdict=\"pass\"}}"),
        2 * ALLOWED as u64,
    );
    assert_query(
        &prometheus,
        &format!("otfw_conduit_bytes_total{{{conduit},verdict=\"pass\"}}"),
        2 * ALLOWED as u64 * FRAME,
    );
    assert_query(
        &prometheus,
        &format!("sum(otfw_conduit_packets_total{{{conduit},verdict!=\"pass\"}})"),
        0,
    );
    assert_query(
        &prometheus,
        "otfw_denied_packets_total{reason=\"no_conduit\",verdict=\"drop\"}",
        DENIED as u64,
    );
    assert_query(&prometheus, "otfw_flow_events_total{event=\"created\"}", 1);
    assert_query(&prometheus, "otfw_policy_epoch", 1);
    assert_query(&prometheus, "sum(otfw_port_attached)", 2);
    assert_query(&prometheus, "sum(otfw_events_lost_total)", 0);

    // The exposition passes promtool's checks.
    let body = scrape(metrics).unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run `cargo xtask setup` (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // One `denied` event per dropped datagram, with names and addresses.
    let output = fw.process.stop();
    let events: Vec<Value> = output
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "denied" && e["reason"] == "no_conduit")
        .collect();
    assert_eq!(events.len(), DENIED as usize, "{}", output.stdout);
    for event in &events {
        for (field, expected) in [
            ("verdict", "drop"),
            ("conduit", "(none)"),
            ("src_zone", "left"),
            ("dst_zone", "right"),
            ("src", "198.51.100.1"),
            ("dst", "198.51.100.129"),
            ("protocol", "udp"),
            ("port", "otfwt-a"),
        ] {
            assert_eq!(event[field], expected, "{field} in {event}");
        }
        assert_eq!(event["dst_port"], 5354, "{event}");
        assert_eq!(event["epoch"], 1, "{event}");
        assert!(event["timestamp"].is_string(), "{event}");
    }
}

#[test]
fn status_summarises_a_running_instance_and_fails_without_one() {
    let lab = common::lab(&hosts());
    let fw = Firewall::start_with(&lab, POLICY, &["--metrics", "off", "--instance", "otfwt"]);
    let _echo = lab.udp_echo_server("b", 5353).unwrap();
    let exchange = lab
        .udp_exchange("a", v4(&lab, "b", 5353), 2, Duration::from_millis(500))
        .unwrap();
    assert_eq!(exchange.received, 2);

    let status = otfw_status(&["--instance", "otfwt", "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["epoch"], 1, "{report}");
    assert_eq!(report["state"]["instance"], "otfwt", "{report}");
    assert_eq!(report["state"]["pid"], fw.process.pid(), "{report}");
    let ports: Vec<&str> = report["state"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["otfwt-a", "otfwt-b"], "{report}");
    let top = &report["top_by_traffic"];
    let conduit = top
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conduit"] == "left-to-right")
        .unwrap_or_else(|| panic!("left-to-right not in {top}"));
    assert_eq!(conduit["packets"], 4, "{report}");
    assert_eq!(conduit["denied_packets"], 0, "{report}");

    let text = otfw_status(&["--instance", "otfwt"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("otfwt-a"), "{text}");
    assert!(text.contains("left-to-right"), "{text}");

    // The controller exits; its pinned program goes on enforcing until `otfw stop`.
    fw.process.stop();
    let gone = otfw_status(&["--instance", "otfwt"]);
    assert!(!gone.status.success());
    let message = String::from_utf8_lossy(&gone.stderr);
    assert!(
        message.contains("otfw instance otfwt is not running")
            && message.contains("still enforces the last policy on otfwt-a, otfwt-b"),
        "{message}"
    );
    let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
    let stop = Command::new(otfw)
        .args(["stop", "--instance", "otfwt"])
        .output()
        .expect("run otfw stop");
    assert!(stop.status.success(), "{stop:?}");
    common::remove_inventory("otfwt");
    let gone = otfw_status(&["--instance", "otfwt"]);
    let message = String::from_utf8_lossy(&gone.stderr);
    assert!(
        message.contains("no otfw instance otfwt is running"),
        "{message}"
    );
    assert!(
        !std::path::Path::new("/sys/fs/bpf/otfw/otfwt").exists(),
        "pins left behind"
    );
}
