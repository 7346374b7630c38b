//! The lab itself, with no firewall attached: topology, reachability, and cleanup.

use std::net::IpAddr;
use std::panic;
use std::process::Command;
use std::time::Duration;

use otfw_tests::{HoldSummary, Lab, LabOptions, TcpOutcome, UdpOutcome};

use crate::common::{self, leftovers, two_hosts, v4, v6, PREFIX};

const TIMEOUT: Duration = Duration::from_secs(2);

fn in_netns(lab: &Lab, host: &str, args: &[&str]) -> String {
    let output = lab.exec(host, args).expect("command in namespace");
    assert!(output.success(), "{args:?} failed: {}", output.stderr);
    output.stdout
}

/// True while `pid` runs (a zombie waiting to be reaped has left its namespaces).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[test]
fn lab_comes_up_with_its_names_and_addresses() {
    let lab = common::lab(&two_hosts());
    assert_eq!(lab.bridge(), "br-otfwt");
    assert_eq!(lab.ports(), ["otfwt-a", "otfwt-b"]);

    let a = lab.host("a");
    assert_eq!(a.netns, "otfwt-a");
    let ifindex = std::fs::read_to_string("/sys/class/net/otfwt-a/ifindex").unwrap();
    assert_eq!(a.port_ifindex.to_string(), ifindex.trim());
    let master = std::fs::read_link("/sys/class/net/otfwt-a/master").unwrap();
    assert!(master.ends_with("br-otfwt"), "port enslaved to {master:?}");

    let addresses = in_netns(&lab, "a", &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addresses.contains("198.51.100.1/24"), "{addresses}");
    assert!(addresses.contains("2001:db8:100::1/64"), "{addresses}");
    assert!(
        !addresses.contains("tentative"),
        "DAD still running: {addresses}"
    );
    let link = in_netns(&lab, "a", &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("02:00:00:00:00:0a"), "{link}");
    let offloads = in_netns(&lab, "a", &["ethtool", "-k", "eth0"]);
    assert!(offloads.contains("tx-checksumming: off"), "{offloads}");
}

#[test]
fn hosts_reach_each_other_through_the_bridge() {
    let lab = common::lab(&two_hosts());
    for to in [
        IpAddr::V4(lab.host("b").ipv4_addr()),
        IpAddr::V6(lab.host("b").ipv6_addr().unwrap()),
    ] {
        let ping = lab.ping("a", to, 3).unwrap();
        assert_eq!(ping.received, 3, "ping {to}: {ping:?}");
    }

    let _tcp = lab.tcp_echo_server("b", 5020).unwrap();
    for to in [v4(&lab, "b", 5020), v6(&lab, "b", 5020)] {
        assert_eq!(
            lab.tcp_echo("a", to, "hello", TIMEOUT).unwrap(),
            TcpOutcome::Echoed
        );
    }
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 5021), TIMEOUT).unwrap(),
        TcpOutcome::Refused
    );

    let _udp = lab.udp_echo_server("b", 5353).unwrap();
    let udp = lab
        .udp_exchange("a", v6(&lab, "b", 5353), 3, TIMEOUT)
        .unwrap();
    assert_eq!(
        udp,
        UdpOutcome {
            sent: 3,
            received: 3,
            refused: 0
        }
    );

    let hold = lab
        .hold_tcp(
            "a",
            v4(&lab, "b", 5020),
            Duration::from_millis(50),
            Duration::from_secs(1),
        )
        .unwrap();
    let summary = HoldSummary::from_output(&hold.wait(Duration::from_secs(10)).unwrap()).unwrap();
    assert!(summary.unbroken(), "{summary:?}");
}

#[test]
fn an_address_nobody_has_is_not_reached() {
    let lab = common::lab(&two_hosts());
    let ping = lab.ping("a", "198.51.100.99".parse().unwrap(), 1).unwrap();
    assert_eq!(ping.received, 0);
}

