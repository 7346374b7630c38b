//! `otfw run` on the lab: enforcement and the counters it reports on SIGUSR1.

use std::time::Duration;

use otfw_tests::{HoldSummary, Lab, TcpOutcome};
use serde_json::Value;

use crate::common::{self, v4, Firewall};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Two zones of one /24 (so the hosts need no routes), one conduit between them.
const POLICY: &str = "\
version: 1
gateway:
  bridge: br-otfwt
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
      - tcp: { ports: [5020] }
";

/// The lab of [`common::left_right_hosts`] with `otfw run` enforcing [`POLICY`] (the policy
/// file lives as long as the `Firewall`).
fn start() -> (Lab, Firewall) {
    let lab = common::lab(&common::left_right_hosts());
    let fw = Firewall::start(&lab, POLICY);
    (lab, fw)
}

fn event(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

fn is_event(line: &str, name: &str) -> bool {
    event(line)["event"] == name
}

#[test]
fn sigusr1_reports_counters_by_reason_and_conduit() {
    let (lab, fw) = start();
    let mut otfw = fw.process;

    let _server = lab.tcp_echo_server("b", 5020).unwrap();
    let _closed = lab.tcp_echo_server("b", 5021).unwrap();
    assert_eq!(
        lab.tcp_echo("a", v4(&lab, "b", 5020), "allowed", TIMEOUT)
            .unwrap(),
        TcpOutcome::Echoed
    );
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 5021), TIMEOUT).unwrap(),
        TcpOutcome::TimedOut
    );

    let stats = common::stats(&mut otfw);
    assert_eq!(stats["epoch"], 1, "{stats}");
    let passed = &stats["conduits"]["left-to-right"]["pass"];
    assert!(passed["packets"].as_u64().unwrap_or(0) >= 4, "{stats}");
    assert!(passed["bytes"].as_u64().unwrap_or(0) > 0, "{stats}");
    // The SYN and its retransmission.
    assert!(
        stats["reasons"]["no_conduit"]["drop"].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );
    assert!(
        stats["flows"]["created"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    // Only non-zero entries: nothing was reset or monitored.
    let reasons = stats["reasons"].as_object().unwrap();
    for (reason, by_verdict) in reasons {
        for (verdict, n) in by_verdict.as_object().unwrap() {
            assert!(n.as_u64().unwrap() > 0, "{reason}/{verdict} in {stats}");
            assert!(["pass", "drop"].contains(&verdict.as_str()), "{stats}");
        }
    }

    // Counters only grow.
    let again = common::stats(&mut otfw);
    assert!(
        again["conduits"]["left-to-right"]["pass"]["packets"].as_u64()
            >= passed["packets"].as_u64()
    );
    let output = otfw.stop();
    assert_eq!(
        output
            .stdout
            .lines()
            .filter(|line| is_event(line, "detached"))
            .count(),
        2,
        "{}",
        output.stdout
    );
}

/// 100 reloads (SIGHUP, each a new generation) while traffic runs: the held connection never
/// misses an exchange and no denied datagram arrives.
#[test]
fn a_hundred_reloads_under_traffic_lose_nothing_and_pass_nothing() {
    let (lab, fw) = start();
    let mut otfw = fw.process;
    let _server = lab.tcp_echo_server("b", 5020).unwrap();
    // Right to left has no conduit.
    let denied_server = lab.udp_echo_server("a", 5354).unwrap();
    let mut hold = lab
        .hold_tcp(
            "a",
            v4(&lab, "b", 5020),
            Duration::from_millis(50),
            Duration::from_secs(10),
        )
        .unwrap();
    hold.wait_for_line(|l| l.contains("result=ok"), common::START)
        .unwrap();
    let pid = libc::pid_t::try_from(otfw.pid()).unwrap();
    const RELOADS: u32 = 100;
    let denied = std::thread::scope(|s| {
        let denied = s.spawn(|| {
            lab.udp_exchange("b", v4(&lab, "a", 5354), 30, Duration::from_millis(100))
                .unwrap()
        });
        for n in 0..RELOADS {
            // SAFETY: signalling the otfw process this test started, by its PID.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
            let line = otfw
                .wait_for_line(|l| is_event(l, "policy_loaded"), common::START)
                .unwrap();
            assert_eq!(event(&line)["epoch"], n + 2, "{line}");
        }
        denied.join().unwrap()
    });
    let summary = HoldSummary::from_output(&hold.wait(Duration::from_secs(20)).unwrap()).unwrap();
    let arrived = common::datagrams_received(denied_server);
    println!(
        "{RELOADS} reloads: held tcp ok {} failed {} (expected unbroken); denied udp sent {} \
         arrived {arrived} (expected 0)",
        summary.ok, summary.failed, denied.sent
    );
    assert!(summary.unbroken(), "{summary:?}");
    assert_eq!(arrived, 0);
    assert_eq!(denied.received, 0);
}
