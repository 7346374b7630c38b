//! Accounting in per-CPU maps: the datapath only increments, user space sums over CPUs. Every
//! packet is accounted exactly once: by the main program, or by the inspector it handed the
//! packet to.

use aya_ebpf::{
    maps::{PerCpuArray, PerCpuHashMap},
    programs::XdpContext,
};

use firewall_common::{
    conduit::{conduit_index, ConduitInfo},
    config::ACTIVE_INDEX,
    counters::{
        conduit_stats_index, memo_index, reason_index, CountMemo, Trace, PATH_DENIAL_CACHED,
        PATH_FLOW_HIT, VERDICT_DROP, VERDICT_PASS,
    },
    flow::{DenialMemo, FlowMemo},
    modbus::InspectContext,
    reason::Reason,
    slot_of,
};

use super::{
    events,
    flow::Counted,
    maps::{ACTIVE, CONDUITS, CONDUIT_STATS, CONFIG, FLOW_STATS, PATH_STATS, REASON_STATS, TRACE},
    packet::frame_len,
    verdict::Decision,
};

/// The facts of one final decision.
pub struct Accounted {
    pub reason: u8,
    pub verdict: u32,
    pub conduit: u16,
    pub slot: u32,
    pub epoch: u32,
    pub trace: bool,
    /// ADUs the inspector recorded for this frame.
    pub adus: u32,
    /// EtherNet/IP records the inspector kept for this frame.
    pub records: u32,
}

/// What an inspector starts a packet the main program handed it (`ic`) with: the settings of
/// its conduit (mode, `on_deny`) and the accounting of its decision, a pass until the inspector
/// finds otherwise.
#[inline(always)]
pub fn inspected(ic: &InspectContext) -> (ConduitInfo, Accounted) {
    let slot = slot_of(ic.epoch);
    let info = CONDUITS
        .get(conduit_index(slot, ic.conduit))
        .copied()
        .unwrap_or_default();
    let acc = Accounted {
        reason: Reason::None as u8,
        verdict: VERDICT_PASS,
        conduit: ic.conduit,
        slot,
        epoch: ic.epoch,
        trace: ic.trace != 0,
        adus: 0,
        records: 0,
    };
    (info, acc)
}

/// Accounts the main program's decision: counts it (unless a memo already has) and reports a
/// denial.
#[inline(always)]
pub fn account(ctx: &XdpContext, d: &Decision) {
    if d.counted == Counted::No {
        record(
            ctx,
            &Accounted {
                reason: d.reason as u8,
                verdict: d.verdict,
                conduit: d.conduit,
                slot: d.slot,
                epoch: d.epoch,
                trace: d.trace,
                adus: 0,
                records: 0,
            },
        );
    }
    // Packets the inspectors deny are reported by their own events, with the request. Marked
    // unlikely: the event's code (the bucket, the clock's reading) is inlined into the main
    // program, and laid out as a hot path it cost a tracked segment 2-3 ns in registers.
    if core::intrinsics::unlikely(d.verdict != VERDICT_PASS) {
        events::denied(ctx, d);
    }
}

#[inline(always)]
pub fn record(ctx: &XdpContext, d: &Accounted) {
    if let Some(n) = REASON_STATS.get_ptr_mut(reason_index(d.reason, d.verdict)) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe { *n += 1 };
    }
    if let Some(t) = CONDUIT_STATS.get_ptr_mut(conduit_stats_index(d.slot, d.conduit, d.verdict)) {
        // SAFETY: as above.
        unsafe {
            (*t).packets += 1;
            (*t).bytes += frame_len(ctx) as u64;
        }
    }
    if d.trace {
        if let Some(t) = TRACE.get_ptr_mut(0) {
            // SAFETY: as above.
            unsafe {
                *t = Trace {
                    reason: d.reason,
                    verdict: d.verdict as u8,
                    conduit: d.conduit,
                    epoch: d.epoch,
                    adus: d.adus,
                    records: d.records,
                }
            };
        }
    }
}

#[inline(always)]
pub fn flow_event(index: u32) {
    if let Some(n) = FLOW_STATS.get_ptr_mut(index) {
        // SAFETY: as above.
        unsafe { *n += 1 };
    }
}

/// Moves the passes a flow memo slot counted (`flow_memo`) into the counter maps: what
/// `record` and `path_event(PATH_FLOW_HIT)` would have counted for each.
#[inline(never)]
pub fn settle_passes(m: &mut FlowMemo) {
    let reason = reason_index(Reason::None as u8, VERDICT_PASS);
    let (decided, conduit) = (m.epoch, m.conduit);
    settle(
        PATH_FLOW_HIT,
        reason,
        VERDICT_PASS,
        decided,
        conduit,
        &mut m.packets,
        &mut m.bytes,
    );
}

