//! The `otfw` command line: one module per subcommand, dispatched from `main.rs`.

pub mod check;

use clap::{Parser, Subcommand};

/// Inline OT segmentation firewall: zone/conduit policies enforced by XDP on bridge ports.
#[derive(Debug, Parser)]
#[command(name = "otfw", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files: report every error and warning, exit 1 if any file has an error.
    Check(check::CheckArgs),
}

impl Cli {
    /// Runs the chosen subcommand; returns the process exit code.
    pub fn run(self) -> anyhow::Result<u8> {
        match self.command {
            Command::Check(args) => check::run(&args),
        }
    }
}
