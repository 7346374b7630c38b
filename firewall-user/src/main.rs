use std::process::ExitCode;

use clap::Parser;
use otfw::cli::Cli;

fn main() -> anyhow::Result<ExitCode> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let code = Cli::parse().run()?;
    Ok(ExitCode::from(code))
}
