//! `otfw bench-datapath` (hidden): the kernel-side measurements of `cargo xtask bench`, printed
//! as one JSON document. Needs root; loads its own copies of the program, attaches nothing.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::bench::{self, Options};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Smoke mode: every measurement once, with small counts and small policies.
    #[arg(long)]
    pub quick: bool,
    /// Runs per BPF_PROG_TEST_RUN call (default: 100000, quick 1000).
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Rounds over every policy size and case (default: 15, quick 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Conduits of the largest policy and of the control-plane policy (default 10000).
    #[arg(long)]
    pub conduits: Option<usize>,
    /// A policy file whose map memory to report too, e.g. policies/example.yaml; repeatable.
    #[arg(long, value_name = "FILE")]
    pub policy: Vec<PathBuf>,
    /// Only write the generated benchmark policy (with `--conduits` conduits and as many zone
    /// prefixes, attached to `--iface`) to FILE, and exit.
    #[arg(long, value_name = "FILE")]
    pub write_policy: Option<PathBuf>,
    /// Bridge ports for `--write-policy` and `--attach-baseline`; repeatable.
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
    /// Only attach the trivial baseline program to every `--iface` in native (driver) mode,
    /// print a `ready` line, and hold it there until killed.
    #[arg(long)]
    pub attach_baseline: bool,
    /// Only this case (by id, e.g. modbus_read); repeatable. For pointing a profiler at one path.
    #[arg(long = "case", value_name = "ID")]
    pub cases: Vec<String>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    if args.attach_baseline {
        let mut baseline = crate::datapath::Baseline::load()?;
        for iface in &args.iface {
            baseline.attach(iface, true)?;
        }
        println!("{{\"event\":\"ready\",\"ports\":{}}}", args.iface.len());
        // Held until SIGTERM ends the process, which detaches the program.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if let Some(path) = &args.write_policy {
        let conduits = args.conduits.unwrap_or(10_000);
        let size = bench::policies::Size {
            conduits,
            prefixes: conduits,
        };
        let ports: Vec<&str> = args.iface.iter().map(String::as_str).collect();
        std::fs::write(path, bench::policies::yaml(size, &ports))
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(0);
    }
    let mut opts = if args.quick {
        Options::quick()
    } else {
        Options::full()
    };
    if let Some(repeat) = args.repeat {
        opts.repeat = repeat;
    }
    if let Some(rounds) = args.rounds {
        opts.rounds = rounds;
    }
    if let Some(conduits) = args.conduits {
        for size in opts.sizes.iter_mut().skip(1) {
            size.conduits = size.conduits.min(conduits);
            size.prefixes = size.prefixes.min(conduits);
        }
        if let Some(last) = opts.sizes.last_mut() {
            last.conduits = conduits;
            last.prefixes = conduits.max(last.prefixes);
        }
        opts.control_conduits = conduits;
    }
    opts.only_cases.clone_from(&args.cases);
    for path in &args.policy {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        opts.extra_policies.push((name, text));
    }
    let report = bench::run(&opts)?;
    serde_json::to_writer(std::io::stdout().lock(), &report).context("writing the report")?;
    println!();
    Ok(0)
}
