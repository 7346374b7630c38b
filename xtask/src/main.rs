//! Orchestration for otfw: installing prerequisites, running the tests, the demo, the
//! benchmark, and packaging.
//!
//! Invoked as `cargo xtask <command>` (an alias in `.cargo/config.toml`). This is not the
//! build: `cargo build` builds the product on its own once the prerequisites are there.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod bench;
mod cmd;
mod compare;
mod demo;
mod deny;
mod fuzz;
mod package;
mod profile;
mod setup;
mod test;
mod vendors;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Orchestration tasks for otfw"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install every prerequisite (Debian packages, nightly rust-src, bpf-linker, the Python
    /// venv, bpffs). Idempotent: steps already done are only checked.
    Setup,
    /// Run setup, then the whole test suite (unit tests in parallel, root-needing
    /// integration tests one at a time).
    Test(test::TestArgs),
    /// Run setup, then the demo: the example policy enforced by `otfw run` on a lab of
    /// network namespaces, with allowed and denied traffic explained by the counters.
    Demo(demo::DemoArgs),
    /// Measure otfw (per-packet cost, scaling, bridge throughput, control plane, latency) and
    /// write target/bench/report.md with charts; `--quick` is a smoke run.
    Bench(bench::BenchArgs),
    /// Run setup, then fuzz the parsers of untrusted input (policies, captures, the inventory,
    /// datapath records, Modbus and EtherNet/IP decoders) with libFuzzer, each target for
    /// `--seconds`.
    Fuzz(fuzz::FuzzArgs),
    /// Profile one benchmark case (`--case ID`) with perf: where its time goes, by function
    /// (kernel helpers included) and by source line of the eBPF programs; writes
    /// target/bench/profile-ID.md.
    Profile(profile::ProfileArgs),
    /// Compare the per-packet cost of this tree (committed or not) with another revision
    /// (`--base`, default HEAD): both built, their quick test-run benchmarks alternating;
    /// writes target/bench/compare.md.
    Compare(compare::CompareArgs),
    /// Regenerate the CIP vendor and device type tables of the inventory from tshark.
    Vendors,
    /// Build the Debian package (target/package/otfw_VERSION_ARCH.deb): the binary, the systemd
    /// unit, /etc/otfw/otfw.yaml, the example policy, dashboards and alert rules, the docs.
    Package(package::PackageArgs),
    /// A traffic endpoint of the benchmark, run inside a lab namespace.
    #[command(hide = true)]
    BenchPeer(bench::peer::PeerArgs),
}

fn main() {
    let cli = Cli::parse();
    let repo = repo_root();
    let result: Result<()> = match cli.command {
        Command::Setup => setup::run(&repo),
        Command::Test(args) => test::run(&repo, &args),
        Command::Demo(args) => demo::run(&repo, &args),
        Command::Bench(args) => bench::run(&repo, &args),
        Command::Fuzz(args) => fuzz::run(&repo, &args),
        Command::Package(args) => package::run(&repo, &args),
        Command::Profile(args) => profile::run(&repo, &args),
        Command::Compare(args) => compare::run(&repo, &args),
        Command::BenchPeer(args) => bench::peer::run(&args),
        Command::Vendors => vendors::run(&repo),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// The repository root: the parent of this crate's manifest directory.
fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}
