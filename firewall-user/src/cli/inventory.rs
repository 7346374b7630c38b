//! `otfw inventory --capture FILE... [--zones POLICY] [--state FILE] [--json|--csv]`: the
//! assets seen in captures (and in the state kept from earlier runs), by zone.

use std::{io::Write as _, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::inventory::{report, vendors::MacVendors, zones::Zones, Inventory};

/// Where observations come from: captures, and the state file of earlier runs; without
/// either, the inventory a running `otfw run` keeps of its live datapath.
#[derive(Debug, Args)]
pub struct Source {
    /// pcap or pcapng files (Ethernet, Linux cooked, BSD loopback or raw IP), read in order.
    #[arg(long = "capture", value_name = "FILE", num_args = 1..)]
    pub captures: Vec<PathBuf>,
    /// An inventory state file: what it holds is merged with the captures, and the merged
    /// inventory written back (created when missing).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// The `otfw run` instance whose inventory to read (/var/lib/otfw/NAME.inventory.json), or
    /// to learn from with `otfw learn --live`; may be left out when one instance runs.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
}

impl Source {
    /// The inventory of the state file and the captures; the state file is updated.
    pub fn observe(&self) -> anyhow::Result<Inventory> {
        if self.captures.is_empty() && self.state.is_none() {
            return self.kept_by_instance();
        }
        let mut inventory = match &self.state {
            Some(path) if path.exists() => Inventory::load(path)?,
            _ => Inventory::default(),
        };
        for path in &self.captures {
            let frames = crate::capture::read(path)?;
            let mut observer = crate::inventory::observe::Observer::default();
            observer.capture(&frames);
            inventory.merge(&observer.inventory);
        }
        if let Some(path) = &self.state {
            inventory.save(path)?;
        }
        Ok(inventory)
    }

    /// The instance whose live datapath to read: `--instance`, else the only one running.
    pub fn instance(&self) -> anyhow::Result<String> {
        match &self.instance {
            Some(name) => Ok(name.clone()),
            None => crate::status::find(None)
                .map(|state| state.instance)
                .context("give --capture FILE..., --state FILE or --instance NAME"),
        }
    }

    /// The inventory `otfw run` keeps of its live datapath (read only).
    fn kept_by_instance(&self) -> anyhow::Result<Inventory> {
        let instance = self.instance()?;
        let path = crate::inventory::live::state_path(&instance);
        anyhow::ensure!(
            path.exists(),
            "instance {instance} has no inventory yet ({} is missing): `otfw run` writes it \
             within seconds of seeing new flows or identity answers",
            path.display()
        );
        Inventory::load(&path)
    }

    /// What the inventory was read from, for the learned policy's header.
    pub fn describe(&self) -> Vec<String> {
        let mut sources: Vec<String> = self
            .captures
            .iter()
            .map(|p| format!("capture {}", p.display()))
            .collect();
        if let Some(state) = &self.state {
            sources.push(format!("inventory state {}", state.display()));
        }
        if sources.is_empty() {
            sources.push(format!(
                "the inventory of otfw run instance {}",
                self.instance.as_deref().unwrap_or("(the running one)")
            ));
        }
        sources
    }
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub source: Source,
    /// Sort assets into the zones of this policy (it must pass `otfw check`); without it,
    /// into one zone per IPv4 /24 or IPv6 /64.
    #[arg(long, value_name = "POLICY")]
    pub zones: Option<PathBuf>,
    /// One JSON document: `assets` and `conversations` (client, server, port, Modbus units,
    /// functions and address ranges, CIP commands, services and tags).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV, one row per asset (conversations are in the text and JSON forms).
    #[arg(long)]
    pub csv: bool,
}

pub fn run(args: &InventoryArgs) -> anyhow::Result<u8> {
    let inventory = args.source.observe()?;
    let zones = match &args.zones {
        Some(path) => Zones::from_policy(path)?.0,
        None => Zones::propose(inventory.assets.keys().copied()),
    };
    let records = report::records(&inventory, &zones, &MacVendors::load_default());
    let conversations = report::conversations(&inventory, &zones);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        report::write_json(&records, &conversations, &mut out)?;
    } else if args.csv {
        report::write_csv(&records, &mut out)?;
    } else {
        report::write_text(&records, &conversations, &mut out)?;
    }
    out.flush().context("writing to stdout")?;
    Ok(0)
}
