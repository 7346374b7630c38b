//! Every map of the program. Names are ABI with user space (and at most 15 bytes).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray,
        RingBuf,
    },
};

use firewall_common::{
    conduit::{
        ConduitInfo, ConduitKey, RuleSet, INSPECTOR_SLOTS, MAX_CONDUITS, MAX_PROTOCOL_RULES,
    },
    config::Config,
    counters::{
        CountMemo, Trace, Traffic, CONDUIT_STATS_LEN, COUNT_MEMO_SLOTS, FLOW_STATS_LEN,
        PATH_STATS_LEN, REASON_STATS_LEN,
    },
    enip::{
        EnipClassKey, EnipClassMemo, EnipConn, EnipConnKey, EnipFlow, EnipRule, EnipScratch,
        EnipStatKey, EnipTagKey, EnipTrace, ECOUNTS_LEN, ENIP_CLASS_MEMO_SLOTS,
    },
    event::{EventBucket, EVENT_RING_BYTES, EVENT_STATS_LEN},
    fastpath::{
        FastPathState, FdbEntry, ForwardMemo, MacKey, FORWARD_MEMO_SLOTS, GENERATION_ENTRIES,
        MAX_FAST_PORTS, MAX_FDB,
    },
    flow::{
        Denial, DenialMemo, DenyKey, FlowKey, FlowKeys, FlowMemo, FlowState, ZoneFlows,
        DENIAL_MEMO_SLOTS, FLOW_GENERATION_ENTRIES, FLOW_MEMO_SLOTS, MAX_DENIALS, MAX_EMBRYOS,
        MAX_FLOWS,
    },
    modbus::{
        AduTrace, InspectContext, ModbusFlow, ModbusRule, ModbusScratch, ModbusStatKey, COUNTS_LEN,
    },
    observed::{LEARN_RING_BYTES, LEARN_STATS_LEN, OBSERVED_RING_BYTES, OBSERVED_STATS_LEN},
    zone::{
        HostKey, ZoneInfo, ZoneKeyV4, ZoneKeyV6, ZoneMatch, ZonePortKey, MAX_HOST_ENTRIES,
        MAX_PREFIXES, MAX_ZONES,
    },
    SLOTS,
};

use super::clock::TickClock;

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

/// Full-length prefixes (named hosts), found by hash before the tries are walked.
#[map]
pub static ZONE_HOSTS: HashMap<HostKey, ZoneMatch> =
    HashMap::with_max_entries(MAX_HOST_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static ZONE_INFO: Array<ZoneInfo> = Array::with_max_entries(SLOTS * MAX_ZONES, 0);

#[map]
pub static ZONE_PORTS: HashMap<ZonePortKey, u8> = HashMap::with_max_entries(4096, 0);

#[map]
pub static CONDUIT_RULES: HashMap<ConduitKey, RuleSet> =
    HashMap::with_max_entries(2 * MAX_CONDUITS, BPF_F_NO_PREALLOC);

#[map]
pub static CONDUITS: Array<ConduitInfo> = Array::with_max_entries(SLOTS * MAX_CONDUITS, 0);

/// Established flows (answered, or adopted), each charged to its initiator's zone. LRU only as
/// a last resort: the zones' shares add up to no more than its size (`firewall_common::flow`).
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// Flows waiting for their responder's first answer; a flood of them evicts only its own kind.
#[map]
pub static EMBRYOS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(MAX_EMBRYOS, 0);

/// Flows each zone put into and took out of `FLOWS`, by `ZoneInfo::charge` (atomic adds).
#[map]
pub static ZONE_FLOWS: HashMap<u32, ZoneFlows> =
    HashMap::with_max_entries(2 * MAX_ZONES + 1, BPF_F_NO_PREALLOC);

/// Flows of each zone the controller removed from `FLOWS` as expired, by `ZoneInfo::charge`
/// (written by the controller only).
#[map]
pub static ZONE_SWEPT: HashMap<u32, u64> =
    HashMap::with_max_entries(2 * MAX_ZONES + 1, BPF_F_NO_PREALLOC);

/// The decision cache: denials of untracked packets, by tuple, segment class, epoch and port.
#[map]
pub static DENIALS: LruHashMap<DenyKey, Denial> = LruHashMap::with_max_entries(MAX_DENIALS, 0);

/// Each CPU's reading of the coarse clock in the current timer tick (`clock`).
#[map]
pub static TICK_CLOCK: PerCpuArray<TickClock> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's memo of recent denials, asked before `DENIALS`, with the drops it has not counted
/// yet (`DenialMemo`). (Named apart from the earlier `DENIAL_MEMO`, whose entries held no
/// counts: an upgrade takes over without mixing the two.)
#[map]
pub static RECENT_DENIALS: PerCpuArray<DenialMemo> =
    PerCpuArray::with_max_entries(DENIAL_MEMO_SLOTS, 0);

/// Each CPU's memo of the flows it passed packets of in the current clock tick, with the
/// passes it has not counted yet (`FlowMemo`). (Named apart from the earlier `FLOW_MEMO`, whose
/// entries held no counts: an upgrade takes over without mixing the two.)
#[map]
pub static BUSY_FLOWS: PerCpuArray<FlowMemo> = PerCpuArray::with_max_entries(FLOW_MEMO_SLOTS, 0);

/// Removals from `FLOWS`, by the controller and by the datapath (`FLOW_GENERATION_ENTRIES`).
#[map]
pub static FLOW_GENERATION: Array<u64> = Array::with_max_entries(FLOW_GENERATION_ENTRIES, 0);

#[map]
pub static REASON_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_STATS_LEN, 0);