#[test]
fn commands_are_bounded_by_their_timeout() {
    let lab = common::lab(&two_hosts());
    let error = lab
        .exec_timeout("a", &["sleep", "30"], Duration::from_millis(300))
        .unwrap_err();
    assert!(error.to_string().contains("did not finish"), "{error:#}");
}

#[test]
fn close_removes_namespaces_links_and_processes() {
    let lab = common::lab(&two_hosts());
    let server = lab.tcp_echo_server("b", 5020).unwrap();
    let pid = server.pid();
    assert!(running(pid));

    lab.close().unwrap();
    assert!(!running(pid), "server {pid} survived the lab");
    assert_eq!(leftovers(), Vec::<String>::new());
    drop(server);
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let result = panic::catch_unwind(|| {
        let lab = common::lab(&two_hosts());
        let _server = lab.tcp_echo_server("b", 5020).unwrap();
        panic!("deliberate panic while the lab is up");
    });
    assert!(result.is_err());
    assert_eq!(leftovers(), Vec::<String>::new());
}

#[test]
fn leftovers_of_a_crashed_run_are_removed() {
    let run = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    // What a killed test run leaves: a namespace with a process in it, a port, the bridge.
    run(&["netns", "add", "otfwt-crashed"]);
    run(&["link", "add", "br-otfwt", "type", "bridge"]);
    run(&[
        "link",
        "add",
        "otfwt-crashed",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        "otfwt-crashed",
    ]);
    let mut orphan = Command::new("ip")
        .args(["netns", "exec", "otfwt-crashed", "sleep", "60"])
        .spawn()
        .unwrap();

    let removed = Lab::cleanup_stale(PREFIX).unwrap();
    assert_eq!(
        removed,
        ["link br-otfwt", "link otfwt-crashed", "netns otfwt-crashed"],
        "in this order: links first, then namespaces"
    );
    assert!(
        orphan.wait().unwrap().code().is_none(),
        "orphan was not killed"
    );
    assert_eq!(leftovers(), Vec::<String>::new());

    // A new lab removes such leftovers by itself.
    run(&["netns", "add", "otfwt-crashed"]);
    let lab = common::lab(&two_hosts());
    assert!(!leftovers().contains(&"netns otfwt-crashed".to_string()));
    lab.close().unwrap();
}

#[test]
fn a_crashed_runs_bridge_of_another_name_is_removed() {
    let bridge = "brx-otfwt";
    let lab = Lab::with_options(
        LabOptions::new(PREFIX)
            .bridge(bridge)
            .peer_binary(env!("CARGO_BIN_EXE_otfw-peer")),
        &two_hosts(),
    )
    .unwrap();
    let alias = std::fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias")).unwrap();
    assert_eq!(alias.trim_end(), "otfw-lab:otfwt");
    lab.close().unwrap();

    // What a killed run with that bridge name leaves.
    let run = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    run(&["link", "add", bridge, "type", "bridge"]);
    run(&["link", "set", bridge, "alias", "otfw-lab:otfwt"]);
    // A bridge of another prefix's lab is not this prefix's leftover.
    run(&["link", "add", "brx-otfwu", "type", "bridge"]);
    run(&["link", "set", "brx-otfwu", "alias", "otfw-lab:otfwu"]);

    let removed = Lab::cleanup_stale(PREFIX);
    let other_survived = std::path::Path::new("/sys/class/net/brx-otfwu").exists();
    run(&["link", "del", "brx-otfwu"]);
    assert_eq!(removed.unwrap(), [format!("link {bridge}")]);
    assert!(other_survived, "another prefix's bridge was removed");
}

#[test]
fn cleanup_refuses_while_a_lab_runs() {
    let lab = common::lab(&two_hosts());
    let error = Lab::cleanup_stale(PREFIX).unwrap_err();
    assert!(error.to_string().contains("in use"), "{error:#}");
    assert_eq!(
        lab.tcp_connect("a", v4(&lab, "b", 1), TIMEOUT).unwrap(),
        TcpOutcome::Refused
    );
}
