//! Through the bridge: two lab namespaces joined by a bridge, frames from trafgen in one,
//! counted on arrival in the other, with the filters applied in turn in the same run:
//! nothing, otfw (native and generic XDP, each with its fast path and without), an nftables
//! bridge-family ruleset and iptables with the u32 match doing the same checks. Also the
//! latency of a Modbus-shaped ping-pong through each, the same ping-pong while a third
//! namespace floods denied frames, and a policy swap to 10,000 conduits under traffic.
//!
//! Traffic never leaves the lab: trafgen sends from inside namespace `bench-a` to the MAC of
//! `bench-b`; frames are addressed to 198.51.100.201, an address of the plant zone that no host
//! has, so `bench-b` drops them silently after counting (a real address would answer every
//! frame with a RST). Counts and times are bounded.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use otfw_tests::{HostSpec, Lab, LabOptions, LabProcess};

use super::peer::PingResult;
use crate::cmd;

const PREFIX: &str = "bench";
const PORT_A: &str = "bench-a";
const PORT_B: &str = "bench-b";
/// The flooder's port: idle except during the flood measurement.
const PORT_C: &str = "bench-c";
const BRIDGE: &str = "br-bench";
const MAC_A: &str = "02:00:00:00:00:0a";
const MAC_B: &str = "02:00:00:00:00:c8";
const MAC_C: &str = "02:00:00:00:00:0c";
const IP_A: &str = "198.51.100.10";
const IP_B: &str = "198.51.100.200";
/// The flooder, in the office zone like a: its frames are denied by the conduit's rules, not
/// by zone resolution.
const IP_C: &str = "198.51.100.20";
/// In the plant zone, on no host: the receiver counts these frames and drops them.
const IP_SINK: &str = "198.51.100.201";
const NFT_TABLE: &str = "otfwbench";
const IPT_CHAIN: &str = "OTFWBENCH";
const START: Duration = Duration::from_secs(60);
/// Frames of the functional check: how many reads and writes each filter is sent.
const CHECK_FRAMES: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    /// The trivial baseline program in native mode: what native XDP on the ports costs by
    /// itself, so that otfw's own share can be told apart.
    Trivial,
    /// Native XDP, every passed frame to the bridge (`--fast-path off`).
    OtfwNative,
    /// Native XDP with `--fast-path on`; the namespaces' veth ends get GRO switched on, which
    /// gives them the NAPI receive queue that `ndo_xdp_xmit` of a veth delivers into.
    OtfwNativeFast,
    /// Generic XDP with the default `--fast-path auto` (on for generic-mode ports).
    OtfwGenericFast,
    /// Generic XDP, `--fast-path off`.
    OtfwGeneric,
    Nft,
    Iptables,
}

impl Filter {
    pub const ALL: [Filter; 8] = [
        Filter::None,
        Filter::Trivial,
        Filter::OtfwNative,
        Filter::OtfwNativeFast,
        Filter::OtfwGenericFast,
        Filter::OtfwGeneric,
        Filter::Nft,
        Filter::Iptables,
    ];

    /// The otfw rows whose allowed frames the fast path forwards.
    pub const FAST: [Filter; 2] = [Filter::OtfwGenericFast, Filter::OtfwNativeFast];

    pub fn label(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::Trivial => "trivial XDP, native",
            Filter::OtfwNative => "otfw native, bridge",
            Filter::OtfwNativeFast => "otfw native, fast path",
            Filter::OtfwGenericFast => "otfw generic, fast path",
            Filter::OtfwGeneric => "otfw generic, bridge",
            Filter::Nft => "nftables bridge",
            Filter::Iptables => "iptables u32",
        }
    }

    /// `otfw run`'s `--xdp-mode` and `--fast-path` for the otfw rows.
    pub fn otfw_mode(self) -> Option<(&'static str, &'static str)> {
        match self {
            Filter::OtfwNative => Some(("native", "off")),
            Filter::OtfwNativeFast => Some(("native", "on")),
            Filter::OtfwGenericFast => Some(("generic", "auto")),
            Filter::OtfwGeneric => Some(("generic", "off")),
            Filter::None | Filter::Trivial | Filter::Nft | Filter::Iptables => None,
        }
    }

    pub fn fast_path(self) -> bool {
        Filter::FAST.contains(&self)
    }
}

pub struct Options {
    /// Whether otfw inspects Modbus (then it must stop the writes like the other filters).
    pub modbus_inspected: bool,
    pub rounds: usize,
    pub packets: u64,
    /// Ping-pong round trips per filter and round.
    pub latency_samples: u32,
    pub swap_conduits: usize,
    /// Ping-pong round trips per flood phase, and rounds of the three phases.
    pub flood_samples: u32,
    pub flood_rounds: usize,
}

impl Options {
    pub fn full() -> Options {
        Options {
            modbus_inspected: true,
            rounds: 10,
            packets: 250_000,
            latency_samples: 2500,
            swap_conduits: 10_000,
            flood_samples: 2000,
            flood_rounds: 3,
        }
    }

    pub fn quick() -> Options {
        Options {
            modbus_inspected: true,
            rounds: 1,
            packets: 2000,
            latency_samples: 100,
            swap_conduits: 300,
            flood_samples: 100,
            flood_rounds: 1,
        }
    }
}

