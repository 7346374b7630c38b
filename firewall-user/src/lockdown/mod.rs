//! Lockdown for incident response: a stricter policy derived from the one in force, without
//! reading the policy file again.
//!
//! - `read-only`: every inspected conduit (Modbus, EtherNet/IP) keeps only its read requests
//!   (the policy's `read` presets); every uninspected conduit (plain TCP, UDP, ICMP) and every
//!   default that admits traffic is closed; monitor-mode conduits enforce.
//! - `isolate ZONE`: every conduit from or to the zone is closed, and so are the defaults that
//!   could admit traffic across its border (`action` and `unzoned`; the datapath's defaults are
//!   not per zone, so they close for every zone). Traffic within the zone is left alone.
//!
//! The order is kept in a root-only file, `/var/lib/otfw/<instance>.lockdown`, which outlives
//! the controller (and a reboot): `otfw lockdown` writes it and signals the controller
//! (SIGUSR2), which derives the restricted policy and installs it as a new generation; a
//! controller that starts, or reloads its policy, applies the order again.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, Result};
use firewall_common::{
    conduit::{RuleSet, FIRST_CONDUIT, INSPECT_NONE, MODE_ENFORCE},
    config::{FLAG_DEFAULT_ALLOW, FLAG_INTRA_ZONE_ALLOW, FLAG_UNZONED_ALLOW},
};
use serde::{Deserialize, Serialize};

use crate::policy::{compiled::CompiledPolicy, enip, modbus};

mod control;
pub use control::{Control, InForce};

/// Where lockdown orders are kept (persistent: a lockdown outlives restarts and reboots).
pub const LOCKDOWN_DIR: &str = "/var/lib/otfw";

pub fn lockdown_path(instance: &str) -> PathBuf {
    Path::new(LOCKDOWN_DIR).join(format!("{instance}.lockdown"))
}

/// What a lockdown restricts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Lockdown {
    ReadOnly,
    Isolate { zone: String },
}

impl Lockdown {
    /// The `mode` label of metrics and events.
    pub fn mode(&self) -> &'static str {
        match self {
            Lockdown::ReadOnly => "read-only",
            Lockdown::Isolate { .. } => "isolate",
        }
    }

    /// The isolated zone, if any.
    pub fn zone(&self) -> Option<&str> {
        match self {
            Lockdown::ReadOnly => None,
            Lockdown::Isolate { zone } => Some(zone),
        }
    }
}

impl std::fmt::Display for Lockdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lockdown::ReadOnly => f.write_str("read-only"),
            Lockdown::Isolate { zone } => write!(f, "isolate {zone}"),
        }
    }
}

/// A lockdown as ordered: what, and since when (RFC 3339).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    #[serde(flatten)]
    pub lockdown: Lockdown,
    pub since: String,
}

impl Order {
    pub fn now(lockdown: Lockdown) -> Order {
        Order {
            lockdown,
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// The order kept for `instance`: `Ok(None)` when there is none, `Err` when the file
    /// exists but cannot be read or understood.
    pub fn read(instance: &str) -> Result<Option<Order>> {
        let path = lockdown_path(instance);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not a lockdown order", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Keeps the order for `instance` (root-only file, replaced atomically).
    pub fn save(&self, instance: &str) -> Result<()> {
        crate::rollout::keep(&lockdown_path(instance), &serde_json::to_vec_pretty(self)?)
            .context("keeping the lockdown order (otfw lockdown needs root)")
    }

    /// Removes the order kept for `instance`; whether there was one.
    pub fn remove(instance: &str) -> Result<bool> {
        let path = lockdown_path(instance);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// The policy `lockdown` leaves of `policy`. Names and ids stay, so metrics, events and
/// counters keep meaning the same conduits. `Err` when the zone to isolate is not in the policy.
pub fn restrict(policy: &CompiledPolicy, lockdown: &Lockdown) -> Result<CompiledPolicy, String> {
    let mut restricted = policy.clone();
    match lockdown {
        Lockdown::ReadOnly => {
            restricted.config.flags &=
                !(FLAG_DEFAULT_ALLOW | FLAG_INTRA_ZONE_ALLOW | FLAG_UNZONED_ALLOW);
            restricted.rules = policy
                .rules
                .iter()
                .filter_map(|(key, set)| Some((*key, inspected_only(set)?)))
                .collect();
            for (_, info) in &mut restricted.conduits {
                info.mode = MODE_ENFORCE;
            }
            (restricted.modbus_rules, restricted.modbus_maps) = read_only(
                &policy.modbus_rules,
                modbus::ModbusRules::read_only,
                modbus::to_map,
            )?;
            (restricted.enip_rules, restricted.enip_maps) =
                read_only(&policy.enip_rules, enip::EnipRules::read_only, enip::to_map)?;
        }
        Lockdown::Isolate { zone } => {
            let id = policy
                .names
                .zones
                .iter()
                .skip(1)
                .position(|z| z == zone)
                .map(|i| i as u16 + 1)
                .ok_or_else(|| {
                    format!(
                        "the policy in force has no zone `{zone}` (zones: {})",
                        policy.names.zones[1.min(policy.names.zones.len())..].join(", ")
                    )
                })?;
            restricted.config.flags &= !(FLAG_DEFAULT_ALLOW | FLAG_UNZONED_ALLOW);
            restricted
                .rules
                .retain(|(key, _)| key.from_zone != id && key.to_zone != id);
            // Without a conduit a packet falls to the defaults, which must then drop it.
            for (_, info) in restricted
                .conduits
                .iter_mut()
                .filter(|(c, _)| *c < FIRST_CONDUIT)
            {
                info.mode = MODE_ENFORCE;
            }
        }
    }
    Ok(restricted)
}

/// Protocol rules narrowed by `narrow`, and their map form.
type Narrowed<R, M> = (Vec<(u16, R)>, Vec<(u16, M)>);

fn read_only<R, M>(
    rules: &[(u16, R)],
    narrow: fn(&R) -> R,
    to_map: fn(&R) -> Result<M, (String, String)>,
) -> Result<Narrowed<R, M>, String> {
    let narrowed: Vec<(u16, R)> = rules.iter().map(|(id, r)| (*id, narrow(r))).collect();
    let maps = narrowed
        .iter()
        .map(|(id, r)| Ok((*id, to_map(r).map_err(|(_, message)| message)?)))
        .collect::<Result<_, String>>()?;
    Ok((narrowed, maps))
}

/// The inspected rules of `set`, in order; `None` when none is left.
fn inspected_only(set: &RuleSet) -> Option<RuleSet> {
    let mut kept = RuleSet::default();
    for rule in set.rules[..set.count as usize]
        .iter()
        .filter(|r| r.inspect != INSPECT_NONE)
    {
        kept.rules[kept.count as usize] = *rule;
        kept.count += 1;
    }
    (kept.count > 0).then_some(kept)
}

#[cfg(test)]
mod tests;
