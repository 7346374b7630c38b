//! The Markdown report and the summary table: every number with its spread, every target with
//! met / missed and by how much, and what is not measured yet.

use std::fmt::Write as _;

use super::bridge::{Bridge, Filter, FloodKind, FloodPhase, Latency, Trial};
use super::datapath::Datapath;
use super::stats::{percentile, Summary};

/// Per-packet cost targets (ratio to the baseline program).
/// Per-packet targets, as ratios to the trivial program in the same run (the line-rate work's
/// targets).
const CASE_TARGETS: &[(&str, f64)] = &[
    ("tcp_tracked", 2.0),
    ("modbus_read", TARGET_MODBUS),
    ("modbus_pipelined", 10.0),
    ("enip_read_tag", 6.0),
    ("enip_msp", 20.0),
    ("enip_io", 3.0),
    ("l4_deny", 2.0),
    ("l4_deny_flood", 6.0),
];
/// Cases reported without a target of their own (the answers to the inspected requests: a
/// polling exchange is a request and its response).
const REPORTED_CASES: &[&str] = &["modbus_response", "enip_response"];
const TARGET_MODBUS: f64 = 4.0;
/// Largest policy vs the smallest: cost within this fraction.
const TARGET_FLAT: f64 = 0.10;
const TARGET_BRIDGE: f64 = 0.95;
/// The fast path against no filter: skipping the bridge must more than pay for the program.
const TARGET_FAST: f64 = 1.3;
const MOONSHOT_FAST: f64 = 1.5;
/// The fast path against the nftables bridge ruleset doing the same checks.
const TARGET_FAST_NFT: f64 = 1.0;
const TARGET_SWAP_MS: f64 = 1000.0;

pub struct Environment {
    pub quick: bool,
    pub profile: &'static str,
    pub load_before: f64,
    pub load_after: f64,
    pub cpus: usize,
    pub kernel: String,
    pub bridge_rounds: usize,
    pub bridge_packets: u64,
}

/// One line of the summary: what, the result, the target and whether it is met.
struct Verdict {
    what: String,
    result: String,
    target: String,
    status: String,
}

pub struct Report<'a> {
    env: &'a Environment,
    dp: &'a Datapath,
    br: &'a Bridge,
    verdicts: Vec<Verdict>,
}

fn met(ok: bool, missed_by: impl FnOnce() -> String) -> String {
    if ok {
        "met".into()
    } else {
        format!("**missed** {}", missed_by())
    }
}

fn x(v: f64) -> String {
    format!("{v:.2}x")
}

/// Median and interquartile range of ratios, as `1.23x (1.20-1.25)`.
fn ratio_iqr(s: &Summary) -> String {
    format!("{:.2}x ({:.2}-{:.2})", s.median, s.p25, s.p75)
}