/// Moves the drops a slot of the memo of recent denials counted (`flow::ask_denials`) into
/// the counter maps: what `record` and `path_event(PATH_DENIAL_CACHED)` would have counted for
/// each.
#[inline(never)]
pub fn settle_drops(m: &mut DenialMemo) {
    let reason = reason_index(m.denial.reason, VERDICT_DROP);
    let (decided, conduit) = (m.key.epoch, m.denial.conduit);
    settle(
        PATH_DENIAL_CACHED,
        reason,
        VERDICT_DROP,
        decided,
        conduit,
        &mut m.packets,
        &mut m.bytes,
    );
}

/// Adds a memo slot's `packets` to path counter `path` and reason counter `reason` (an index),
/// and its traffic to `conduit`'s counters of `verdict` in the generation `decided`, and clears
/// them. The conduit's counters get them only while its slot still holds that generation
/// (`Config::epoch`): the controller marks a slot it is about to rewrite (epoch 0) before it
/// resets the slot's counters for the next generation, which must not receive an older one's
/// counts.
///
/// The counts are read where they are added (volatile reads) rather than kept across the map
/// lookups: the callers are deep in the main program's calls, and a value kept would be spilled
/// to a stack that has no room to spare (the verifier's 512 bytes over all frames).
#[inline(always)]
fn settle(
    path: u32,
    reason: u32,
    verdict: u32,
    decided: u32,
    conduit: u16,
    packets: &mut u64,
    bytes: &mut u64,
) {
    // SAFETY (all below): per-CPU slots, only touched by this CPU while the program runs; the
    // counts are fields of a live map value.
    if let Some(n) = PATH_STATS.get_ptr_mut(path) {
        unsafe { *n += core::ptr::read_volatile(packets) };
    }
    if let Some(n) = REASON_STATS.get_ptr_mut(reason) {
        unsafe { *n += core::ptr::read_volatile(packets) };
    }
    let slot = slot_of(decided);
    if CONFIG.get(slot).is_some_and(|c| c.epoch == decided) {
        let index = conduit_stats_index(slot, conduit, verdict);
        if let Some(t) = CONDUIT_STATS.get_ptr_mut(index) {
            unsafe {
                (*t).packets += core::ptr::read_volatile(packets);
                (*t).bytes += core::ptr::read_volatile(bytes);
            }
        }
    }
    // One store each: zeroing both at once becomes a `memset` call.
    unsafe {
        core::ptr::write_volatile(packets, 0);
        core::ptr::write_volatile(bytes, 0);
    }
}

/// Counts a shortcut taken (`PATH_*`).
#[inline(always)]
pub fn path_event(index: u32) {
    if let Some(n) = PATH_STATS.get_ptr_mut(index) {
        // SAFETY: as above.
        unsafe { *n += 1 };
    }
}

/// Adds `n` to the per-CPU counter `key` of an inspector's request counters (`MODBUS_STATS`,
/// `ENIP_STATS`), creating it at its first use.
#[inline(always)]
pub fn add<K>(map: &PerCpuHashMap<K, u64>, key: &K, n: u64) {
    if let Some(count) = map.get_ptr_mut(key) {
        // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
        unsafe { *count += n };
    } else {
        let _ = map.insert(key, &n, 0);
    }
}

/// Adds `n` to the counter packed as `key` (`unpack` makes the map's key of it) of generation
/// `epoch`, through this CPU's entry of the counter's memo (`CountMemo`): no hash lookup while
/// the entry holds this counter. What the entry held for another counter moves to `map` if it
/// is of the generation in force, and is dropped if it is older (its counters were read when it
/// retired, and its slot may already hold a newer generation's).
#[inline(always)]
pub fn add_memoized<K>(
    (memos, map): (&PerCpuArray<CountMemo>, &PerCpuHashMap<K, u64>),
    key: [u64; 2],
    epoch: u32,
    n: u64,
    unpack: impl Fn([u64; 2]) -> K,
) {
    let Some(memo) = memos.get_ptr_mut(memo_index(key)) else {
        add(map, &unpack(key), n);
        return;
    };
    // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
    let memo = unsafe { &mut *memo };
    if memo.count != 0 && memo.epoch == epoch && memo.key[0] == key[0] && memo.key[1] == key[1] {
        memo.count += n;
        return;
    }
    let (held, held_epoch, held_count) = (memo.key, memo.epoch, memo.count);
    // Taken over before the held count moves: a reader sums the hash map first, then the
    // memo, so a count in motion is missed for a moment, never counted twice.
    memo.key = key;
    memo.epoch = epoch;
    memo.count = n;
    if held_count != 0 && ACTIVE.get(ACTIVE_INDEX).copied() == Some(held_epoch) {
        add(map, &unpack(held), held_count);
    }
}