/// One trafgen burst through one filter.
#[derive(Debug, Clone)]
pub struct Trial {
    pub filter: Filter,
    pub round: usize,
    /// Frames trafgen handed to the sender's device.
    pub sent: u64,
    /// Frames that arrived in the receiver's namespace.
    pub received: u64,
    pub secs: f64,
    pub cpu: Cpu,
    /// Rate of the no-filter burst just before this one (filtered bursts only).
    pub reference_pps: Option<f64>,
    /// The XDP program's own run time per run during the burst, from the kernel's BPF run-time
    /// statistics (XDP filters only).
    pub program_ns: Option<f64>,
    /// Frames the fast path redirected during the burst, from the controller's `stats` event
    /// (`otfw run` rows only).
    pub redirected: Option<u64>,
}

impl Trial {
    pub fn pps(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }
}

/// Machine-wide CPU use during a trial, in percent of all CPUs (other users' work included).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub busy_pct: f64,
    pub softirq_pct: f64,
    /// Kernel time (system, irq, softirq): the generator's sends, veth, bridge, filters and
    /// the receiver all run there, while other users' builds mostly run in user time.
    pub kernel_pct: f64,
}

/// Whether a filter lets Modbus reads through and stops writes (frames passed of
/// `CHECK_FRAMES`).
#[derive(Debug, Clone)]
pub struct Check {
    pub filter: Filter,
    pub reads_passed: u64,
    pub writes_passed: u64,
}

#[derive(Debug)]
pub struct Latency {
    pub filter: Filter,
    pub rtt_ns: Vec<u64>,
    pub errors: u32,
}

/// What the flooder sends while the polling runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    /// No flood: the polling's reference, measured alternately with the floods.
    Quiet,
    /// Every frame a denied SYN of a tuple not seen before: no decision cache can hold them.
    NewTuples,
    /// The same denied SYN over and over: the decision cache's case.
    OneTuple,
}

impl FloodKind {
    pub const ALL: [FloodKind; 3] = [FloodKind::Quiet, FloodKind::NewTuples, FloodKind::OneTuple];

    pub fn label(self) -> &'static str {
        match self {
            FloodKind::Quiet => "no flood",
            FloodKind::NewTuples => "flood, every frame a new tuple",
            FloodKind::OneTuple => "flood, one repeated tuple",
        }
    }
}

/// One phase of the flood measurement: a ping-pong from a to b while c floods (or not).
#[derive(Debug)]
pub struct FloodPhase {
    pub kind: FloodKind,
    pub rtt_ns: Vec<u64>,
    pub errors: u32,
    pub error: Option<String>,
    /// Frames the flooder's device sent, and over how long.
    pub sent: u64,
    pub secs: f64,
    /// The datapath's shortcut counters over the phase (`stats` event `paths`).
    pub denial_stored: u64,
    pub denial_cached: u64,
}

#[derive(Debug)]
pub struct Flood {
    pub filter: Filter,
    pub phases: Vec<FloodPhase>,
}

#[derive(Debug)]
pub struct Swap {
    pub conduits: usize,
    /// SIGHUP to `policy_loaded`: read, compile and install as the operator sees it.
    pub reload_ms: f64,
    pub stream: PingResult,
    pub interval_us: u64,
}

#[derive(Debug)]
pub struct Memory {
    pub policy: String,
    pub rss_kib: u64,
    pub map_bytes: u64,
}

#[derive(Debug)]
pub struct Bridge {
    pub trials: Vec<Trial>,
    pub checks: Vec<Check>,
    pub latency: Vec<Latency>,
    pub swap: Swap,
    pub flood: Flood,
    pub memory: Vec<Memory>,
    pub iptables_version: String,
}

pub struct Tools<'a> {
    pub otfw: &'a Path,
    pub xtask: PathBuf,
    pub example: &'a Path,
    pub work: &'a Path,
}

