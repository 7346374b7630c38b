//! `cargo xtask bench`: the numbers behind "line rate". Ratios measured in the same run, never
//! lone absolute times, because this machine is shared and noisy.
//!
//! 1. Per-packet cost of the XDP program by case, through BPF_PROG_TEST_RUN, as a ratio to a
//!    trivial program measured alternately with it (`otfw bench-datapath`, in firewall-user:
//!    it needs the eBPF object, which this crate must not).
//! 2. The same with policies of 1 to 10,000 conduits and 10,000 zone prefixes.
//! 3. Frames per second through the lab bridge with no filter, otfw (native and generic XDP,
//!    each with its fast path and without), nftables and iptables u32.
//! 4. Control plane: compile and swap of 10,000 conduits, controller and map memory.
//! 5. Latency of a request/response exchange through the bridge, per filter.
//! 6. The same exchange while a third namespace floods denied frames, against no flood.
//!
//! Writes `target/bench/report.md` and PNG charts there, and prints the summary table. `--quick` runs everything once with small counts: a smoke test for CI.

mod bridge;
mod charts;
mod datapath;
pub mod peer;
mod report;
mod stats;

pub(crate) use datapath::Raw;
pub(crate) use stats::Summary;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct BenchArgs {
    /// Smoke mode: each measurement once with small counts (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Skip `cargo xtask setup` (when the prerequisites are known to be there).
    #[arg(long)]
    no_setup: bool,
    /// Rounds of the bridge measurement (each applies every filter once).
    #[arg(long)]
    rounds: Option<usize>,
    /// Frames per trafgen burst.
    #[arg(long)]
    packets: Option<u64>,
    /// Where the report and charts go (default: target/bench, target/bench/quick with
    /// `--quick`).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl BenchArgs {
    /// The smoke run that `cargo xtask test` includes (after its own setup).
    pub fn quick() -> BenchArgs {
        BenchArgs {
            quick: true,
            no_setup: true,
            rounds: None,
            packets: None,
            out: None,
        }
    }
}

pub fn run(repo: &Path, args: &BenchArgs) -> Result<()> {
    require_root()?;
    if !args.no_setup {
        setup::run(repo)?;
    }
    let mut out = repo.join("target").join("bench");
    if args.quick {
        // A smoke run never overwrites a real report.
        out.push("quick");
    }
    let out = args.out.clone().unwrap_or(out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let load_before = load_average();
    let otfw = build_otfw(repo, args.quick)?;
    let example = repo.join("policies").join("example.yaml");

    let datapath = datapath::measure(&otfw, args.quick, &example)?;
    let mut bridge_opts = if args.quick {
        bridge::Options::quick()
    } else {
        bridge::Options::full()
    };
    bridge_opts.modbus_inspected = datapath
        .case("modbus_read")
        .is_some_and(|case| case.inspected);
    if let Some(rounds) = args.rounds {
        bridge_opts.rounds = rounds.max(1);
    }
    if let Some(packets) = args.packets {
        bridge_opts.packets = packets.max(1);
    }
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;
    // The lab runs this binary's `bench-peer` in the namespaces. A copy keeps it runnable even
    // if cargo replaces target/debug/xtask while the benchmark runs.
    let peer = work.join("bench-peer");
    // Unlinked first: a copy over a binary that still runs would fail.
    let _ = std::fs::remove_file(&peer);
    // /proc/self/exe still reads when the file it was started from has been replaced.
    std::fs::copy("/proc/self/exe", &peer)
        .context("copying the xtask binary for the lab's traffic endpoints")?;
    let tools = bridge::Tools {
        otfw: &otfw,
        xtask: peer,
        example: &example,
        work: &work,
    };
    let bridge = bridge::measure(&tools, &bridge_opts)?;
    let env = report::Environment {
        quick: args.quick,
        profile: if args.quick { "debug" } else { "release" },
        load_before,
        load_after: load_average(),
        cpus: datapath.raw.cpus,
        kernel: datapath.raw.kernel.clone(),
        bridge_rounds: bridge_opts.rounds,
        bridge_packets: bridge_opts.packets,
    };
    let report = report::Report::new(&env, &datapath, &bridge);
    charts::draw(&out, &datapath, &bridge).context("drawing the charts")?;
    std::fs::write(out.join("report.md"), report.markdown())?;
    println!("{}", report.summary());
    println!("bench: report in {}", out.join("report.md").display());
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads XDP programs and builds network namespaces: run it as root");
    }
    Ok(())
}

/// Builds `otfw` (release for real numbers; the debug build `cargo xtask test` made for the
/// smoke run) and returns its path.
pub(crate) fn build_otfw(repo: &Path, quick: bool) -> Result<PathBuf> {
    build_otfw_in(repo, &target_dir(repo), quick)
}

/// Cargo's target directory for the workspace in `repo`.
pub(crate) fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
}

/// `build_otfw` of the sources in `src` (another checkout: `cargo xtask compare`) into the
/// target directory `target`.
pub(crate) fn build_otfw_in(src: &Path, target: &Path, quick: bool) -> Result<PathBuf> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(src)
        .args(["build", "--package", "firewall-user", "--bin", "otfw"])
        .env("CARGO_TARGET_DIR", target)
        .env("PATH", cmd::path_with(&[cmd::cargo_home()?.join("bin")])?);
    if !quick {
        command.arg("--release");
    }
    cmd::run(&mut command).context("building otfw for the benchmark")?;
    Ok(target
        .join(if quick { "debug" } else { "release" })
        .join("otfw"))
}

/// The 1-minute load average, to say in the report how busy the machine was.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
