//! Monotonic conduit counters across policy reloads.
//!
//! The datapath counts conduit traffic per generation slot, and a slot's counters restart from
//! zero when the slot is reused (the second reload after it was filled). Before a reload
//! replaces a generation, the controller folds that generation's final counts into totals kept
//! per conduit name and labels; what is exported is those totals plus the live counts of both
//! slots (the generation in force and the one before it, which late packets may still reach).
//! A count thus moves from "live" to "retired" in one step and the sum never falls.

use firewall_common::counters::{Traffic, VERDICT_COUNT};

use crate::{
    datapath::ConduitTraffic,
    policy::compiled::{ConduitLabels, Names},
};

use super::ConduitCounts;

/// A conduit as metrics label it: the same name with other zones or protocols after a reload
/// is a new series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConduitKey {
    pub conduit: String,
    pub labels: ConduitLabels,
}

#[derive(Debug, Default)]
pub struct ConduitTotals {
    retired: ConduitCounts,
}

fn add(into: &mut ConduitCounts, names: &Names, traffic: &[ConduitTraffic]) {
    for (id, t) in traffic.iter().enumerate() {
        let key = ConduitKey {
            conduit: t.conduit.clone(),
            labels: names.conduit_labels.get(id).cloned().unwrap_or_default(),
        };
        let sums = into
            .entry(key)
            .or_insert([Traffic::default(); VERDICT_COUNT as usize]);
        for (sum, v) in sums.iter_mut().zip(&t.by_verdict) {
            sum.packets += v.packets;
            sum.bytes += v.bytes;
        }
    }
}

impl ConduitTotals {
    /// Folds the final counts of a generation whose slot is about to be reused.
    pub fn retire(&mut self, names: &Names, traffic: &[ConduitTraffic]) {
        add(&mut self.retired, names, traffic);
    }

    /// Retired totals plus the live counts of the installed generations.
    pub fn current(&self, live: &[(&Names, Vec<ConduitTraffic>)]) -> ConduitCounts {
        let mut out: ConduitCounts = self.retired.clone();
        for (names, traffic) in live {
            add(&mut out, names, traffic);
        }
        out
    }
}
