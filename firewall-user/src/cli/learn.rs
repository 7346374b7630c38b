//! `otfw learn --capture FILE... [--zones POLICY] [--state FILE] [-o OUT]`: a candidate policy
//! allowing exactly what the captures (and the state of earlier runs) show.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use super::inventory::Source;
use crate::{
    inventory::{learn::Learn, zones::Zones},
    policy,
};

#[derive(Debug, Args)]
pub struct LearnArgs {
    #[command(flatten)]
    pub source: Source,
    /// Take zones, hosts and gateway from this policy (it must pass `otfw check`); without
    /// it, zones are proposed per IPv4 /24 or IPv6 /64 and hosts named from their identity.
    #[arg(long, value_name = "POLICY")]
    pub zones: Option<PathBuf>,
    /// Write the policy here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: &LearnArgs) -> anyhow::Result<u8> {
    let inventory = args.source.observe()?;
    let given = match &args.zones {
        Some(path) => Some(Zones::from_policy(path)?.1),
        None => None,
    };
    let mut sources: Vec<String> = args
        .source
        .captures
        .iter()
        .map(|p| format!("capture {}", p.display()))
        .collect();
    if let Some(state) = &args.source.state {
        sources.push(format!("inventory state {}", state.display()));
    }
    if let Some(z) = &args.zones {
        sources.push(format!("zones of {}", z.display()));
    }
    let yaml = Learn {
        inventory: &inventory,
        policy: given.as_ref().map(|l| &l.policy),
        sources,
    }
    .policy_yaml();
    let name = args.output.as_ref().map_or_else(
        || "(learned policy)".to_owned(),
        |p| p.display().to_string(),
    );
    // What is written must load: a learned policy that fails `otfw check` is a bug here.
    let (loaded, diagnostics) = policy::check_str(&name, &yaml);
    if loaded.is_none() {
        for d in diagnostics.iter().filter(|d| d.is_error()) {
            eprintln!("{d}");
        }
        bail!("the learned policy does not pass `otfw check` (a bug in otfw learn); not written");
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{yaml}"),
    }
    eprintln!(
        "learned {} conduits for {} assets; {} warnings from `otfw check`",
        loaded.map_or(0, |l| l.policy.conduits.len()),
        inventory.assets.len(),
        diagnostics.len()
    );
    Ok(0)
}
