//! The `otfw` command line: one module per subcommand, dispatched from `main.rs`.

pub mod bench;
pub mod check;
pub mod config;
pub mod diff;
pub mod inventory;
pub mod learn;
pub mod lockdown;
pub mod replay;
pub mod rollout;
pub mod run;
pub mod status;
pub mod stop;

use std::path::Path;

use clap::{Parser, Subcommand};

use crate::policy::{self, compiled::CompiledPolicy};

/// Inline OT segmentation firewall: zone/conduit policies enforced by XDP on bridge ports.
#[derive(Debug, Parser)]
#[command(name = "otfw", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put a policy in force that rolls back unless `otfw confirm` arrives in time.
    ///
    /// The new policy is checked, written into the file `otfw run` enforces (the old one kept
    /// in /var/lib/otfw/INSTANCE.previous.yaml) and loaded at once; at the deadline, unless
    /// confirmed, the controller writes the old policy back and loads it: a change that cuts
    /// off the engineer who made it undoes itself.
    Apply(rollout::ApplyArgs),
    /// Keep the policy `otfw apply` put in force (no rollback).
    Confirm(rollout::ConfirmArgs),
    /// Check policy files: report every error and warning, exit 1 if any file has an error.
    Check(check::CheckArgs),
    /// Explain what changing policy OLD into NEW does to what is allowed, line by line.
    ///
    /// Both files are loaded as `otfw check` loads them and compared by what they mean, not
    /// how they are written: reordered lists, a preset spelled out as its codes or comments
    /// are no change. Lines start with `+` (newly allowed or added), `-` (no longer allowed or
    /// removed) or `~` (changed).
    #[command(after_help = diff::EXIT_STATUS)]
    Diff(diff::DiffArgs),
    /// The assets seen in captures, or by a running `otfw run`, by zone: addresses, MACs,
    /// identity, last seen.
    ///
    /// Passive: everything comes from the traffic recorded or copied by the datapath, nothing
    /// is sent to a device.
    Inventory(inventory::InventoryArgs),
    /// Write a candidate policy allowing exactly what captures (or the live datapath, --live)
    /// show, for review.
    ///
    /// One conduit per client/server host pair with the Modbus functions, units and address
    /// ranges and the CIP services and tags seen, commented with counts and first/last seen.
    Learn(learn::LearnArgs),
    /// Incident response: restrict the policy in force at once, until released.
    ///
    /// The order is kept (/var/lib/otfw/INSTANCE.lockdown) and survives controller restarts
    /// and reboots; the running controller applies it within a second, without reading the
    /// policy file. Needs root on the gateway; there is no remote interface.
    Lockdown(lockdown::LockdownArgs),
    /// Enforce a policy on the ports of the gateway bridge.
    ///
    /// JSON events go to stdout. SIGHUP reloads the policy; SIGUSR1 prints the datapath's
    /// counters as a `stats` event. The program, its links and maps are pinned under
    /// /sys/fs/bpf/otfw/INSTANCE: when the controller exits (SIGTERM, crash), enforcement goes
    /// on, and the next `otfw run` takes it over; `otfw stop` ends it. With --no-pin, the
    /// controller detaches when it exits.
    Run(run::RunArgs),
    /// Run the frames of pcap/pcapng captures through the XDP program; one JSON line per frame.
    Replay(replay::ReplayArgs),
    /// Summarise a running `otfw run`: ports, policy, top conduits, drops (read-only).
    Status(status::StatusArgs),
    /// End an instance's enforcement: remove its pinned links, programs and maps.
    ///
    /// `otfw run` pins what it enforces with, so enforcement outlives the controller (crash,
    /// restart, upgrade); this is the only way to remove it. The controller must have exited.
    Stop(stop::StopArgs),
    /// Measure the datapath for `cargo xtask bench` (JSON on stdout).
    #[command(hide = true)]
    BenchDatapath(bench::BenchArgs),
}

impl Cli {
    /// Runs the chosen subcommand; returns the process exit code.
    pub fn run(self) -> anyhow::Result<u8> {
        match self.command {
            Command::Apply(args) => rollout::apply(&args),
            Command::Confirm(args) => rollout::confirm(&args),
            Command::Check(args) => check::run(&args),
            Command::Diff(args) => diff::run(&args),
            Command::Inventory(args) => inventory::run(&args),
            Command::Learn(args) => learn::run(&args),
            Command::Lockdown(args) => lockdown::run(&args),
            Command::Run(args) => run::run(args),
            Command::Replay(args) => replay::run(args),
            Command::Status(args) => status::run(&args),
            Command::Stop(args) => stop::run(&args),
            Command::BenchDatapath(args) => bench::run(&args),
        }
    }
}

/// Loads and compiles a policy for the datapath: warnings are logged, errors returned as
/// `file:line:col: error: ...` lines.
pub fn load_compiled(path: &Path) -> Result<CompiledPolicy, Vec<String>> {
    match policy::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                log::warn!("{w}");
            }
            Ok(loaded.compiled)
        }
        Err(diagnostics) => Err(diagnostics.iter().map(ToString::to_string).collect()),
    }
}
