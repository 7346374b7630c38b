//! Reading the per-CPU counters. Lookups copy the values out; the datapath is never paused.
//! The same readers serve the controller's own map handles and the pinned maps `otfw status`
//! opens.

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap};
use firewall_common::{
    counters::{
        conduit_stats_index, reason_index, CountMemo, Traffic, COUNT_MEMO_SLOTS, FLOW_STATS_LEN,
        PATH_DENIAL_CACHED, PATH_FLOW_HIT, PATH_STATS_LEN, VERDICT_COUNT, VERDICT_DROP,
        VERDICT_PASS,
    },
    event::EVENT_STATS_LEN,
    flow::{DenialMemo, FlowKey, FlowMemo, FlowState, DENIAL_MEMO_SLOTS, FLOW_MEMO_SLOTS},
    observed::{LEARN_COPIED, LEARN_RING_FULL, OBSERVED_STATS_LEN},
    reason::{Reason, REASON_COUNT},
    slot_of,
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

/// The sum over CPUs of entry `index` of a per-CPU `u64` array.
pub(crate) fn sum(map: &PerCpuArray<MapData, u64>, index: u32, name: &str) -> Result<u64> {
    let per_cpu = map
        .get(&index, 0)
        .with_context(|| format!("reading {name}"))?;
    Ok(per_cpu.iter().sum())
}

/// The counters of a copying ring (`firewall_common::observed::OBSERVED_STAT_NAMES`), summed
/// over the CPUs.
fn stats_of(
    map: &PerCpuArray<MapData, u64>,
    name: &str,
) -> Result<[u64; OBSERVED_STATS_LEN as usize]> {
    let mut out = [0u64; OBSERVED_STATS_LEN as usize];
    for (i, cell) in out.iter_mut().enumerate() {
        *cell = sum(map, i as u32, name)?;
    }
    Ok(out)
}

/// The per-CPU memos that count packets before the counter maps do: the flow memo
/// (`BUSY_FLOWS`, passes) and the memo of recent denials (`RECENT_DENIALS`, drops). Either is
/// `None` for a datapath of a version whose memo holds no counts (it counts every packet at
/// once).
#[derive(Clone, Copy)]
pub(crate) struct Memos<'a> {
    pub flows: Option<&'a PerCpuArray<MapData, FlowMemo>>,
    pub denials: Option<&'a PerCpuArray<MapData, DenialMemo>>,
}

/// What the memos hold back from the counters, summed over CPUs.
#[derive(Debug, Default)]
pub(crate) struct HeldBack {
    /// Passes (each a `flow_hit` and a pass with no reason; `FlowMemo::packets`).
    pub passes: u64,
    /// Drops by reason (each also a `denial_cached`; `DenialMemo::packets`).
    pub drops: std::collections::BTreeMap<u8, u64>,
    /// By the epoch they were decided under, their conduit and verdict.
    pub by_conduit: std::collections::HashMap<(u32, u16, u32), Traffic>,
}

impl HeldBack {
    fn add(&mut self, epoch: u32, conduit: u16, verdict: u32, packets: u64, bytes: u64) {
        let t = self
            .by_conduit
            .entry((epoch, conduit, verdict))
            .or_default();
        t.packets += packets;
        t.bytes += bytes;
    }
}

/// What the memos hold back. Read after the counter maps: a count the datapath moves from a
/// memo to its map meanwhile is missed for this once, never counted twice (the counters only
/// ever rise; the metrics never report one falling).
pub(crate) fn held_back(memos: Memos) -> Result<HeldBack> {
    let mut out = HeldBack::default();
    if let Some(flows) = memos.flows {
        for index in 0..FLOW_MEMO_SLOTS {
            let per_cpu = flows.get(&index, 0).context("reading BUSY_FLOWS")?;
            for memo in per_cpu.iter().filter(|m| m.packets != 0) {
                out.passes += memo.packets;
                out.add(
                    memo.epoch,
                    memo.conduit,
                    VERDICT_PASS,
                    memo.packets,
                    memo.bytes,
                );
            }
        }
    }
    if let Some(denials) = memos.denials {
        for index in 0..DENIAL_MEMO_SLOTS {
            let per_cpu = denials.get(&index, 0).context("reading RECENT_DENIALS")?;
            for memo in per_cpu.iter().filter(|m| m.packets != 0) {
                *out.drops.entry(memo.denial.reason).or_default() += memo.packets;
                out.add(
                    memo.key.epoch,
                    memo.denial.conduit,
                    VERDICT_DROP,
                    memo.packets,
                    memo.bytes,
                );
            }
        }
    }
    Ok(out)
}

