//! `cargo xtask demo`: the example policy enforced on a lab, with real traffic.
//!
//! Builds the three hosts of `policies/example.yaml` in network namespaces on the bridge
//! `br-otfw`, starts `otfw run --policy policies/example.yaml`, sends allowed and denied
//! traffic between the hosts, and explains every outcome with the controller's counters (a
//! `stats` event before and after each step, asked for with SIGUSR1). Exits 0 only if every
//! step behaved as the policy says. The lab and the controller are removed at the end, also
//! on an error, a panic or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use otfw_tests::{
    HostSpec, Lab, LabOptions, LabProcess, ModbusClient, ModbusOp, ModbusResult, ModbusServer,
    Table, TcpOutcome,
};

use crate::{cmd, setup};

mod controller;
mod interrupt;

use controller::{events, Controller, Stats};

#[derive(Args)]
pub struct DemoArgs {
    /// Skip `cargo xtask setup` (when the prerequisites are known to be there).
    #[arg(long)]
    no_setup: bool,
}

/// The policy the demo enforces, relative to the repository root.
const POLICY: &str = "policies/example.yaml";
/// The lab's prefix: namespaces and bridge ports are `demo-<host>`.
const PREFIX: &str = "demo";
/// The example policy's `gateway.bridge`.
const BRIDGE: &str = "br-otfw";
/// Every zone of the example is a /24 of this network; each host reaches the others through
/// its own eth0 (no router: the hosts ARP for each other across the bridge).
const LAB_NETWORK: &str = "10.10.0.0/16";

/// Connect and reply timeout of every TCP and UDP attempt: long enough for a TCP SYN
/// retransmission, so a denied connection shows more than one dropped packet.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2_000);
const PINGS: u32 = 3;
const DATAGRAMS: u32 = 2;

/// A host of the example policy and its lab namespace.
struct DemoHost {
    /// The lab's name (short: the bridge port `demo-<lab>` must fit 15 bytes).
    lab: &'static str,
    /// The policy's name.
    policy: &'static str,
    zone: &'static str,
    address: &'static str,
    prefix_len: u8,
}

const HOSTS: [DemoHost; 3] = [
    DemoHost {
        lab: "hist",
        policy: "historian",
        zone: "enterprise",
        address: "10.10.1.10",
        prefix_len: 24,
    },
    DemoHost {
        lab: "ews",
        policy: "ews",
        zone: "engineering",
        address: "10.10.2.10",
        prefix_len: 24,
    },
    DemoHost {
        lab: "plc",
        policy: "plc-1",
        zone: "cell-1",
        address: "10.10.3.10",
        prefix_len: 24,
    },
];

fn host(lab_name: &str) -> &'static DemoHost {
    HOSTS
        .iter()
        .find(|host| host.lab == lab_name)
        .expect("steps name lab hosts of HOSTS")
}

#[derive(Clone, Copy)]
enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
    /// Modbus/TCP to the PLC's pymodbus server, with the venv's pymodbus client.
    Modbus(ModbusProbe),
}

#[derive(Clone, Copy)]
enum ModbusProbe {
    /// read_holding_registers (function 3): address, count.
    Read(u16, u16),
    /// write_single_register (function 6): address, value; then the register is read back
    /// on a new connection.
    Write(u16, u16),
}

impl Probe {
    fn label(self) -> String {
        match self {
            Probe::Tcp(port) => format!("tcp/{port}"),
            Probe::Udp(port) => format!("udp/{port}"),
            Probe::Ping => "ping".to_string(),
            Probe::Modbus(ModbusProbe::Read(..)) => "modbus read".to_string(),
            Probe::Modbus(ModbusProbe::Write(..)) => "modbus write".to_string(),
        }
    }
}

/// The Modbus/TCP port of plc-1's server.
const MODBUS_PORT: u16 = 502;
/// The unit id of every request (historian-reads allows units 1 and 255).
const MODBUS_UNIT: u8 = 1;
/// The register the steps write, and what they write.
const SETPOINT: u16 = 0;
const SETPOINT_VALUE: u16 = 4242;

