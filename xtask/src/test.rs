//! `cargo xtask test`: setup, `cargo deny check` (`deny`), then the whole test suite, then a
//! short run of every fuzz target (`cargo xtask fuzz --seconds 25`), then a smoke run of the
//! benchmark (`cargo xtask bench --quick`).
//!
//! Unit tests run in parallel. Integration test binaries (`tests/` of every crate: the
//! end-to-end lab, datapath tests) share kernel state such as the lab bridge, namespaces and
//! bpffs pins, so they run with one test thread.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

use crate::{bench, cmd, deny, fuzz, setup};

#[derive(Args)]
pub struct TestArgs {
    /// Skip `cargo xtask setup` (when the prerequisites are known to be there).
    #[arg(long)]
    no_setup: bool,
    /// Skip the short fuzzing run (every fuzz target for 25 seconds).
    #[arg(long)]
    no_fuzz: bool,
    /// Skip the benchmark smoke run (`cargo xtask bench --quick`) at the end.
    #[arg(long)]
    no_bench: bool,
    /// Passed to every test binary, e.g. a name filter or `--nocapture`.
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(repo: &Path, args: &TestArgs) -> Result<()> {
    if !args.no_setup {
        setup::run(repo)?;
    }
    deny::check(repo)?;
    // The binaries the end-to-end tests start (`otfw`, `otfw-peer`) are not built by
    // `cargo test` for a crate other than their own.
    cargo(repo, &["build", "--bins"], &[])?;
    cargo(repo, &["test", "--lib", "--bins"], &args.test_args)?;
    cargo(repo, &["test", "--doc"], &args.test_args)?;
    let mut serial = vec!["--test-threads=1".to_string()];
    serial.extend(args.test_args.iter().cloned());
    cargo(repo, &["test", "--test", "*"], &serial)?;
    if !args.no_fuzz {
        // Long runs are `cargo xtask fuzz`; this one fails the tests on a crash that the seeds
        // and the corpus of earlier runs lead to quickly.
        println!(
            "test: fuzzing every target for {} s (skip with --no-fuzz)",
            fuzz::TEST_SECONDS
        );
        fuzz::fuzz(repo, fuzz::TARGETS, fuzz::TEST_SECONDS).context("a fuzz target crashed")?;
    }
    if args.no_bench {
        return Ok(());
    }
    // The benchmark is not a test, but a broken benchmark must fail CI: its smoke run takes
    // every measurement once with small counts.
    println!("test: running cargo xtask bench --quick");
    bench::run(repo, &bench::BenchArgs::quick()).context("the benchmark smoke run failed")
}

fn cargo(repo: &Path, cargo_args: &[&str], test_args: &[String]) -> Result<()> {
    let mut command = cmd::cargo(repo, cargo_args, test_args)?;
    println!("test: running {}", cmd::display(&command));
    cmd::run(&mut command).context("tests failed")
}
