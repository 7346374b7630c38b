//! `otfw learn --capture FILE... [--zones POLICY] [--state FILE] [-o OUT]`: a candidate policy
//! allowing exactly what the captures (and the state of earlier runs) show.
//!
//! `otfw learn --live DURATION [--instance NAME] [--zones POLICY] [-o OUT]`: the same from the
//! running instance's datapath, which copies the frames learning needs while the deadline this
//! command sets lies ahead (`firewall_common::observed`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use super::inventory::Source;
use crate::{
    datapath::{pin_dir, LearnMaps},
    inventory::{
        learn::Learn,
        live::{self, Clock},
        observe::Observer,
        zones::Zones,
        Inventory,
    },
    policy, status,
};

#[derive(Debug, Args)]
pub struct LearnArgs {
    #[command(flatten)]
    pub source: Source,
    /// Learn from the running instance's datapath for this long (`30s`, `10m`, `8h`) instead of
    /// from captures; Ctrl-C ends it early and still writes the policy.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          conflicts_with = "captures")]
    pub live: Option<Duration>,
    /// Take zones, hosts and gateway from this policy (it must pass `otfw check`); without
    /// it, zones are proposed per IPv4 /24 or IPv6 /64 and hosts named from their identity.
    #[arg(long, value_name = "POLICY")]
    pub zones: Option<PathBuf>,
    /// Write the policy here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: &LearnArgs) -> anyhow::Result<u8> {
    // The zones are checked before anything is learned: a typo must not cost a shift.
    let given = match &args.zones {
        Some(path) => Some(Zones::from_policy(path)?.1),
        None => None,
    };
    let (inventory, mut sources) = match args.live {
        Some(duration) => {
            let instance =
                match &args.source.instance {
                    Some(name) => name.clone(),
                    None => crate::status::find(None)
                        .context(
                            "otfw learn --live learns from the datapath of a running `otfw run`",
                        )?
                        .instance,
                };
            let mut inventory = learn_live(&instance, duration)?;
            if let Some(state) = &args.source.state {
                if state.exists() {
                    let mut kept = Inventory::load(state)?;
                    kept.merge(&inventory);
                    inventory = kept;
                }
                inventory.save(state)?;
            }
            let mut sources = vec![format!(
                "{} of the live datapath of otfw run instance {instance}",
                humantime::format_duration(duration)
            )];
            if let Some(state) = &args.source.state {
                sources.push(format!("inventory state {}", state.display()));
            }
            (inventory, sources)
        }
        None => (args.source.observe()?, args.source.describe()),
    };
    if let Some(z) = &args.zones {
        sources.push(format!("zones of {}", z.display()));
    }
    let yaml = Learn {
        inventory: &inventory,
        policy: given.as_ref().map(|l| &l.policy),
        sources,
    }
    .policy_yaml();
    let name = args.output.as_ref().map_or_else(
        || "(learned policy)".to_owned(),
        |p| p.display().to_string(),
    );
    // What is written must load: a learned policy that fails `otfw check` is a bug here.
    let (loaded, diagnostics) = policy::check_str(&name, &yaml);
    if loaded.is_none() {
        for d in diagnostics.iter().filter(|d| d.is_error()) {
            eprintln!("{d}");
        }
        bail!("the learned policy does not pass `otfw check` (a bug in otfw learn); not written");
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{yaml}"),
    }
    eprintln!(
        "learned {} conduits for {} assets; {} warnings from `otfw check`",
        loaded.map_or(0, |l| l.policy.conduits.len()),
        inventory.assets.len(),
        diagnostics.len()
    );
    Ok(0)
}

/// How often the ring of learned frames is emptied: at a few thousand frames per second the
/// ring (about 2,000 records) has room for several of these.
const POLL: Duration = Duration::from_millis(20);

/// Has the instance's datapath copy the frames learning needs for `duration` (or until
/// Ctrl-C), and observes them.
fn learn_live(instance: &str, duration: Duration) -> anyhow::Result<Inventory> {
    // The datapath's learned frames go to whichever reader takes them first: two learners
    // would each see part of the traffic and write a policy missing the rest.
    let lock = Path::new(status::STATE_DIR).join(format!("{instance}.learn.lock"));
    let Some(_learning) = status::try_lock(&lock, "otfw learn --live needs root")? else {
        bail!(
            "another `otfw learn --live` is learning from instance `{instance}` (it holds {}): \
             the frames the datapath copies go to one reader; wait for it to end, or end it",
            lock.display()
        );
    };
    let mut maps = LearnMaps::open(&pin_dir(instance))?;
    let (copied_before, lost_before) = maps.counts()?;
    // Left over from an earlier run that was killed: not ours to read.
    while maps.frames.next().is_some() {}
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before learning starts: a Ctrl-C (or SIGTERM) from then on ends it early.
    let (mut interrupt, mut terminate) = {
        let _runtime = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    let deadline = live::monotonic_ns() + duration.as_nanos() as u64;
    maps.until
        .set(0, deadline, 0)
        .context("starting to learn (writing LEARN_UNTIL)")?;
    eprintln!(
        "otfw learn: learning from instance {instance} for {} (Ctrl-C ends it early)",
        humantime::format_duration(duration)
    );
    let mut observer = Observer::default();
    let mut frames = 0u64;
    let interrupted = runtime.block_on(async {
        loop {
            let clock = Clock::now();
            while let Some(record) = maps.frames.next() {
                if let Some(r) = live::decode(&record) {
                    live::observe(&mut observer, &r, &clock);
                    frames += 1;
                }
            }
            if live::monotonic_ns() >= deadline {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = interrupt.recv() => return true,
                _ = terminate.recv() => return true,
            }
        }
    });
    // Stops the copying now (the datapath would stop at the deadline by itself), unless
    // another `otfw learn` set a deadline of its own meanwhile.
    if maps.until.get(&0, 0).ok() == Some(deadline) {
        let _ = maps.until.set(0, 0, 0);
    }
    let clock = Clock::now();
    while let Some(record) = maps.frames.next() {
        if let Some(r) = live::decode(&record) {
            live::observe(&mut observer, &r, &clock);
            frames += 1;
        }
    }
    let (copied, lost) = maps.counts()?;
    eprintln!(
        "otfw learn: {}{frames} frames read; the datapath copied {} and lost {} to a full ring",
        if interrupted { "interrupted; " } else { "" },
        copied.saturating_sub(copied_before),
        lost.saturating_sub(lost_before),
    );
    if lost > lost_before {
        eprintln!(
            "otfw learn: frames were lost: requests in them are missing from the policy; learn \
             again with less traffic or in shorter runs"
        );
    }
    Ok(observer.inventory)
}