#[derive(Clone, Copy)]
enum Expect {
    /// Passed, counted on this conduit.
    Allow(&'static str),
    /// Dropped for this reason.
    Deny(&'static str),
    /// Refused in-band for this reason: the client gets the protocol's own error and the
    /// connection lives on (`on_deny: refuse`).
    Refuse(&'static str),
}

struct Step {
    from: &'static str,
    to: &'static str,
    probe: Probe,
    expect: Expect,
    /// Why the policy says so.
    because: &'static str,
}

const STEPS: [Step; 11] = [
    Step {
        from: "hist",
        to: "plc",
        probe: Probe::Modbus(ModbusProbe::Read(0, 4)),
        expect: Expect::Allow("historian-reads"),
        because: "historian-reads allows the Modbus read functions from historian to plc-1; \
                  otfw inspects every request (here read_holding_registers, function 3)",
    },
    Step {
        from: "hist",
        to: "plc",
        probe: Probe::Modbus(ModbusProbe::Write(SETPOINT, SETPOINT_VALUE)),
        expect: Expect::Refuse("modbus_function_denied"),
        because: "historian-reads allows reads only: write_single_register (function 6) is \
                  refused; on_deny: refuse sends the PLC a neutralised request (function 60, \
                  which it does not execute) and gives the historian the PLC's exception for \
                  its own function: 0x86, illegal function, so its next read on the same \
                  connection is served",
    },
    Step {
        from: "ews",
        to: "plc",
        probe: Probe::Modbus(ModbusProbe::Write(SETPOINT, SETPOINT_VALUE)),
        expect: Expect::Allow("engineering-to-cell"),
        because: "engineering-to-cell allows Modbus reads, writes and diagnostics from the \
                  engineering zone",
    },
    Step {
        from: "ews",
        to: "plc",
        probe: Probe::Tcp(22),
        expect: Expect::Allow("engineering-to-cell"),
        because: "engineering-to-cell allows SSH from the engineering zone into cell-1",
    },
    Step {
        from: "ews",
        to: "plc",
        probe: Probe::Ping,
        expect: Expect::Allow("engineering-to-cell"),
        because: "engineering-to-cell allows echo_request; the replies belong to the flow",
    },
    Step {
        from: "hist",
        to: "ews",
        probe: Probe::Tcp(3389),
        expect: Expect::Allow("remote-desktop"),
        because: "remote-desktop lets the enterprise zone reach ews by RDP",
    },
    Step {
        from: "hist",
        to: "plc",
        probe: Probe::Tcp(22),
        expect: Expect::Deny("no_conduit"),
        because: "historian-reads allows Modbus (tcp/502) only",
    },
    Step {
        from: "hist",
        to: "plc",
        probe: Probe::Ping,
        expect: Expect::Deny("no_conduit"),
        because: "no conduit allows ICMP from enterprise into cell-1",
    },
    Step {
        from: "plc",
        to: "ews",
        probe: Probe::Tcp(22),
        expect: Expect::Deny("no_conduit"),
        because: "engineering-to-cell opens flows from engineering to cell-1, never the \
                  other way",
    },
    Step {
        from: "hist",
        to: "ews",
        probe: Probe::Tcp(22),
        expect: Expect::Deny("no_conduit"),
        because: "remote-desktop allows tcp/3389 only",
    },
    Step {
        from: "ews",
        to: "plc",
        probe: Probe::Udp(161),
        expect: Expect::Deny("no_conduit"),
        because: "engineering-to-cell allows no udp/161 (SNMP)",
    },
];

/// Echo servers the steps talk to: (lab host, probe). plc-1 also runs a Modbus/TCP server.
const SERVERS: [(&str, Probe); 4] = [
    ("plc", Probe::Tcp(22)),
    ("plc", Probe::Udp(161)),
    ("ews", Probe::Tcp(22)),
    ("ews", Probe::Tcp(3389)),
];

pub fn run(repo: &Path, args: &DemoArgs) -> Result<()> {
    interrupt::install()?;
    if !args.no_setup {
        interrupt::after(setup::run(repo))?;
    }
    let mut build = cmd::cargo(repo, &["build", "--bins"], &[])?;
    println!("demo: building otfw and otfw-peer (cargo build --bins)");
    interrupt::after(cmd::run(&mut build))?;
    otfw_tests::require_root_and_kernel()?;
    let policy_text = std::fs::read_to_string(repo.join(POLICY))
        .with_context(|| format!("could not read {POLICY}"))?;
    check_policy_matches_lab(&policy_text)?;
    let otfw = otfw_tests::target_binary("otfw")?;
    interrupt::check()?;

    // Declared before the controller: dropped (removed) after it, also when unwinding.
    let lab = build_lab()?;
    interrupt::check()?;
    let mut controller = Controller::start(&lab, repo, &otfw)?;
    let (servers, mut modbus) = start_servers(&lab)?;

    // Whatever the steps come to (an error, Ctrl-C), the controller and the lab are removed
    // here; a panic removes them when they are dropped.
    let steps = run_steps(&lab, &mut controller).and_then(|results| {
        print_setpoint(&mut modbus)?;
        Ok(results)
    });
    drop(servers);
    drop(modbus);
    let output = controller.stop();
    let detached: Vec<String> = events(&output.stdout, "detached")
        .filter_map(|event| event["port"].as_str().map(str::to_string))
        .collect();
    println!(
        "\ndemo: stopped otfw run (detached from {})",
        detached.join(", ")
    );
    lab.close()?;
    let left = Lab::leftovers(PREFIX)?;
    if !left.is_empty() {
        bail!("the lab left things behind: {}", left.join(", "));
    }
    println!("demo: removed the lab (namespaces demo-*, their veths, bridge {BRIDGE})");
    let results = steps?;
    interrupt::check()?;

    let mismatches: Vec<String> = STEPS
        .iter()
        .zip(&results)
        .enumerate()
        .filter(|(_, (_, result))| !result.ok)
        .map(|(index, (step, result))| {
            format!(
                "step {} ({}): {}",
                index + 1,
                step_label(step),
                result.verdict
            )
        })
        .collect();
    if !mismatches.is_empty() {
        bail!(
            "{} of {} steps did not behave as the policy says:\n  {}",
            mismatches.len(),
            STEPS.len(),
            mismatches.join("\n  ")
        );
    }
    println!("demo: all {} steps behaved as {POLICY} says", STEPS.len());
    Ok(())
}

/// Runs every step, prints each and then the summary. Stops early on Ctrl-C.
fn run_steps(lab: &Lab, controller: &mut Controller) -> Result<Vec<StepResult>> {
    println!(
        "\ndemo: {} steps; after each, what otfw run counted for it (SIGUSR1 -> stats event)\n",
        STEPS.len()
    );
    let mut results = Vec::new();
    let mut counters = controller.settled_stats()?;
    for (index, step) in STEPS.iter().enumerate() {
        interrupt::check()?;
        let (result, after) = run_step(lab, controller, step, &counters)?;
        print_step(index + 1, step, &result);
        results.push(result);
        counters = after;
    }
    println!();
    print_summary(&results);
    println!(
        "\ndemo: the counters in otfw run's last stats event (`kill -USR1 PID` prints one):\n{}",
        controller.last_stats
    );
    let body = otfw_tests::scrape(controller.metrics)?;
    println!(
        "\ndemo: live counters from http://{}/metrics (Prometheus; dashboards/ has a Grafana \
         dashboard and alerts):",
        controller.metrics
    );
    for line in controller::live_counters(&body) {
        println!("  {line}");
    }
    Ok(results)
}

/// Fails if the example policy no longer has the bridge, zones and hosts this lab builds.
fn check_policy_matches_lab(policy: &str) -> Result<()> {
    let lines: Vec<&str> = policy.lines().map(str::trim).collect();
    let mut wanted = vec![format!("bridge: {BRIDGE}")];
    for host in &HOSTS {
        let network = network_of(host.address, host.prefix_len);
        wanted.push(format!("{}:", host.zone));
        wanted.push(format!("networks: [{network}/{}]", host.prefix_len));
        wanted.push(format!("{}: {}", host.policy, host.address));
    }
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|line| !lines.contains(&line.as_str()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{POLICY} no longer matches the demo lab (xtask/src/demo.rs): it has no line {}",
            missing
                .iter()
                .map(|line| format!("`{line}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// `10.10.1.10`, 24 -> `10.10.1.0`.
fn network_of(address: &str, prefix_len: u8) -> String {
    let address: std::net::Ipv4Addr = address.parse().expect("HOSTS holds IPv4 addresses");
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    std::net::Ipv4Addr::from(u32::from(address) & mask).to_string()
}

fn build_lab() -> Result<Lab> {
    let specs: Vec<HostSpec> = HOSTS
        .iter()
        .map(|host| HostSpec::new(host.lab, &format!("{}/{}", host.address, host.prefix_len)))
        .collect();
    let lab = Lab::with_options(LabOptions::new(PREFIX).bridge(BRIDGE), &specs)
        .context("building the demo lab")?;
    for host in &HOSTS {
        // The example policy is IPv4 only: without IPv6 no router solicitations or MLD
        // reports show up in the counters.
        exec_ok(
            &lab,
            host.lab,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        // The other zones' subnets are on the same wire. No default route: nothing leaves
        // the lab.
        exec_ok(
            &lab,
            host.lab,
            &["ip", "route", "add", LAB_NETWORK, "dev", "eth0"],
        )?;
    }
    println!("demo: lab on bridge {BRIDGE}:");
    for host in &HOSTS {
        let lab_host = lab.host(host.lab);
        println!(
            "  {:<10} {:<12} {}/{}  netns {}, bridge port {}",
            host.policy, host.zone, host.address, host.prefix_len, lab_host.netns, lab_host.port
        );
    }
    Ok(lab)
}

fn exec_ok(lab: &Lab, host: &str, args: &[&str]) -> Result<()> {
    let output = lab.exec(host, args)?;
    if !output.success() {
        bail!(
            "`{}` in host {host} failed ({}): {}",
            args.join(" "),
            output.status,
            output.stderr.trim_end()
        );
    }
    Ok(())
}

fn start_servers(lab: &Lab) -> Result<(Vec<LabProcess>, ModbusServer)> {
    let modbus = lab
        .modbus_server("plc", MODBUS_PORT)
        .context("starting the Modbus/TCP server on plc-1 (tests/peers/modbus_server.py)")?;
    println!(
        "demo: Modbus/TCP server (pymodbus) on plc-1 tcp/{MODBUS_PORT}: holding registers \
         0..99 hold 1000 + address"
    );
    let mut servers = Vec::new();
    let mut listening = Vec::new();
    for (lab_host, probe) in SERVERS {
        let server = match probe {
            Probe::Tcp(port) => lab.tcp_echo_server(lab_host, port)?,
            Probe::Udp(port) => lab.udp_echo_server(lab_host, port)?,
            Probe::Ping | Probe::Modbus(_) => continue,
        };
        servers.push(server);
        listening.push(format!("{} {}", host(lab_host).policy, probe.label()));
    }
    println!("demo: echo servers listening: {}", listening.join(", "));
    Ok((servers, modbus))
}

/// What plc-1's server holds in the register the steps wrote, read from its own memory.
fn print_setpoint(modbus: &mut ModbusServer) -> Result<()> {
    let store = modbus.datastore()?;
    let value = store
        .holding_registers
        .get(usize::from(SETPOINT))
        .context("the server has no holding register 0")?;
    println!(
        "\ndemo: plc-1's holding register {SETPOINT} now holds {value} (read from the server's \
         memory): the engineering write landed, the historian's never reached it"
    );
    Ok(())
}

/// What a step came to.
struct StepResult {
    /// What the client saw.
    seen: String,
    /// More of what the client saw, and the controller's events for the step.
    details: Vec<String>,
    /// Whether the traffic got through (None: neither clearly through nor clearly blocked).
    through: Option<bool>,
    counted: Stats,
    ok: bool,
    verdict: String,
}

/// Runs a step; returns its result and the counters after it.
fn run_step(
    lab: &Lab,
    controller: &mut Controller,
    step: &Step,
    before: &Stats,
) -> Result<(StepResult, Stats)> {
    let (seen, through, mut details) = probe(lab, step)?;
    let after = controller.settled_stats()?;
    details.extend(controller.take_denied().iter().map(describe_denied));
    let counted = after.since(before);
    let (ok, verdict) = match (step.expect, through) {
        (Expect::Allow(conduit), Some(true)) if counted.conduit(conduit, "pass") > 0 => {
            (true, "PASS as expected".to_string())
        }
        (Expect::Allow(conduit), Some(true)) => (
            false,
            format!("MISMATCH: passed, but not counted on conduit {conduit}"),
        ),
        (Expect::Allow(_), _) => (
            false,
            "MISMATCH: the policy allows this, but it did not get through".to_string(),
        ),
        (Expect::Deny(reason), Some(false)) if counted.reason(reason, "drop") > 0 => {
            (true, "DROP as expected".to_string())
        }
        (Expect::Deny(reason), Some(false)) => (
            false,
            format!("MISMATCH: blocked, but no packet was dropped for {reason}"),
        ),
        (Expect::Deny(_), _) => (
            false,
            "MISMATCH: the policy denies this, but it was not blocked".to_string(),
        ),
        (Expect::Refuse(reason), Some(false)) if counted.reason(reason, "refuse") > 0 => {
            (true, "REFUSE as expected".to_string())
        }
        (Expect::Refuse(reason), Some(false)) => (
            false,
            format!("MISMATCH: blocked, but no request was refused for {reason}"),
        ),
        (Expect::Refuse(_), _) => (
            false,
            "MISMATCH: the policy refuses this, but it was not refused".to_string(),
        ),
    };
    let result = StepResult {
        seen,
        details,
        through,
        counted,
        ok,
        verdict,
    };
    Ok((result, after))
}

/// Sends the step's traffic; returns what the client saw, more lines about it, and whether
/// it got through.
fn probe(lab: &Lab, step: &Step) -> Result<(String, Option<bool>, Vec<String>)> {
    let to: IpAddr = host(step.to)
        .address
        .parse()
        .expect("HOSTS holds IP addresses");
    if let Probe::Modbus(modbus) = step.probe {
        return modbus_probe(lab, step.from, SocketAddr::new(to, MODBUS_PORT), modbus);
    }
    let (seen, through) = match step.probe {
        Probe::Modbus(_) => unreachable!("handled above"),
        Probe::Tcp(port) => {
            let outcome = lab.tcp_echo(
                step.from,
                SocketAddr::new(to, port),
                "hello from the otfw demo",
                ATTEMPT_TIMEOUT,
            )?;
            tcp_seen(&outcome, TcpOutcome::Echoed)
        }
        Probe::Udp(port) => {
            let outcome = lab.udp_exchange(
                step.from,
                SocketAddr::new(to, port),
                DATAGRAMS,
                ATTEMPT_TIMEOUT,
            )?;
            let seen = format!(
                "{} of {} datagrams echoed{}",
                outcome.received,
                outcome.sent,
                if outcome.refused > 0 {
                    format!(", {} refused", outcome.refused)
                } else {
                    String::new()
                }
            );
            let through = if outcome.received == outcome.sent {
                Some(true)
            } else if outcome.received == 0 && outcome.refused == 0 {
                Some(false)
            } else {
                None
            };
            (seen, through)
        }
        Probe::Ping => {
            let outcome = lab.ping(step.from, to, PINGS)?;
            let seen = format!("{} of {} replies", outcome.received, outcome.transmitted);
            let through = if outcome.received == outcome.transmitted {
                Some(true)
            } else if outcome.received == 0 {
                Some(false)
            } else {
                None
            };
            (seen, through)
        }
    };
    Ok((seen, through, Vec::new()))
}

/// A Modbus request with the venv's pymodbus client (`tests/peers/modbus_client.py`).
fn modbus_probe(
    lab: &Lab,
    from: &str,
    plc: SocketAddr,
    probe: ModbusProbe,
) -> Result<(String, Option<bool>, Vec<String>)> {
    let client = ModbusClient::Pymodbus;
    let request = |op: ModbusOp| -> Result<ModbusResult> {
        let mut results = lab.modbus(client, from, plc, MODBUS_UNIT, ATTEMPT_TIMEOUT, &[op])?;
        Ok(results.remove(0))
    };
    Ok(match probe {
        ModbusProbe::Read(address, count) => {
            match request(ModbusOp::Read(Table::HoldingRegisters, address, count))? {
                ModbusResult::Ok(values) => {
                    let values: Vec<String> = values.iter().map(u16::to_string).collect();
                    (format!("read {}", values.join(" ")), Some(true), Vec::new())
                }
                other => modbus_failure(&other),
            }
        }
        ModbusProbe::Write(address, value) => {
            // The write, then a read on the same connection: after a refusal in-band the
            // connection still serves the client.
            let ops = [
                ModbusOp::WriteRegister(address, value),
                ModbusOp::Read(Table::HoldingRegisters, address, 1),
            ];
            let mut results = lab.modbus(client, from, plc, MODBUS_UNIT, ATTEMPT_TIMEOUT, &ops)?;
            let read_back = results.pop().expect("one result per op");
            let written = results.pop().expect("one result per op");
            let read_back = match read_back {
                ModbusResult::Ok(values) => format!(
                    "holding register {address} reads {} afterwards (same connection)",
                    values.first().map_or("nothing".to_string(), u16::to_string)
                ),
                other => format!("reading holding register {address} back: {other:?}"),
            };
            match written {
                ModbusResult::Ok(_) => (
                    format!("wrote {value} to register {address}"),
                    Some(true),
                    vec![read_back],
                ),
                other => {
                    let (seen, through, mut details) = modbus_failure(&other);
                    details.push(read_back);
                    (format!("write {seen}"), through, details)
                }
            }
        }
    })
}

/// A Modbus request that was not answered: what the client saw and whether it was blocked.
fn modbus_failure(result: &ModbusResult) -> (String, Option<bool>, Vec<String>) {
    match result {
        ModbusResult::Timeout => (
            format!("timed out after {ATTEMPT_TIMEOUT:?}"),
            Some(false),
            Vec::new(),
        ),
        ModbusResult::Reset => ("reset".to_string(), Some(false), Vec::new()),
        // The request did not get through: the answer is an error, the write did not happen.
        ModbusResult::Exception(code) => (format!("exception {code}"), Some(false), Vec::new()),
        other => (format!("{other:?}"), None, Vec::new()),
    }
}

/// One `modbus_denied` event of `otfw run`, in a line.
fn describe_denied(event: &serde_json::Value) -> String {
    format!(
        "event:  modbus_denied on {}: {}:{} -> {}:{} unit {} function {} address {} \
         quantity {}: {} ({})",
        event["conduit"].as_str().unwrap_or("?"),
        event["src"].as_str().unwrap_or("?"),
        event["sport"],
        event["dst"].as_str().unwrap_or("?"),
        event["dport"],
        event["unit"],
        event["function"],
        event["address"],
        event["quantity"],
        event["reason"].as_str().unwrap_or("?"),
        event["verdict"].as_str().unwrap_or("?"),
    )
}

fn tcp_seen(outcome: &TcpOutcome, success: TcpOutcome) -> (String, Option<bool>) {
    let seen = match outcome {
        TcpOutcome::Connected => "connected".to_string(),
        TcpOutcome::Echoed => "connected, echoed".to_string(),
        TcpOutcome::TimedOut => format!("timed out after {ATTEMPT_TIMEOUT:?}"),
        TcpOutcome::Refused => "refused".to_string(),
        TcpOutcome::Unreachable => "unreachable".to_string(),
        TcpOutcome::Reset => "reset".to_string(),
        TcpOutcome::Closed => "closed by the peer".to_string(),
        TcpOutcome::NoReply => "connected, no echo".to_string(),
        TcpOutcome::Error(line) => format!("error: {line}"),
    };
    let through = if *outcome == success {
        Some(true)
    } else if *outcome == TcpOutcome::TimedOut {
        Some(false)
    } else {
        None
    };
    (seen, through)
}

fn step_label(step: &Step) -> String {
    format!(
        "{} -> {} {}",
        host(step.from).policy,
        host(step.to).policy,
        step.probe.label()
    )
}

fn print_step(number: usize, step: &Step, result: &StepResult) {
    let expected = match step.expect {
        Expect::Allow(_) => "allowed",
        Expect::Deny(_) => "denied",
        Expect::Refuse(_) => "refused",
    };
    println!(
        "{number:>2}. {:<31} {expected:<8} client: {:<27} {}",
        step_label(step),
        result.seen,
        result.verdict
    );
    for detail in &result.details {
        let detail = if detail.starts_with("event:") {
            detail.clone()
        } else {
            format!("client: {detail}")
        };
        println!("      {detail}");
    }
    println!("      otfw:   {}", result.counted.describe());
    println!("      policy: {}", step.because);
}

fn print_summary(results: &[StepResult]) {
    println!("summary:");
    println!(
        "  {:>2}  {:<31} {:<8} {:<6} {:<31} result",
        "#", "traffic", "policy", "seen", "decided by (packets)"
    );
    for (index, (step, result)) in STEPS.iter().zip(results).enumerate() {
        let (policy, decided_by) = match step.expect {
            Expect::Allow(conduit) => (
                "allowed",
                format!("{conduit} ({})", result.counted.conduit(conduit, "pass")),
            ),
            Expect::Deny(reason) => (
                "denied",
                format!("{reason} ({})", result.counted.reason(reason, "drop")),
            ),
            Expect::Refuse(reason) => (
                "refused",
                format!("{reason} ({})", result.counted.reason(reason, "refuse")),
            ),
        };
        let seen = match (result.through, step.expect) {
            (Some(true), _) => "pass",
            (Some(false), Expect::Refuse(_)) => "refuse",
            (Some(false), _) => "drop",
            (None, _) => "?",
        };
        println!(
            "  {:>2}  {:<31} {policy:<8} {seen:<6} {decided_by:<31} {}",
            index + 1,
            step_label(step),
            if result.ok { "ok" } else { "MISMATCH" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_matches_the_example_policy() {
        let policy = std::fs::read_to_string(otfw_tests::repo_root().join(POLICY)).unwrap();
        check_policy_matches_lab(&policy).unwrap();
        let changed = policy.replace("plc-1: 10.10.3.10", "plc-1: 10.10.3.11");
        let error = check_policy_matches_lab(&changed).unwrap_err();
        assert!(error.to_string().contains("plc-1: 10.10.3.10"), "{error:#}");
    }

    #[test]
    fn port_names_fit_the_interface_name_limit() {
        for host in &HOSTS {
            assert!(format!("{PREFIX}-{}", host.lab).len() <= 15, "{}", host.lab);
        }
        assert_eq!(network_of("10.10.3.10", 24), "10.10.3.0");
    }
}