pub fn measure(tools: &Tools, opts: &Options) -> Result<Bridge> {
    for tool in ["trafgen", "nft", "iptables"] {
        ensure!(
            which(tool),
            "`{tool}` is missing: run `cargo xtask setup` (netsniff-ng, nftables, iptables)"
        );
    }
    remove_stale_rules();
    let hosts = [
        HostSpec::new("a", &format!("{IP_A}/24")).mac(MAC_A),
        HostSpec::new("b", &format!("{IP_B}/24")).mac(MAC_B),
        HostSpec::new("c", &format!("{IP_C}/24")).mac(MAC_C),
    ];
    let lab = Lab::with_options(LabOptions::new(PREFIX), &hosts)?;
    ensure!(lab.bridge() == BRIDGE && lab.ports() == [PORT_A, PORT_B, PORT_C]);
    // Whatever happens below, the rules go before the lab does.
    let _cleanup = RulesCleanup;
    // The benchmark speaks IPv4 only: without IPv6 the namespaces send no router
    // solicitations or MLD reports, which the bridge would flood to b in the middle of a
    // count (one counted as a passed write fails the functional check).
    for host in ["a", "b", "c"] {
        let out = lab.exec(
            host,
            &["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
        )?;
        ensure!(out.success(), "disabling IPv6 in {host}: {}", out.stderr);
    }
    // Fixed neighbours, for the same reason: no ARP exchange during a count.
    for (host, ip, mac) in [("a", IP_B, MAC_B), ("b", IP_A, MAC_A), ("b", IP_C, MAC_C)] {
        let out = lab.exec(
            host,
            &[
                "ip",
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )?;
        ensure!(
            out.success(),
            "fixing the neighbour {ip} in {host}: {}",
            out.stderr
        );
    }

    let files = Files::write(tools.work, tools.example)?;
    let mut server = lab.spawn(
        "b",
        &[
            tools.xtask.as_os_str(),
            "bench-peer".as_ref(),
            "serve".as_ref(),
            "--listen".as_ref(),
            format!("{IP_B}:502").as_ref(),
        ],
    )?;
    server.wait_for_line(|l| l.starts_with("listening"), START)?;

    let mut trials = Vec::new();
    let mut checks = Vec::new();
    let mut latency: Vec<Latency> = Filter::ALL
        .iter()
        .map(|&filter| Latency {
            filter,
            rtt_ns: Vec::new(),
            errors: 0,
        })
        .collect();
    // Run-time statistics cost every BPF program a clock read per run while on; they stay on
    // for every burst, the unfiltered ones included, so the comparison stays fair.
    let stats = RunTimeStats::enable()
        .map_err(|e| eprintln!("bench: no BPF run-time statistics ({e:#}); continuing without"))
        .ok();
    // Each filter's burst directly follows a burst with no filter: the pair's ratio is the
    // sample, so a slow phase of the shared machine affects both sides of it alike.
    for round in 0..opts.rounds {
        for (f, &filter) in Filter::ALL.iter().enumerate().skip(1) {
            println!(
                "bench: bridge round {}/{}: no filter, then {}",
                round + 1,
                opts.rounds,
                filter.label()
            );
            if round == 0 && f == 1 {
                checks.push(check(&lab, &files, Filter::None)?);
            }
            let reference = retried(|| {
                burst(
                    &lab,
                    &files,
                    Filter::None,
                    round,
                    opts.packets,
                    None,
                    &mut Applied::Nothing,
                )
            })?;
            if f == 1 {
                let ping = ping(&lab, tools, opts.latency_samples, 0)?;
                latency[0].rtt_ns.extend(&ping.rtt_ns);
                latency[0].errors += ping.errors;
            }
            let reference_pps = reference.pps();
            trials.push(reference);
            let mut applied = apply(&lab, tools, &files, filter)?;
            if round == 0 {
                let check = check(&lab, &files, filter).map_err(|e| {
                    if filter == Filter::OtfwNativeFast {
                        e.context(
                            "a native veth delivers redirected frames only into a NAPI \
                             receive queue: does this kernel give one to a veth with GRO on \
                             (5.13 or later)?",
                        )
                    } else {
                        e
                    }
                })?;
                // A ruleset that stops allowed traffic or lets writes through measures the
                // wrong thing.
                let filters_function = match filter {
                    Filter::Nft | Filter::Iptables => true,
                    Filter::OtfwNative
                    | Filter::OtfwNativeFast
                    | Filter::OtfwGenericFast
                    | Filter::OtfwGeneric => opts.modbus_inspected,
                    Filter::None | Filter::Trivial => false,
                };
                ensure!(
                    check.reads_passed >= CHECK_FRAMES,
                    "{} let only {} of {CHECK_FRAMES} Modbus reads through",
                    filter.label(),
                    check.reads_passed
                );
                ensure!(
                    !filters_function || check.writes_passed == 0,
                    "{} let {} Modbus writes through: its ruleset is broken",
                    filter.label(),
                    check.writes_passed
                );
                checks.push(check);
            }
            let trial = retried(|| {
                burst(
                    &lab,
                    &files,
                    filter,
                    round,
                    opts.packets,
                    Some(reference_pps),
                    &mut applied,
                )
            })?;
            // A fast-path row whose frames all went through the bridge would measure the
            // bridge path under the wrong name, and the other rows must not redirect.
            if let Some(redirected) = trial.redirected {
                ensure!(
                    !filter.fast_path() || redirected > 0,
                    "{}: the fast path redirected none of the {} frames of the burst",
                    filter.label(),
                    trial.received
                );
                ensure!(
                    filter.fast_path() || redirected == 0,
                    "{}: {redirected} frames redirected with the fast path off",
                    filter.label()
                );
            }
            trials.push(trial);
            let ping = ping(&lab, tools, opts.latency_samples, 0)?;
            ensure!(
                ping.errors == 0,
                "the Modbus exchange failed through {}: {}",
                filter.label(),
                ping.error.as_deref().unwrap_or("?")
            );
            latency[f].rtt_ns.extend(&ping.rtt_ns);
            latency[f].errors += ping.errors;
            applied.verify()?;
            drop(applied);
            if filter == Filter::OtfwNativeFast {
                set_gro(&lab, false)?;
            }
        }
    }
    drop(stats);
    let flood = flood(&lab, tools, &files, opts)?;
    let (swap, memory) = swap(&lab, tools, &files, opts)?;
    drop(server);
    lab.close()?;
    Ok(Bridge {
        trials,
        checks,
        latency,
        swap,
        flood,
        memory,
        iptables_version: cmd::stdout_of("iptables", ["--version"])
            .unwrap_or_default()
            .trim()
            .to_string(),
    })
}

/// Policy and generator files in the work directory.
struct Files {
    policy: PathBuf,
    example: PathBuf,
    large: PathBuf,
    read: PathBuf,
    write: PathBuf,
    check_read: PathBuf,
    nft: PathBuf,
    flood_new: PathBuf,
    flood_one: PathBuf,
}

impl Files {
    fn write(work: &Path, example: &Path) -> Result<Files> {
        fs::create_dir_all(work)?;
        let files = Files {
            policy: work.join("policy.yaml"),
            example: example.to_path_buf(),
            large: work.join("large.yaml"),
            read: work.join("modbus-read.trafgen"),
            write: work.join("modbus-write.trafgen"),
            check_read: work.join("modbus-read-check.trafgen"),
            nft: work.join("filter.nft"),
            flood_new: work.join("flood-new-tuples.trafgen"),
            flood_one: work.join("flood-one-tuple.trafgen"),
        };
        fs::write(&files.policy, LAB_POLICY)?;
        fs::write(&files.read, trafgen_conf(40000, 3))?;
        fs::write(&files.check_read, trafgen_conf(41000, 3))?;
        fs::write(&files.write, trafgen_conf(41001, 6))?;
        fs::write(&files.nft, NFT_RULESET)?;
        // Source and destination port both step with every frame; their ranges (64,512 and
        // 127 values) are coprime, so a tuple repeats only after 8 million frames, far more
        // than the decision cache holds.
        fs::write(
            &files.flood_new,
            flood_conf("dinc(1024, 65535)", "dinc(1000, 1126)"),
        )?;
        fs::write(&files.flood_one, flood_conf("40500", "102"))?;
        Ok(files)
    }
}

/// The otfw policy equivalent to the nftables and iptables rulesets: Modbus reads from the
/// office half of the subnet to the plant half, nothing else (ARP aside).
const LAB_POLICY: &str = "\
version: 1
gateway:
  interfaces: [bench-a, bench-b, bench-c]
defaults:
  action: deny
  intra_zone: allow
  unzoned: deny
  non_ip: [arp]
  midstream: adopt      # trafgen sends data segments of a connection it never opened
zones:
  office:
    networks: [198.51.100.0/25]
  plant:
    networks: [198.51.100.128/25]
conduits:
  - name: modbus-read
    from: office
    to: plant
    allow:
      - modbus: { functions: [read] }
";

/// The same checks in the bridge family: ARP; office -> plant TCP 502, dropped when it carries
/// a Modbus function code (payload byte 7, after the MBAP header) outside 1-4; replies from port
/// 502. A segment too short to hold the byte (handshake, pure ACKs) fails the payload match and
/// falls through to the accept. Frames of other bridges are left alone.
const NFT_RULESET: &str = "\
table bridge otfwbench {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname != { \"bench-a\", \"bench-b\" } accept
    ether type arp accept
    ip saddr 198.51.100.0/25 ip daddr 198.51.100.128/25 tcp dport 502 @ih,56,8 != 1-4 counter drop
    ip saddr 198.51.100.0/25 ip daddr 198.51.100.128/25 tcp dport 502 counter accept
    ip saddr 198.51.100.128/25 ip daddr 198.51.100.0/25 tcp sport 502 accept
    counter drop
  }
}
";

