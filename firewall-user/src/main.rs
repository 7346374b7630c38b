use std::process::ExitCode;

use clap::Parser;
use otfw::cli::Cli;

fn main() -> anyhow::Result<ExitCode> {
    let code = Cli::parse().run()?;
    Ok(ExitCode::from(code))
}
