//! User-space only: `aya::Pod` for every map type.

use crate::{
    conduit::*, config::*, counters::*, enip::*, event::*, fastpath::*, flow::*, modbus::*,
    observed::*, stream::*, zone::*,
};

macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        // SAFETY: each type is repr(C), Copy, made only of integers and byte arrays, and has no
        // implicit padding, so every bit pattern is valid and no byte is uninitialised.
        $(unsafe impl aya::Pod for $t {})*
    };
}

pod!(
    Config,
    ZoneKeyV4,
    ZoneKeyV6,
    ZoneMatch,
    ZoneInfo,
    ZonePortKey,
    ConduitKey,
    PortRule,
    RuleSet,
    ConduitInfo,
    FlowKey,
    FlowState,
    ZoneFlows,
    DenyKey,
    Denial,
    DenialMemo,
    FlowMemo,
    HostKey,
    MacKey,
    FdbEntry,
    FastPathState,
    ForwardMemo,
    Traffic,
    Trace,
    AddressRange,
    ModbusRule,
    InspectContext,
    ModbusStream,
    ModbusFlow,
    TcpGuard,
    ModbusStatKey,
    CountMemo,
    AduRecord,
    AduTrace,
    ModbusScratch,
    ModbusEvent,
    DatapathEvent,
    EventBucket,
    ObservedHeader,
    EnipRule,
    EnipClassKey,
    EnipTagKey,
    EnipStream,
    EnipFlow,
    EnipConnKey,
    EnipConn,
    EnipRecord,
    EnipTrace,
    EnipStatKey,
    EnipEvent,
    EnipScratch,
);