/// The classic ICS hardening recipe: the u32 match walks IHL and the TCP data offset to the
/// Modbus function code. `--u32` fails on a frame too short to hold the byte, so the negated
/// form admits the handshake and pure ACKs.
const U32_FUNCTION: &str = "0>>22&0x3C@12>>26&0x3C@4&0xFF=0x1:0x4";
const U32_HAS_FUNCTION: &str = "0>>22&0x3C@12>>26&0x3C@4&0xFF=0x0:0xFF";

fn iptables_rules() -> Vec<Vec<String>> {
    let office_to_plant =
        format!("-A {IPT_CHAIN} -p tcp -s 198.51.100.0/25 -d 198.51.100.128/25 --dport 502 -m u32");
    [
        format!("-N {IPT_CHAIN}"),
        format!("{office_to_plant} --u32 {U32_FUNCTION} -j ACCEPT"),
        format!("{office_to_plant} ! --u32 {U32_HAS_FUNCTION} -j ACCEPT"),
        format!(
            "-A {IPT_CHAIN} -p tcp -s 198.51.100.128/25 -d 198.51.100.0/25 --sport 502 -j ACCEPT"
        ),
        format!("-A {IPT_CHAIN} -j DROP"),
        format!("-I FORWARD 1 -m physdev --physdev-in {PORT_A} -j {IPT_CHAIN}"),
        format!("-I FORWARD 1 -m physdev --physdev-in {PORT_B} -j {IPT_CHAIN}"),
    ]
    .iter()
    .map(|rule| rule.split_whitespace().map(String::from).collect())
    .collect()
}

/// A trafgen packet of the flood: a SYN from c to a port of the plant that no conduit allows,
/// with the given source and destination port (constants or trafgen's dynamic fields).
fn flood_conf(sport: &str, dport: &str) -> String {
    format!(
        "/* Denied SYN flood, written by cargo xtask bench */\n{{\n  \
         eth(da={MAC_B}, sa={MAC_C}),\n  ipv4(sa={IP_C}, da={IP_SINK}, ttl=64, df),\n  \
         tcp(sp={sport}, dp={dport}, seq=1000, syn, win=64240)\n}}\n"
    )
}

