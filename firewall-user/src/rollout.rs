//! Safe rollout: `otfw apply NEW.yaml --confirm-within DURATION` puts a policy in force and
//! the controller rolls back to the previous one unless `otfw confirm` arrives in time: the
//! classic protection against a change that cuts off the engineer who made it at a remote site.
//!
//! The policy file stays the one source of what is enforced: `apply` keeps a copy of the
//! current file (root-only, `/var/lib/otfw/<instance>.previous.yaml`), writes the new policy
//! into the file (the controller reloads it as it reloads any change) and records the pending
//! confirmation (`<instance>.apply`). `confirm` removes the record: the file, now the new policy,
//! stays. At the deadline the controller copies the old policy back into the file, reloads it,
//! and says so. The record outlives a controller restart: a controller that starts after the
//! deadline rolls back at once.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{
    events::{self, Event},
    lockdown::LOCKDOWN_DIR,
    private,
};

/// A policy applied and not yet confirmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The policy file the controller enforces (and `apply` wrote).
    pub policy_file: PathBuf,
    /// The file's contents before `apply`, kept here.
    pub previous: PathBuf,
    /// Seconds since the Unix epoch after which the controller rolls back.
    pub deadline: u64,
}

pub fn pending_path(instance: &str) -> PathBuf {
    Path::new(LOCKDOWN_DIR).join(format!("{instance}.apply"))
}

pub fn previous_path(instance: &str) -> PathBuf {
    Path::new(LOCKDOWN_DIR).join(format!("{instance}.previous.yaml"))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Keeps `bytes` in `path`, a file of the root-only state directory (created 0700 if missing),
/// written whole or not at all and readable by root only: the files there decide what a
/// gateway enforces.
pub fn keep(path: &Path, bytes: &[u8]) -> Result<()> {
    private::dir(Path::new(LOCKDOWN_DIR))?;
    private::write(path, bytes)
}

impl Pending {
    pub fn read(instance: &str) -> Result<Option<Pending>> {
        let path = pending_path(instance);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{}: not a pending apply record", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, instance: &str) -> Result<()> {
        keep(&pending_path(instance), &serde_json::to_vec_pretty(self)?)
    }

    /// Removes the record (and the copy of the old policy); whether there was one.
    pub fn remove(instance: &str) -> Result<bool> {
        let _ = std::fs::remove_file(previous_path(instance));
        let path = pending_path(instance);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// The controller's side: watches the record on every tick of the policy file watch.
pub struct Watch {
    /// `None` without pinning (`--no-pin`): no state, no rollout.
    instance: Option<String>,
    /// The record seen on the last tick.
    seen: Option<Pending>,
}

impl Watch {
    pub fn new(instance: Option<&str>) -> Watch {
        Watch {
            instance: instance.map(str::to_owned),
            seen: None,
        }
    }

    /// Reports an apply, a confirmation, and rolls back at the deadline (the old policy copied
    /// back into the policy file, which the file watch then reloads). True if it rolled back.
    pub fn tick(&mut self) -> bool {
        let Some(instance) = self.instance.clone() else {
            return false;
        };
        let pending = match Pending::read(&instance) {
            Ok(p) => p,
            Err(e) => {
                log::error!("{e:#}");
                return false;
            }
        };
        match (&self.seen, &pending) {
            (None, Some(p)) => events::emit(&Event::PolicyApplied {
                file: &p.policy_file.display().to_string(),
                confirm_by: p.deadline,
            }),
            (Some(p), None) => events::emit(&Event::PolicyConfirmed {
                file: &p.policy_file.display().to_string(),
            }),
            _ => {}
        }
        self.seen = pending.clone();
        let Some(p) = pending else {
            return false;
        };
        if unix_now() < p.deadline {
            return false;
        }
        let file = p.policy_file.display().to_string();
        let restored = std::fs::read(&p.previous)
            .with_context(|| {
                format!(
                    "reading the policy before the apply, {}",
                    p.previous.display()
                )
            })
            .and_then(|old| private::write(&p.policy_file, &old));
        match restored {
            Ok(()) => {
                log::warn!(
                    "not confirmed in time: {file} rolled back to the policy before the apply"
                );
                let _ = Pending::remove(&instance);
                self.seen = None;
                events::emit(&Event::PolicyRolledBack {
                    file: &file,
                    deadline: p.deadline,
                });
                true
            }
            Err(e) => {
                log::error!("rolling {file} back failed: {e:#}; the applied policy stays");
                false
            }
        }
    }
}