#[map]
pub static CONDUIT_STATS: PerCpuArray<Traffic> =
    PerCpuArray::with_max_entries(CONDUIT_STATS_LEN, 0);

#[map]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOW_STATS_LEN, 0);

#[map]
pub static PATH_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PATH_STATS_LEN, 0);

#[map]
pub static TRACE: PerCpuArray<Trace> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the flow keys of the packet being decided (per CPU, one entry).
#[map]
pub static FLOW_KEYS: PerCpuArray<FlowKeys> = PerCpuArray::with_max_entries(1, 0);

/// Payload inspectors, indexed by `INSPECT_*`; the main program tail calls into them.
#[map]
pub static INSPECTORS: ProgramArray = ProgramArray::with_max_entries(INSPECTOR_SLOTS, 0);

/// What the main program hands the inspector (per CPU, one entry).
#[map]
pub static INSPECT_CTX: PerCpuArray<InspectContext> = PerCpuArray::with_max_entries(1, 0);

/// Compiled `modbus:` rules, indexed by `slot * MAX_PROTOCOL_RULES + rule`.
#[map]
pub static MODBUS_RULES: Array<ModbusRule> = Array::with_max_entries(SLOTS * MAX_PROTOCOL_RULES, 0);

/// Framing state of Modbus connections, by the flow's initiator-direction key.
#[map]
pub static MODBUS_FLOWS: LruHashMap<FlowKey, ModbusFlow> =
    LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// ADUs by conduit, function and verdict (requests) or kind (responses).
#[map]
pub static MODBUS_STATS: PerCpuHashMap<ModbusStatKey, u64> =
    PerCpuHashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// This CPU's ADU counts not yet in `MODBUS_STATS` (`CountMemo`).
#[map]
pub static MODBUS_COUNT_MEMO: PerCpuArray<CountMemo> =
    PerCpuArray::with_max_entries(COUNT_MEMO_SLOTS, 0);

/// Inspector event counters (`COUNT_*`).
#[map]
pub static MODBUS_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTS_LEN, 0);

/// The ADUs of the segment just inspected (read back by replay and tests).
#[map]
pub static MODBUS_ADUS: PerCpuArray<AduTrace> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static MODBUS_SCRATCH: PerCpuArray<ModbusScratch> = PerCpuArray::with_max_entries(1, 0);

/// Denied Modbus requests (`ModbusEvent` records).
#[map]
pub static MODBUS_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Denied packets and adopted flows for the controller (`firewall_common::event`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

#[map]
pub static EVENT_BUCKET: PerCpuArray<EventBucket> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_STATS_LEN, 0);

/// Frames for the controller's inventory: flow answers and identity answers
/// (`firewall_common::observed`), rate-limited by `OBSERVED_BUCKET`.
#[map]
pub static OBSERVED: RingBuf = RingBuf::with_byte_size(OBSERVED_RING_BYTES, 0);

#[map]
pub static OBSERVED_BUCKET: PerCpuArray<EventBucket> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static OBSERVED_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OBSERVED_STATS_LEN, 0);

/// The inspectors' first-use copies (`firewall_common::observed::OBSERVED_USE`), in a ring,
/// bucket and counters of their own: a plant starting up makes many, and they must not starve
/// the flow and identity answers of `OBSERVED`.
#[map]
pub static OBSERVED_USES: RingBuf = RingBuf::with_byte_size(OBSERVED_RING_BYTES, 0);