/// A trafgen packet: one Modbus/TCP request with function `function` from host a to the sink
/// address on b's MAC, as the data segment of an established connection.
fn trafgen_conf(sport: u16, function: u8) -> String {
    format!(
        "/* Modbus/TCP request, function {function}, written by cargo xtask bench */\n{{\n  \
         eth(da={MAC_B}, sa={MAC_A}),\n  ipv4(sa={IP_A}, da={IP_SINK}, ttl=64, df),\n  \
         tcp(sp={sport}, dp=502, seq=1000, ackseq=2000, ack, psh, win=64240),\n  \
         0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x01, {function:#04x}, 0x00, 0x00, 0x00, 0x0a\n}}\n"
    )
}

/// What a filter left in place, removed on drop.
enum Applied {
    Nothing,
    /// The process holding the trivial program.
    Baseline(LabProcess),
    /// `otfw run`.
    Otfw(LabProcess),
    Nft,
    Iptables,
}

fn apply(lab: &Lab, tools: &Tools, files: &Files, filter: Filter) -> Result<Applied> {
    Ok(match filter {
        Filter::None => Applied::Nothing,
        Filter::Trivial => {
            let mut command = Command::new(tools.otfw);
            command
                .args(["bench-datapath", "--attach-baseline"])
                .args(["--iface", PORT_A, "--iface", PORT_B]);
            let mut process = lab.spawn_command(command)?;
            process.wait_for_line(|l| l.contains("\"event\":\"ready\""), START)?;
            Applied::Baseline(process)
        }
        Filter::OtfwNative
        | Filter::OtfwNativeFast
        | Filter::OtfwGenericFast
        | Filter::OtfwGeneric => {
            if filter == Filter::OtfwNativeFast {
                set_gro(lab, true)?;
            }
            Applied::Otfw(start_otfw(lab, tools.otfw, &files.policy, filter)?)
        }
        Filter::Nft => {
            cmd::run(Command::new("nft").arg("-f").arg(&files.nft))?;
            Applied::Nft
        }
        Filter::Iptables => {
            // br_netfilter is what hands bridged IPv4 to iptables. It is built into this
            // project's kernels; elsewhere load it. The switch is set on this bridge only:
            // the global sysctl stays off, as the lab harness leaves it, so no other bridge's
            // traffic meets iptables.
            if !Path::new("/proc/sys/net/bridge").exists() {
                let _ = cmd::capture(Command::new("modprobe").arg("br_netfilter"));
            }
            ensure!(
                Path::new("/proc/sys/net/bridge").exists(),
                "br_netfilter is not available: iptables cannot see bridged frames"
            );
            let applied = Applied::Iptables;
            cmd::run(&mut bridge_nf_call_iptables(true))?;
            for rule in iptables_rules() {
                cmd::run(Command::new("iptables").args(&rule))?;
            }
            applied
        }
    })
}

impl Applied {
    /// The process holding the XDP program, if any.
    fn holder(&self) -> Option<u32> {
        match self {
            Applied::Otfw(process) | Applied::Baseline(process) => Some(process.pid()),
            _ => None,
        }
    }

    /// The datapath's shortcut counters (`otfw run` only).
    fn paths(&mut self) -> Result<Option<serde_json::Value>> {
        match self {
            Applied::Otfw(process) => paths(process).map(Some),
            _ => Ok(None),
        }
    }

    /// Fails if the filter is no longer in place (a crashed controller, rules removed).
    fn verify(&self) -> Result<()> {
        match self {
            Applied::Otfw(process) | Applied::Baseline(process) => {
                let pid = process.pid();
                ensure!(
                    Path::new(&format!("/proc/{pid}")).exists(),
                    "the XDP program's process exited during the measurement: {}",
                    process.stderr()
                );
            }
            Applied::Nft => {
                ensure!(
                    cmd::stdout_of("nft", ["list", "table", "bridge", NFT_TABLE]).is_some(),
                    "the nftables table disappeared during the measurement"
                );
            }
            Applied::Iptables => {
                // The first rule of the chain (the u32 match) must have seen the burst: proof
                // that bridged frames really went through iptables.
                let listing = cmd::stdout_of("iptables", ["-L", IPT_CHAIN, "-v", "-x", "-n"])
                    .unwrap_or_default();
                let matched: u64 = listing
                    .lines()
                    .nth(2)
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                ensure!(
                    matched > 0,
                    "no bridged frame reached the iptables rules (is br_netfilter working?)"
                );
            }
            Applied::Nothing => {}
        }
        Ok(())
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        match self {
            Applied::Nothing | Applied::Otfw(_) | Applied::Baseline(_) => {}
            Applied::Nft => delete_nft(),
            Applied::Iptables => delete_iptables(),
        }
    }
}

/// Hands the lab bridge's IPv4 frames to iptables (br_netfilter), or stops doing so.
fn bridge_nf_call_iptables(on: bool) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["link", "set", BRIDGE, "type", "bridge", "nf_call_iptables"])
        .arg(if on { "1" } else { "0" });
    command
}

fn delete_nft() {
    let _ = cmd::capture(Command::new("nft").args(["delete", "table", "bridge", NFT_TABLE]));
}

fn delete_iptables() {
    for port in [PORT_A, PORT_B] {
        while cmd::capture(Command::new("iptables").args([
            "-D",
            "FORWARD",
            "-m",
            "physdev",
            "--physdev-in",
            port,
            "-j",
            IPT_CHAIN,
        ]))
        .is_ok_and(|o| o.status.success())
        {}
    }
    let _ = cmd::capture(Command::new("iptables").args(["-F", IPT_CHAIN]));
    let _ = cmd::capture(Command::new("iptables").args(["-X", IPT_CHAIN]));
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        let _ = cmd::capture(&mut bridge_nf_call_iptables(false));
    }
}

