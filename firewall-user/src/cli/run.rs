//! `otfw run [--config FILE] [--policy FILE] [--bridge BR | --iface IF ...]`: enforce a policy
//! on the gateway. Every flag can also be set in the configuration file (`cli::config`);
//! flags win.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;
use clap::Args;

use super::config::{
    Effective, FastPath, MetricsSetting, RunConfig, WatchInterval, XdpMode, DEFAULT_CONFIG,
};
use crate::{
    controller::{self, ObserveOptions, RunOptions},
    datapath::{FastPathChoice, ModeChoice},
    policy::permissions::{self, OVERRIDE_FLAG},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read the settings from this YAML file: one key per flag below, named like the flag with
    /// `_` for `-` (e.g. `events_file`); flags override it. Without --config, /etc/otfw/otfw.yaml
    /// is read if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration and the policy, print the effective settings as YAML, and exit
    /// (0: ready to run, 1: errors) without loading or attaching anything.
    #[arg(long)]
    pub check_config: bool,
    /// The policy to enforce; reloaded on SIGHUP and whenever its contents change.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Attach to every port of this bridge (default: the policy's `gateway`).
    #[arg(long, value_name = "BRIDGE", conflicts_with = "iface")]
    pub bridge: Option<String>,
    /// Attach to this bridge port; repeat for each (default: the policy's `gateway`).
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
    /// Seconds between checks of the policy file for changes [default: 1].
    #[arg(long, value_name = "SECONDS", value_parser = parse_watch_interval)]
    pub watch_interval: Option<WatchInterval>,
    /// XDP mode: `auto` tries native (driver) XDP on each port and falls back to generic;
    /// `generic` works on every device (slower); `native` fails where the driver lacks it
    /// [default: auto].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<ModeChoice>,
    /// Serve Prometheus metrics on ADDR (`/metrics`); `off` disables [default: 127.0.0.1:9725].
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics)]
    pub metrics: Option<MetricsSetting>,
    /// The fast path: allowed frames between two ports whose destination the bridge has learnt
    /// are forwarded port to port by XDP_REDIRECT, skipping the bridge (which still handles
    /// everything else). `auto`: between ports in generic XDP mode, where the kernel
    /// transmits redirected frames itself; `on`: native-mode ports too (their drivers must
    /// transmit redirected frames, ndo_xdp_xmit; a veth only does when its peer runs XDP);
    /// `off`: every frame to the bridge [default: auto].
    #[arg(long, value_enum)]
    pub fast_path: Option<FastPathChoice>,
    /// Append every event line to this file too (stdout always gets them).
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
    /// Name of this instance: its pins live in /sys/fs/bpf/otfw/NAME, and `otfw status` and
    /// `otfw stop` take it (default: the bridge, or the first port).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Pin nothing and write no state file: enforcement ends when this process exits (links
    /// detached), and `otfw status` cannot see the instance. For tests and experiments, not
    /// for a gateway.
    #[arg(long)]
    pub no_pin: bool,
    /// Keep the inventory of the live datapath in this state file (default with pinning:
    /// /var/lib/otfw/INSTANCE.inventory.json; `otfw inventory --state` may feed it too), and
    /// export its assets as `otfw_asset_info` series, sorted into the policy's zones.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Enforce the policy file even if users other than root can change it (group- or
    /// world-writable, owned by another user, or in a directory others can write); otherwise
    /// such a file is refused, at start and at every reload.
    #[arg(long)]
    pub allow_insecure_policy_permissions: bool,
    /// When the pinned maps were made by a version with another map layout (an upgrade that
    /// changed them), load onto fresh maps and swap the new program into each port's pinned
    /// link atomically: no unprotected moment, but flows and counters start afresh (TCP
    /// connections go on only where the policy adopts flows mid-stream). Without it such a
    /// start is refused and the pinned program goes on enforcing.
    #[arg(long)]
    pub replace_incompatible_maps: bool,
}

fn parse_watch_interval(text: &str) -> Result<WatchInterval, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    WatchInterval::try_from(seconds)
}

fn parse_metrics(text: &str) -> Result<MetricsSetting, String> {
    MetricsSetting::try_from(text.to_string())
}

impl RunArgs {
    /// The settings given on the command line, in the configuration file's terms.
    fn flags(&self) -> RunConfig {
        RunConfig {
            policy: self.policy.clone(),
            bridge: self.bridge.clone(),
            iface: (!self.iface.is_empty()).then(|| self.iface.clone()),
            watch_interval: self.watch_interval,
            xdp_mode: self.xdp_mode.map(XdpMode),
            fast_path: self.fast_path.map(FastPath),
            metrics: self.metrics,
            events_file: self.events_file.clone(),
            instance: self.instance.clone(),
            no_pin: self.no_pin.then_some(true),
            inventory: self.inventory.clone(),
            allow_insecure_policy_permissions: self
                .allow_insecure_policy_permissions
                .then_some(true),
            replace_incompatible_maps: self.replace_incompatible_maps.then_some(true),
        }
    }

    /// The configuration file (if any) with the flags applied over it.
    fn settings(&self) -> anyhow::Result<(Option<PathBuf>, Effective)> {
        let (path, explicit) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let file = RunConfig::read(&path, explicit).map_err(anyhow::Error::msg)?;
        let used = file.is_some().then_some(path);
        let effective = file
            .unwrap_or_default()
            .overridden_by(self.flags())
            .effective(used.as_deref())
            .map_err(anyhow::Error::msg)?;
        Ok((used, effective))
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let (config, settings) = args.settings()?;
    if let Some(path) = &config {
        log::info!("settings from {} (flags override)", path.display());
    }
    if args.check_config {
        return check(config.as_deref(), &settings);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts = RunOptions {
        policy: settings.policy,
        bridge: settings.bridge,
        interfaces: settings.iface,
        watch_interval: Duration::from_secs_f64(settings.watch_interval.max(0.1)),
        xdp_mode: settings.xdp_mode.0,
        fast_path: settings.fast_path.0,
        allow_insecure_policy_permissions: settings.allow_insecure_policy_permissions,
        replace_incompatible_maps: settings.replace_incompatible_maps,
        observe: ObserveOptions {
            metrics: settings.metrics.0,
            events_file: settings.events_file,
            instance: settings.instance,
            pin: !settings.no_pin,
            inventory: settings.inventory,
        },
    };
    runtime.block_on(controller::run(opts, super::load_compiled))?;
    Ok(0)
}

/// `--check-config`: the effective settings on stdout, the policy checked as `otfw check` does.
fn check(config: Option<&std::path::Path>, settings: &Effective) -> anyhow::Result<u8> {
    let source = config.map_or_else(
        || "flags only (no configuration file)".to_string(),
        |p| format!("{} and flags", p.display()),
    );
    println!("# otfw run settings from {source}");
    print!("{}", serde_yaml::to_string(settings)?);
    if let Err(insecure) = permissions::check(&settings.policy) {
        if !settings.allow_insecure_policy_permissions {
            bail!("{insecure}");
        }
        log::warn!("{} (accepted: {OVERRIDE_FLAG})", insecure.0);
    }
    match super::load_compiled(&settings.policy) {
        Ok(policy) => {
            println!(
                "# policy {} compiles: {} zones, {} conduits",
                settings.policy.display(),
                policy.zone_info.len(),
                policy
                    .names
                    .conduits
                    .len()
                    .saturating_sub(firewall_common::conduit::FIRST_CONDUIT as usize)
            );
            Ok(0)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("policy {} has errors", settings.policy.display())
        }
    }
}
