//! Reading the per-CPU counters. Lookups copy the values out; the datapath is never paused.

use anyhow::{Context as _, Result};
use firewall_common::{
    counters::{conduit_stats_index, reason_index, Traffic, FLOW_STATS_LEN, VERDICT_COUNT},
    reason::REASON_COUNT,
};

use super::Datapath;

/// Packet counts by reason and verdict, and flow-table events, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `[reason][verdict]`.
    pub reasons: Vec<[u64; VERDICT_COUNT as usize]>,
    pub flows: [u64; FLOW_STATS_LEN as usize],
}

/// Traffic of one conduit of the generation in force, by verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConduitTraffic {
    pub conduit: String,
    pub by_verdict: [Traffic; VERDICT_COUNT as usize],
}

impl Datapath {
    pub fn counters(&self) -> Result<Counters> {
        let mut reasons = vec![[0u64; VERDICT_COUNT as usize]; REASON_COUNT as usize];
        for (reason, row) in reasons.iter_mut().enumerate() {
            for (verdict, cell) in row.iter_mut().enumerate() {
                let per_cpu = self
                    .maps
                    .reason_stats
                    .get(&reason_index(reason as u8, verdict as u32), 0)
                    .context("reading REASON_STATS")?;
                *cell = per_cpu.iter().sum();
            }
        }
        let mut flows = [0u64; FLOW_STATS_LEN as usize];
        for (i, cell) in flows.iter_mut().enumerate() {
            let per_cpu = self
                .maps
                .flow_stats
                .get(&(i as u32), 0)
                .context("reading FLOW_STATS")?;
            *cell = per_cpu.iter().sum();
        }
        Ok(Counters { reasons, flows })
    }

    /// Per-conduit traffic of the generation in force (pseudo conduits included).
    pub fn conduit_traffic(&self) -> Result<Vec<ConduitTraffic>> {
        let Some(generation) = self.active() else {
            return Ok(Vec::new());
        };
        let slot = generation.slot();
        let mut out = Vec::new();
        for (id, name) in generation.names.conduits.iter().enumerate() {
            let mut by_verdict = [Traffic::default(); VERDICT_COUNT as usize];
            for (verdict, cell) in by_verdict.iter_mut().enumerate() {
                let per_cpu = self
                    .maps
                    .conduit_stats
                    .get(&conduit_stats_index(slot, id as u16, verdict as u32), 0)
                    .context("reading CONDUIT_STATS")?;
                for t in per_cpu.iter() {
                    cell.packets += t.packets;
                    cell.bytes += t.bytes;
                }
            }
            out.push(ConduitTraffic {
                conduit: name.clone(),
                by_verdict,
            });
        }
        Ok(out)
    }

    /// Number of entries in the flow table (walks the keys; for status and metrics, not hot paths).
    pub fn flow_count(&self) -> usize {
        self.maps.flows.keys().filter(Result::is_ok).count()
    }
}
