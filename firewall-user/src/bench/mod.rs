//! The datapath half of `cargo xtask bench`: per-packet cost of the real XDP program through
//! `BPF_PROG_TEST_RUN`, next to a trivial program measured in the same run, for policies of
//! growing size; and the control plane (compile and swap time, map memory). Run by the hidden
//! `otfw bench-datapath` subcommand, which prints the raw samples as JSON for xtask to report.
//!
//! Noise on a shared machine is handled by pairing: every measurement of `otfw` is taken right
//! after one of the baseline program on the same CPU, and the ratio of the pair is the sample.
//! Rounds interleave every policy size and case, so slow phases of the machine hit all alike.

mod forwarding;
pub mod frames;
pub mod policies;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use firewall_common::config::FLAG_TRACE;
use serde::Serialize;

use crate::{
    datapath::{Baseline, Datapath, TimedRun},
    policy::{check_str, compiled::CompiledPolicy},
};
use forwarding::ForwardingLab;
use frames::*;
use policies::Size;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// What to measure and how much.
#[derive(Clone, Debug)]
pub struct Options {
    /// Runs per `BPF_PROG_TEST_RUN` call.
    pub repeat: u32,
    pub rounds: usize,
    /// Policy sizes for the scaling measurement; the first is the reference.
    pub sizes: Vec<Size>,
    /// Conduits of the policy compiled and swapped in for the control-plane timing.
    pub control_conduits: usize,
    /// Compile-and-swap repetitions.
    pub control_rounds: usize,
    /// Policy files whose map memory to report (e.g. the example policy), by name.
    pub extra_policies: Vec<(String, String)>,
    /// Only the cases with these ids (all when empty): a profiler pointed at one path sees
    /// only it.
    pub only_cases: Vec<String>,
}

impl Options {
    pub fn full() -> Options {
        Options {
            repeat: 100_000,
            rounds: 15,
            sizes: vec![
                Size {
                    conduits: 1,
                    prefixes: 4,
                },
                Size {
                    conduits: 100,
                    prefixes: 100,
                },
                Size {
                    conduits: 10_000,
                    prefixes: 100,
                },
                Size {
                    conduits: 10_000,
                    prefixes: 10_000,
                },
            ],
            control_conduits: 10_000,
            control_rounds: 5,
            extra_policies: Vec::new(),
            only_cases: Vec::new(),
        }
    }

    /// Each measurement once, with small counts: a smoke test of the benchmark itself.
    pub fn quick() -> Options {
        Options {
            repeat: 1000,
            rounds: 1,
            sizes: vec![
                Size {
                    conduits: 1,
                    prefixes: 4,
                },
                Size {
                    conduits: 300,
                    prefixes: 300,
                },
            ],
            control_conduits: 300,
            control_rounds: 1,
            extra_policies: Vec::new(),
            only_cases: Vec::new(),
        }
    }
}

/// A frame kind the benchmark measures.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    pub id: &'static str,
    pub title: &'static str,
    /// Whether the datapath inspects this payload today; when false the frame is decided at L4
    /// only (a Modbus or EtherNet/IP conduit admits the flow like a plain TCP/UDP rule).
    pub inspected: bool,
    /// What it measures.
    pub note: &'static str,
    /// The expected XDP action.
    pub action: u32,
    /// Every run gets a tuple never seen before (a randomised flood): timed one run per
    /// syscall, the baseline too, instead of `repeat` runs of one frame.
    pub fresh_tuples: bool,
    /// Timed with the fast path on (`forwarding::ForwardingLab`): the frame's addresses are
    /// learnt on two ports of the mirror, and an allowed frame is redirected.
    #[serde(skip)]
    fast_path: bool,
    #[serde(skip)]
    setup: Vec<Vec<u8>>,
    #[serde(skip)]
    frame: Vec<u8>,
    pub frame_len: usize,
}

/// Whether the datapath enforces Modbus (resp. EtherNet/IP) payload rules: the cases are then
/// reported as inspected, and the benchmark policy uses `modbus` / `enip` rules (otherwise plain
/// TCP/UDP rules on the same ports, since a protocol rule without its inspector fails closed).
pub(crate) const MODBUS_INSPECTED: bool = true;
pub(crate) const ENIP_INSPECTED: bool = true;

/// An EtherNet/IP request on a TCP connection with a registered session.
fn enip_case(
    id: &'static str,
    title: &'static str,
    note: &'static str,
    sport: u16,
    request: &[u8],
) -> Case {
    let mut stream = Stream::new(sport, ENIP_PORT);
    let mut setup = stream.handshake();
    setup.push(stream.send(&enip_register_session(false)));
    setup.push(stream.reply(&enip_register_session(true)));
    case(
        id,
        title,
        ENIP_INSPECTED,
        note,
        XDP_PASS,
        setup,
        stream.peek(request),
    )
}

