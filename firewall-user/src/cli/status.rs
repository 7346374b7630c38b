//! `otfw status [--instance NAME] [--json]`: a running instance, read from its pinned maps and
//! state file without disturbing it.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;

use crate::status;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The instance (`otfw run --instance`, by default its bridge or first port); may be left
    /// out when one instance runs.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<u8> {
    let state = status::find(args.instance.as_deref())?;
    let report = status::report(state)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing to stdout")?;
        writeln!(out).context("writing to stdout")?;
    } else {
        out.write_all(report.render().as_bytes())
            .context("writing to stdout")?;
    }
    Ok(0)
}