/// Rules an interrupted run may have left.
fn remove_stale_rules() {
    delete_nft();
    delete_iptables();
}

/// Removes the rules when the measurement ends, also on error or panic.
struct RulesCleanup;

impl Drop for RulesCleanup {
    fn drop(&mut self) {
        remove_stale_rules();
    }
}

/// Starts `otfw run` as `filter` (one of the otfw rows) asks, and waits until it is ready and
/// its fast path is on or off as asked.
fn start_otfw(lab: &Lab, otfw: &Path, policy: &Path, filter: Filter) -> Result<LabProcess> {
    let (mode, fast_path) = filter
        .otfw_mode()
        .with_context(|| format!("{} is not an otfw row", filter.label()))?;
    let mut command = Command::new(otfw);
    command
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .args(["--iface", PORT_A, "--iface", PORT_B, "--iface", PORT_C])
        .args(["--xdp-mode", mode, "--fast-path", fast_path])
        .args(["--watch-interval", "3600", "--no-pin"])
        .env("RUST_LOG", "warn");
    let mut process = lab.spawn_command(command)?;
    process.wait_for_line(|l| l.contains("\"event\":\"ready\""), START)?;
    // The controller reports the fast path's state after `ready`, once it has read the bridge
    // and filled the mirror.
    let line = process.wait_for_line(|l| l.contains("\"event\":\"fast_path\""), START)?;
    let event: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("fast_path event {line}"))?;
    ensure!(
        event["enabled"] == filter.fast_path(),
        "{}: the fast path is not as asked: {line}",
        filter.label()
    );
    Ok(process)
}

/// SIGUSR1, then the `paths` of the `stats` event the controller answers with.
fn paths(otfw: &mut LabProcess) -> Result<serde_json::Value> {
    // SAFETY: kill has no memory-safety preconditions; the pid is our running child.
    if unsafe { libc::kill(otfw.pid() as libc::pid_t, libc::SIGUSR1) } != 0 {
        bail!("SIGUSR1 to otfw: {}", std::io::Error::last_os_error());
    }
    let line = otfw.wait_for_line(|l| l.contains("\"event\":\"stats\""), START)?;
    let event: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("stats event {line}"))?;
    Ok(event["paths"].clone())
}

/// How far a `paths` counter moved between two `stats` events.
fn path_delta(before: &serde_json::Value, after: &serde_json::Value, path: &str) -> u64 {
    let count = |v: &serde_json::Value| v[path].as_u64().unwrap_or(0);
    count(after).saturating_sub(count(before))
}

/// Switches GRO on or off on the veth ends inside namespaces a and b. With GRO on, a veth
/// without an XDP program of its own has a NAPI receive queue, the only place a native-mode
/// `XDP_REDIRECT` from its peer can deliver to (without it the frames are dropped).
fn set_gro(lab: &Lab, on: bool) -> Result<()> {
    for host in ["a", "b"] {
        let out = lab.exec(
            host,
            &[
                "ethtool",
                "-K",
                "eth0",
                "gro",
                if on { "on" } else { "off" },
            ],
        )?;
        ensure!(
            out.success(),
            "switching GRO {} on eth0 in {host}: {}",
            if on { "on" } else { "off" },
            out.stderr.trim_end()
        );
    }
    Ok(())
}

fn counter(lab: &Lab, host: &str, name: &str) -> Result<u64> {
    let path = format!("/sys/class/net/eth0/statistics/{name}");
    let out = lab.exec(host, &["cat", path.as_str()])?;
    ensure!(out.success(), "reading {path} in {host}: {}", out.stderr);
    out.stdout
        .trim()
        .parse()
        .with_context(|| format!("{path} in {host} holds {:?}", out.stdout))
}

fn trafgen(lab: &Lab, conf: &Path, count: u64) -> Result<()> {
    let conf = conf.to_string_lossy();
    let count = count.to_string();
    // At least 20k frames/s, or the run is broken anyway.
    let timeout = Duration::from_secs(30 + count.parse::<u64>().unwrap_or(0) / 20_000);
    let out = lab.exec_timeout(
        "a",
        &[
            "trafgen",
            "--dev",
            "eth0",
            "--conf",
            &conf,
            "--cpus",
            "1",
            "--num",
            &count,
            "--no-sock-mem",
        ],
        timeout,
    )?;
    ensure!(out.success(), "trafgen failed: {}", out.stderr.trim_end());
    Ok(())
}

/// Frames of `conf` that reach b out of `count` sent.
fn delivered(lab: &Lab, conf: &Path, count: u64) -> Result<u64> {
    let before = counter(lab, "b", "rx_packets")?;
    trafgen(lab, conf, count)?;
    // Frames still queued in the veth/bridge path arrive within a moment.
    thread::sleep(Duration::from_millis(100));
    Ok(counter(lab, "b", "rx_packets")?.saturating_sub(before))
}

fn check(lab: &Lab, files: &Files, filter: Filter) -> Result<Check> {
    Ok(Check {
        filter,
        reads_passed: retried(|| delivered(lab, &files.check_read, CHECK_FRAMES))?,
        writes_passed: retried(|| delivered(lab, &files.write, CHECK_FRAMES))?,
    })
}

