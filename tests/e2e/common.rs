//! Shared setup for the end-to-end tests.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use otfw_tests::{target_binary, HostSpec, Lab, LabOptions, LabProcess};

/// How long `otfw run` may take to load, verify and attach.
pub const START: Duration = Duration::from_secs(30);

/// The prefix of every lab these tests build: namespaces and ports `otfwt-*`, bridge
/// `br-otfwt`.
pub const PREFIX: &str = "otfwt";

/// Two hosts on one IPv4 and one IPv6 subnet (documentation ranges: they exist only inside
/// the lab's namespaces).
pub fn two_hosts() -> Vec<HostSpec> {
    vec![
        HostSpec::new("a", "198.51.100.1/24")
            .ipv6("2001:db8:100::1/64")
            .mac("02:00:00:00:00:0a"),
        HostSpec::new("b", "198.51.100.2/24").ipv6("2001:db8:100::2/64"),
    ]
}

/// `a` in the left half of one /24, `b` in the right half: two zones split by address, no
/// routes needed.
pub fn left_right_hosts() -> Vec<HostSpec> {
    vec![
        HostSpec::new("a", "198.51.100.1/24"),
        HostSpec::new("b", "198.51.100.129/24"),
    ]
}

/// A lab of `hosts` whose traffic helpers use this build's `otfw-peer`. Fails the test with
/// the reason (not root, no bpffs, ...) when the lab cannot be built.
pub fn lab(hosts: &[HostSpec]) -> Lab {
    let options = LabOptions::new(PREFIX).peer_binary(env!("CARGO_BIN_EXE_otfw-peer"));
    Lab::with_options(options, hosts).unwrap_or_else(|error| panic!("lab: {error:#}"))
}

pub fn v4(lab: &Lab, host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(lab.host(host).ipv4_addr()), port)
}

pub fn v6(lab: &Lab, host: &str, port: u16) -> SocketAddr {
    let addr = lab
        .host(host)
        .ipv6_addr()
        .expect("host has an IPv6 address");
    SocketAddr::new(IpAddr::V6(addr), port)
}

/// Namespaces and root links that carry the test prefix.
pub fn leftovers() -> Vec<String> {
    Lab::leftovers(PREFIX).expect("listing the lab's namespaces and links")
}

/// Datagrams a UDP echo server (`Lab::udp_echo_server`) received, counted from its output once
/// it is stopped: what arrived, whatever the sender saw.
pub fn datagrams_received(server: LabProcess) -> usize {
    server
        .stop()
        .stdout
        .lines()
        .filter(|l| l.starts_with("received "))
        .count()
}

/// A policy file in the temp directory, removed when dropped.
pub struct PolicyFile(pub PathBuf);

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running `otfw run` on the lab's ports, with its policy file.
pub struct Firewall {
    pub process: LabProcess,
    pub policy: PolicyFile,
}

impl Firewall {
    pub fn start(lab: &Lab, policy_text: &str) -> Firewall {
        Self::start_with(lab, policy_text, &[])
    }

    /// Starts `otfw run` with `args`. Unless they name an `--instance` (whose pins the test
    /// then manages), it runs with `--no-pin`: enforcement ends with the process, as the tests
    /// that stop it expect.
    pub fn start_with(lab: &Lab, policy_text: &str, args: &[&str]) -> Firewall {
        let policy = PolicyFile(
            std::env::temp_dir().join(format!("otfwt-policy-{}.yaml", std::process::id())),
        );
        std::fs::write(&policy.0, policy_text).expect("write policy");
        Self::start_file(lab, policy, args)
    }

