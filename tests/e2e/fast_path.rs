//! The fast path on the lab's bridge: allowed traffic between two ports is forwarded by
//! `XDP_REDIRECT` (counted in the `stats` event's `paths`), and only while the bridge would
//! forward it itself: a port spanning tree keeps from forwarding (listening, learning)
//! receives nothing, redirected or not, and traffic resumes when it forwards again.

use std::{net::SocketAddr, process::Command, time::Duration};

use otfw_tests::{HostSpec, Lab, LabProcess};
use serde_json::Value;

use crate::common::{self, v4, Firewall, START};

/// Longer than a synchronisation of the mirror (250 ms), with margin.
const SETTLE: Duration = Duration::from_millis(800);
const REPLY: Duration = Duration::from_millis(300);

fn hosts() -> Vec<HostSpec> {
    vec![
        HostSpec::new("a", "198.51.100.10/24"),
        HostSpec::new("b", "198.51.100.200/24"),
    ]
}

const POLICY: &str = r#"version: 1
gateway:
  interfaces: [otfwt-a, otfwt-b]
defaults:
  action: deny
  intra_zone: allow
  unzoned: deny
  non_ip: [arp]
zones:
  office:
    networks: [198.51.100.0/25]
  plant:
    networks: [198.51.100.128/25]
conduits:
  - name: office-to-plant
    from: office
    to: plant
    allow:
      - udp: { ports: [5353] }
"#;