/// Runs `step` again (twice at most) when trafgen gave up because the sender's device queue was
/// full (`EAGAIN` flushing its TX ring, which happens under load when a veth peer with native
/// XDP falls behind); the step measures afresh each time.
fn retried<T>(mut step: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match step() {
            Err(e) if attempt < 2 && format!("{e:#}").contains("temporarily unavailable") => {
                attempt += 1;
                eprintln!("bench: {e:#}; trying the burst again");
                thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

fn burst(
    lab: &Lab,
    files: &Files,
    filter: Filter,
    round: usize,
    packets: u64,
    reference_pps: Option<f64>,
    applied: &mut Applied,
) -> Result<Trial> {
    let holder = applied.holder();
    let paths_before = applied.paths()?;
    let program = holder.map(program_run_time);
    let rx = counter(lab, "b", "rx_packets")?;
    let tx = counter(lab, "a", "tx_packets")?;
    let cpu = cpu_times()?;
    let start = Instant::now();
    trafgen(lab, &files.read, packets)?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_times()?.since(&cpu);
    thread::sleep(Duration::from_millis(100));
    let program_ns = program.zip(holder).and_then(|((time, runs), pid)| {
        let (time_after, runs_after) = program_run_time(pid);
        let runs = runs_after.checked_sub(runs).filter(|&r| r > 0)?;
        Some(time_after.saturating_sub(time) as f64 / runs as f64)
    });
    let redirected = match (paths_before, applied.paths()?) {
        (Some(before), Some(after)) => Some(path_delta(&before, &after, "redirected")),
        _ => None,
    };
    Ok(Trial {
        filter,
        round,
        sent: counter(lab, "a", "tx_packets")?.saturating_sub(tx),
        received: counter(lab, "b", "rx_packets")?.saturating_sub(rx),
        secs,
        cpu,
        reference_pps,
        program_ns,
        redirected,
    })
}

/// The kernel's accounting of BPF program run time (`BPF_ENABLE_STATS`), on while this lives
/// and off again when its fd closes, also if the benchmark dies.
struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    fn enable() -> Result<RunTimeStats> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr { struct { __u32 type; } enable_stats; }, BPF_STATS_RUN_TIME = 0.
        let attr: u32 = 0;
        // SAFETY: the bpf syscall reads `size` bytes of attr, which points at a live u32.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                &attr as *const u32,
                std::mem::size_of::<u32>() as u32,
            )
        };
        if fd < 0 {
            bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(RunTimeStats { _fd: fd })
    }
}

/// Run time (ns) and run count summed over the BPF programs a process holds. A tail-called
/// program's time counts in its caller's (the kernel accounts the entry program's run).
fn program_run_time(pid: u32) -> (u64, u64) {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (0, 0);
    };
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    entries
        .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.contains("prog_type:"))
        .fold((0, 0), |(time, runs), info| {
            (
                time + field(&info, "run_time_ns:"),
                runs + field(&info, "run_cnt:"),
            )
        })
}

/// Modbus polling from a to b through otfw (generic XDP with its fast path, the default
/// shape) while c floods denied SYNs at trafgen's full rate, alternated with the same polling
/// without the flood.
fn flood(lab: &Lab, tools: &Tools, files: &Files, opts: &Options) -> Result<Flood> {
    let filter = Filter::OtfwGenericFast;
    let mut applied = apply(lab, tools, files, filter)?;
    let mut phases = Vec::new();
    for round in 0..opts.flood_rounds {
        for kind in FloodKind::ALL {
            println!(
                "bench: flood round {}/{}: Modbus polling through {}, {}",
                round + 1,
                opts.flood_rounds,
                filter.label(),
                kind.label()
            );
            let conf = match kind {
                FloodKind::Quiet => None,
                FloodKind::NewTuples => Some(&files.flood_new),
                FloodKind::OneTuple => Some(&files.flood_one),
            };
            let before = applied.paths()?.unwrap_or_default();
            let tx = counter(lab, "c", "tx_packets")?;
            let start = Instant::now();
            let flooder = conf
                .map(|conf| {
                    let conf = conf.to_string_lossy();
                    lab.spawn(
                        "c",
                        &[
                            "trafgen",
                            "--dev",
                            "eth0",
                            "--conf",
                            conf.as_ref(),
                            "--cpus",
                            "1",
                            "--no-sock-mem",
                        ],
                    )
                })
                .transpose()?;
            if flooder.is_some() {
                // The flood at full rate before the polling starts.
                thread::sleep(Duration::from_millis(300));
            }
            let polled = ping(lab, tools, opts.flood_samples, 0)?;
            if let Some(mut flooder) = flooder {
                ensure!(
                    flooder.is_running(),
                    "trafgen stopped flooding early: {}",
                    flooder.stderr()
                );
                flooder.stop();
            }
            let secs = start.elapsed().as_secs_f64();
            let sent = counter(lab, "c", "tx_packets")?.saturating_sub(tx);
            let after = applied.paths()?.unwrap_or_default();
            ensure!(
                kind == FloodKind::Quiet || sent > 0,
                "the flooder sent nothing"
            );
            phases.push(FloodPhase {
                kind,
                rtt_ns: polled.rtt_ns,
                errors: polled.errors,
                error: polled.error,
                sent,
                secs,
                denial_stored: path_delta(&before, &after, "denial_stored"),
                denial_cached: path_delta(&before, &after, "denial_cached"),
            });
        }
    }
    applied.verify()?;
    Ok(Flood { filter, phases })
}

