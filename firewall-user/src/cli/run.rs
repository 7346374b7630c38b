//! `otfw run --policy FILE [--bridge BR | --iface IF ...]`: enforce a policy on the gateway.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    controller::{self, ObserveOptions, RunOptions},
    datapath::{FastPathChoice, ModeChoice},
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
    /// The fast path: allowed frames between two ports whose destination the bridge has learnt
    /// are forwarded port to port by XDP_REDIRECT, skipping the bridge (which still handles
    /// everything else). `auto`: between ports in generic XDP mode, where the kernel
    /// transmits redirected frames itself; `on`: native-mode ports too (their drivers must
    /// transmit redirected frames, ndo_xdp_xmit; a veth only does when its peer runs XDP);
    /// `off`: every frame to the bridge.
    #[arg(long, value_enum, default_value_t = FastPathChoice::Auto)]
    pub fast_path: FastPathChoice,
    /// Serve Prometheus metrics on ADDR (`/metrics`); `off` disables.
    #[arg(long, value_name = "ADDR", default_value = crate::metrics::DEFAULT_ADDR)]
    pub metrics: String,
    /// Append every event line to this file too (stdout always gets them).
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
    /// Name of this instance for `otfw status` (default: the bridge, or the first port).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Do not pin maps or write the state file (`otfw status` cannot see this instance).
    #[arg(long)]
    pub no_pin: bool,
    /// Export the assets of this inventory state file (kept by `otfw inventory --state`) as
    /// `otfw_asset_info` series, sorted into the policy's zones; read again when it changes.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let metrics = match args.metrics.as_str() {
        "off" | "none" => None,
        addr => Some(addr.parse().with_context(|| {
            format!(
                "--metrics {addr}: expected IP:PORT (e.g. {}) or off",
                crate::metrics::DEFAULT_ADDR
            )
        })?),
    };
    let opts = RunOptions {
        policy: args.policy,
        bridge: args.bridge,
        interfaces: args.iface,
        watch_interval: Duration::from_secs_f64(args.watch_interval.max(0.1)),
        xdp_mode: args.xdp_mode,
        fast_path: args.fast_path,
        observe: ObserveOptions {
            metrics,
            events_file: args.events_file,
            instance: args.instance,
            pin: !args.no_pin,
            inventory: args.inventory,
        },
    };
    runtime.block_on(controller::run(opts, super::load_compiled))?;
    Ok(0)
}