impl<'a> Report<'a> {
    pub fn new(env: &'a Environment, dp: &'a Datapath, br: &'a Bridge) -> Report<'a> {
        let mut report = Report {
            env,
            dp,
            br,
            verdicts: Vec::new(),
        };
        report.verdicts = report.judge();
        report
    }

    fn pps(&self, filter: Filter) -> Summary {
        Summary::of(
            self.br
                .trials
                .iter()
                .filter(|t| t.filter == filter)
                .map(|t| t.pps()),
        )
    }

    /// Throughput of `filter` over its paired no-filter burst; over another filter, the ratio
    /// of the two filters' paired ratios within each round.
    fn pps_ratio(&self, filter: Filter, over: Filter) -> Summary {
        let paired = |f: Filter, round: usize| {
            self.br
                .trials
                .iter()
                .find(|t| t.filter == f && t.round == round)
                .and_then(|t| Some(t.pps() / t.reference_pps?.max(1.0)))
        };
        if filter == Filter::None {
            return Summary::of([1.0]);
        }
        Summary::of((0..self.env.bridge_rounds).filter_map(|round| {
            let own = paired(filter, round)?;
            if over == Filter::None {
                return Some(own);
            }
            Some(own / paired(over, round)?)
        }))
    }

    /// The XDP program's own run time per frame on the bridge (kernel run-time statistics).
    fn program_ns(&self, filter: Filter) -> Summary {
        Summary::of(
            self.br
                .trials
                .iter()
                .filter(|t| t.filter == filter)
                .filter_map(|t| t.program_ns),
        )
    }

    /// Kernel CPU time (all CPUs) per frame delivered in a burst, in nanoseconds.
    fn kernel_ns(&self, t: &Trial) -> f64 {
        t.cpu.kernel_pct / 100.0 * self.env.cpus as f64 * t.secs * 1e9 / t.received.max(1) as f64
    }

    /// Kernel CPU per frame of `filter` over that of the no-filter burst just before it.
    fn kernel_ratio(&self, filter: Filter) -> Summary {
        if filter == Filter::None {
            return Summary::of([1.0]);
        }
        let trials = &self.br.trials;
        Summary::of(trials.iter().enumerate().filter_map(|(i, t)| {
            if t.filter != filter || i == 0 {
                return None;
            }
            let reference = &trials[i - 1];
            (reference.filter == Filter::None)
                .then(|| self.kernel_ns(t) / self.kernel_ns(reference).max(1.0))
        }))
    }

    fn largest(&self) -> usize {
        self.dp.raw.sizes.len() - 1
    }

    fn judge(&self) -> Vec<Verdict> {
        let mut v = Vec::new();
        let dp = self.dp;
        for &(id, target) in CASE_TARGETS {
            let (Some(cell), Some(case)) = (dp.cell(0, id), dp.case(id)) else {
                continue;
            };
            let r = cell.ratio.median;
            v.push(Verdict {
                what: case.title.clone(),
                result: format!(
                    "{} ({:.0} ns vs {:.0} ns)",
                    x(r),
                    cell.otfw_ns.median,
                    cell.baseline_ns.median
                ),
                target: format!("<= {}", x(target)),
                status: met(r <= target, || {
                    format!(
                        "by {:.2}x ({:.0}% over)",
                        r - target,
                        (r / target - 1.0) * 100.0
                    )
                }),
            });
        }
        for &id in REPORTED_CASES {
            let (Some(cell), Some(case)) = (dp.cell(0, id), dp.case(id)) else {
                continue;
            };
            v.push(Verdict {
                what: case.title.clone(),
                result: format!(
                    "{} ({:.0} ns vs {:.0} ns)",
                    x(cell.ratio.median),
                    cell.otfw_ns.median,
                    cell.baseline_ns.median
                ),
                target: "reported".into(),
                status: "-".into(),
            });
        }
        let last = self.largest();
        if last > 0 {
            let size = &dp.raw.sizes[last];
            let (worst_case, worst) = dp.cells[last]
                .iter()
                .enumerate()
                .map(|(c, cell)| (c, cell.scaling.median))
                .max_by(|a, b| (a.1 - 1.0).abs().total_cmp(&(b.1 - 1.0).abs()))
                .unwrap_or((0, 1.0));
            let dev = worst - 1.0;
            v.push(Verdict {
                what: format!(
                    "Flat from 1 to {} conduits / {} prefixes",
                    size.conduits, size.prefixes
                ),
                result: format!(
                    "worst case {:+.1}% ({})",
                    dev * 100.0,
                    dp.raw.cases[worst_case].id
                ),
                target: format!("within {:.0}%", TARGET_FLAT * 100.0),
                status: met(dev.abs() <= TARGET_FLAT, || {
                    format!("by {:.1} points", (dev.abs() - TARGET_FLAT) * 100.0)
                }),
            });
        }
        for fast in Filter::FAST {
            let ratio = self.pps_ratio(fast, Filter::None);
            if ratio.n == 0 {
                continue;
            }
            let moonshot = if ratio.median >= MOONSHOT_FAST {
                "; moonshot met"
            } else {
                ""
            };
            v.push(Verdict {
                what: format!("Bridge throughput, {} vs no filter", fast.label()),
                result: ratio_iqr(&ratio),
                target: format!(">= {} (moonshot {})", x(TARGET_FAST), x(MOONSHOT_FAST)),
                status: met(ratio.median >= TARGET_FAST, || {
                    format!("by {:.2}x", TARGET_FAST - ratio.median)
                }) + moonshot,
            });
            let ahead = self.pps_ratio(fast, Filter::Nft);
            v.push(Verdict {
                what: format!("{} vs {}", fast.label(), Filter::Nft.label()),
                result: ratio_iqr(&ahead),
                target: format!(">= {}", x(TARGET_FAST_NFT)),
                status: met(ahead.median >= TARGET_FAST_NFT, || {
                    format!("by {:.0}%", (TARGET_FAST_NFT - ahead.median) * 100.0)
                }),
            });
        }
        let native = self.pps_ratio(Filter::OtfwNative, Filter::None);
        v.push(Verdict {
            what: "Bridge throughput, otfw native through the bridge vs no filter".into(),
            result: ratio_iqr(&native),
            target: format!(">= {}", x(TARGET_BRIDGE)),
            status: met(native.median >= TARGET_BRIDGE, || {
                format!("by {:.2}x", TARGET_BRIDGE - native.median)
            }),
        });
        let programs: Vec<String> = Filter::ALL
            .iter()
            .filter(|f| f.otfw_mode().is_some())
            .map(|&f| {
                let ns = self.program_ns(f);
                format!("{} {:.0} ns", f.label(), ns.median)
            })
            .collect();
        v.push(Verdict {
            what: "XDP program time per frame on the bridge (with inspector and forwarder)".into(),
            result: programs.join("; "),
            target: "reported".into(),
            status: "-".into(),
        });
        let own = self.pps_ratio(Filter::OtfwNative, Filter::Trivial);
        let trivial = self.pps_ratio(Filter::Trivial, Filter::None);
        v.push(Verdict {
            what: "  of which native XDP itself (trivial program) / otfw's program".into(),
            result: format!("{} / {}", ratio_iqr(&trivial), ratio_iqr(&own)),
            target: "reported".into(),
            status: "-".into(),
        });
        for other in [Filter::Nft, Filter::Iptables] {
            let ahead = self.pps_ratio(Filter::OtfwNative, other);
            v.push(Verdict {
                what: format!("otfw native vs {}", other.label()),
                result: ratio_iqr(&ahead),
                target: "> 1.00x".into(),
                status: met(ahead.median > 1.0, || {
                    format!("by {:.0}%", (1.0 - ahead.median) * 100.0)
                }),
            });
        }
        let control = &dp.raw.control;
        let compile = Summary::of(control.compile_ms.iter().copied());
        let swap = Summary::of(control.swap_ms.iter().copied());
        let total = compile.median + swap.median;
        v.push(Verdict {
            what: format!("Compile + swap, {} conduits", control.conduits),
            result: format!(
                "{:.0} ms ({:.0} compile + {:.0} swap); reload via SIGHUP {:.0} ms",
                total, compile.median, swap.median, self.br.swap.reload_ms
            ),
            target: format!("< {TARGET_SWAP_MS:.0} ms"),
            status: met(total < TARGET_SWAP_MS, || {
                format!("by {:.0} ms", total - TARGET_SWAP_MS)
            }),
        });
        let stream = &self.br.swap.stream;
        let max_ms = stream.rtt_ns.iter().copied().max().unwrap_or(0) as f64 / 1e6;
        let ok = stream.errors == 0 && max_ms < 200.0;
        v.push(Verdict {
            what: format!(
                "Traffic during the swap to {} conduits",
                self.br.swap.conduits
            ),
            result: format!(
                "{} exchanges, {} failed, slowest {:.1} ms",
                stream.rtt_ns.len(),
                stream.errors,
                max_ms
            ),
            target: "no failure, no retransmission (< 200 ms)".into(),
            status: met(ok, || "traffic was interrupted".into()),
        });
        if let (Some(none), Some(otfw)) =
            (self.latency(Filter::None), self.latency(Filter::OtfwNative))
        {
            let p50 = added(otfw, none, 50.0);
            let median = |l: &Latency| {
                let mut v: Vec<f64> = l.rtt_ns.iter().map(|&n| n as f64 / 1e3).collect();
                v.sort_by(f64::total_cmp);
                percentile(&v, 50.0)
            };
            v.push(Verdict {
                what: "Added latency, otfw native through the bridge (round trip, median)".into(),
                result: format!(
                    "{p50:+.1} us ({:.1} vs {:.1} us; tails in section 5)",
                    median(otfw),
                    median(none)
                ),
                target: "reported".into(),
                status: "-".into(),
            });
        }
        if let Some(quiet) = self.flood(FloodKind::Quiet) {
            for kind in [FloodKind::NewTuples, FloodKind::OneTuple] {
                let Some(flood) = self.flood(kind) else {
                    continue;
                };
                v.push(Verdict {
                    what: format!(
                        "Modbus polling through {}, {}",
                        self.br.flood.filter.label(),
                        kind.label()
                    ),
                    result: format!(
                        "{} of {} failed; p50 {:.0} us, p99 {:.0} us (no flood: {:.0} / {:.0} \
                         us); flood {:.0} kframes/s",
                        flood.errors,
                        flood.exchanges,
                        flood.p(50.0),
                        flood.p(99.0),
                        quiet.p(50.0),
                        quiet.p(99.0),
                        flood.flood_pps / 1e3
                    ),
                    target: "no failure".into(),
                    status: met(flood.errors == 0, || {
                        "polling failed under the flood".into()
                    }),
                });
            }
        }
        v
    }

    /// The flood measurement's phases of one kind, pooled over its rounds.
    fn flood(&self, kind: FloodKind) -> Option<FloodPool> {
        let phases: Vec<&FloodPhase> = self
            .br
            .flood
            .phases
            .iter()
            .filter(|p| p.kind == kind)
            .collect();
        if phases.is_empty() {
            return None;
        }
        let mut rtt_us: Vec<f64> = phases
            .iter()
            .flat_map(|p| p.rtt_ns.iter().map(|&n| n as f64 / 1e3))
            .collect();
        rtt_us.sort_by(f64::total_cmp);
        let sent: u64 = phases.iter().map(|p| p.sent).sum();
        let secs: f64 = phases.iter().map(|p| p.secs).sum();
        Some(FloodPool {
            exchanges: rtt_us.len() as u64 + phases.iter().map(|p| p.errors as u64).sum::<u64>(),
            errors: phases.iter().map(|p| p.errors as u64).sum(),
            error: phases.iter().find_map(|p| p.error.clone()),
            rtt_us,
            flood_pps: sent as f64 / secs.max(1e-9),
            sent,
            denial_stored: phases.iter().map(|p| p.denial_stored).sum(),
            denial_cached: phases.iter().map(|p| p.denial_cached).sum(),
        })
    }

    fn latency(&self, filter: Filter) -> Option<&Latency> {
        self.br
            .latency
            .iter()
            .find(|l| l.filter == filter && !l.rtt_ns.is_empty())
    }

    /// The summary table, for stdout and the top of the report.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str("| measurement | result | target | status |\n|---|---|---|---|\n");
        for v in &self.verdicts {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                v.what, v.result, v.target, v.status
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let env = self.env;
        let raw = &self.dp.raw;
        md.push_str("# otfw benchmark\n\n");
        if env.quick {
            md.push_str(
                "> **Smoke run (`--quick`)**: every measurement once with small counts and a debug \
                 build. The numbers check that the benchmark works; they are not results.\n\n",
            );
        }
        let _ = writeln!(
            md,
            "Kernel {}, {} CPUs, `otfw` {} build. Load average (1 min) {:.2} before and {:.2} \
             after the run: this machine is shared, so every number below is a ratio to a \
             reference measured alternately with it in the same run, with the median and the \
             interquartile range (25th-75th percentile) over repetitions.\n",
            env.kernel, env.cpus, env.profile, env.load_before, env.load_after
        );
        md.push_str("## Summary\n\n");
        md.push_str(&self.summary());
        md.push('\n');
        md.push_str(&not_inspected(self.dp));
        self.section_datapath(&mut md);
        self.section_scaling(&mut md);
        self.section_bridge(&mut md);
        self.section_control(&mut md);
        self.section_latency(&mut md);
        self.section_flood(&mut md);
        md.push_str(&gap_notes(self));
        let _ = writeln!(
            md,
            "\n## Method\n\n- Per-packet cost: `BPF_PROG_TEST_RUN` with `repeat` = {} (the kernel's \
             average per run, whole nanoseconds), {} rounds; each measurement of otfw directly \
             follows one of the baseline program on the same CPU, and the ratio of that pair is \
             the sample. The baseline (`firewall-ebpf/src/baseline.rs`) parses Ethernet, IPv4 \
             and TCP and bumps one per-CPU counter; it is timed on the Modbus request frame. \
             Tracing is off. Tracked-flow cases open their flow first (SYN, or the first \
             datagram) and every case's decision is checked before it is timed.\n- Policy sizes \
             are measured on one loaded program, each size's policy swapped in before its turn \
             in every round (and every case's decision checked again, which re-decides its flow \
             under the new policy once): programs loaded side by side differ among themselves \
             by a few percent (where their maps and code land), which would read as a cost of \
             the policy's size. The flood case's frames all go into that program's decision \
             cache, which a long flood keeps full, as a real one would. The frames' conduit \
             sits in the middle of the conduit list; its key holds three port rules with the \
             plain TCP one last.\n- \
             Bridge: lab namespaces `bench-a` and `bench-b` on bridge `br-bench` (veth ports). \
             trafgen (one worker) sends {} Modbus read requests per burst as data segments of \
             one connection; a burst's rate is frames counted on `bench-b`'s eth0 over the \
             burst's duration. In each of {} rounds every filter's burst directly follows a burst \
             with no filter, and the ratio of that pair is the sample; filters are compared with \
             each other through their ratios within the same round. CPU is the \
             machine-wide /proc/stat busy share during the burst (other users' work included).\n\
             - iptables: `{}`; bridged IPv4 reaches it through br_netfilter, switched on for \
             `br-bench` only (`nf_call_iptables` on the bridge), so the global \
             `bridge-nf-call-iptables` sysctls stay as the lab harness leaves them (off).\n",
            raw.repeat, raw.rounds, env.bridge_packets, env.bridge_rounds, self.br.iptables_version
        );
        md
    }

    fn section_datapath(&self, md: &mut String) {
        let raw = &self.dp.raw;
        let _ = writeln!(
            md,
            "\n## 1. Per-packet cost (BPF_PROG_TEST_RUN)\n\nPolicy: the benchmark conduit alone \
             ({} conduit, {} zone prefixes). Verifier: {} instructions processed.\n\n![per-packet \
             cost](datapath.png)\n\n| case | exercises | inspected | frame | otfw ns | baseline \
             ns | ratio (IQR) | spread | n |\n|---|---|---|---|---|---|---|---|---|",
            raw.sizes[0].conduits,
            raw.sizes[0].prefixes,
            raw.verified_instructions
                .map_or("?".to_string(), |n| n.to_string())
        );
        for (c, case) in raw.cases.iter().enumerate() {
            let cell = &self.dp.cells[0][c];
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} B | {:.0} | {:.0} | {} | ±{:.1}% | {} |",
                case.title,
                case.note,
                if case.inspected {
                    "yes"
                } else {
                    "**not yet** (plain TCP/UDP rule)"
                },
                case.frame_len,
                cell.otfw_ns.median,
                cell.baseline_ns.median,
                ratio_iqr(&cell.ratio),
                cell.ratio.spread_pct(),
                cell.ratio.n
            );
        }
    }

    fn section_scaling(&self, md: &mut String) {
        let raw = &self.dp.raw;
        md.push_str(
            "\n## 2. Scaling with policy size\n\nRatio of each size's cost to the smallest \
             policy's, both normalised by the baseline measured next to them.\n\n\
             ![scaling](scaling.png)\n\n| case |",
        );
        for size in &raw.sizes {
            let _ = write!(md, " {} c / {} p |", size.conduits, size.prefixes);
        }
        md.push_str("\n|---|");
        for _ in &raw.sizes {
            md.push_str("---|");
        }
        md.push('\n');
        for (c, case) in raw.cases.iter().enumerate() {
            let _ = write!(md, "| {} |", case.id);
            for s in 0..raw.sizes.len() {
                let cell = &self.dp.cells[s][c];
                let _ = write!(
                    md,
                    " {:.0} ns, {} |",
                    cell.otfw_ns.median,
                    x(cell.scaling.median)
                );
            }
            md.push('\n');
        }
        md.push_str("| map memory |");
        for size in &raw.sizes {
            let _ = write!(md, " {} |", mib(size.map_bytes));
        }
        md.push('\n');
    }

    fn section_bridge(&self, md: &mut String) {
        md.push_str(
            "\n## 3. Through the bridge\n\n![throughput](bridge.png)\n\n| filter | frames/s \
             (median, IQR) | vs no filter | CPU busy | softirq | kernel CPU ns/frame | vs no \
             filter | XDP program ns/frame | redirected | reads passed | writes passed \
             |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for filter in Filter::ALL {
            let pps = self.pps(filter);
            let ratio = self.pps_ratio(filter, Filter::None);
            let trials: Vec<_> = self
                .br
                .trials
                .iter()
                .filter(|t| t.filter == filter)
                .collect();
            let busy = Summary::of(trials.iter().map(|t| t.cpu.busy_pct));
            let softirq = Summary::of(trials.iter().map(|t| t.cpu.softirq_pct));
            let cpu_ns = Summary::of(trials.iter().map(|t| self.kernel_ns(t)));
            let cpu_ratio = self.kernel_ratio(filter);
            let program = self.program_ns(filter);
            let check = self.br.checks.iter().find(|c| c.filter == filter);
            let redirected: Option<u64> = trials.iter().map(|t| t.redirected).sum();
            let received: u64 = trials.iter().map(|t| t.received).sum();
            let _ =
                writeln!(
                md,
                "| {} | {:.0} ({:.0}-{:.0}) | {} | {:.0}% | {:.0}% | {:.0} | {} | {} | {} | {} | {} |",
                filter.label(),
                pps.median,
                pps.p25,
                pps.p75,
                ratio_iqr(&ratio),
                busy.median,
                softirq.median,
                cpu_ns.median,
                ratio_iqr(&cpu_ratio),
                if program.n == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0} ({:.0}-{:.0})", program.median, program.p25, program.p75)
                },
                redirected.map_or("-".into(), |r| format!(
                    "{:.0}%",
                    r as f64 / received.max(1) as f64 * 100.0
                )),
                check.map_or("-".into(), |c| c.reads_passed.to_string()),
                check.map_or("-".into(), |c| c.writes_passed.to_string()),
            );
        }
        let _ = writeln!(
            md,
            "\nThe *trivial XDP* row attaches the baseline program in native mode: native XDP on a \
             veth moves the port's receive path into NAPI, which has a cost of its own. otfw \
             native over trivial native: {}; that is the share of otfw's program. *XDP program \
             ns/frame* is the program's own run time on the bridge, from the kernel's BPF \
             run-time statistics (`BPF_ENABLE_STATS`, on for every burst of the run, unfiltered \
             ones included), summed over the programs `otfw run` holds and divided by the runs of \
             its entry program: a tail call is accounted in the run of the program that \
             started the chain, so on the fast-path rows the number covers the entry program, \
             the Modbus inspector and the forwarder (`otfw_forward`) together, that is the \
             program time of a frame. Compare it with the same frame in the test-run loop: \
             {:.0} ns for otfw (Modbus read request), {:.0} ns for the trivial program. \
             *redirected*: the share of the frames received whose burst the controller counted \
             as redirected by the fast path (`stats` event `paths`, read before and after every \
             burst); the benchmark fails if a fast-path row redirects nothing or another row \
             redirects anything. The *native, fast path* row switches GRO on for the \
             namespaces' veth ends while it runs: a veth delivers frames redirected to it in \
             native mode only into a NAPI receive queue, which this kernel gives a veth when \
             it runs XDP itself or has GRO on; without it they are dropped.",
            ratio_iqr(&self.pps_ratio(Filter::OtfwNative, Filter::Trivial)),
            self.dp.cell(0, "modbus_read").map_or(0.0, |c| c.otfw_ns.median),
            self.dp.cell(0, "modbus_read").map_or(0.0, |c| c.baseline_ns.median),
        );
        let lost: u64 = self
            .br
            .trials
            .iter()
            .map(|t| t.sent.saturating_sub(t.received))
            .sum();
        let inspected = self.dp.case("modbus_read").is_some_and(|c| c.inspected);
        let otfw_role = if inspected {
            "All three filters read the Modbus function code: otfw through its Modbus inspector \
             (every ADU framed and checked), nftables and iptables by a payload match on one byte."
        } else {
            "otfw passes the writes because its Modbus inspection is not enforced: its rows \
             measure zone, flow and conduit checks, while nftables and iptables also read the \
             function code."
        };
        let _ = writeln!(
            md,
            "\n\"reads/writes passed\": of 100 Modbus Read Holding Registers and 100 Write Single \
             Register requests sent once through each filter (the unfiltered rows also count an \
             occasional ARP frame). {otfw_role} The bursts are data segments of one connection \
             that otfw adopts mid-stream (`midstream: adopt`); after the first, each is a \
             retransmission of the last segment, which the inspector frames and checks again. \
             Frames sent but not counted at the receiver over all bursts (all allowed): {lost}."
        );
    }

    fn section_control(&self, md: &mut String) {
        let control = &self.dp.raw.control;
        let compile = Summary::of(control.compile_ms.iter().copied());
        let swap = Summary::of(control.swap_ms.iter().copied());
        let _ = writeln!(
            md,
            "\n## 4. Control plane\n\nPolicy of {} conduits and {} zone prefixes ({} of YAML), \
             {} repetitions.\n\n| step | median | min-max |\n|---|---|---|\n| parse, validate, \
             lint, compile | {:.0} ms | {:.0}-{:.0} ms |\n| install (swap from a small policy) | \
             {:.0} ms | {:.0}-{:.0} ms |\n| `otfw run` reload (SIGHUP to `policy_loaded`) | {:.0} \
             ms | one |\n",
            control.conduits,
            control.prefixes,
            kib(control.yaml_bytes as u64),
            control.compile_ms.len(),
            compile.median,
            compile.min,
            compile.max,
            swap.median,
            swap.min,
            swap.max,
            self.br.swap.reload_ms,
        );
        md.push_str(
            "\nWhere the compile time goes (one run, step by step):\n\n| step | ms |\n|---|---|\n",
        );
        for (step, ms) in &control.phases_ms {
            let _ = writeln!(md, "| {step} | {ms:.0} |");
        }
        md.push('\n');
        let stream = &self.br.swap.stream;
        let rtt = Summary::of(stream.rtt_ns.iter().map(|&n| n as f64 / 1e3));
        let _ = writeln!(
            md,
            "During the reload a Modbus ping-pong ran through the bridge (one request every \
             {} us on one TCP connection): {} exchanges, {} failed, median {:.0} us, slowest \
             {:.0} us{}.\n\n| policy | controller RSS | map memory (controller) | map memory \
             (datapath alone) |\n|---|---|---|---|",
            self.br.swap.interval_us,
            stream.rtt_ns.len(),
            stream.errors,
            rtt.median,
            rtt.max,
            stream
                .error
                .as_ref()
                .map_or(String::new(), |e| format!(" (error: {e})"))
        );
        for m in &self.br.memory {
            let alone = control
                .map_bytes
                .iter()
                .find(|(name, _)| *name == m.policy)
                .map_or("-".into(), |(_, b)| mib(*b));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                m.policy,
                mib(m.rss_kib * 1024),
                mib(m.map_bytes),
                alone
            );
        }
        md.push_str(
            "\nMap memory is the kernel's own accounting (`memlock` in /proc/PID/fdinfo of every \
             map fd). Most of it is fixed at load: the flow table (LRU hash, 262,144 entries, \
             preallocated) and the per-CPU counters; the policy's own entries (LPM tries, \
             conduit rules) grow with the policy.\n",
        );
    }

    fn section_latency(&self, md: &mut String) {
        let none = self.latency(Filter::None);
        md.push_str(
            "\n## 5. Latency through the bridge\n\nRound trips of a 12-byte Modbus request and \
             its 29-byte response on one TCP connection between the namespaces (request and \
             reply each cross the filter once), alternated by filter like the throughput. Read \
             the medians: on two shared CPUs the tails (p99 and beyond) are set by other users' \
             work preempting the exchange, not by the filters, so an *added* tail can even come \
             out negative.\n\n\
             ![latency](latency.png)\n\n| filter | samples | p50 us | p90 us | p99 us | p99.9 \
             us | max us | added p50 | added p99 |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for filter in Filter::ALL {
            let Some(l) = self.latency(filter) else {
                continue;
            };
            let mut v: Vec<f64> = l.rtt_ns.iter().map(|&n| n as f64 / 1e3).collect();
            v.sort_by(f64::total_cmp);
            let (a50, a99) = none.map_or((0.0, 0.0), |n| (added(l, n, 50.0), added(l, n, 99.0)));
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:+.1} | {:+.1} |",
                filter.label(),
                v.len(),
                percentile(&v, 50.0),
                percentile(&v, 90.0),
                percentile(&v, 99.0),
                percentile(&v, 99.9),
                v[v.len() - 1],
                a50,
                a99
            );
        }
    }
}