fn case(
    id: &'static str,
    title: &'static str,
    inspected: bool,
    note: &'static str,
    action: u32,
    setup: Vec<Vec<u8>>,
    frame: Vec<u8>,
) -> Case {
    Case {
        id,
        title,
        inspected,
        note,
        action,
        fresh_tuples: false,
        fast_path: false,
        setup,
        frame_len: frame.len(),
        frame,
    }
}

pub fn cases() -> Vec<Case> {
    let open = |sport, dport| vec![tcp(sport, dport, true, &[]), syn_ack(sport, dport)];
    vec![
        case(
            "non_ip",
            "non-IP frame (ARP, allowed by non_ip)",
            true,
            "Ethernet parse and the non_ip list",
            XDP_PASS,
            vec![],
            arp_request(),
        ),
        case(
            "l4_deny",
            "L4 denied, one tuple repeated (TCP SYN, no conduit)",
            true,
            "parse, decision cache hit (a bare SYN asks it before the flow table)",
            XDP_DROP,
            vec![],
            tcp(40100, DENIED_PORT, true, &[]),
        ),
        Case {
            fresh_tuples: true,
            ..case(
                "l4_deny_flood",
                "L4 denied, every frame a new tuple (randomised flood)",
                true,
                "parse, cache miss, flow misses (established, then unanswered), zone lookups \
                 (host hash or trie), four conduit-key lookups and the rule scan, the denial \
                 remembered",
                XDP_DROP,
                vec![],
                tcp(40100, DENIED_PORT, true, &[]),
            )
        },
        case(
            "tcp_tracked",
            "TCP allowed (tracked flow, 64-byte payload)",
            true,
            "parse, flow hit (no zone lookup)",
            XDP_PASS,
            open(40101, TCP_PORT),
            tcp(40101, TCP_PORT, false, &[0x55; 64]),
        ),
        case(
            "modbus_read",
            "Modbus read request (one ADU)",
            MODBUS_INSPECTED,
            "Read Holding Registers, unit 1, on a tracked flow: framing, unit, function, \
             quantity",
            XDP_PASS,
            open(40102, MODBUS_PORT),
            tcp(40102, MODBUS_PORT, false, &modbus_read(1, 0)),
        ),
        case(
            "modbus_pipelined",
            "Modbus, eight pipelined ADUs in one segment",
            MODBUS_INSPECTED,
            "eight Read Holding Registers requests back to back",
            XDP_PASS,
            open(40103, MODBUS_PORT),
            tcp(40103, MODBUS_PORT, false, &modbus_pipelined(8)),
        ),
        {
            let mut stream = Stream::new(40108, MODBUS_PORT);
            let mut setup = stream.handshake();
            setup.push(stream.send(&modbus_read(1, 0)));
            case(
                "modbus_response",
                "Modbus read response (one ADU)",
                MODBUS_INSPECTED,
                "the server's answer to the read case: framing, the transaction matched to \
                 its request, the inventory's identity check",
                XDP_PASS,
                setup,
                stream.peek_reply(&modbus_read_response(1)),
            )
        },
        enip_case(
            "enip_read_tag",
            "ENIP Read Tag (SendRRData)",
            "CIP Read Tag 0x4C with a symbolic path, in a registered session",
            40104,
            &enip_read_tag(),
        ),
        {
            let mut stream = Stream::new(40109, ENIP_PORT);
            let mut setup = stream.handshake();
            setup.push(stream.send(&enip_register_session(false)));
            setup.push(stream.reply(&enip_register_session(true)));
            setup.push(stream.send(&enip_read_tag()));
            case(
                "enip_response",
                "ENIP Read Tag response (SendRRData)",
                ENIP_INSPECTED,
                "the target's answer to the Read Tag case: framing, session, the reply \
                 matched, the inventory's identity check",
                XDP_PASS,
                setup,
                stream.peek_reply(&enip_read_tag_response()),
            )
        },
        enip_case(
            "enip_msp",
            "ENIP Multiple Service Packet, ten requests",
            "CIP 0x0A carrying ten Read Tag requests, each checked",
            40105,
            &enip_multiple_service(10),
        ),
        {
            // Class 1 I/O is admitted only on a connection a Forward_Open opened.
            let mut stream = Stream::new(40106, ENIP_PORT);
            let mut setup = stream.handshake();
            setup.push(stream.send(&enip_register_session(false)));
            setup.push(stream.reply(&enip_register_session(true)));
            setup.push(stream.send(&enip_forward_open()));
            setup.push(stream.reply(&enip_forward_open_reply()));
            case(
                "enip_io",
                "UDP 2222 implicit I/O",
                ENIP_INSPECTED,
                "class 1 I/O datagram on a connection opened by an allowed Forward_Open",
                XDP_PASS,
                setup,
                udp(ENIP_IO_PORT, ENIP_IO_PORT, &enip_io()),
            )
        },
        Case {
            fast_path: true,
            ..case(
                "modbus_fast_path",
                "Modbus read request, forwarded by the fast path",
                MODBUS_INSPECTED,
                "the Modbus read case, then the forwarder: a tail call, the mirror's validity \
                 and the clock, the pair of addresses answered from this CPU's memo (the \
                 timing loop repeats one frame; the first looked them up in the FDB mirror), \
                 the redirect through the devmap",
                XDP_REDIRECT,
                open(40107, MODBUS_PORT),
                tcp(40107, MODBUS_PORT, false, &modbus_read(1, 0)),
            )
        },
    ]
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub repeat: u32,
    pub rounds: usize,
    pub cpus: usize,
    pub kernel: String,
    pub verified_instructions: Option<u32>,
    pub cases: Vec<Case>,
    pub sizes: Vec<SizeInfo>,
    /// Every pair measured, in measurement order.
    pub samples: Vec<Sample>,
    pub control: Control,
}

