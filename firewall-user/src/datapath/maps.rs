//! Typed handles on every map of the object, taken out of the `Ebpf` once at load.

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap,
        ProgramArray, RingBuf,
    },
    Ebpf,
};
use firewall_common::{
    conduit::{ConduitInfo, ConduitKey, RuleSet},
    config::{Config, ACTIVE_INDEX},
    counters::{CountMemo, Trace, Traffic},
    enip::{
        EnipClassKey, EnipConn, EnipConnKey, EnipFlow, EnipRule, EnipStatKey, EnipTagKey, EnipTrace,
    },
    fastpath::{FastPathState, FdbEntry, ForwardMemo, MacKey, GENERATION_CONTROLLER},
    flow::{Denial, DenialMemo, DenyKey, FlowKey, FlowMemo, FlowState, ZoneFlows},
    modbus::{AduTrace, ModbusFlow, ModbusRule, ModbusStatKey},
    zone::{HostKey, ZoneInfo, ZoneKeyV4, ZoneKeyV6, ZoneMatch, ZonePortKey},
};

pub struct Maps {
    pub active: Array<MapData, u32>,
    pub config: Array<MapData, Config>,
    pub zones_v4: LpmTrie<MapData, ZoneKeyV4, ZoneMatch>,
    pub zones_v6: LpmTrie<MapData, ZoneKeyV6, ZoneMatch>,
    pub zone_hosts: HashMap<MapData, HostKey, ZoneMatch>,
    pub zone_info: Array<MapData, ZoneInfo>,
    pub zone_ports: HashMap<MapData, ZonePortKey, u8>,
    pub conduit_rules: HashMap<MapData, ConduitKey, RuleSet>,
    pub conduits: Array<MapData, ConduitInfo>,
    pub flows: HashMap<MapData, FlowKey, FlowState>,
    pub embryos: HashMap<MapData, FlowKey, FlowState>,
    pub zone_flows: HashMap<MapData, u32, ZoneFlows>,
    pub zone_swept: HashMap<MapData, u32, u64>,
    pub denials: HashMap<MapData, DenyKey, Denial>,
    /// The memo of recent denials, with drops held back from the counters
    /// (`DenialMemo::packets`): read after them.
    pub recent_denials: PerCpuArray<MapData, DenialMemo>,
    /// The flow memo, with passes held back from the counters (`FlowMemo::packets`): read
    /// after them.
    pub busy_flows: PerCpuArray<MapData, FlowMemo>,
    /// Removals from `flows` the controller made (`next_flow_generation`).
    pub flow_generation: Array<MapData, u64>,
    pub path_stats: PerCpuArray<MapData, u64>,
    pub fast_path: Array<MapData, FastPathState>,
    pub fast_tx: DevMapHash<MapData>,
    pub fdb: HashMap<MapData, MacKey, FdbEntry>,
    pub fdb_generation: Array<MapData, u64>,
    pub forward_memo: PerCpuArray<MapData, ForwardMemo>,
    pub reason_stats: PerCpuArray<MapData, u64>,
    pub conduit_stats: PerCpuArray<MapData, Traffic>,
    pub flow_stats: PerCpuArray<MapData, u64>,
    pub trace: PerCpuArray<MapData, Trace>,
    /// Inspectors by `INSPECT_*`. Must stay open: the kernel empties a program array when its
    /// last user-space reference goes.
    pub inspectors: ProgramArray<MapData>,
    pub modbus_rules: Array<MapData, ModbusRule>,
    pub modbus_flows: HashMap<MapData, FlowKey, ModbusFlow>,
    pub modbus_stats: PerCpuHashMap<MapData, ModbusStatKey, u64>,
    /// Counts of `modbus_stats` held back per CPU (`CountMemo`): read after it.
    pub modbus_count_memo: PerCpuArray<MapData, CountMemo>,
    pub modbus_counts: PerCpuArray<MapData, u64>,
    pub modbus_adus: PerCpuArray<MapData, AduTrace>,
    /// Denied-request events, until the controller takes the ring buffer.
    pub modbus_events: Option<RingBuf<MapData>>,
    pub events: Option<RingBuf<MapData>>,
    pub event_stats: PerCpuArray<MapData, u64>,
    /// Frames for the inventory, until the controller takes the ring buffer.
    pub observed: Option<RingBuf<MapData>>,
    pub observed_stats: PerCpuArray<MapData, u64>,
    /// The inspectors' first-use copies for the inventory, until the controller takes them.
    pub observed_uses: Option<RingBuf<MapData>>,
    pub uses_stats: PerCpuArray<MapData, u64>,
    /// Learning (`otfw learn --live` opens the pinned maps itself; these serve tests).
    pub learn_until: Array<MapData, u64>,
    pub learn_frames: Option<RingBuf<MapData>>,
    pub learn_stats: PerCpuArray<MapData, u64>,
    pub enip_rules: Array<MapData, EnipRule>,
    pub enip_classes: HashMap<MapData, EnipClassKey, [u64; 2]>,
    pub enip_tags: HashMap<MapData, EnipTagKey, u8>,
    pub enip_flows: HashMap<MapData, FlowKey, EnipFlow>,
    pub enip_conns: HashMap<MapData, EnipConnKey, EnipConn>,
    pub enip_stats: PerCpuHashMap<MapData, EnipStatKey, u64>,
    /// Counts of `enip_stats` held back per CPU (`CountMemo`): read after it.
    pub enip_count_memo: PerCpuArray<MapData, CountMemo>,
    pub enip_counts: PerCpuArray<MapData, u64>,
    pub enip_trace: PerCpuArray<MapData, EnipTrace>,
    /// Denied EtherNet/IP requests, until the controller takes the ring buffer.
    pub enip_events: Option<RingBuf<MapData>>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} is missing from the XDP object"))
}

