//! Per-CPU counters. The datapath only ever increments; user space sums over CPUs.

use crate::conduit::MAX_CONDUITS;
use crate::reason::REASON_COUNT;

/// What happened to a packet, for accounting.
pub const VERDICT_PASS: u32 = 0;
pub const VERDICT_DROP: u32 = 1;
/// Would have been dropped, passed because the deciding conduit (or default) is in monitor mode.
pub const VERDICT_MONITOR: u32 = 2;
/// Dropped and answered with a TCP reset.
pub const VERDICT_RESET: u32 = 3;
/// Passed with a refused request neutralised in it (`on_deny: refuse`): the server answers it
/// with an error, which the firewall restores for the client.
pub const VERDICT_REFUSE: u32 = 4;
pub const VERDICT_COUNT: u32 = 5;
pub const VERDICT_NAMES: [&str; VERDICT_COUNT as usize] =
    ["pass", "drop", "monitor", "reset", "refuse"];

/// Map `REASON_STATS` (per-CPU u64), indexed by `reason * VERDICT_COUNT + verdict`.
pub const REASON_STATS_LEN: u32 = REASON_COUNT * VERDICT_COUNT;

#[inline(always)]
pub const fn reason_index(reason: u8, verdict: u32) -> u32 {
    reason as u32 * VERDICT_COUNT + verdict
}

/// Map `CONDUIT_STATS` (per-CPU `Traffic`), indexed by
/// `(slot * MAX_CONDUITS + conduit) * VERDICT_COUNT + verdict`.
pub const CONDUIT_STATS_LEN: u32 = crate::SLOTS * MAX_CONDUITS * VERDICT_COUNT;

#[inline(always)]
pub const fn conduit_stats_index(slot: u32, conduit: u16, verdict: u32) -> u32 {
    (slot * MAX_CONDUITS + conduit as u32) * VERDICT_COUNT + verdict
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// Map `FLOW_STATS` (per-CPU u64) indexes.
pub const FLOW_CREATED: u32 = 0;
pub const FLOW_ADOPTED: u32 = 1;
pub const FLOW_INSERT_FAILED: u32 = 2;
pub const FLOW_EXPIRED: u32 = 3;
pub const FLOW_REVOKED: u32 = 4;
pub const FLOW_REVALIDATED: u32 = 5;
/// A tracked flow removed by a reset, or released because a default now decides it.
pub const FLOW_CLOSED: u32 = 6;
/// A flow answered by its responder, moved from `EMBRYOS` to `FLOWS`.
pub const FLOW_PROMOTED: u32 = 7;
pub const FLOW_STATS_LEN: u32 = 8;
pub const FLOW_STAT_NAMES: [&str; FLOW_STATS_LEN as usize] = [
    "created",
    "adopted",
    "insert_failed",
    "expired",
    "revoked",
    "revalidated",
    "closed",
    "promoted",
];

/// Map `PATH_STATS` (per-CPU u64): the shortcuts the datapath took. Facts about cost, not
/// decisions: every packet's decision is counted in `REASON_STATS` whichever path made it.
/// A packet of a tracked flow decided from its flow entry alone (no zone lookup).
pub const PATH_FLOW_HIT: u32 = 0;
/// A packet of no tracked flow denied from the decision cache (`DENIALS`).
pub const PATH_DENIAL_CACHED: u32 = 1;
/// A denial remembered in the decision cache.
pub const PATH_DENIAL_STORED: u32 = 2;
/// An allowed frame forwarded port to port by the fast path (`XDP_REDIRECT`).
pub const PATH_REDIRECTED: u32 = 3;
/// An allowed frame the fast path left to the bridge: its source address was not (or not on
/// this port) in the mirror, so the bridge must see it and learn.
pub const PATH_BRIDGE_LEARNS: u32 = 4;
/// A source address seen on another port than the mirror had it on: its entry was dropped
/// from the mirror (the controller then rewrites the mirror from the bridge's view).
pub const PATH_FDB_MOVED: u32 = 5;
pub const PATH_STATS_LEN: u32 = 6;
pub const PATH_STAT_NAMES: [&str; PATH_STATS_LEN as usize] = [
    "flow_hit",
    "denial_cached",
    "denial_stored",
    "redirected",
    "bridge_learns",
    "fdb_moved",
];

/// Map `TRACE` (per-CPU, one entry): the last decision, written only when `FLAG_TRACE` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub reason: u8,
    pub verdict: u8,
    pub conduit: u16,
    pub epoch: u32,
    /// ADUs recorded in `MODBUS_ADUS` for this frame (0 when no inspector ran).
    pub adus: u32,
    /// EtherNet/IP records in `ENIP_TRACE` for this frame (0 when that inspector did not run).
    pub records: u32,
}

/// Entries per CPU of the inspectors' count memos (`MODBUS_COUNT_MEMO`, `ENIP_COUNT_MEMO`; a
/// power of two).
pub const COUNT_MEMO_SLOTS: u32 = 16;

/// Value of an inspector's count memo (per-CPU array): requests counted on this CPU for one
/// counter of its per-CPU hash map (`MODBUS_STATS`, `ENIP_STATS`) in generation `epoch`, not
/// yet added there. A count goes to the memo when its counter is the one the entry holds (a
/// poll repeats its request), into the hash map only when another counter takes the entry:
/// the hash map's lookup was the largest single share of an inspected segment's cost. What the
/// hash map says of the generation in force is its entries plus the memo entries of that
/// epoch (`count` 0: empty). The key is the counter's key packed into words, as the
/// inspector's counting function takes it (`ModbusStatKey::packed`, `EnipStatKey::packed`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountMemo {
    pub key: [u64; 2],
    pub epoch: u32,
    pub _pad: u32,
    pub count: u64,
}

/// The memo entry of counter `key`: the top bits of a multiplicative hash.
#[inline(always)]
pub const fn memo_index(key: [u64; 2]) -> u32 {
    let mixed = (key[0] ^ key[1].rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - COUNT_MEMO_SLOTS.trailing_zeros())) as u32
}
