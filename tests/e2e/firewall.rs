//! `otfw run` on the lab's bridge ports: real TCP, UDP and ICMP between namespaces, decided by
//! the real XDP program. Each test writes its own policy, so every expectation below follows
//! from the policy text next to it.

use std::{process::Command, time::Duration};

use otfw_tests::{HoldSummary, HostSpec, TcpOutcome, UdpOutcome};

use crate::common::{self, v4, v6, Firewall, START};

/// Long enough for a SYN retransmission: a dropped connection attempt times out instead.
const CONNECT: Duration = Duration::from_millis(1500);

/// `office` host a, `plant` host b (whose addresses may only arrive on b's port), and a second
/// office host c. The zones split the lab's one subnet, so no routing is involved.
fn hosts() -> Vec<HostSpec> {
    vec![
        HostSpec::new("a", "198.51.100.10/24").ipv6("2001:db8:100::a/64"),
        HostSpec::new("b", "198.51.100.200/24").ipv6("2001:db8:100::c8/64"),
        HostSpec::new("c", "198.51.100.20/24"),
    ]
}

/// The standard test policy: office -> plant on TCP 5020, UDP 5353 and ping; `extra` is
/// appended to the conduit's allow list; `defaults` overrides lines of the defaults block.
fn policy(defaults: &str, extra: &str) -> String {
    format!(
        r#"version: 1
gateway:
  interfaces: [otfwt-a, otfwt-b, otfwt-c]
defaults:
  action: deny
  intra_zone: allow
  unzoned: deny
  non_ip: [arp]
{defaults}
zones:
  office:
    networks: [198.51.100.0/25, "2001:db8:100::/121"]
  plant:
    networks: [198.51.100.128/25, "2001:db8:100::80/121"]
    ports: [otfwt-b]
conduits:
  - name: office-to-plant
    from: office
    to: plant
    allow:
      - tcp: {{ ports: [5020] }}
      - udp: {{ ports: [5353] }}
      - icmp: {{ types: [echo_request] }}
{extra}"#
    )
}

fn udp_ok(outcome: UdpOutcome, n: u32) -> bool {
    outcome.sent == n && outcome.received == n
}

#[test]
fn conduit_allows_its_direction_and_replies_only() {
    let lab = common::lab(&hosts());
    let _fw = Firewall::start(&lab, &policy("", ""));
    let _b5020 = lab.tcp_echo_server("b", 5020).unwrap();
    let _b5021 = lab.tcp_echo_server("b", 5021).unwrap();
    let _a5020 = lab.tcp_echo_server("a", 5020).unwrap();

    // Allowed: office -> plant TCP 5020, both address families; the echo is the reply path.
    assert_eq!(
        lab.tcp_echo("a", v4(&lab, "b", 5020), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );
    assert_eq!(
        lab.tcp_echo("a", v6(&lab, "b", 5020), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );
    // Denied: no conduit for 5021, although b listens there.
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 5021), CONNECT).unwrap(),
        TcpOutcome::TimedOut
    );
    // Denied: the conduit does not open connections from plant to office.
    assert_eq!(
        lab.tcp_connect("b", v4(&lab, "a", 5020), CONNECT).unwrap(),
        TcpOutcome::TimedOut
    );
    assert_eq!(
        lab.tcp_connect("b", v6(&lab, "a", 5020), CONNECT).unwrap(),
        TcpOutcome::TimedOut
    );
    // Intra-zone traffic is allowed by default.
    assert_eq!(
        lab.tcp_echo("c", v4(&lab, "a", 5020), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );
}

#[test]
fn udp_and_icmp_follow_the_conduit_direction() {
    let lab = common::lab(&hosts());
    let _fw = Firewall::start(&lab, &policy("", ""));
    let _b = lab.udp_echo_server("b", 5353).unwrap();
    let _b2 = lab.udp_echo_server("b", 5354).unwrap();
    let _a = lab.udp_echo_server("a", 5353).unwrap();

    let ok = lab
        .udp_exchange("a", v4(&lab, "b", 5353), 3, CONNECT)
        .unwrap();
    assert!(udp_ok(ok, 3), "allowed UDP and its replies: {ok:?}");
    let ok6 = lab
        .udp_exchange("a", v6(&lab, "b", 5353), 3, CONNECT)
        .unwrap();
    assert!(udp_ok(ok6, 3), "allowed UDP over IPv6: {ok6:?}");
    let other = lab
        .udp_exchange("a", v4(&lab, "b", 5354), 2, CONNECT)
        .unwrap();
    assert_eq!(
        other.received, 0,
        "UDP to a port no conduit allows: {other:?}"
    );
    let reverse = lab
        .udp_exchange("b", v4(&lab, "a", 5353), 2, CONNECT)
        .unwrap();
    assert_eq!(
        reverse.received, 0,
        "UDP against the conduit's direction: {reverse:?}"
    );

    let b = lab.host("b").ipv4_addr().into();
    let a = lab.host("a").ipv4_addr().into();
    assert_eq!(
        lab.ping("a", b, 2).unwrap().received,
        2,
        "echo request allowed, reply tracked"
    );
    assert_eq!(
        lab.ping("b", a, 2).unwrap().received,
        0,
        "no conduit for plant -> office ping"
    );
    let b6 = lab.host("b").ipv6_addr().unwrap().into();
    assert_eq!(
        lab.ping("a", b6, 2).unwrap().received,
        2,
        "ICMPv6 echo (with neighbour discovery)"
    );
}

