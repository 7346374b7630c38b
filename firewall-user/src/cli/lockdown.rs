//! `otfw lockdown read-only | isolate ZONE | release [--instance NAME]`: incident response on
//! the gateway itself. The order goes to the instance's root-only order file; the running
//! controller is signalled (SIGUSR2), derives the restricted policy from the one in force and
//! installs it. This command then waits until the controller's state file shows it in force.
//! There is no remote interface: whoever may order a lockdown is root on the gateway.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use crate::{
    lockdown::{lockdown_path, Lockdown, Order},
    status::{self, State},
};

#[derive(Debug, Args)]
pub struct LockdownArgs {
    #[command(subcommand)]
    pub action: Action,
    /// The instance (`otfw run --instance`); may be left out when one instance runs.
    #[arg(long, value_name = "NAME", global = true)]
    pub instance: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Every inspected conduit keeps only its read requests (Modbus read functions, CIP read
    /// services); every uninspected conduit and permissive default is closed.
    ReadOnly,
    /// Nothing in or out of ZONE: every conduit from or to it is closed (and the `action` and
    /// `unzoned` defaults, for every zone).
    Isolate {
        /// A zone of the policy in force.
        zone: String,
    },
    /// End the lockdown: the policy in force applies in full again.
    Release,
}

/// How long the controller may take to put an order in force before this command gives up
/// waiting (the order stays).
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: &LockdownArgs) -> anyhow::Result<u8> {
    let instance = match &args.instance {
        Some(name) => name.clone(),
        None => status::find(None)?.instance,
    };
    let wanted = match &args.action {
        Action::ReadOnly => Some(Order::now(Lockdown::ReadOnly)),
        Action::Isolate { zone } => Some(Order::now(Lockdown::Isolate { zone: zone.clone() })),
        Action::Release => None,
    };
    match &wanted {
        Some(order) => order.save(&instance)?,
        None => {
            if !Order::remove(&instance)? {
                println!("otfw lockdown: instance {instance} is not locked down");
            }
        }
    }
    let what = wanted
        .as_ref()
        .map_or_else(|| "release".to_string(), |o| o.lockdown.to_string());
    let state = match status::find(Some(&instance)) {
        Ok(state) => state,
        Err(e) => {
            eprintln!(
                "otfw lockdown: {what} ordered for instance {instance} ({}), but it is not in \
                 force: {e:#}\nIt applies as soon as `otfw run` of the instance starts.",
                lockdown_path(&instance).display()
            );
            return Ok(1);
        }
    };
    let started = Instant::now();
    // SAFETY: sending a signal to the pid the controller recorded for itself.
    if unsafe { libc::kill(state.pid as libc::pid_t, libc::SIGUSR2) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling the controller (pid {})", state.pid));
    }
    loop {
        let now = State::previous(&instance).context("the controller's state file is gone")?;
        if now.lockdown.as_ref().map(|l| &l.order) == wanted.as_ref() {
            let epoch = now.generations.last().map_or(0, |g| g.epoch);
            println!(
                "otfw lockdown: instance {instance}: {} (epoch {epoch}, in force after {} ms)",
                match &wanted {
                    Some(order) => format!("lockdown {} in force", order.lockdown),
                    None => "released; the policy in force applies in full".to_string(),
                },
                started.elapsed().as_millis()
            );
            return Ok(0);
        }
        let restored = Order::read(&instance).ok().flatten() != wanted;
        if let (true, Some(error)) = (restored, &now.lockdown_refused) {
            bail!("the controller refused {what}: {error}");
        }
        if started.elapsed() > APPLY_TIMEOUT {
            bail!(
                "the controller (pid {}) did not put {what} in force within {} s; the order \
                 stays in {} and applies when it does",
                state.pid,
                APPLY_TIMEOUT.as_secs(),
                lockdown_path(&instance).display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