/// The flood phases of one kind over all rounds.
struct FloodPool {
    /// Requests sent (answered or not) and those that got no answer.
    exchanges: u64,
    errors: u64,
    error: Option<String>,
    /// Round trips in microseconds, sorted.
    rtt_us: Vec<f64>,
    /// Frames the flooder sent, and per second over the phases.
    sent: u64,
    flood_pps: f64,
    denial_stored: u64,
    denial_cached: u64,
}

impl FloodPool {
    fn p(&self, p: f64) -> f64 {
        if self.rtt_us.is_empty() {
            return f64::NAN;
        }
        percentile(&self.rtt_us, p)
    }
}

impl Report<'_> {
    fn section_flood(&self, md: &mut String) {
        let flood = &self.br.flood;
        let rounds = flood
            .phases
            .iter()
            .filter(|p| p.kind == FloodKind::Quiet)
            .count();
        let _ = writeln!(
            md,
            "\n## 6. Modbus polling under a flood of denied frames\n\nThe ping-pong of section 5 \
             from `bench-a` to `bench-b` through {}, while a third namespace, `bench-c` (office \
             zone, like `bench-a`), sends denied TCP SYNs to the plant with trafgen at its full \
             rate (one worker): every frame a new tuple (source and destination port stepping, \
             repeating only after 8 million frames), or one tuple over and over. Each of {rounds} \
             rounds runs the polling without a flood, then under each flood, so the three are \
             measured alternately in the same run. *Decisions* are the datapath's shortcut \
             counters over the phases (`stats` event `paths`): denials stored in the decision \
             cache (`DENIALS`) and denials answered from it.\n\n| phase | exchanges | failed | \
             p50 us | p90 us | p99 us | max us | flood frames/s | denials stored | denials \
             cached |\n|---|---|---|---|---|---|---|---|---|---|",
            flood.filter.label()
        );
        for kind in FloodKind::ALL {
            let Some(pool) = self.flood(kind) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} | {} |",
                kind.label(),
                pool.exchanges,
                pool.errors,
                pool.p(50.0),
                pool.p(90.0),
                pool.p(99.0),
                pool.p(100.0),
                if pool.sent == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}", pool.flood_pps)
                },
                pool.denial_stored,
                pool.denial_cached
            );
            if let Some(error) = &pool.error {
                let _ = writeln!(md, "\n(first failure: {error})\n");
            }
        }
        let rate = |kind| self.flood(kind).map_or(f64::NAN, |p| p.flood_pps);
        let _ = writeln!(
            md,
            "\nThe flood and the polling share the machine's two CPUs with the bridge and the \
             other users: the added latency under a flood is mostly CPU contention (trafgen and \
             the softirq that drops its frames), which no datapath can remove, while a CPU kept \
             busy answers without waking from idle, so a flood's tail can come out below the \
             quiet one's; a failure would mean the flood displaced allowed traffic. In generic \
             mode the drop runs on the flooder's CPU, right after its send, so the flood's \
             rate is also a measure of what a denial costs: trafgen reached {:.2}x the rate with one repeated \
             tuple (decision cache hits) that it reached with every frame a new tuple.",
            rate(FloodKind::OneTuple) / rate(FloodKind::NewTuples)
        );
    }
}