#[test]
fn native_xdp_enforces_the_same_policy() {
    let lab = common::lab(&hosts());
    let _fw = Firewall::start_with(&lab, &policy("", ""), &["--xdp-mode", "native"]);
    for port in lab.ports() {
        let link = Command::new("ip")
            .args(["link", "show", "dev", port])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&link.stdout);
        assert!(
            text.contains("xdp") && !text.contains("xdpgeneric"),
            "{port}: {text}"
        );
    }
    let _b = lab.tcp_echo_server("b", 5020).unwrap();
    let _b2 = lab.tcp_echo_server("b", 5021).unwrap();
    assert_eq!(
        lab.tcp_echo("a", v4(&lab, "b", 5020), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 5021), CONNECT).unwrap(),
        TcpOutcome::TimedOut
    );
}

/// Resets go back out of the ingress port (XDP_TX). On veth ports `auto` attaches in generic
/// mode for that reason: a native veth can only transmit back to a peer that runs XDP itself.
#[test]
fn on_deny_reset_refuses_at_once() {
    let lab = common::lab(&hosts());
    let _fw = Firewall::start(&lab, &policy("  on_deny: reset", ""));
    let _b = lab.tcp_echo_server("b", 5021).unwrap();
    // b listens on 5021, so a refusal can only come from the firewall's reset.
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 5021), CONNECT).unwrap(),
        TcpOutcome::Refused
    );
    assert_eq!(
        lab.tcp_connect("a", v6(&lab, "b", 5021), CONNECT).unwrap(),
        TcpOutcome::Refused
    );
}