#[map]
pub static USES_BUCKET: PerCpuArray<EventBucket> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static USES_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OBSERVED_STATS_LEN, 0);

/// The end of learning (CLOCK_MONOTONIC ns, index 0; 0 = not learning), set by `otfw learn
/// --live`.
#[map]
pub static LEARN_UNTIL: Array<u64> = Array::with_max_entries(1, 0);

/// Frames copied while learning.
#[map]
pub static LEARN_FRAMES: RingBuf = RingBuf::with_byte_size(LEARN_RING_BYTES, 0);

#[map]
pub static LEARN_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LEARN_STATS_LEN, 0);
/// Compiled `enip:` rules, indexed by `slot * MAX_PROTOCOL_RULES + rule`.
#[map]
pub static ENIP_RULES: Array<EnipRule> = Array::with_max_entries(SLOTS * MAX_PROTOCOL_RULES, 0);

/// Services a rule allows per class (bitmap of codes 0..127).
#[map]
pub static ENIP_CLASSES: HashMap<EnipClassKey, [u64; 2]> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Each CPU's memo of recent `ENIP_CLASSES` answers (`EnipClassMemo`).
#[map]
pub static ENIP_CLASS_MEMO: PerCpuArray<EnipClassMemo> =
    PerCpuArray::with_max_entries(ENIP_CLASS_MEMO_SLOTS, 0);

/// Allowed tag names (hashes) of rules with `tags`.
#[map]
pub static ENIP_TAGS: HashMap<EnipTagKey, u8> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Framing, session and connection state of EtherNet/IP connections.
#[map]
pub static ENIP_FLOWS: LruHashMap<FlowKey, EnipFlow> = LruHashMap::with_max_entries(8192, 0);

/// Connections opened by allowed Forward_Opens (connected messaging, implicit I/O pinholes).
#[map]
pub static ENIP_CONNS: LruHashMap<EnipConnKey, EnipConn> = LruHashMap::with_max_entries(65536, 0);

/// Requests by conduit, command, service, class and verdict.
#[map]
pub static ENIP_STATS: PerCpuHashMap<EnipStatKey, u64> =
    PerCpuHashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// This CPU's request counts not yet in `ENIP_STATS` (`CountMemo`).
#[map]
pub static ENIP_COUNT_MEMO: PerCpuArray<CountMemo> =
    PerCpuArray::with_max_entries(COUNT_MEMO_SLOTS, 0);

/// Inspector event counters (`ECOUNT_*`).
#[map]
pub static ENIP_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ECOUNTS_LEN, 0);

/// The requests of the frame just inspected (read back by replay and tests).
#[map]
pub static ENIP_TRACE: PerCpuArray<EnipTrace> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static ENIP_SCRATCH: PerCpuArray<EnipScratch> = PerCpuArray::with_max_entries(1, 0);

/// Denied EtherNet/IP requests (`EnipEvent` records).
#[map]
pub static ENIP_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// One all-zero `EnipFlow`, the initial value of new flows (too big to build on the stack);
/// never written.
#[map]
pub static ZERO_FLOW: Array<EnipFlow> = Array::with_max_entries(1, 0);

/// The fast path's validity (`FastPathState`, one entry).
#[map]
pub static FAST_PATH: Array<FastPathState> = Array::with_max_entries(1, 0);

/// The redirect targets, by ifindex: the ports that may send and receive redirected frames.
#[map]
pub static FAST_TX: DevMapHash = DevMapHash::with_max_entries(MAX_FAST_PORTS, 0);

/// The mirror of the bridge's forwarding database, kept by the controller (and pruned here
/// when an address shows up on another port).
#[map]
pub static FDB: HashMap<MacKey, FdbEntry> = HashMap::with_max_entries(MAX_FDB, BPF_F_NO_PREALLOC);

/// How often the mirror changed: the controller's and the datapath's counts
/// (`firewall_common::fastpath::GENERATION_*`).
#[map]
pub static FDB_GENERATION: Array<u64> = Array::with_max_entries(GENERATION_ENTRIES, 0);

/// The forwarder's recent decisions per CPU (`ForwardMemo`).
#[map]
pub static FORWARD_MEMO: PerCpuArray<ForwardMemo> =
    PerCpuArray::with_max_entries(FORWARD_MEMO_SLOTS, 0);