    /// As `start_with`, for a policy file the test wrote where it wants it.
    pub fn start_file(lab: &Lab, policy: PolicyFile, args: &[&str]) -> Firewall {
        let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
        let mut command = Command::new(otfw);
        command
            .arg("run")
            .arg("--policy")
            .arg(&policy.0)
            .arg("--watch-interval")
            .arg("0.2")
            .args(args);
        if !args.contains(&"--instance") {
            command.arg("--no-pin");
        }
        for port in lab.ports() {
            command.arg("--iface").arg(port);
        }
        let mut process = lab.spawn_command(command).expect("spawn otfw run");
        process
            .wait_for_line(|l| l.contains(r#""event":"ready""#), START)
            .unwrap_or_else(|e| panic!("otfw run did not get ready: {e:#}"));
        Firewall { process, policy }
    }

    /// Replaces the policy file and waits for the controller's verdict on it.
    pub fn rewrite(&mut self, policy_text: &str) -> String {
        std::fs::write(&self.policy.0, policy_text).expect("rewrite policy");
        self.process
            .wait_for_line(
                |l| {
                    l.contains(r#""event":"policy_loaded""#)
                        || l.contains(r#""event":"policy_rejected""#)
                },
                START,
            )
            .unwrap_or_else(|e| panic!("no reload: {e:#}"))
    }

    /// Waits for the next `event` line and parses it.
    pub fn event(&mut self, event: &str, within: Duration) -> serde_json::Value {
        let marker = format!(r#""event":"{event}""#);
        let line = self
            .process
            .wait_for_line(|l| l.contains(&marker), within)
            .unwrap_or_else(|e| panic!("no {event} event: {e:#}"));
        serde_json::from_str(&line).unwrap()
    }
}

/// Two zones that split one /24 for hosts at .10 (`office`) and .200 (`plant`): `office` may
/// reach the plant on TCP `port`, nothing else crosses.
pub fn office_plant_policy(port: u16) -> String {
    format!(
        "version: 1
gateway: {{ interfaces: [otfwt-a, otfwt-b] }}
defaults: {{ action: deny, intra_zone: allow, unzoned: deny, non_ip: [arp] }}
zones:
  office: {{ networks: [198.51.100.0/25] }}
  plant: {{ networks: [198.51.100.128/25] }}
conduits:
  - name: office-to-plant
    from: office
    to: plant
    allow: [{{ tcp: {{ ports: [{port}] }} }}]
"
    )
}

/// An enterprise client, an engineering workstation and the PLC, in three zones that split
/// the lab's one subnet (no routing involved).
pub fn plant_hosts() -> Vec<HostSpec> {
    vec![
        HostSpec::new("client", "198.51.100.10/24"),
        HostSpec::new("eng", "198.51.100.70/24"),
        HostSpec::new("plc", "198.51.100.130/24"),
    ]
}

/// For [`plant_hosts`]: a conduit from the client to the PLC (`client_rule` is its `protocol`
/// rule, e.g. `modbus` or `enip`, `on_deny` its refusal) and an engineering conduit with
/// `engineering_rule`.
pub fn plant_policy(
    protocol: &str,
    on_deny: &str,
    client_rule: &str,
    engineering_rule: &str,
) -> String {
    format!(
        r#"version: 1
gateway:
  interfaces: [otfwt-client, otfwt-eng, otfwt-plc]
defaults:
  action: deny
  intra_zone: allow
  unzoned: deny
  non_ip: [arp]
zones:
  enterprise:
    networks: [198.51.100.0/26]
    security_level: 1
    hosts: {{ client: 198.51.100.10 }}
  engineering:
    networks: [198.51.100.64/26]
    security_level: 2
  cell:
    networks: [198.51.100.128/26]
    security_level: 3
    hosts: {{ plc: 198.51.100.130 }}
conduits:
  - name: client-reads
    from: enterprise/client
    to: cell/plc
    on_deny: {on_deny}
    allow:
      - {protocol}: {client_rule}
  - name: engineering
    from: engineering
    to: cell
    allow:
      - {protocol}: {engineering_rule}
"#
    )
}

/// SIGUSR1 to `otfw run`, then the `stats` event it answers with.
pub fn stats(otfw: &mut LabProcess) -> serde_json::Value {
    let pid = libc::pid_t::try_from(otfw.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let line = otfw
        .wait_for_line(|l| l.contains(r#""event":"stats""#), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no stats event: {e:#}"));
    serde_json::from_str(&line).unwrap()
}

/// Removes the inventory `otfw run --instance INSTANCE` keeps of the live datapath
/// (`/var/lib/otfw/INSTANCE.inventory.json`), which outlives the instance by design.
pub fn remove_inventory(instance: &str) {
    let _ = std::fs::remove_file(
        std::path::Path::new("/var/lib/otfw").join(format!("{instance}.inventory.json")),
    );
}

/// Kills `process` (a controller) with SIGKILL and waits for it to die.
pub fn sigkill(process: LabProcess) {
    let pid = libc::pid_t::try_from(process.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    process
        .wait(Duration::from_secs(5))
        .expect("otfw run did not die on SIGKILL");
}

/// The id of the XDP program attached to each of the lab's ports, if any (`ip -d link`).
pub fn xdp_programs(lab: &Lab) -> Vec<Option<u32>> {
    lab.ports()
        .iter()
        .map(|port| {
            let out = Command::new("ip")
                .args(["-d", "link", "show", "dev", port])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let (_, after) = text.split_once("prog/xdp id ")?;
            after.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Whether an XDP program is attached to each of the lab's ports.
pub fn xdp_on_ports(lab: &Lab) -> Vec<bool> {
    xdp_programs(lab).iter().map(Option::is_some).collect()
}

/// Runs the `otfw` binary with `args` to completion.
pub fn otfw(args: &[&str]) -> Output {
    let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
    Command::new(otfw).args(args).output().expect("run otfw")
}

/// `otfw`, its command, status and output printed for the test log.
pub fn otfw_logged(args: &[&str]) -> Output {
    let out = otfw(args);
    eprintln!(
        "otfw {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An HMI polling a PLC over one pymodbus connection: `polls` reads of two holding
/// registers, one every `interval` seconds, each result printed as it comes (the client opens
/// a new connection only after a failure, which shows as a result other than ok).
pub struct ModbusPolling {
    process: LabProcess,
    first: String,
}

impl ModbusPolling {
    /// Starts polling from `host` and waits for the first read, which must succeed.
    pub fn start(lab: &Lab, host: &str, plc: SocketAddr, polls: usize, interval: &str) -> Self {
        let python = otfw_tests::venv_python().unwrap_or_else(|e| panic!("{e:#}"));
        let client = otfw_tests::repo_root()
            .join("tests")
            .join("peers")
            .join("modbus_client.py");
        let mut args = vec![
            python.display().to_string(),
            client.display().to_string(),
            "--host".into(),
            plc.ip().to_string(),
            "--port".into(),
            plc.port().to_string(),
            "--timeout".into(),
            "2".into(),
            "--interval".into(),
            interval.into(),
        ];
        let read = otfw_tests::ModbusOp::Read(otfw_tests::Table::HoldingRegisters, 0, 2);
        args.extend((0..polls).map(|_| read.arg()));
        let mut process = lab.spawn(host, &args).unwrap();
        let first = process
            .wait_for_line(|l| l.contains(r#""result""#), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("the first read of the polling: {e:#}"));
        assert!(first.contains(r#""result": "ok""#), "{first}");
        ModbusPolling { process, first }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Waits for every read to be done; the results, in order.
    pub fn finish(self, timeout: Duration) -> Vec<serde_json::Value> {
        let out = self.process.wait(timeout).unwrap();
        Self::results(&self.first, &out.stdout, false)
    }

    /// Ends the polling now; the results of the reads done so far.
    pub fn stop(self) -> Vec<serde_json::Value> {
        let out = self.process.stop();
        Self::results(&self.first, &out.stdout, true)
    }

    /// Result lines as JSON. A stopped client may have been ended in the middle of its last
    /// line, which alone may then be incomplete.
    fn results(first: &str, rest: &str, stopped: bool) -> Vec<serde_json::Value> {
        let lines: Vec<&str> = std::iter::once(first)
            .chain(rest.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        let last = lines.len().saturating_sub(1);
        lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match serde_json::from_str(l) {
                Ok(v) => Some(v),
                Err(_) if stopped && i == last => None,
                Err(e) => panic!("{l}: {e}"),
            })
            .collect()
    }
}

/// The reads of a polling: sent, ok, and those that failed.
pub fn poll_tally(results: &[serde_json::Value]) -> (usize, usize, Vec<&serde_json::Value>) {
    let failed: Vec<&serde_json::Value> = results.iter().filter(|r| r["result"] != "ok").collect();
    (results.len(), results.len() - failed.len(), failed)
}

/// `modbus_client.py` from `host` against `plc` with raw operation arguments (e.g.
/// `read_device_identification:0:3`, which `ModbusOp` does not model): its result lines, which
/// must number one per operation.
pub fn modbus_client_results(
    lab: &Lab,
    host: &str,
    plc: IpAddr,
    ops: &[&str],
) -> Vec<serde_json::Value> {
    let client = otfw_tests::repo_root()
        .join("tests")
        .join("peers")
        .join("modbus_client.py");
    let mut args = vec![
        otfw_tests::venv_python()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .display()
            .to_string(),
        client.display().to_string(),
        "--host".into(),
        plc.to_string(),
    ];
    args.extend(ops.iter().map(|op| op.to_string()));
    let out = lab.exec(host, &args).unwrap_or_else(|e| panic!("{e:#}"));
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ops.len(), "{}", out.stdout);
    lines
}