fn event(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

/// SIGUSR1, then the `paths` of the `stats` event it answers with.
fn paths(otfw: &mut LabProcess) -> Value {
    let pid = libc::pid_t::try_from(otfw.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let line = otfw
        .wait_for_line(|l| event(l)["event"] == "stats", Duration::from_secs(5))
        .unwrap();
    event(&line)["paths"].clone()
}

fn redirected(otfw: &mut LabProcess) -> u64 {
    paths(otfw)["redirected"].as_u64().unwrap_or(0)
}

/// The next `fast_path` event.
fn fast_path_event(otfw: &mut LabProcess) -> Value {
    let line = otfw
        .wait_for_line(|l| event(l)["event"] == "fast_path", START)
        .unwrap_or_else(|e| panic!("no fast_path event: {e:#}"));
    event(&line)
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("running ip");
    assert!(status.success(), "ip {}", args.join(" "));
}

fn exchange(lab: &Lab, to: SocketAddr, count: u32) -> u32 {
    lab.udp_exchange("a", to, count, REPLY)
        .expect("udp-send")
        .received
}

#[test]
fn fast_path_forwards_allowed_traffic_only_where_the_bridge_would() {
    let lab = common::lab(&hosts());
    let mut fw = Firewall::start(&lab, POLICY);
    let on = fast_path_event(&mut fw.process);
    assert_eq!(on["enabled"], true, "{on}");
    assert_eq!(on["ports"], serde_json::json!(["otfwt-a", "otfwt-b"]));
    let _echo = lab.udp_echo_server("b", 5353).unwrap();
    let _other = lab.udp_echo_server("b", 5354).unwrap();
    let b = v4(&lab, "b", 5353);

    // The first datagrams (and ARP) teach the bridge both addresses; the mirror follows.
    assert_eq!(exchange(&lab, b, 5), 5);
    std::thread::sleep(SETTLE);
    let before = redirected(&mut fw.process);
    assert_eq!(
        exchange(&lab, b, 20),
        20,
        "allowed traffic through the fast path"
    );
    let after = redirected(&mut fw.process);
    // Both directions of each exchange: the request a -> b and the echo b -> a.
    assert!(
        after >= before + 40,
        "redirected {before} -> {after} for 20 exchanges"
    );
    println!(
        "fast path: {} frames redirected for 20 exchanges",
        after - before
    );
    // The policy still decides: a port no conduit allows gets nothing.
    assert_eq!(exchange(&lab, v4(&lab, "b", 5354), 5), 0);

    // Spanning tree on, then b's port goes down and up: STP takes it through listening and
    // learning (2 s each) before it forwards. Meanwhile nothing reaches b, redirected or not,
    // and the fast path leaves the port out; then traffic resumes on the fast path.
    ip(&[
        "link",
        "set",
        "dev",
        lab.bridge(),
        "type",
        "bridge",
        "forward_delay",
        "200",
        "stp_state",
        "1",
    ]);
    ip(&["link", "set", "dev", "otfwt-b", "down"]);
    ip(&["link", "set", "dev", "otfwt-b", "up"]);
    let blocked = fast_path_event(&mut fw.process);
    assert_eq!(
        blocked["ports"],
        serde_json::json!(["otfwt-a"]),
        "{blocked}"
    );
    let before = redirected(&mut fw.process);
    assert_eq!(
        exchange(&lab, b, 3),
        0,
        "a port not yet forwarding received traffic"
    );
    assert_eq!(redirected(&mut fw.process), before);
    let back = fast_path_event(&mut fw.process);
    assert_eq!(
        back["ports"],
        serde_json::json!(["otfwt-a", "otfwt-b"]),
        "{back}"
    );
    // The port's addresses were flushed when it went down: the bridge learns b again from its
    // first answers, and the mirror follows.
    assert_eq!(
        exchange(&lab, b, 3),
        3,
        "traffic after the port forwards again"
    );
    std::thread::sleep(SETTLE);
    assert_eq!(exchange(&lab, b, 10), 10);
    assert!(redirected(&mut fw.process) >= before + 20);
}

#[test]
fn fast_path_off_leaves_every_frame_to_the_bridge() {
    let lab = common::lab(&hosts());
    let mut fw = Firewall::start_with(&lab, POLICY, &["--fast-path", "off"]);
    let off = fast_path_event(&mut fw.process);
    assert_eq!(off["enabled"], false, "{off}");
    assert!(
        off["reason"].as_str().unwrap().contains("switched off"),
        "{off}"
    );
    let _echo = lab.udp_echo_server("b", 5353).unwrap();
    assert_eq!(exchange(&lab, v4(&lab, "b", 5353), 10), 10);
    assert_eq!(redirected(&mut fw.process), 0);
}

/// Runs `args` in `host`'s namespace and fails the test if it fails.
fn in_host(lab: &Lab, host: &str, args: &[&str]) {
    let out = lab
        .exec(host, args)
        .expect("running a command in a lab host");
    assert!(
        out.success(),
        "{host}: {} failed: {}",
        args.join(" "),
        out.stderr
    );
}

#[test]
fn a_moved_address_is_followed_at_once() {
    // b (plant) answers first; then its address and MAC move to c, behind another port.
    let lab = common::lab(&[
        HostSpec::new("a", "198.51.100.10/24"),
        HostSpec::new("b", "198.51.100.200/24").mac("02:00:00:00:00:b0"),
        HostSpec::new("c", "198.51.100.201/24"),
    ]);
    let policy = POLICY.replace("[otfwt-a, otfwt-b]", "[otfwt-a, otfwt-b, otfwt-c]");
    let mut fw = Firewall::start(&lab, &policy);
    assert_eq!(fast_path_event(&mut fw.process)["enabled"], true);
    let _on_b = lab.udp_echo_server("b", 5353).unwrap();
    let _on_c = lab.udp_echo_server("c", 5353).unwrap();
    let b = v4(&lab, "b", 5353);
    assert_eq!(exchange(&lab, b, 3), 3);
    std::thread::sleep(SETTLE);
    assert_eq!(exchange(&lab, b, 10), 10);

    // The move: b goes away, c takes its MAC and address, a asks again who has it (as after
    // a cable is moved; c's answer is the first frame of the MAC on its new port).
    in_host(&lab, "b", &["ip", "link", "set", "dev", "eth0", "down"]);
    in_host(
        &lab,
        "c",
        &[
            "ip",
            "link",
            "set",
            "dev",
            "eth0",
            "address",
            "02:00:00:00:00:b0",
        ],
    );
    // c's own address goes: answers must come from the moved one.
    in_host(&lab, "c", &["ip", "addr", "flush", "dev", "eth0"]);
    in_host(
        &lab,
        "c",
        &["ip", "addr", "add", "198.51.100.200/24", "dev", "eth0"],
    );
    in_host(&lab, "a", &["ip", "neigh", "flush", "all"]);
    assert_eq!(exchange(&lab, b, 3), 3, "traffic to the moved address");
    let moved = paths(&mut fw.process);
    assert!(
        moved["fdb_moved"].as_u64().unwrap_or(0) >= 1,
        "the datapath did not see the move: {moved}"
    );
    std::thread::sleep(SETTLE);
    let before = redirected(&mut fw.process);
    assert_eq!(
        exchange(&lab, b, 10),
        10,
        "traffic to the address on its new port"
    );
    let after = redirected(&mut fw.process);
    assert!(after >= before + 20, "redirected {before} -> {after}");
    println!(
        "moved address: {} frames redirected for 10 exchanges",
        after - before
    );
}

/// The lab's peer for frames the lab's kernel cannot make itself (802.1Q tags).
fn vlan_peer() -> [String; 2] {
    [
        otfw_tests::venv_python()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .display()
            .to_string(),
        otfw_tests::repo_root()
            .join("tests/peers/vlan_frames.py")
            .display()
            .to_string(),
    ]
}

#[test]
fn vlan_tagged_traffic_arrives_intact_through_the_bridge() {
    let lab = common::lab(&[
        HostSpec::new("a", "198.51.100.10/24"),
        HostSpec::new("b", "198.51.100.200/24").mac("02:00:00:00:00:b0"),
    ]);
    let mut fw = Firewall::start(&lab, POLICY);
    assert_eq!(fast_path_event(&mut fw.process)["enabled"], true);
    // Both addresses learnt by the bridge (and the mirror), as for untagged traffic.
    let _echo = lab.udp_echo_server("b", 5353).unwrap();
    assert_eq!(exchange(&lab, v4(&lab, "b", 5353), 3), 3);
    std::thread::sleep(SETTLE);
    let [python, script] = vlan_peer();
    let mut capture = lab
        .spawn(
            "b",
            &[python.as_str(), &script, "capture", "eth0", "5353", "3"],
        )
        .expect("starting the capture in b");
    capture
        .wait_for_line(|l| l == "ready", START)
        .expect("capture ready");
    let before = redirected(&mut fw.process);
    let sent = lab
        .exec(
            "a",
            &[
                python.as_str(),
                &script,
                "send",
                "eth0",
                "02:00:00:00:00:b0",
                "198.51.100.10",
                "198.51.100.200",
                "5353",
                "10",
                "20",
            ],
        )
        .expect("sending tagged frames");
    assert!(sent.success(), "{}", sent.stderr);
    let line = capture
        .wait_for_line(|l| l.starts_with('{'), START)
        .expect("capture result");
    let seen = event(&line);
    println!("vlan: {seen}");
    assert_eq!(seen["received"], 20, "{seen}");
    assert_eq!(seen["vlans"], serde_json::json!([10]), "{seen}");
    assert_eq!(seen["intact"], true, "{seen}");
    // Tagged frames are the bridge's: none was redirected.
    assert_eq!(redirected(&mut fw.process), before);
}
