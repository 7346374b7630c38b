//! `otfw stop [--instance NAME]`: the one way to end an instance's enforcement. Removes its
//! pinned links, programs and maps (the ports then forward unfiltered), switches GRO on again
//! where otfw switched it off, and says what it removed.

use std::path::Path;

use anyhow::bail;
use clap::Args;

use crate::{
    datapath::{self, pin_dir, remove_pins},
    status::{InstanceLock, State},
};

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The instance (`otfw run --instance`, by default its bridge or first port); may be left
    /// out when only one instance is pinned.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
}

/// The instances with a pin directory.
fn pinned_instances() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(datapath::BPFFS).join("otfw"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn run(args: &StopArgs) -> anyhow::Result<u8> {
    datapath::check_bpffs()?;
    let instance = match &args.instance {
        Some(name) => name.clone(),
        None => match pinned_instances().as_slice() {
            [] => bail!(
                "no otfw instance is pinned (nothing in {})",
                pin_dir("").display()
            ),
            [one] => one.clone(),
            several => bail!(
                "several otfw instances are pinned ({}); name one with --instance",
                several.join(", ")
            ),
        },
    };
    // While a controller runs it holds the links open: removing the pins would not detach
    // them, so it must exit first.
    let lock = InstanceLock::take(&instance).map_err(|e| {
        e.context(format!(
            "stop the controller of instance `{instance}` first (SIGTERM, or `systemctl stop \
             otfw`); its pinned enforcement stays until `otfw stop` then runs"
        ))
    })?;
    let dir = pin_dir(&instance);
    if !dir.exists() {
        lock.remove();
        bail!(
            "no pinned otfw instance `{instance}` ({} does not exist); nothing to remove",
            dir.display()
        );
    }
    let previous = State::previous(&instance);
    let removed = remove_pins(&dir)?;
    for port in previous.iter().flat_map(|s| &s.ports) {
        if port.gro_switched_off && removed.ports.contains(&port.name) {
            datapath::gro_on(&port.name);
        }
    }
    State::remove(&instance);
    lock.remove();
    if removed.ports.is_empty() {
        println!("otfw stop: instance {instance}: no port was enforced any more");
    } else {
        println!(
            "otfw stop: instance {instance}: enforcement removed from {} (these ports now \
             forward unfiltered)",
            removed.ports.join(", ")
        );
    }
    println!(
        "otfw stop: unpinned {} programs and {} maps from {}",
        removed.programs,
        removed.maps,
        dir.display()
    );
    Ok(0)
}