#[test]
fn monitor_mode_passes_what_it_would_drop() {
    let lab = common::lab(&hosts());
    let _fw = Firewall::start(&lab, &policy("  mode: monitor", ""));
    let _b = lab.tcp_echo_server("b", 5021).unwrap();
    assert_eq!(
        lab.tcp_echo("a", v4(&lab, "b", 5021), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );
}

#[test]
fn spoofed_source_is_dropped_at_the_wrong_port() {
    let lab = common::lab(&hosts());
    let _fw = Firewall::start(&lab, &policy("", ""));
    // a claims a plant address; plant addresses may only arrive on b's port.
    lab.exec(
        "a",
        &["ip", "addr", "add", "198.51.100.250/24", "dev", "eth0"],
    )
    .unwrap();
    let _b = lab.tcp_echo_server("b", 7000).unwrap();
    let b = lab.host("b").ipv4_addr();
    let spoofed = lab
        .exec(
            "a",
            &[
                "ping",
                "-c",
                "2",
                "-W",
                "1",
                "-I",
                "198.51.100.250",
                &b.to_string(),
            ],
        )
        .unwrap();
    assert!(
        spoofed.stdout.contains(" 0 received"),
        "spoofed ping answered: {}",
        spoofed.stdout
    );
    // The same plant-to-plant exchange from b's own port is intra-zone and allowed.
    let own = lab
        .exec("b", &["ping", "-c", "1", "-W", "1", "198.51.100.200"])
        .unwrap();
    assert!(own.stdout.contains(" 1 received"), "{}", own.stdout);
}

#[test]
fn midstream_flows_are_adopted_or_cut_per_policy() {
    for (midstream, survives) in [("adopt", true), ("deny", false)] {
        let lab = common::lab(&hosts());
        let _b = lab.tcp_echo_server("b", 5020).unwrap();
        // The connection is up before the firewall starts: it never sees the SYN.
        let mut hold = lab
            .hold_tcp(
                "a",
                v4(&lab, "b", 5020),
                Duration::from_millis(100),
                Duration::from_secs(6),
            )
            .unwrap();
        hold.wait_for_line(|l| l.contains("result=ok"), START)
            .unwrap();
        let _fw = Firewall::start(&lab, &policy(&format!("  midstream: {midstream}"), ""));
        let summary =
            HoldSummary::from_output(&hold.wait(Duration::from_secs(20)).unwrap()).unwrap();
        assert_eq!(
            summary.unbroken(),
            survives,
            "midstream {midstream}: {summary:?}"
        );
    }
}

#[test]
fn reload_keeps_allowed_connections_and_rejects_bad_files() {
    let lab = common::lab(&hosts());
    let mut fw = Firewall::start(&lab, &policy("", ""));
    let _b = lab.tcp_echo_server("b", 5020).unwrap();
    let _b2 = lab.tcp_echo_server("b", 5021).unwrap();
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 5021), CONNECT).unwrap(),
        TcpOutcome::TimedOut
    );

    let mut hold = lab
        .hold_tcp(
            "a",
            v4(&lab, "b", 5020),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
        .unwrap();
    hold.wait_for_line(|l| l.contains("result=ok"), START)
        .unwrap();

    // A changed policy (one more port) while the connection runs.
    let loaded = fw.rewrite(&policy("", "      - tcp: { ports: [5021] }\n"));
    assert!(loaded.contains(r#""epoch":2"#), "{loaded}");
    assert_eq!(
        lab.tcp_echo("a", v4(&lab, "b", 5021), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );

    // A broken file is rejected with its position; the policy in force stays.
    let rejected = fw.rewrite(&policy("  colour: blue", ""));
    assert!(rejected.contains("policy_rejected"), "{rejected}");
    assert!(rejected.contains("unknown key `colour`"), "{rejected}");
    assert_eq!(
        lab.tcp_echo("a", v4(&lab, "b", 5021), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );

    let summary = HoldSummary::from_output(&hold.wait(Duration::from_secs(20)).unwrap()).unwrap();
    assert!(
        summary.unbroken(),
        "connection across two reloads: {summary:?}"
    );
}

#[test]
fn reload_that_removes_a_conduit_cuts_its_connections() {
    let lab = common::lab(&hosts());
    let mut fw = Firewall::start(&lab, &policy("", "      - tcp: { ports: [5021] }\n"));
    let _b = lab.tcp_echo_server("b", 5021).unwrap();
    let mut hold = lab
        .hold_tcp(
            "a",
            v4(&lab, "b", 5021),
            Duration::from_millis(100),
            Duration::from_secs(4),
        )
        .unwrap();
    hold.wait_for_line(|l| l.contains("result=ok"), START)
        .unwrap();
    fw.rewrite(&policy("", ""));
    let summary = HoldSummary::from_output(&hold.wait(Duration::from_secs(20)).unwrap()).unwrap();
    assert!(
        !summary.unbroken(),
        "connection survived the removal of its conduit: {summary:?}"
    );
}

#[test]
fn sighup_reloads_and_sigterm_detaches() {
    let lab = common::lab(&hosts());
    let mut fw = Firewall::start(&lab, &policy("", ""));
    let _b = lab.tcp_echo_server("b", 5021).unwrap();
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 5021), CONNECT).unwrap(),
        TcpOutcome::TimedOut
    );

    // SIGHUP re-reads the file even when nothing changed.
    // SAFETY: signalling the otfw process this test started, by its PID.
    unsafe { libc::kill(fw.process.pid() as i32, libc::SIGHUP) };
    let loaded = fw
        .process
        .wait_for_line(|l| l.contains("policy_loaded"), START)
        .unwrap();
    assert!(loaded.contains(r#""epoch":2"#), "{loaded}");

    let Firewall { process, .. } = fw;
    let output = process.stop();
    assert!(
        output.stdout.contains(r#""event":"detached""#),
        "{}",
        output.stdout
    );
    for port in lab.ports() {
        let link = Command::new("ip")
            .args(["link", "show", "dev", port])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&link.stdout);
        assert!(
            !text.contains("xdp"),
            "XDP still attached to {port}: {text}"
        );
    }
    assert_eq!(
        lab.tcp_echo("a", v4(&lab, "b", 5021), "hi", CONNECT)
            .unwrap(),
        TcpOutcome::Echoed
    );
}

/// The state of generic receive offload on a root-namespace port, as ethtool reports it.
fn gro(port: &str) -> String {
    let out = Command::new("ethtool").args(["-k", port]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("generic-receive-offload: "))
        .unwrap_or_else(|| panic!("no GRO line for {port}: {text}"))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Generic XDP sees segments after GRO merged them, with a checksum field that is not the
/// wire's: `otfw run` switches GRO off on the ports it attaches in generic mode and on again
/// when it detaches.
#[test]
fn gro_is_off_on_generic_ports_while_attached() {
    let lab = common::lab(&hosts());
    let port = lab.ports()[0].to_string();
    let on = Command::new("ethtool")
        .args(["-K", &port, "gro", "on"])
        .status()
        .unwrap();
    assert!(on.success(), "ethtool -K {port} gro on");
    assert_eq!(gro(&port), "on");
    let fw = Firewall::start(&lab, &policy("", ""));
    assert_eq!(
        gro(&port),
        "off",
        "GRO while otfw run is attached in generic mode"
    );
    let Firewall { process, .. } = fw;
    let output = process.stop();
    assert!(
        output.stdout.contains(r#""event":"detached""#),
        "{}",
        output.stdout
    );
    assert_eq!(gro(&port), "on", "GRO after otfw run detached");
}