#[derive(Debug, Serialize)]
pub struct SizeInfo {
    pub conduits: usize,
    pub prefixes: usize,
    /// Map memory (kernel `memlock`) of this datapath with the policy installed.
    pub map_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Sample {
    pub round: usize,
    pub size: usize,
    pub case: usize,
    pub otfw_ns: f64,
    pub baseline_ns: f64,
}

#[derive(Debug, Serialize)]
pub struct Control {
    pub conduits: usize,
    pub prefixes: usize,
    pub yaml_bytes: usize,
    /// `check_str`: parse, validate, lint and compile, per repetition.
    pub compile_ms: Vec<f64>,
    /// `Datapath::install` into a datapath that holds a policy already (a swap), per repetition.
    pub swap_ms: Vec<f64>,
    /// The compile pipeline step by step (one repetition each): where its time goes.
    pub phases_ms: Vec<(String, f64)>,
    /// Map memory by policy, each installed alone into a fresh datapath.
    pub map_bytes: Vec<(String, u64)>,
}

/// Runs the whole datapath benchmark.
pub fn run(opts: &Options) -> Result<Report> {
    ensure!(!opts.sizes.is_empty(), "no policy sizes to measure");
    let all = cases();
    for id in &opts.only_cases {
        ensure!(
            all.iter().any(|c| c.id == id),
            "no benchmark case {id}; the cases are {}",
            all.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
        );
    }
    let cases: Vec<Case> = all
        .iter()
        .filter(|c| opts.only_cases.is_empty() || opts.only_cases.iter().any(|id| id == c.id))
        .cloned()
        .collect();
    let baseline = Baseline::load()?;
    let mut policies = Vec::new();
    let mut sizes = Vec::new();
    for size in &opts.sizes {
        let (compiled, _) = compile(*size)?;
        // The map memory of each size, on an object of its own (dropped at once).
        let (_, map_bytes) = load_with(&compiled)?;
        policies.push(compiled);
        sizes.push(SizeInfo {
            conduits: size.conduits,
            prefixes: size.actual_prefixes(),
            map_bytes,
        });
    }
    // Every size is timed on one object, its policy swapped in before each size's turn:
    // objects loaded side by side differ among themselves by a few percent (where their maps
    // and programs land, fixed for as long as they are loaded), which timed one object per size
    // read as a cost of the policy's size.
    let mut lab = if cases.iter().any(|c| c.fast_path) {
        Some(ForwardingLab::new(1)?)
    } else {
        None
    };
    let (mut datapath, _) = load_with(&policies[0])?;
    prepare(&mut datapath, &policies[0], &cases, lab.as_mut())
        .with_context(|| format!("preparing the {} conduit policy", sizes[0].conduits))?;
    // The yardstick frame: a TCP segment, so the baseline runs its whole parse.
    let yardstick = &all
        .iter()
        .find(|c| c.id == "modbus_read")
        .expect("the Modbus case exists")
        .frame;
    let check = baseline.time_frame(yardstick, 1)?;
    ensure!(
        check.action == XDP_PASS,
        "the baseline program did not pass"
    );

    let mut samples = Vec::new();
    let mut flood = 0u32;
    let mut installed = 0;
    for round in 0..opts.rounds {
        for (s, policy) in policies.iter().enumerate() {
            if s != installed {
                datapath
                    .install(policy)
                    .context("installing a benchmark policy")?;
                installed = s;
                // Each flow re-decided once under the policy now in force, before the timing.
                check_cases(&mut datapath, policy, &cases, lab.as_mut()).with_context(|| {
                    format!("swapping in the {} conduit policy", sizes[s].conduits)
                })?;
            }
            let datapath = &mut datapath;
            for (c, case) in cases.iter().enumerate() {
                let (base, run) =
                    ForwardingLab::run(lab.as_mut(), case.fast_path, datapath, 0, |datapath| {
                        if case.fresh_tuples {
                            time_fresh(&baseline, datapath, yardstick, opts.repeat, &mut flood)
                        } else {
                            Ok((
                                baseline.time_frame(yardstick, opts.repeat)?,
                                datapath.time_frame(&case.frame, opts.repeat)?,
                            ))
                        }
                    })?;
                if run.action != case.action {
                    bail!(
                        "case {} returned XDP action {} instead of {} with the {} conduit \
                         policy: the frame no longer takes the path it is meant to measure",
                        case.id,
                        run.action,
                        case.action,
                        sizes[s].conduits
                    );
                }
                samples.push(Sample {
                    round,
                    size: s,
                    case: c,
                    otfw_ns: run.nanos(),
                    baseline_ns: base.nanos(),
                });
            }
        }
    }
    let verified_instructions = datapath.verified_instructions();
    drop(datapath);
    let control = control(opts)?;
    Ok(Report {
        repeat: opts.repeat,
        rounds: opts.rounds,
        // Not available_parallelism: the measuring thread is pinned to one CPU by now.
        cpus: aya::util::nr_cpus().unwrap_or(1),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        verified_instructions,
        cases,
        sizes,
        samples,
        control,
    })
}

/// Frames of a flood from the client's zone, each with a tuple not seen before (`next` counts
/// them across calls): a source address of the zone's network and a source port.
const FLOOD_FRAMES: u32 = 2000;

/// Times `min(repeat, FLOOD_FRAMES)` flood frames one run each, and the baseline's yardstick
/// one run each in between (the same per-syscall overhead on both sides); returns the average
/// per run of each.
fn time_fresh(
    baseline: &Baseline,
    datapath: &Datapath,
    yardstick: &[u8],
    repeat: u32,
    next: &mut u32,
) -> Result<(TimedRun, TimedRun)> {
    let n = repeat.clamp(1, FLOOD_FRAMES);
    let (mut base_total, mut run_total) = (Duration::ZERO, Duration::ZERO);
    let mut action = XDP_DROP;
    for _ in 0..n {
        let frame = frames::flood(*next, DENIED_PORT);
        *next = next.wrapping_add(1);
        base_total += baseline.time_frame(yardstick, 1)?.per_run;
        let run = datapath.time_frame(&frame, 1)?;
        run_total += run.per_run;
        if run.action != XDP_DROP {
            action = run.action;
        }
    }
    Ok((
        TimedRun {
            action: XDP_PASS,
            per_run: base_total / n,
        },
        TimedRun {
            action,
            per_run: run_total / n,
        },
    ))
}

fn compile(size: Size) -> Result<(CompiledPolicy, usize)> {
    let text = policies::yaml(size, &["bench-a", "bench-b"]);
    Ok((compile_text("bench.yaml", &text)?, text.len()))
}

fn compile_text(name: &str, text: &str) -> Result<CompiledPolicy> {
    match check_str(name, text) {
        (Some(loaded), _) => Ok(loaded.compiled),
        (None, diagnostics) => {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            bail!("policy {name} does not load:\n{}", lines.join("\n"))
        }
    }
}

/// Loads a fresh datapath, installs `policy`, and returns it with its map memory.
fn load_with(policy: &CompiledPolicy) -> Result<(Datapath, u64)> {
    let before = map_fds();
    let mut datapath = Datapath::load()?;
    datapath
        .install(policy)
        .context("installing a benchmark policy")?;
    let own: Vec<i32> = map_fds().difference(&before).copied().collect();
    Ok((datapath, memlock(&own)))
}

/// Opens the flows of every case and checks that each frame gets the decision and conduit it
/// is meant to measure (`check_cases`).
fn prepare(
    datapath: &mut Datapath,
    policy: &CompiledPolicy,
    cases: &[Case],
    lab: Option<&mut ForwardingLab>,
) -> Result<()> {
    datapath.enable_trace()?;
    for case in cases {
        for frame in &case.setup {
            let decision = datapath.run_frame(frame)?;
            ensure!(
                decision.passed(),
                "opening the flow of case {} was refused ({:?})",
                case.id,
                decision.reason
            );
        }
    }
    check_cases(datapath, policy, cases, lab)
}

/// Checks that each case's frame gets the decision and conduit it is meant to measure under
/// `policy` (the datapath's); then switches tracing off, since it is not part of the real path.
fn check_cases(
    datapath: &mut Datapath,
    policy: &CompiledPolicy,
    cases: &[Case],
    mut lab: Option<&mut ForwardingLab>,
) -> Result<()> {
    datapath.enable_trace()?;
    let bench = policy
        .names
        .conduits
        .iter()
        .position(|n| n == policies::BENCH_CONDUIT)
        .context("the benchmark conduit is missing")? as u16;
    for case in cases {
        let decision = ForwardingLab::run(lab.as_deref_mut(), case.fast_path, datapath, 0, |dp| {
            dp.run_frame(&case.frame)
        })?;
        ensure!(
            decision.action == case.action,
            "case {}: action {} ({:?}), expected {}",
            case.id,
            decision.action,
            decision.reason,
            case.action
        );
        let tracked = !case.setup.is_empty();
        ensure!(
            !tracked || decision.conduit_id == bench,
            "case {}: decided by conduit {} instead of the benchmark conduit",
            case.id,
            decision.conduit_id
        );
    }
    datapath.set_config_flags(0, FLAG_TRACE)
}

fn control(opts: &Options) -> Result<Control> {
    let size = Size {
        conduits: opts.control_conduits,
        prefixes: opts.control_conduits,
    };
    let text = policies::yaml(size, &["bench-a", "bench-b"]);
    let small = compile(Size {
        conduits: 1,
        prefixes: 4,
    })?
    .0;
    let mut compile_ms = Vec::new();
    let mut swap_ms = Vec::new();
    let mut datapath = Datapath::load()?;
    for _ in 0..opts.control_rounds.max(1) {
        let start = Instant::now();
        let compiled = compile_text("bench.yaml", &text)?;
        compile_ms.push(millis(start.elapsed()));
        // Swap from a small policy to the large one: the large one's slot still holds the
        // large policy of two swaps ago, which the install purges first, as in operation.
        datapath.install(&small)?;
        let start = Instant::now();
        datapath.install(&compiled)?;
        swap_ms.push(millis(start.elapsed()));
    }
    drop(datapath);
    let phases_ms = phases(&text)?;
    let mut map_bytes = Vec::new();
    for (name, text) in &opts.extra_policies {
        let (_, bytes) = load_with(&compile_text(name, text)?)?;
        map_bytes.push((name.clone(), bytes));
    }
    let (_, bytes) = load_with(&compile_text("bench.yaml", &text)?)?;
    map_bytes.push((format!("{} conduits", size.conduits), bytes));
    Ok(Control {
        conduits: size.conduits,
        prefixes: size.actual_prefixes(),
        yaml_bytes: text.len(),
        compile_ms,
        swap_ms,
        phases_ms,
        map_bytes,
    })
}

/// The steps of `check_str`, timed one by one.
fn phases(text: &str) -> Result<Vec<(String, f64)>> {
    use crate::policy::{compile, lint, model, source, validate};
    let mut out = Vec::new();
    let mut step =
        |name: &str, start: Instant| out.push((name.to_string(), millis(start.elapsed())));
    let start = Instant::now();
    let (map, _) = source::SourceMap::parse(text)
        .map_err(|e| anyhow::anyhow!("benchmark policy: {}", e.message))?;
    step("index positions (YAML events)", start);
    let mut diagnostics = source::Diagnostics::new("bench.yaml", &map);
    let start = Instant::now();
    let document = model::read(text, &mut diagnostics).context("reading the policy")?;
    step("read (serde_yaml)", start);
    let start = Instant::now();
    let policy = validate::validate(&document, &mut diagnostics).context("validating")?;
    step("validate", start);
    let start = Instant::now();
    lint::lint(&policy, &mut diagnostics);
    step("lint", start);
    let start = Instant::now();
    compile::compile(&policy).map_err(|_| anyhow::anyhow!("compiling the benchmark policy"))?;
    step("compile", start);
    Ok(out)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// File descriptors of this process that are BPF maps.
fn map_fds() -> BTreeSet<i32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| {
            std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .is_ok_and(|info| info.contains("map_type:"))
        })
        .collect()
}

/// The kernel's memory accounting (`memlock`) summed over map fds.
fn memlock(fds: &[i32]) -> u64 {
    fds.iter()
        .filter_map(|fd| std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}
