//! Event records the datapath sends to the controller through the ring buffer `EVENTS`, and
//! the counters of what was sent and lost (`EVENT_STATS`).
//!
//! Events are rate-limited at the source: every CPU has a token bucket (`EVENT_BUCKET`) that is
//! checked before the ring buffer is touched, so a flood of denied packets costs the datapath
//! one map lookup per packet and the controller at most `EVENT_RATE` records per second per CPU.

use crate::flow::FlowKey;

/// A packet was denied (dropped, reset, or passed by a conduit in monitor mode).
pub const EVENT_DENIED: u8 = 1;
/// A TCP flow was adopted mid-stream (no SYN seen).
pub const EVENT_ADOPTED: u8 = 2;

/// `DatapathEvent::flags`: `key` holds the packet's addresses and ports (decisions made before
/// flow tracking, such as parse errors and anti-spoofing, carry none).
pub const EVENT_HAS_TUPLE: u8 = 1 << 0;

/// One record of the ring buffer `EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathEvent {
    /// For `EVENT_ADOPTED`, the flow in its initiator's direction; for `EVENT_DENIED`, the
    /// packet's own direction.
    pub key: FlowKey,
    pub epoch: u32,
    pub ifindex: u32,
    pub conduit: u16,
    pub kind: u8,
    pub reason: u8,
    pub verdict: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
}

/// Sustained events per second per CPU, and the burst a bucket holds.
pub const EVENT_RATE: u64 = 100;
pub const EVENT_BURST: u64 = 200;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENT_RING_BYTES: u32 = 256 * 1024;

/// Map `EVENT_BUCKET` (per CPU, one entry): a token bucket in nanoseconds of credit. Each event
/// costs `1e9 / EVENT_RATE` ns; credit grows with time up to `EVENT_BURST` events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBucket {
    pub credit_ns: u64,
    pub last_ns: u64,
}

/// Map `EVENT_STATS` (per-CPU u64) indexes.
pub const EVENTS_SENT: u32 = 0;
/// Refused by the token bucket.
pub const EVENTS_RATE_LIMITED: u32 = 1;
/// The ring buffer was full (the controller is not keeping up).
pub const EVENTS_RING_FULL: u32 = 2;
pub const EVENT_STATS_LEN: u32 = 3;
pub const EVENT_STAT_NAMES: [&str; EVENT_STATS_LEN as usize] =
    ["sent", "rate_limited", "ring_full"];

/// Reasons decided by flow tracking, after the packet's flow keys were written to the per-CPU
/// scratch `FLOW_KEYS`: only their events carry addresses and ports.
#[inline(always)]
pub const fn reason_has_tuple(reason: u8) -> bool {
    use crate::reason::Reason;
    matches!(reason,
        r if r == Reason::Unzoned as u8
            || r == Reason::IntraZoneDenied as u8
            || r == Reason::NoConduit as u8
            || r == Reason::NotTracked as u8
            || r == Reason::PolicyRevoked as u8
            || r == Reason::ReverseSyn as u8
            || r == Reason::FlowTableFull as u8
            || r == Reason::MidstreamDenied as u8)
}
