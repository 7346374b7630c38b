//! Every map of the program. Names are ABI with user space (and at most 15 bytes).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

use firewall_common::{
    conduit::{ConduitInfo, ConduitKey, RuleSet, MAX_CONDUITS},
    config::Config,
    counters::{Trace, Traffic, CONDUIT_STATS_LEN, FLOW_STATS_LEN, REASON_STATS_LEN},
    event::{EventBucket, EVENT_RING_BYTES, EVENT_STATS_LEN},
    flow::{FlowKey, FlowKeys, FlowState, MAX_FLOWS},
    zone::{ZoneInfo, ZoneKeyV4, ZoneKeyV6, ZoneMatch, ZonePortKey, MAX_PREFIXES, MAX_ZONES},
    SLOTS,
};

/// The epoch of the policy in force (index 0).
#[map]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(SLOTS, 0);

#[map]
pub static ZONES_V4: LpmTrie<ZoneKeyV4, ZoneMatch> =
    LpmTrie::with_max_entries(MAX_PREFIXES, BPF_F_NO_PREALLOC);

#[map]
pub static ZONES_V6: LpmTrie<ZoneKeyV6, ZoneMatch> =
    LpmTrie::with_max_entries(MAX_PREFIXES, BPF_F_NO_PREALLOC);

#[map]
pub static ZONE_INFO: Array<ZoneInfo> = Array::with_max_entries(SLOTS * MAX_ZONES, 0);

#[map]
pub static ZONE_PORTS: HashMap<ZonePortKey, u8> = HashMap::with_max_entries(4096, 0);

#[map]
pub static CONDUIT_RULES: HashMap<ConduitKey, RuleSet> =
    HashMap::with_max_entries(2 * MAX_CONDUITS, BPF_F_NO_PREALLOC);

#[map]
pub static CONDUITS: Array<ConduitInfo> = Array::with_max_entries(SLOTS * MAX_CONDUITS, 0);

#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map]
pub static REASON_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_STATS_LEN, 0);

#[map]
pub static CONDUIT_STATS: PerCpuArray<Traffic> =
    PerCpuArray::with_max_entries(CONDUIT_STATS_LEN, 0);

#[map]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOW_STATS_LEN, 0);

#[map]
pub static TRACE: PerCpuArray<Trace> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the flow keys of the packet being decided (per CPU, one entry).
#[map]
pub static FLOW_KEYS: PerCpuArray<FlowKeys> = PerCpuArray::with_max_entries(1, 0);

/// Denied packets and adopted flows for the controller (`firewall_common::event`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

#[map]
pub static EVENT_BUCKET: PerCpuArray<EventBucket> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_STATS_LEN, 0);
