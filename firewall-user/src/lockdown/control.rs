//! The controller's side of a lockdown: which order is in force, applying it to every policy
//! installed, and switching when `otfw lockdown` changes the order file.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{restrict, Lockdown, Order};
use crate::{
    datapath::Datapath,
    events::{self, Event},
    observe::Observer,
    policy::compiled::CompiledPolicy,
};

/// A lockdown in force, as the state file records it for `otfw status` and `otfw lockdown`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForce {
    #[serde(flatten)]
    pub order: Order,
    /// The generation that put it in force.
    pub epoch: u32,
}

pub struct Control {
    /// `None` without pinning (`--no-pin`): no order file, no lockdown.
    instance: Option<String>,
    order: Option<Order>,
    /// The last error reading the order file, so that it is logged once, not every tick.
    unreadable: Option<String>,
}

impl Control {
    /// Takes the order kept for `instance`. One that cannot be read locks down read-only:
    /// a lockdown is never lifted by a damaged file.
    pub fn open(instance: Option<&str>) -> Control {
        let order = instance.and_then(|instance| {
            Order::read(instance).unwrap_or_else(|e| {
                log::error!("{e:#}; locking down read-only until `otfw lockdown release`");
                Some(Order::now(Lockdown::ReadOnly))
            })
        });
        if let Some(order) = &order {
            log::warn!(
                "lockdown {} (ordered {}) stays in force: `otfw lockdown release` ends it",
                order.lockdown,
                order.since
            );
        }
        Control {
            instance: instance.map(str::to_owned),
            order,
            unreadable: None,
        }
    }

    /// The policy to install for `base` (the policy file's): `base` restricted by the order.
    pub fn restrict(&self, base: &CompiledPolicy) -> Result<CompiledPolicy> {
        match &self.order {
            None => Ok(base.clone()),
            Some(order) => restrict(base, &order.lockdown)
                .map_err(|e| anyhow::anyhow!("lockdown {}: {e}", order.lockdown)),
        }
    }

    /// The first generation of this controller was installed: a kept order is announced.
    pub fn started(&self, epoch: u32, observer: &mut Observer) {
        if let Some(order) = &self.order {
            announce(order, epoch);
        }
        self.installed(epoch, observer);
    }

    /// A generation restricted by the order in force was installed (at start or on reload).
    pub fn installed(&self, epoch: u32, observer: &mut Observer) {
        observer.lockdown(self.order.as_ref().map(|order| InForce {
            order: order.clone(),
            epoch,
        }));
    }

    /// Reads the order file again (SIGUSR2 from `otfw lockdown`, and every policy watch tick)
    /// and, when it changed, installs `base` restricted by the new order. An order that cannot
    /// be applied (a zone the policy lacks) is refused and the file restored to the order in
    /// force.
    pub fn reread(
        &mut self,
        datapath: &mut Datapath,
        observer: &mut Observer,
        base: &CompiledPolicy,
    ) {
        let Some(instance) = self.instance.clone() else {
            return;
        };
        let wanted = match Order::read(&instance) {
            Ok(wanted) => wanted,
            Err(e) => {
                let error = format!("{e:#}");
                if self.unreadable.as_ref() != Some(&error) {
                    log::error!("{error}; the lockdown in force stays");
                    self.unreadable = Some(error);
                }
                return;
            }
        };
        self.unreadable = None;
        if wanted == self.order {
            return;
        }
        let previous = std::mem::replace(&mut self.order, wanted);
        let installed = self.restrict(base).and_then(|policy| {
            observer.before_install(datapath);
            Ok(datapath.install(&policy)?.epoch)
        });
        let epoch = match installed {
            Ok(epoch) => epoch,
            Err(e) => {
                let error = format!("{e:#}");
                log::error!("lockdown refused, the policy in force stays: {error}");
                let refused = std::mem::replace(&mut self.order, previous);
                events::emit(&Event::LockdownRefused {
                    mode: refused.as_ref().map(|o| o.lockdown.mode()),
                    zone: refused.as_ref().and_then(|o| o.lockdown.zone()),
                    error: &error,
                });
                observer.lockdown_refused(&error);
                let restored = match &self.order {
                    Some(order) => order.save(&instance),
                    None => super::Order::remove(&instance).map(drop),
                };
                if let Err(e) = restored {
                    log::error!("restoring the lockdown order file: {e:#}");
                }
                return;
            }
        };
        observer.relocked(epoch, base);
        match (&self.order, &previous) {
            (Some(order), _) => {
                log::warn!("lockdown {} in force (epoch {epoch})", order.lockdown);
                announce(order, epoch);
            }
            (None, Some(released)) => {
                log::warn!(
                    "lockdown {} released: the policy in force applies in full (epoch {epoch})",
                    released.lockdown
                );
                events::emit(&Event::LockdownReleased {
                    mode: released.lockdown.mode(),
                    zone: released.lockdown.zone(),
                    epoch,
                });
            }
            (None, None) => {}
        }
        self.installed(epoch, observer);
    }
}

fn announce(order: &Order, epoch: u32) {
    events::emit(&Event::Lockdown {
        mode: order.lockdown.mode(),
        zone: order.lockdown.zone(),
        since: &order.since,
        epoch,
    });
}
