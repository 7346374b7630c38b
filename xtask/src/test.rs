//! `cargo xtask test`: setup, then the whole test suite.
//!
//! Unit tests run in parallel. Integration test binaries (`tests/` of every crate: the
//! end-to-end lab, datapath tests) share kernel state such as the lab bridge, namespaces and
//! bpffs pins, so they run with one test thread.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::{cmd, setup};

#[derive(Args)]
pub struct TestArgs {
    /// Skip `cargo xtask setup` (when the prerequisites are known to be there).
    #[arg(long)]
    no_setup: bool,
    /// Passed to every test binary, e.g. a name filter or `--nocapture`.
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(repo: &Path, args: &TestArgs) -> Result<()> {
    if !args.no_setup {
        setup::run(repo)?;
    }
    // The binaries the end-to-end tests start (`otfw`, `otfw-peer`) are not built by
    // `cargo test` for a crate other than their own.
    cargo(repo, &["build", "--bins"], &[])?;
    cargo(repo, &["test", "--lib", "--bins"], &args.test_args)?;
    cargo(repo, &["test", "--doc"], &args.test_args)?;
    let mut serial = vec!["--test-threads=1".to_string()];
    serial.extend(args.test_args.iter().cloned());
    cargo(repo, &["test", "--test", "*"], &serial)
}

/// Runs cargo on the workspace's default members with the eBPF toolchain on PATH.
fn cargo(repo: &Path, cargo_args: &[&str], test_args: &[String]) -> Result<()> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(repo).args(cargo_args);
    if !test_args.is_empty() {
        command.arg("--").args(test_args);
    }
    // firewall-user's build script links the eBPF object with bpf-linker from cargo's bin dir.
    command.env("PATH", cmd::path_with(&[cmd::cargo_home()?.join("bin")])?);
    println!("test: running {}", cmd::display(&command));
    cmd::run(&mut command).context("tests failed")
}