fn ping(lab: &Lab, tools: &Tools, count: u32, interval_us: u64) -> Result<PingResult> {
    let to = format!("{IP_B}:502");
    let count_arg = count.to_string();
    let interval = interval_us.to_string();
    let timeout = Duration::from_secs(30) + Duration::from_micros(interval_us * count as u64 * 2);
    let out = lab.exec_timeout(
        "a",
        &[
            tools.xtask.to_string_lossy().as_ref(),
            "bench-peer",
            "ping",
            "--to",
            &to,
            "--count",
            &count_arg,
            "--interval-us",
            &interval,
        ],
        timeout,
    )?;
    ensure!(out.success(), "bench-peer ping failed: {}", out.stderr);
    serde_json::from_str(out.stdout.trim()).context("bench-peer ping printed no result")
}

/// Controller memory with the example policy and the large one, and a swap to the large one
/// while a paced Modbus ping-pong runs through the bridge.
fn swap(lab: &Lab, tools: &Tools, files: &Files, opts: &Options) -> Result<(Swap, Vec<Memory>)> {
    println!(
        "bench: controller memory and a swap to {} conduits under traffic",
        opts.swap_conduits
    );
    cmd::run(
        Command::new(tools.otfw)
            .arg("bench-datapath")
            .arg("--write-policy")
            .arg(&files.large)
            .args(["--conduits", &opts.swap_conduits.to_string()])
            .args(["--iface", PORT_A, "--iface", PORT_B]),
    )?;
    let policy = tools.work.join("swap.yaml");
    fs::copy(&files.example, &policy)?;
    let mut otfw = start_otfw(lab, tools.otfw, &policy, Filter::OtfwNative)?;
    let pid = otfw.pid();
    thread::sleep(Duration::from_millis(300));
    let mut memory = vec![memory_of(pid, "example.yaml")?];

    fs::copy(&files.policy, &policy)?;
    reload(&mut otfw)?;
    let interval_us = 500;
    let count = if opts.swap_conduits >= 10_000 {
        6000
    } else {
        1000
    };
    let stream = {
        let xtask = tools.xtask.to_string_lossy().into_owned();
        let args = [
            xtask,
            "bench-peer".into(),
            "ping".into(),
            "--to".into(),
            format!("{IP_B}:502"),
            "--count".into(),
            count.to_string(),
            "--interval-us".into(),
            interval_us.to_string(),
        ];
        lab.spawn("a", &args)?
    };
    thread::sleep(Duration::from_millis(500));
    fs::copy(&files.large, &policy)?;
    let reload_ms = reload(&mut otfw)?;
    let out = stream.wait(Duration::from_secs(120))?;
    let stream: PingResult =
        serde_json::from_str(out.stdout.trim()).context("the ping-pong stream printed nothing")?;
    thread::sleep(Duration::from_millis(300));
    memory.push(memory_of(pid, &format!("{} conduits", opts.swap_conduits))?);
    drop(otfw);
    Ok((
        Swap {
            conduits: opts.swap_conduits,
            reload_ms,
            stream,
            interval_us,
        },
        memory,
    ))
}

/// Sends SIGHUP and waits for the new generation; returns the time it took in milliseconds.
fn reload(otfw: &mut LabProcess) -> Result<f64> {
    let start = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; the pid is our running child.
    if unsafe { libc::kill(otfw.pid() as libc::pid_t, libc::SIGHUP) } != 0 {
        bail!("SIGHUP to otfw: {}", std::io::Error::last_os_error());
    }
    let line = otfw.wait_for_line(
        |l| l.contains("\"event\":\"policy_loaded\"") || l.contains("policy_rejected"),
        START,
    )?;
    ensure!(
        line.contains("policy_loaded"),
        "otfw refused the policy: {line}"
    );
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Resident memory and BPF map memory (`memlock` of its map fds) of a process.
fn memory_of(pid: u32, policy: &str) -> Result<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let mut map_bytes = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let info = fs::read_to_string(entry?.path()).unwrap_or_default();
        if info.contains("map_type:") {
            map_bytes += info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(Memory {
        policy: policy.to_string(),
        rss_kib,
        map_bytes,
    })
}

#[derive(Clone, Copy)]
struct CpuTimes {
    busy: u64,
    softirq: u64,
    kernel: u64,
    total: u64,
}

impl CpuTimes {
    fn since(&self, earlier: &CpuTimes) -> Cpu {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        Cpu {
            busy_pct: self.busy.saturating_sub(earlier.busy) as f64 / total * 100.0,
            softirq_pct: self.softirq.saturating_sub(earlier.softirq) as f64 / total * 100.0,
            kernel_pct: self.kernel.saturating_sub(earlier.kernel) as f64 / total * 100.0,
        }
    }
}

/// The machine-wide line of /proc/stat: user nice system idle iowait irq softirq steal.
fn cpu_times() -> Result<CpuTimes> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    ensure!(v.len() == 8, "unexpected /proc/stat: {line}");
    let total: u64 = v.iter().sum();
    Ok(CpuTimes {
        busy: total - v[3] - v[4],
        softirq: v[6],
        kernel: v[2] + v[5] + v[6],
        total,
    })
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).is_file())
}
