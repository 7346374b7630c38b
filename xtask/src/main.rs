//! Orchestration for otfw: installing prerequisites and running the tests.
//!
//! Invoked as `cargo xtask <command>` (an alias in `.cargo/config.toml`). This is not the
//! build: `cargo build` builds the product on its own once the prerequisites are there.

mod cmd;
mod setup;
mod test;

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
}

fn main() {
    let cli = Cli::parse();
    let repo = repo_root();
    let result: Result<()> = match cli.command {
        Command::Setup => setup::run(&repo),
        Command::Test(args) => test::run(&repo, &args),
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
