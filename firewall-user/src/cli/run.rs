//! `otfw run --policy FILE [--bridge BR | --iface IF ...]`: enforce a policy on the gateway.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    controller::{self, RunOptions},
    datapath::ModeChoice,
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The policy to enforce; reloaded on SIGHUP and whenever its contents change.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Attach to every port of this bridge (default: the policy's `gateway`).
    #[arg(long, value_name = "BRIDGE", conflicts_with = "iface")]
    pub bridge: Option<String>,
    /// Attach to this bridge port; repeat for each (default: the policy's `gateway`).
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
    /// Seconds between checks of the policy file for changes.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub watch_interval: f64,
    /// XDP mode: `auto` tries native (driver) XDP on each port and falls back to generic;
    /// `generic` works on every device (slower); `native` fails where the driver lacks it.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub xdp_mode: ModeChoice,
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let opts = RunOptions {
        policy: args.policy,
        bridge: args.bridge,
        interfaces: args.iface,
        watch_interval: Duration::from_secs_f64(args.watch_interval.max(0.1)),
        xdp_mode: args.xdp_mode,
    };
    runtime.block_on(controller::run(opts, super::load_compiled))?;
    Ok(0)
}