/// The difference of percentile `p` between two latency sets, in microseconds.
fn added(with: &Latency, without: &Latency, p: f64) -> f64 {
    let sorted = |l: &Latency| {
        let mut v: Vec<f64> = l.rtt_ns.iter().map(|&n| n as f64 / 1e3).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    percentile(&sorted(with), p) - percentile(&sorted(without), p)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

/// Which cases are not inspected yet, and how they are measured meanwhile.
fn not_inspected(dp: &Datapath) -> String {
    let pending: Vec<&str> = dp
        .raw
        .cases
        .iter()
        .filter(|c| !c.inspected)
        .map(|c| c.id.as_str())
        .collect();
    if pending.is_empty() {
        return "Every Modbus and EtherNet/IP case runs through its inspector: Modbus/TCP \
                (framing, unit, function, quantities), EtherNet/IP (encapsulation, session, CPF \
                items, every CIP request; the I/O datagram against the connection an allowed \
                Forward_Open opened).\n"
            .into();
    }
    format!(
        "**Not yet inspected: {}.** The datapath in this build lacks the inspector for these \
         frames (a protocol rule without its inspector fails closed), so they run on a conduit \
         with plain `tcp`/`udp` rules for the same ports: their numbers are the L4 cost of a \
         tracked flow, and every table marks them *not yet*. `MODBUS_INSPECTED` and \
         `ENIP_INSPECTED` in `firewall-user/src/bench/mod.rs` switch the benchmark policy between \
         protocol rules and plain rules.\n",
        pending.join(", ")
    )
}

/// Why the missed targets are missed and what would close the gap, from this run's numbers.
/// The per-packet path is split into its parts by differences of measured cases: a non-IP
/// frame is parse and entry; a tracked segment adds the one flow lookup; a repeated denial adds
/// a decision-cache hit (a bare SYN asks the cache before the flow table); a fresh denial adds
/// the flow misses, zone and conduit resolution and the cache insert on top.
fn gap_notes(r: &Report) -> String {
    let dp = r.dp;
    let mut md =
        String::from("\n## Where the targets are missed, why, and what would close the gap\n\n");
    let ns = |case: &str| dp.cell(0, case).map_or(f64::NAN, |c| c.otfw_ns.median);
    let base = dp
        .cell(0, "modbus_read")
        .map_or(f64::NAN, |c| c.baseline_ns.median);
    let parts = Parts {
        base,
        non_ip: ns("non_ip"),
        tracked: ns("tcp_tracked"),
        deny: ns("l4_deny"),
        flood: ns("l4_deny_flood"),
        modbus: ns("modbus_read"),
        pipelined: ns("modbus_pipelined"),
    };
    let _ = writeln!(
        md,
        "The datapath decides flow first: one lookup of the canonical flow key, and on a hit \
         (same side, same port, same epoch) no zone lookup at all; a packet of no flow asks the \
         decision cache (`DENIALS`) before it resolves zones (host hash, then the LPM trie) and \
         conduits (a bare SYN asks the cache first). Measured shares of a frame (test-run \
         loop, medians): baseline program {base:.0} ns; a non-IP frame through otfw {:.0} ns \
         (entry and parse); the flow hit of a tracked segment {:+.0} ns on top of that; a \
         repeated denial (cache hit) {:+.0} ns; the randomised flood (each frame timed alone, \
         cache hits and the first frame of each source paying flow misses, zones, conduits and \
         the denial stored) {:+.0} ns more than the repeated one. The targets are ratios to \
         the baseline, set on machines where it cost about 30 ns; where it costs less (here \
         {base:.0} ns: a fast core, and the test-run loop's fixed cost is most of it), the same \
         nanoseconds make a larger ratio, so each target below is also given in this run's \
         nanoseconds. `cargo xtask profile --case ID` shows where one case's time goes, by \
         function and source line.\n",
        parts.non_ip,
        parts.tracked - parts.non_ip,
        parts.deny - parts.non_ip,
        parts.flood - parts.deny,
    );
    let mut missed = 0;
    for &(id, target) in CASE_TARGETS {
        let (Some(cell), Some(case)) = (dp.cell(0, id), dp.case(id)) else {
            continue;
        };
        let ratio = cell.ratio.median;
        if ratio <= target {
            continue;
        }
        missed += 1;
        let over_ns = cell.otfw_ns.median - target * cell.baseline_ns.median;
        let _ = writeln!(
            md,
            "- **{} ({:.0} ns, {}; target <= {} = {:.0} ns): missed by {:.2}x, {over_ns:.0} ns \
             per packet.** {}\n",
            case.title,
            cell.otfw_ns.median,
            x(ratio),
            x(target),
            target * cell.baseline_ns.median,
            ratio - target,
            parts.why(id, target * cell.baseline_ns.median, ns)
        );
    }
    missed += bridge_gaps(r, &mut md);
    if let Some(note) = flood_gap(r) {
        missed += 1;
        md.push_str(&note);
    }
    let last = dp.raw.sizes.len() - 1;
    if last > 0 {
        let worst = dp.cells[last]
            .iter()
            .map(|c| c.scaling.median)
            .fold(1.0f64, |a, b| {
                if (b - 1.0).abs() > (a - 1.0).abs() {
                    b
                } else {
                    a
                }
            });
        if (worst - 1.0).abs() > TARGET_FLAT {
            missed += 1;
            let _ = writeln!(
                md,
                "- **Scaling ({:+.1}% at the largest policy, target within {:.0}%).** Policy \
                 size reaches the per-packet path only where zones and conduits are resolved \
                 (a new flow, a fresh denial): the LPM trie is a few levels deeper over 10,000 \
                 prefixes and hash buckets fuller; an established flow never looks at them. A \
                 miss here is a fresh-tuple case or noise: compare its IQR. *Next:* more \
                 prefixes through the host hash (full-length ones already are).\n",
                (worst - 1.0) * 100.0,
                TARGET_FLAT * 100.0
            );
        }
    }
    let control = &dp.raw.control;
    let compile = Summary::of(control.compile_ms.iter().copied()).median;
    let swap = Summary::of(control.swap_ms.iter().copied()).median;
    if compile + swap >= TARGET_SWAP_MS {
        missed += 1;
        let (slowest, slowest_ms) = control
            .phases_ms
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(("?", 0.0), |(n, ms)| (n.as_str(), *ms));
        let rest: f64 = control.phases_ms.iter().map(|(_, ms)| ms).sum::<f64>() - slowest_ms;
        let _ = writeln!(
            md,
            "- **Compile and swap of {} conduits ({:.0} ms, target < {TARGET_SWAP_MS:.0} ms), \
             missed by {:.0} ms.** The step that dominates is *{slowest}* ({slowest_ms:.0} ms \
             of the pipeline; all other steps together {rest:.0} ms; the install {swap:.0} ms). \
             *Next:* profile that step; the swap itself never interrupted traffic (section 4).\n",
            control.conduits,
            compile + swap,
            compile + swap - TARGET_SWAP_MS
        );
    }
    if missed == 0 {
        md.push_str("Every target of this run is met.\n");
    }
    md
}

/// The measured per-packet costs the explanations are built from (test-run loop, ns).
struct Parts {
    base: f64,
    non_ip: f64,
    tracked: f64,
    deny: f64,
    flood: f64,
    modbus: f64,
    pipelined: f64,
}

impl Parts {
    /// Why case `id` costs what it does, and what would bring it within `budget` ns.
    fn why(&self, id: &str, budget: f64, ns: impl Fn(&str) -> f64) -> String {
        let Parts {
            base,
            non_ip,
            tracked,
            deny,
            flood,
            modbus,
            pipelined,
        } = *self;
        match id {
            "tcp_tracked" => format!(
                "Entry and parse take {non_ip:.0} ns of it ({:.1}x the baseline by \
                 themselves, which parses the same headers), the flow hit {:.0} ns. A busy \
                 flow's packets after the first of each timer tick are answered by this CPU's \
                 flow memo (`BUSY_FLOWS`: an array slot, a five-word key compare, the tick, \
                 the epoch and the two words of the removal count), before the clock read \
                 and without the `FLOWS` lookup, whose hash of the 40-byte key \
                 (`htab_map_hash`, jhash: three rounds of dependent arithmetic for ten words) \
                 and bucket walk were about a third of the hit (in same-run comparisons the \
                 memo took the case from 116 to 102 ns, and reading the tick as jiffies, one \
                 load, instead of the coarse clock's helper call from 91 to 81 ns); the \
                 timing loop repeats one frame, so it measures the memo. What is left is \
                 instruction count, and calls: with the program cut short at points along \
                 the path (alternating builds), entry, parse, decision and accounting took \
                 about 48 ns, the flow keys and the canonical key 10 more, the memo's \
                 recall 17. On a quiet machine, taking a pass's three counter updates out \
                 altogether moved the case from 66 to 60 ns (9 rounds): a memo hit on a \
                 flow without an inspector now counts in the memo's slot, settled into the \
                 counter maps when the slot is reused, which kept 2-3 ns of those 6 (the \
                 rest went to carrying the packet's length and the counted mark through \
                 the decision). The IPv4 and TCP headers are read as three and two \
                 unaligned word loads (read as byte arrays they were 40 byte loads and the \
                 shifts putting fields and addresses back together, spilled to the stack): \
                 about 5 ns off every frame, 65 to 61 ns here (7 rounds). A BPF-to-BPF call and its \
                 return cost about 8 ns on this lab's CPU (the kernel's return thunk for \
                 SRSO, \"safe RET\"): inlining the main program's body and the memo's \
                 recall into the entry took the case from 87 to 77 ns. *Next:* fewer \
                 instructions on the hit: the memo's removal count in one word (two array \
                 lookups now), the flow keys written once (forward and canonical are both \
                 built today); for flows \
                 that send one packet a tick, which still pay the hash, a shorter key (IPv4 \
                 flows in a table of their own, keyed by 16 bytes: one jhash round instead \
                 of three).",
                non_ip / base.max(1.0),
                tracked - non_ip
            ),
            "modbus_read" | "modbus_pipelined" => format!(
                "The tracked-flow path costs {tracked:.0} ns of it; the inspector adds \
                 {:.0} ns for a one-ADU segment (tail call; the framing state in \
                 `MODBUS_FLOWS`, an LRU lookup by the 40-byte initiator key; the TCP \
                 checksum verified; the connection's first-use sets, rule, the segment's ADUs \
                 counted in the CPU's count memo) and about {:.0} ns per further ADU of a \
                 pipelined segment. Profiled (`cargo xtask profile --case modbus_read`), \
                 the framing state's hash lookup (the kernel's jhash of a 40-byte key, the \
                 bucket walk, the compare) takes about a twelfth of the program's time (the \
                 flow's own lookup is answered by the flow memo, see above), the checksum \
                 about 3% of the busy time \
                 (the pseudo-header from the key's four address words and a segment under \
                 128 bytes summed by word loads, no helper call: that took the read request \
                 from 335 to 309 ns; summed inline at the inspector's start instead of by a \
                 global function's call, 317.5 to 285 ns in a same-run comparison), the \
                 per-ADU counting another 6% (a one-ADU segment \
                 is now counted inline, without the counting loop's call: the read request \
                 -26 ns in a same-run comparison), the inspector's inlined per-CPU array \
                 lookups (context, scratch, ADU records, counters) about 6%. Each ADU's \
                 prefix is read straight from the packet a word at a time (through the load \
                 helper it was about a tenth of the pipelined case). Calls are the other \
                 cost: each BPF-to-BPF call and its return is about 8 ns on this lab's CPU \
                 (the kernel's return thunk for SRSO), and an indirect tail call goes \
                 through a retpoline; the main program now tail calls each inspector with a \
                 constant slot (a direct jump), a framing step answers where the next ADU \
                 is (one call per ADU, not two), the first ADU's prefix is found inline \
                 (no call: the read request -16 ns in a same-run comparison), and the ADU \
                 decision, the counter update \
                 and the inventory's no-news case are inline. \
                 {}*Next:* the framing state without a hash lookup: the tail call loses the \
                 main program's pointer to the flow entry, so state kept in the entry costs \
                 the inspector a lookup all the same, but an index kept in the entry into an \
                 array of states would not (it needs a slot allocator that never hands out a \
                 live connection's slot); and the tracked-flow items above, which every \
                 inspected frame pays too.",
                modbus - tracked,
                (pipelined - modbus) / 7.0,
                if tracked >= budget {
                    "The tracked-flow path alone is already over this budget, so it comes \
                     first. "
                } else {
                    ""
                }
            ),
            "enip_read_tag" | "enip_msp" => format!(
                "The tracked-flow path costs {tracked:.0} ns of it, the EtherNet/IP inspector \
                 the rest: framing and session state (an LRU lookup, 40-byte key: the \
                 kernel's hash of it is a large single item of a profile, `cargo xtask \
                 profile --case enip_read_tag`), the TCP \
                 checksum verified (below 128 bytes by word loads, inline at the \
                 inspector's start), the message copied into \
                 per-CPU scratch (the encapsulation header a word at a time, a longer body \
                 by the load helper), and per \
                 embedded request the path parse (a symbolic segment's name copied inside \
                 the segment's parse, no call of its own), the class's services (from this \
                 CPU's memo of `ENIP_CLASSES` answers, `ENIP_CLASS_MEMO`: an array slot \
                 instead of a hash lookup per request; Multiple Service Packet of ten about \
                 1300 to 1150 ns in same-run comparisons) and the tag hash, each step a \
                 global function (Read Tag {:.0} ns, Multiple Service \
                 Packet of ten {:.0} ns: about {:.0} ns per further request; requests with \
                 the same counter in a row share one counter update, kept in the CPU's count \
                 memo while it repeats; the packet's last update is inline, no call: Read \
                 Tag 467 to 384.5 ns in a same-run comparison). Each global-function call and its return is about \
                 8 ns on this lab's CPU (the kernel's return thunk for SRSO): a framing step \
                 now answers where the next load is (one call per load, not two), the \
                 request path's loop, its first segment's parse and the inventory's use \
                 mark are inlined into the request's check (three calls per request of \
                 a one-segment path fewer; the first segment inline took the Multiple \
                 Service Packet of ten from 1271 to 1150 ns), and a message's request is \
                 checked by a direct call, the work loop called only for what it queued \
                 (Read Tag 519 to 504 ns, same-run comparisons). *Next:* the inspector state \
                 without a hash lookup (an array index kept in the flow entry, as for \
                 Modbus); the per-request trace record written only where something reads \
                 it (replay, tests, events, the counting); the tag check inlined as well \
                 where the verifier's budget and the 512 bytes of stack allow (every \
                 inlining so far had to make room on the deepest call chain first).",
                ns("enip_read_tag"),
                ns("enip_msp"),
                (ns("enip_msp") - ns("enip_read_tag")) / 9.0
            ),
            "enip_io" => format!(
                "The tracked-flow path (the UDP flow) costs {tracked:.0} ns of it: the flow \
                 memo answers the datagram although the flow is not answered (the case's \
                 target never sends; before unanswered UDP flows were memoised, each datagram \
                 paid a `FLOWS` miss, an `EMBRYOS` hit and the clock's call: 259.5 to 168.5 ns \
                 in a same-run comparison). The I/O inspector costs {:.0} ns: a tail call, the datagram's 18-byte CPF head read in \
                 place, the connection the Forward_Open opened looked up in `ENIP_CONNS` (an \
                 LRU hash with a 40-byte key, written as five words: built field by field it \
                 had been two out-of-line `memmove` calls, and the check and the count were \
                 calls of their own; inline and in words the datagram took 37.5 ns less in a \
                 same-run comparison) and its endpoints, conduit and deadline checked \
                 (the coarse clock), one trace record, the count through the CPU's count memo, \
                 and the tail call to the forwarder. *Next:* the connection found without a \
                 hash lookup (its slot kept in the UDP flow's entry, which the main program \
                 already has), and the tracked-flow items above.",
                ns("enip_io") - tracked
            ),
            "l4_deny" => format!(
                "Entry and parse {non_ip:.0} ns; then the decision costs {:.0} ns: the tuple \
                 and the cache's key written (in words), the per-CPU memo of recent denials \
                 (an array slot and a six-word compare, asked by a bare SYN before the cache's \
                 hash lookup, the canonical key and the flow table), the deny counters, the \
                 conduit's settings and the event token bucket. The bucket reads the coarse \
                 clock through each CPU's reading of it per timer tick (jiffies, one inlined \
                 load, says when to call the helper again): the helper's call and return had \
                 been about a fifth of the case, 77 to 64 ns in a same-run comparison on a \
                 quiet machine (an earlier try, answering only a bucket without credit from \
                 jiffies, had measured within the noise). The cache's check is inlined \
                 where a bare SYN asks it (before the flow tables; the stack has room for \
                 one inlined copy, and the check after the flow tables stays a call): 86 to \
                 78 ns in a same-run comparison. A memo hit on a denial stored as a drop \
                 (`DENIAL_DROP`: the conduit's mode and `on_deny` applied when it was \
                 stored) is counted in the memo's slot, as the flow memo counts its passes, \
                 without the conduit's settings, and offers its event once per timer tick: \
                 64 to 57 ns (7 rounds); the headers read as words (see the tracked case) \
                 took it to 51. *Next:* fewer instructions in the key's writing (the tuple \
                 is written twice, as the flow key and as the cache's key); the ingress \
                 port's index (three dependent loads behind the context) read once per \
                 frame, not once for the key and again for the event.",
                deny - non_ip
            ),
            "l4_deny_flood" => format!(
                "Every frame is timed alone (one test run each, so the maps' cache lines are \
                 as cold as a flood's would be), with a new source address (126 of them) and \
                 source port. A bare SYN's cache key leaves the source port out (conduits match \
                 the destination port), so after the first 126 frames of a run the flood hits \
                 the cache; the first of each address misses it and the flow tables, then pays \
                 zone resolution (host hash, else trie walk, per end), up to four conduit-key \
                 hash lookups with the rule scan and the LRU insert of the denial. Over the \
                 repeated denial ({:.0} ns over parse) this costs {:.0} ns more. *Next:* \
                 the cold cache lines are most of it (the same lookups cost far less warm): \
                 fewer and smaller maps touched per denial (one per-CPU counter block, the \
                 event bucket in it); store a denial only when its key repeats (a small \
                 per-CPU filter in front), sparing the insert for one-off tuples; resolve an \
                 unzoned or spoofed source before the destination.",
                deny - non_ip,
                flood - deny
            ),
            _ => "No breakdown for this case; compare it with the cases above.".into(),
        }
    }
}

/// The bridge targets that are missed: the fast path against no filter and nftables, the
/// native bridge path against no filter. Returns how many.
fn bridge_gaps(r: &Report, md: &mut String) -> usize {
    let mut missed = 0;
    let none_kernel = Summary::of(
        r.br.trials
            .iter()
            .filter(|t| t.filter == Filter::None)
            .map(|t| r.kernel_ns(t)),
    )
    .median;
    let fast_gain = r
        .pps_ratio(Filter::OtfwGenericFast, Filter::OtfwGeneric)
        .median;
    for fast in Filter::FAST {
        let ratio = r.pps_ratio(fast, Filter::None);
        let over_nft = r.pps_ratio(fast, Filter::Nft).median;
        if ratio.n == 0 || (ratio.median >= TARGET_FAST && over_nft >= TARGET_FAST_NFT) {
            continue;
        }
        missed += 1;
        let program = r.program_ns(fast).median;
        let kernel = Summary::of(
            r.br.trials
                .iter()
                .filter(|t| t.filter == fast)
                .map(|t| r.kernel_ns(t)),
        )
        .median;
        let budget = none_kernel / TARGET_FAST;
        let cut = if kernel > budget {
            format!("so {:.0} ns per frame must go", kernel - budget)
        } else {
            "which the kernel CPU per frame already is: the burst's rate is bounded elsewhere \
             (the generator and the receiver on the same CPUs, other users' work), so read the \
             throughput ratio's IQR"
                .to_string()
        };
        let rest = kernel - program;
        // The same frame in the test-run loop, through the forwarder where that case ran.
        let test_run = |id: &str| r.dp.cell(0, id).map(|c| c.otfw_ns.median);
        let (same_frame, forwarder) = match (test_run("modbus_fast_path"), test_run("modbus_read"))
        {
            (Some(fast), Some(read)) => (
                fast,
                format!(
                    ", of which the forwarder {:.0} ns: the fast-path case minus the Modbus read",
                    fast - read
                ),
            ),
            (_, read) => (read.unwrap_or(f64::NAN), String::new()),
        };
        let native_note = if fast == Filter::OtfwNativeFast {
            format!(
                " In native mode the veth hands the program an XDP buffer, and the receiving \
                 veth (GRO on, NAPI) turns the redirected frame into an skb again, so the \
                 fast path trades the bridge for a NAPI hop on the far side; the trivial \
                 program alone gives {} of no filter, the floor of any native row on veth.",
                x(r.pps_ratio(Filter::Trivial, Filter::None).median)
            )
        } else {
            format!(
                " In generic mode the frame is an skb already: the redirect skips the \
                 bridge's input, FDB lookup and forward hooks, and against the same program \
                 through the bridge (fast path off) it forwards {} the frames.",
                x(fast_gain)
            )
        };
        let _ = writeln!(
            md,
            "- **{} through the bridge: {} of no filter (target >= {}, moonshot {}), {} of \
             nftables (target >= {}).** Kernel CPU per frame {kernel:.0} ns against \
             {none_kernel:.0} ns with no filter; {} faster than no filter needs \
             {budget:.0} ns, {cut}. Of the frame's cost the program \
             itself is {program:.0} ns on the bridge (entry, Modbus inspector and forwarder \
             together; the test-run loop gives {same_frame:.0} ns for the same frame{forwarder}; \
             the difference is cold caches between frames on a CPU shared with the generator \
             and the receiver).\
             {native_note} Without the program the rest of this row's frame is {rest:.0} ns \
             (kernel CPU per frame minus the program's time) against {none_kernel:.0} ns for \
             the whole unfiltered frame: even a program that cost nothing would reach about \
             {} of no filter on this lab, because what the redirect saves (the bridge's \
             receive, FDB lookup and forward) is about what it costs on a veth (the devmap \
             transmit into the peer{}). *Next:* the per-packet items of the tracked-flow and \
             Modbus notes above cut the program's share, which is what moves this row against \
             nftables (the forwarder already answers a pair of hosts it has just forwarded \
             from a per-CPU memo, not two FDB lookups; what is left of it is the tail call, the \
             mirror's validity and the clock, the redirect); the 1.3x target needs a port \
             where the redirect is cheaper than the \
             bridge, i.e. native XDP on a NIC whose driver runs XDP before it allocates an skb \
             and transmits redirected frames from the XDP buffer: measure there, since on \
             veth the ceiling above is below the target whatever the program costs.\n",
            fast.label(),
            x(ratio.median),
            x(TARGET_FAST),
            x(MOONSHOT_FAST),
            x(over_nft),
            x(TARGET_FAST_NFT),
            x(TARGET_FAST),
            x(none_kernel / rest.max(1.0)),
            if fast == Filter::OtfwNativeFast {
                ", which then needs NAPI and an skb on the receiving side"
            } else {
                ", an skb transmitted like any other"
            },
        );
    }
    let native = r.pps_ratio(Filter::OtfwNative, Filter::None).median;
    if native < TARGET_BRIDGE {
        missed += 1;
        let _ = writeln!(
            md,
            "- **otfw native through the bridge: {} of no filter (target >= {}), missed by \
             {:.2}x.** Native XDP on a veth costs by itself (the trivial program: {}): \
             attaching XDP moves the veth's receive path into NAPI and every passed frame is \
             turned from an XDP buffer back into an skb; on a physical NIC that part \
             disappears. otfw's program accounts for {} of the trivial program's throughput, \
             {:.0} ns per frame on the bridge. *Next:* the fast path (rows above) for allowed \
             traffic, and the per-packet items above.\n",
            x(native),
            x(TARGET_BRIDGE),
            TARGET_BRIDGE - native,
            x(r.pps_ratio(Filter::Trivial, Filter::None).median),
            x(r.pps_ratio(Filter::OtfwNative, Filter::Trivial).median),
            r.program_ns(Filter::OtfwNative).median,
        );
    }
    for other in [Filter::Nft, Filter::Iptables] {
        let ahead = r.pps_ratio(Filter::OtfwNative, other).median;
        if ahead <= 1.0 {
            missed += 1;
            let _ = writeln!(
                md,
                "- **otfw native through the bridge vs {}: {} (target > 1.00x).** Both \
                 filters pay the bridge; otfw adds native XDP's NAPI hop on the veth on top \
                 (see the trivial row). The fast-path rows are otfw's answer to this \
                 comparison.\n",
                other.label(),
                x(ahead)
            );
        }
    }
    missed
}

/// The note for the flood measurement when polling failed under it.
fn flood_gap(r: &Report) -> Option<String> {
    let quiet = r.flood(FloodKind::Quiet)?;
    let mut note = String::new();
    for kind in [FloodKind::NewTuples, FloodKind::OneTuple] {
        let Some(flood) = r.flood(kind) else {
            continue;
        };
        if flood.errors == 0 {
            continue;
        }
        let _ = writeln!(
            note,
            "- **Modbus polling under a {} ({:.0} frames/s): {} of {} exchanges failed** \
             (first: {}); p99 {:.0} us against {:.0} us without the flood. The flood's frames \
             are dropped in softirq on the same two CPUs the polling needs; *next:* make the \
             per-frame cost of a denial smaller (the denial notes above) and check whether \
             the failures are drops in the veth backlog (`softnet_stat`).\n",
            kind.label(),
            flood.flood_pps,
            flood.errors,
            flood.exchanges,
            flood.error.as_deref().unwrap_or("?"),
            flood.p(99.0),
            quiet.p(99.0)
        );
    }
    (!note.is_empty()).then_some(note)
}
