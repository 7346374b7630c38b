//! `otfw apply NEW.yaml --confirm-within DURATION` and `otfw confirm` (see `crate::rollout`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::{
    policy::permissions::{self, OVERRIDE_FLAG},
    private,
    rollout::{keep, previous_path, unix_now, Pending},
    status::{self, State},
};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The policy to put in force.
    pub policy: std::path::PathBuf,
    /// Roll back to the policy in force now unless `otfw confirm` arrives within this time
    /// (e.g. 5m, 90s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub confirm_within: Duration,
    /// The instance (`otfw run --instance`); may be left out when one instance runs.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Apply the policy even if users other than root can change its file (group- or
    /// world-writable, owned by another user, or in a directory others can write).
    #[arg(long)]
    pub allow_insecure_policy_permissions: bool,
}

#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// The instance (`otfw run --instance`); may be left out when one instance runs.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
}

/// How long `apply` waits for the controller to put the policy in force.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

pub fn apply(args: &ApplyArgs) -> anyhow::Result<u8> {
    let state = status::find(args.instance.as_deref())?;
    let instance = state.instance.clone();
    if let Some(p) = Pending::read(&instance)? {
        bail!(
            "an apply to {} is waiting for `otfw confirm` (rolled back at {} s since the epoch): \
             confirm it or let it roll back first",
            p.policy_file.display(),
            p.deadline
        );
    }
    // Nor does one that others could have changed since it was reviewed.
    if let Err(insecure) = permissions::check(&args.policy) {
        if !args.allow_insecure_policy_permissions {
            bail!("{insecure}; nothing was changed");
        }
        log::warn!("{} (accepted: {OVERRIDE_FLAG})", insecure.0);
    }
    // A policy with errors never reaches the file the controller watches.
    if let Err(errors) = super::load_compiled(&args.policy) {
        for e in &errors {
            eprintln!("{e}");
        }
        bail!("{} has errors; nothing was changed", args.policy.display());
    }
    let target = std::path::PathBuf::from(&state.policy_file);
    let new = std::fs::read(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    let old = std::fs::read(&target).with_context(|| format!("reading {}", target.display()))?;
    let previous = previous_path(&instance);
    keep(&previous, &old)?;
    let deadline = unix_now() + args.confirm_within.as_secs().max(1);
    Pending {
        policy_file: target.clone(),
        previous,
        deadline,
    }
    .save(&instance)?;
    let before = state.generations.last().map_or(0, |g| g.epoch);
    private::write(&target, &new)?;
    // SAFETY: sending a signal to the pid the controller recorded for itself.
    if unsafe { libc::kill(state.pid as libc::pid_t, libc::SIGHUP) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling the controller (pid {})", state.pid));
    }
    let started = Instant::now();
    loop {
        let now = State::previous(&instance).context("the controller's state file is gone")?;
        if let Some(g) = now.generations.last().filter(|g| g.epoch > before) {
            println!(
                "otfw apply: {} in force in {} (epoch {}); run `otfw confirm` within {} or it \
                 is rolled back",
                args.policy.display(),
                target.display(),
                g.epoch,
                humantime::format_duration(args.confirm_within)
            );
            return Ok(0);
        }
        if started.elapsed() > LOAD_TIMEOUT {
            bail!(
                "the controller (pid {}) did not load the new policy within {} s; it is in \
                 {} and rolls back at the deadline unless confirmed",
                state.pid,
                LOAD_TIMEOUT.as_secs(),
                target.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn confirm(args: &ConfirmArgs) -> anyhow::Result<u8> {
    let instance = match &args.instance {
        Some(name) => name.clone(),
        None => status::find(None)?.instance,
    };
    match Pending::read(&instance)? {
        Some(p) if unix_now() >= p.deadline => {
            bail!(
                "too late: the apply to {} was due to be confirmed by {} s since the epoch and is \
                 being rolled back",
                p.policy_file.display(),
                p.deadline
            )
        }
        Some(p) => {
            Pending::remove(&instance)?;
            println!(
                "otfw confirm: the policy in {} stays in force",
                p.policy_file.display()
            );
            Ok(0)
        }
        None => {
            println!("otfw confirm: nothing to confirm for instance {instance}");
            Ok(1)
        }
    }
}