macro_rules! typed {
    ($ebpf:expr, $name:literal) => {
        take($ebpf, $name)?
            .try_into()
            .with_context(|| format!("map {} has an unexpected type or layout", $name))?
    };
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        Ok(Maps {
            active: typed!(ebpf, "ACTIVE"),
            config: typed!(ebpf, "CONFIG"),
            zones_v4: typed!(ebpf, "ZONES_V4"),
            zones_v6: typed!(ebpf, "ZONES_V6"),
            zone_hosts: typed!(ebpf, "ZONE_HOSTS"),
            zone_info: typed!(ebpf, "ZONE_INFO"),
            zone_ports: typed!(ebpf, "ZONE_PORTS"),
            conduit_rules: typed!(ebpf, "CONDUIT_RULES"),
            conduits: typed!(ebpf, "CONDUITS"),
            flows: typed!(ebpf, "FLOWS"),
            embryos: typed!(ebpf, "EMBRYOS"),
            zone_flows: typed!(ebpf, "ZONE_FLOWS"),
            zone_swept: typed!(ebpf, "ZONE_SWEPT"),
            denials: typed!(ebpf, "DENIALS"),
            recent_denials: typed!(ebpf, "RECENT_DENIALS"),
            busy_flows: typed!(ebpf, "BUSY_FLOWS"),
            flow_generation: typed!(ebpf, "FLOW_GENERATION"),
            path_stats: typed!(ebpf, "PATH_STATS"),
            fast_path: typed!(ebpf, "FAST_PATH"),
            fast_tx: typed!(ebpf, "FAST_TX"),
            fdb: typed!(ebpf, "FDB"),
            fdb_generation: typed!(ebpf, "FDB_GENERATION"),
            forward_memo: typed!(ebpf, "FORWARD_MEMO"),
            reason_stats: typed!(ebpf, "REASON_STATS"),
            conduit_stats: typed!(ebpf, "CONDUIT_STATS"),
            flow_stats: typed!(ebpf, "FLOW_STATS"),
            trace: typed!(ebpf, "TRACE"),
            inspectors: typed!(ebpf, "INSPECTORS"),
            modbus_rules: typed!(ebpf, "MODBUS_RULES"),
            modbus_flows: typed!(ebpf, "MODBUS_FLOWS"),
            modbus_stats: typed!(ebpf, "MODBUS_STATS"),
            modbus_count_memo: typed!(ebpf, "MODBUS_COUNT_MEMO"),
            modbus_counts: typed!(ebpf, "MODBUS_COUNTS"),
            modbus_adus: typed!(ebpf, "MODBUS_ADUS"),
            modbus_events: Some(typed!(ebpf, "MODBUS_EVENTS")),
            events: Some(typed!(ebpf, "EVENTS")),
            event_stats: typed!(ebpf, "EVENT_STATS"),
            observed: Some(typed!(ebpf, "OBSERVED")),
            observed_stats: typed!(ebpf, "OBSERVED_STATS"),
            observed_uses: Some(typed!(ebpf, "OBSERVED_USES")),
            uses_stats: typed!(ebpf, "USES_STATS"),
            learn_until: typed!(ebpf, "LEARN_UNTIL"),
            learn_frames: Some(typed!(ebpf, "LEARN_FRAMES")),
            learn_stats: typed!(ebpf, "LEARN_STATS"),
            enip_rules: typed!(ebpf, "ENIP_RULES"),
            enip_classes: typed!(ebpf, "ENIP_CLASSES"),
            enip_tags: typed!(ebpf, "ENIP_TAGS"),
            enip_flows: typed!(ebpf, "ENIP_FLOWS"),
            enip_conns: typed!(ebpf, "ENIP_CONNS"),
            enip_stats: typed!(ebpf, "ENIP_STATS"),
            enip_count_memo: typed!(ebpf, "ENIP_COUNT_MEMO"),
            enip_counts: typed!(ebpf, "ENIP_COUNTS"),
            enip_trace: typed!(ebpf, "ENIP_TRACE"),
            enip_events: Some(typed!(ebpf, "ENIP_EVENTS")),
        })
    }

    /// The memos holding counts back from the counter maps.
    pub(crate) fn memos(&self) -> super::counters::Memos<'_> {
        super::counters::Memos {
            flows: Some(&self.busy_flows),
            denials: Some(&self.recent_denials),
        }
    }

    pub fn active_epoch(&self) -> Result<u32> {
        self.active
            .get(&ACTIVE_INDEX, 0)
            .context("reading the active policy epoch")
    }
}

/// Counts one change made by the controller in a generation map (`FDB_GENERATION`,
/// `FLOW_GENERATION`: entry `GENERATION_CONTROLLER`, whose only writer it is; the datapath
/// counts its own changes in the other entry), so that every memo the datapath made under the
/// earlier sum is no longer used.
pub(crate) fn next_generation(map: &mut Array<MapData, u64>, name: &str) -> Result<()> {
    let count = map
        .get(&GENERATION_CONTROLLER, 0)
        .with_context(|| format!("reading {name}"))?;
    map.set(GENERATION_CONTROLLER, count.wrapping_add(1), 0)
        .with_context(|| format!("writing {name}"))
}