pub(crate) fn read_counters(
    reason_stats: &PerCpuArray<MapData, u64>,
    flow_stats: &PerCpuArray<MapData, u64>,
    memos: Memos,
) -> Result<Counters> {
    let mut reasons = vec![[0u64; VERDICT_COUNT as usize]; REASON_COUNT as usize];
    for (reason, row) in reasons.iter_mut().enumerate() {
        for (verdict, cell) in row.iter_mut().enumerate() {
            let index = reason_index(reason as u8, verdict as u32);
            *cell = sum(reason_stats, index, "REASON_STATS")?;
        }
    }
    let held = held_back(memos)?;
    reasons[Reason::None as usize][VERDICT_PASS as usize] += held.passes;
    for (reason, drops) in held.drops {
        if let Some(row) = reasons.get_mut(reason as usize) {
            row[VERDICT_DROP as usize] += drops;
        }
    }
    let mut flows = [0u64; FLOW_STATS_LEN as usize];
    for (i, cell) in flows.iter_mut().enumerate() {
        *cell = sum(flow_stats, i as u32, "FLOW_STATS")?;
    }
    Ok(Counters { reasons, flows })
}

/// Traffic by conduit and verdict of the generation `epoch` (counted in its slot), for the
/// conduits `names` (indexed by id).
pub(crate) fn read_conduit_traffic(
    conduit_stats: &PerCpuArray<MapData, Traffic>,
    memos: Memos,
    epoch: u32,
    names: &[String],
) -> Result<Vec<ConduitTraffic>> {
    let slot = slot_of(epoch);
    let mut out = Vec::with_capacity(names.len());
    for (id, name) in names.iter().enumerate() {
        let mut by_verdict = [Traffic::default(); VERDICT_COUNT as usize];
        for (verdict, cell) in by_verdict.iter_mut().enumerate() {
            let per_cpu = conduit_stats
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
    for ((decided, conduit, verdict), t) in held_back(memos)?.by_conduit {
        let line = out.get_mut(conduit as usize).filter(|_| decided == epoch);
        if let Some(cell) = line.and_then(|l| l.by_verdict.get_mut(verdict as usize)) {
            cell.packets += t.packets;
            cell.bytes += t.bytes;
        }
    }
    Ok(out)
}

pub(crate) fn read_event_stats(
    event_stats: &PerCpuArray<MapData, u64>,
) -> Result<[u64; EVENT_STATS_LEN as usize]> {
    let mut out = [0u64; EVENT_STATS_LEN as usize];
    for (i, cell) in out.iter_mut().enumerate() {
        *cell = sum(event_stats, i as u32, "EVENT_STATS")?;
    }
    Ok(out)
}

/// Walks the keys of the flow table: O(entries) system calls, so callers cache the result.
pub(crate) fn count_flows(flows: &HashMap<MapData, FlowKey, FlowState>) -> usize {
    flows.keys().filter(Result::is_ok).count()
}

impl Datapath {
    pub fn counters(&self) -> Result<Counters> {
        read_counters(
            &self.maps.reason_stats,
            &self.maps.flow_stats,
            self.maps.memos(),
        )
    }

    /// Per-conduit traffic of the generation in force (pseudo conduits included).
    pub fn conduit_traffic(&self) -> Result<Vec<ConduitTraffic>> {
        match self.active() {
            Some(generation) => self.generation_traffic(generation),
            None => Ok(Vec::new()),
        }
    }

    /// Per-conduit traffic counted in the slot of `generation` (in force or not).
    pub fn generation_traffic(
        &self,
        generation: &super::Generation,
    ) -> Result<Vec<ConduitTraffic>> {
        read_conduit_traffic(
            &self.maps.conduit_stats,
            self.maps.memos(),
            generation.epoch,
            &generation.names.conduits,
        )
    }

    /// The generations installed in the two slots (the one in force and the one before it).
    pub fn generations(&self) -> impl Iterator<Item = &super::Generation> {
        self.slots.iter().flatten()
    }

    /// The generation the next `install` will replace (its slot is reused, and its conduit
    /// counters restart from zero).
    pub fn retiring(&self) -> Option<&super::Generation> {
        let epoch = self.maps.active_epoch().ok()?;
        self.slots[slot_of(epoch.wrapping_add(1).max(1)) as usize].as_ref()
    }

    /// Events sent, rate-limited and lost to a full ring (`firewall_common::event`).
    pub fn event_stats(&self) -> Result<[u64; EVENT_STATS_LEN as usize]> {
        read_event_stats(&self.maps.event_stats)
    }

    /// Shortcuts the datapath took (`PATH_*`), summed over CPUs.
    pub fn path_stats(&self) -> Result<[u64; PATH_STATS_LEN as usize]> {
        let mut out = [0u64; PATH_STATS_LEN as usize];
        for (i, cell) in out.iter_mut().enumerate() {
            *cell = sum(&self.maps.path_stats, i as u32, "PATH_STATS")?;
        }
        let held = held_back(self.maps.memos())?;
        out[PATH_FLOW_HIT as usize] += held.passes;
        out[PATH_DENIAL_CACHED as usize] += held.drops.values().sum::<u64>();
        Ok(out)
    }

    /// Passes the CPUs' flow memos have counted and not yet added to the counter maps (which
    /// every reader here adds; for tests).
    pub fn held_back_passes(&self) -> Result<u64> {
        Ok(held_back(self.maps.memos())?.passes)
    }

    /// Drops the CPUs' memos of recent denials have counted and not yet added to the counter
    /// maps (as `held_back_passes`).
    pub fn held_back_drops(&self) -> Result<u64> {
        Ok(held_back(self.maps.memos())?.drops.values().sum())
    }

    /// Entries in the decision cache (walks the keys; for tests and status).
    pub fn denial_count(&self) -> usize {
        self.maps.denials.keys().filter(Result::is_ok).count()
    }

    /// Number of entries in the flow table (walks the keys; for status and metrics, not hot paths).
    /// Tracked flows: established (`FLOWS`) and waiting for an answer (`EMBRYOS`).
    pub fn flow_count(&self) -> usize {
        count_flows(&self.maps.flows) + count_flows(&self.maps.embryos)
    }

    /// The ring buffer of datapath events, for the controller's event loop (taken once).
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        self.maps.events.take()
    }

    /// Frames copied for the inventory: sent, rate-limited, lost to a full ring
    /// (`firewall_common::observed`).
    pub fn observed_stats(&self) -> Result<[u64; OBSERVED_STATS_LEN as usize]> {
        stats_of(&self.maps.observed_stats, "OBSERVED_STATS")
    }

    /// The ring buffer of frames for the inventory, for the controller (taken once).
    pub fn take_observed(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        self.maps.observed.take()
    }

    /// The inspectors' first-use copies, counted as `observed_stats` counts.
    pub fn uses_stats(&self) -> Result<[u64; OBSERVED_STATS_LEN as usize]> {
        stats_of(&self.maps.uses_stats, "USES_STATS")
    }

    /// The ring buffer of first-use copies for the inventory, for the controller (taken once).
    pub fn take_observed_uses(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        self.maps.observed_uses.take()
    }

    /// Sets the end of learning (CLOCK_MONOTONIC ns, 0 = off), as `otfw learn --live` does on
    /// the pinned map.
    pub fn set_learn_until(&mut self, deadline_ns: u64) -> Result<()> {
        self.maps
            .learn_until
            .set(0, deadline_ns, 0)
            .context("writing LEARN_UNTIL")
    }

    pub fn learn_until(&self) -> Result<u64> {
        self.maps
            .learn_until
            .get(&0, 0)
            .context("reading LEARN_UNTIL")
    }

    /// The ring buffer of frames copied while learning (taken once).
    pub fn take_learn_frames(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        self.maps.learn_frames.take()
    }

    /// Frames copied while learning and frames the full ring refused.
    pub fn learn_stats(&self) -> Result<(u64, u64)> {
        Ok((
            sum(&self.maps.learn_stats, LEARN_COPIED, "LEARN_STATS")?,
            sum(&self.maps.learn_stats, LEARN_RING_FULL, "LEARN_STATS")?,
        ))
    }
}

/// An inspector's request counters (`MODBUS_STATS`, `ENIP_STATS`) of generation `epoch`, summed
/// over CPUs, with what the CPUs hold back in the counters' memo (`CountMemo`; `unpack` makes
/// a counter's key of a memo entry's packed key). Entries of other slots are left to the
/// caller's filter. The hash map is read first, then the memo: a count the datapath moves from
/// the memo to the hash map meanwhile is missed for this once, never counted twice (the
/// counters only ever rise).
pub(super) fn inspector_counts<K: aya::Pod + Eq + std::hash::Hash>(
    (map, name): (&PerCpuHashMap<MapData, K, u64>, &str),
    (memos, memo_name): (&PerCpuArray<MapData, CountMemo>, &str),
    epoch: u32,
    unpack: impl Fn([u64; 2]) -> K,
) -> Result<std::collections::HashMap<K, u64>> {
    let mut counts = std::collections::HashMap::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry.with_context(|| format!("reading {name}"))?;
        *counts.entry(key).or_default() += per_cpu.iter().sum::<u64>();
    }
    for index in 0..COUNT_MEMO_SLOTS {
        let per_cpu = memos
            .get(&index, 0)
            .with_context(|| format!("reading {memo_name}"))?;
        for memo in per_cpu.iter().filter(|m| m.count != 0 && m.epoch == epoch) {
            *counts.entry(unpack(memo.key)).or_default() += memo.count;
        }
    }
    Ok(counts)
}
