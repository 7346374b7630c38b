//! Modbus/TCP inspection: the compiled rules of a `modbus:` item, the per-flow framing state,
//! the hand-off from the main program to the inspector, accounting keys, and event records.

use crate::{flow::FlowKey, observed::UseSet, stream::TcpGuard};

/// MBAP header: transaction id, protocol id, length, unit id.
pub const MBAP_LEN: usize = 7;
/// What the inspector needs of a request to decide it: the MBAP header, the function code and
/// the longest fixed data prefix (function 23: read start, read quantity, write start, write
/// quantity, byte count).
pub const PREFIX_MAX: usize = MBAP_LEN + 1 + 9;
/// Bytes of an undecided prefix carried from one segment to the next (one less than a prefix).
pub const CARRY_MAX: usize = 16;
/// ADUs inspected in one segment; a segment holding more is dropped (`modbus_too_many_adus`).
pub const MAX_ADUS: usize = 32;
/// Address ranges per data table in one rule; the compiler rejects policies needing more.
pub const MAX_RANGES: usize = 8;

/// Data tables, as indexes of `ModbusRule::ranges`.
pub const TABLE_COILS: usize = 0;
pub const TABLE_DISCRETE_INPUTS: usize = 1;
pub const TABLE_HOLDING_REGISTERS: usize = 2;
pub const TABLE_INPUT_REGISTERS: usize = 3;
pub const TABLES: usize = 4;

/// `ModbusRule::flags`: the rule slot holds a compiled rule.
pub const RULE_PRESENT: u32 = 1 << 0;
/// Diagnostics sub-functions 64..65535 are allowed (0..63 are in `diagnostics`).
pub const RULE_DIAG_OTHERS: u32 = 1 << 1;
/// `RULE_TABLE_LIMITED << table`: the table's addresses are limited to its ranges.
pub const RULE_TABLE_LIMITED: u32 = 1 << 4;

/// An allowed address range, both ends included.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressRange {
    pub lo: u16,
    pub hi: u16,
}

/// Map `MODBUS_RULES`, indexed by `slot * MAX_PROTOCOL_RULES + rule`. Bitmaps are little-endian
/// bit numbers: bit `n` of the set is `words[n / 64] >> (n % 64) & 1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModbusRule {
    /// Allowed unit ids.
    pub units: [u64; 4],
    /// Allowed function codes 0..127 (0 is never set).
    pub functions: [u64; 2],
    /// Allowed diagnostics (8) sub-functions 0..63.
    pub diagnostics: u64,
    /// Allowed MEI types of function 43.
    pub mei: [u64; 4],
    pub flags: u32,
    /// Ranges in use per table.
    pub range_count: [u8; TABLES],
    pub ranges: [[AddressRange; MAX_RANGES]; TABLES],
    /// `on_deny: refuse`: the unassigned function code a refused request is given, and the
    /// exception code its answer is given for the client.
    pub refuse_function: u8,
    pub refuse_exception: u8,
    pub _pad: [u8; 6],
}

#[inline(always)]
pub const fn bit(words: &[u64], n: usize) -> bool {
    words[n / 64] >> (n % 64) & 1 != 0
}

/// Map `INSPECT_CTX` (per CPU, one entry): what the main program hands the inspector it tail
/// calls. `key` is the flow's key in the initiator's direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InspectContext {
    pub key: FlowKey,
    pub seq: u32,
    pub ack: u32,
    pub epoch: u32,
    /// Offset of the TCP payload in the frame, and its length.
    pub payload: u32,
    pub payload_len: u32,
    pub conduit: u16,
    pub rule: u16,
    pub tcp_flags: u8,
    /// 1 when the segment travels from the initiator (client) to the responder (server).
    pub to_server: u8,
    pub trace: u8,
    /// The IPv4 TTL or IPv6 hop limit (`stream::TcpGuard`).
    pub hop_limit: u8,
    /// Length of the TCP header (options included), so that the header starts at
    /// `payload - header_len`: for the TCP checksum (`delivery`).
    pub header_len: u8,
    /// A short TCP segment's checksum as the inspector found it at its start (`CHECKSUM_*`;
    /// the main program writes 0: not summed yet, or a longer segment summed where it is
    /// checked).
    pub checksum: u8,
    pub _pad: [u8; 2],
}

/// `InspectContext::checksum`: the checksum folds to 0xffff...
pub const CHECKSUM_GOOD: u8 = 1;
/// ... or not.
pub const CHECKSUM_BAD: u8 = 2;

/// `ModbusStream::flags`: the position of the next ADU header is known.
pub const STREAM_SYNCED: u8 = 1 << 0;
/// `boundary_seq` holds the start of the last passed data segment, which began at an ADU
/// boundary and ended at one (`next_seq`).
pub const STREAM_BOUNDARY: u8 = 1 << 1;
/// `acked` holds the highest acknowledgement the peer sent for this stream.
pub const STREAM_ACKED: u8 = 1 << 2;

/// Framing state of one direction of a Modbus connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModbusStream {
    /// Sequence number of the next stream byte expected.
    pub next_seq: u32,
    pub boundary_seq: u32,
    pub acked: u32,
    /// Bytes of the current ADU, already decided, still to come.
    pub skip: u16,
    /// Bytes of an undecided ADU prefix held in `carry` (they were passed: a prefix is not a
    /// request the server can act on until its ADU is complete, and the segment completing the
    /// prefix is decided before it passes).
    pub carry_len: u8,
    pub flags: u8,
    pub carry: [u8; CARRY_MAX],
}

/// Refused requests of one flow awaiting their answer (`on_deny: refuse`). Past this bound the
/// connection is reset (`modbus_refusals_full`): a client that pipelines more refused requests
/// than this without reading the answers is not a client otfw keeps alive. Clients do pipeline
/// a scan's writes (five refused FC 16 writes in one segment in the iti_ModbusTCP capture). The
/// table lives in map memory (`ModbusFlow::refusals`, copied to `ModbusScratch::refusals` while
/// a segment is framed), not on the stack: its size costs verifier instructions, not frame
/// space.
pub const REFUSALS_MAX: usize = 8;

/// A refused request: matched to its answer by transaction and unit id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusal {
    pub transaction: u16,
    pub unit: u8,
    /// The client's function code, restored in the answer.
    pub function: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Bit `i`: `entries[i]` is in use.
    pub used: u8,
    pub _pad: u8,
    pub entries: [Refusal; REFUSALS_MAX],
}

impl Refusals {
    /// `*self = *src` on the datapath, where it is done for every segment: the entries only
    /// while one is in use (unused entries are never read), element by element (`crate::mem`).
    #[inline(always)]
    pub fn copy_from(&mut self, src: &Refusals) {
        self.used = src.used;
        if src.used != 0 {
            crate::mem::copy_each(&mut self.entries, &src.entries);
        }
    }
}

/// `ModbusFlow::flags`: a request was denied under `on_deny: drop`: every later segment from
/// the client is dropped.
pub const MODBUS_BLOCKED: u8 = 1 << 0;
/// A request was denied under `on_deny: reset`: the server got a reset; every later segment
/// of the flow is answered with a reset to its sender.
pub const MODBUS_RESET: u8 = 1 << 1;

/// Map `MODBUS_FLOWS` (LRU, keyed by the flow's initiator-direction `FlowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModbusFlow {
    /// `[requests (client to server), responses]`.
    pub streams: [ModbusStream; 2],
    pub guard: TcpGuard,
    /// Requests passed and not yet answered (saturating).
    pub outstanding: u16,
    pub flags: u8,
    pub _pad: u8,
    pub refusals: Refusals,
    pub _pad2: [u8; 6],
    /// What the client has used on this connection, for the inventory (`observed::UseSet`,
    /// codes of `observed::modbus_use`, and unit ids).
    pub functions: UseSet,
    pub units: UseSet,
}

/// Kinds of `MODBUS_STATS` entries: the first four are the request's verdict (`VERDICT_*`).
pub const KIND_RESPONSE: u8 = 4;
/// An exception response; `detail` is the exception code.
pub const KIND_EXCEPTION: u8 = 5;
/// A response (normal or exception) with no request outstanding.
pub const KIND_UNSOLICITED: u8 = 6;
/// A refused request (`on_deny: refuse`), neutralised and passed.
pub const KIND_REFUSE: u8 = 7;
pub const KIND_NAMES: [&str; 8] = [
    "pass",
    "drop",
    "monitor",
    "reset",
    "response",
    "exception",
    "unsolicited",
    "refuse",
];

/// Key of map `MODBUS_STATS` (per-CPU hash, value u64 ADU count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModbusStatKey {
    pub slot: u8,
    pub function: u8,
    pub kind: u8,
    pub detail: u8,
    pub conduit: u16,
    pub _pad: u16,
}

impl ModbusStatKey {
    /// The key as one word (the datapath's counting functions pass it so).
    #[inline(always)]
    pub const fn packed(&self) -> u64 {
        self.slot as u64
            | (self.function as u64) << 8
            | (self.kind as u64) << 16
            | (self.detail as u64) << 24
            | (self.conduit as u64) << 32
    }

    #[inline(always)]
    pub const fn unpacked(packed: u64) -> ModbusStatKey {
        ModbusStatKey {
            slot: packed as u8,
            function: (packed >> 8) as u8,
            kind: (packed >> 16) as u8,
            detail: (packed >> 24) as u8,
            conduit: (packed >> 32) as u16,
            _pad: 0,
        }
    }
}

/// Map `MODBUS_COUNTS` (per-CPU u64) indexes.
pub const COUNT_EVENTS_LOST: u32 = 0;
pub const COUNT_RESPONSES_UNFRAMED: u32 = 1;
pub const COUNTS_LEN: u32 = 2;

/// One ADU seen in a segment (map `MODBUS_ADUS`, for replay and tests).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AduRecord {
    pub unit: u8,
    pub function: u8,
    /// `KIND_*` for responses; for requests the request's own verdict is filled in from
    /// `reason`: 0 = allowed by itself.
    pub kind: u8,
    pub reason: u8,
    pub address: u16,
    pub quantity: u16,
    /// Diagnostics sub-function, MEI type, or exception code.
    pub sub: u16,
    pub _pad: u16,
}

pub const ADU_REQUEST: u8 = 0;

/// Map `MODBUS_ADUS` (per CPU, one entry): the ADUs decided in the segment just inspected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AduTrace {
    pub count: u32,
    pub _pad: u32,
    pub adus: [AduRecord; MAX_ADUS],
}

impl Default for AduTrace {
    fn default() -> Self {
        AduTrace {
            count: 0,
            _pad: 0,
            adus: [AduRecord::default(); MAX_ADUS],
        }
    }
}

/// Per-CPU scratch of the inspector (map `MODBUS_SCRATCH`): the prefix being assembled and the
/// state of the framing loop, shared by the loop and the global functions it calls (keeping it
/// off the stack and out of the verifier's per-iteration state).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModbusScratch {
    pub buf: [u8; 64],
    /// Frame offset and length of the TCP payload.
    pub payload: u32,
    pub len: u32,
    /// Payload offset of the next byte to frame.
    pub pos: u32,
    /// Bytes of the current ADU, already decided, still to come.
    pub skip: u32,
    /// Prefix bytes already in `buf` (carried, or loaded for the ADU being decided).
    pub carry: u32,
    pub have: u32,
    pub rule_index: u32,
    pub epoch: u32,
    pub conduit: u16,
    /// Requests outstanding on the flow (responses are matched against it).
    pub outstanding: u16,
    pub event_verdict: u8,
    pub request: u8,
    /// The segment must be whole ADUs (stream sync, recheck of a retransmission).
    pub exact: u8,
    pub monitor: u8,
    /// First refusal, 0 if none.
    pub reason: u8,
    /// A request was denied (not merely unplaceable).
    pub denied: u8,
    /// Every byte of the segment was framed.
    pub framed: u8,
    /// Refused requests are neutralised and answers restored (`on_deny: refuse`, enforcing).
    pub refuse: u8,
    pub requests: u32,
    pub adus: u32,
    pub refuse_function: u8,
    pub refuse_exception: u8,
    /// Requests refused (neutralised) in this segment.
    pub refused: u8,
    /// A refusal could not be carried out: the connection must be reset.
    pub fail: u8,
    /// Byte rewrites to apply to the segment if it passes: frame offsets and new values.
    pub rewrites: u32,
    pub rewrite_at: [u16; REWRITES_MAX],
    pub rewrite_value: [u8; REWRITES_MAX],
    /// The flow's refusals, updated as the segment is framed (written back if it passes).
    pub refusals: Refusals,
    pub _pad2: [u8; 6],
    /// ADU counting: the counter key of the run of ADUs being counted (low, high word) and
    /// its length. In map memory, not on the stack, so the verifier does not follow every
    /// combination of keys through the loop.
    pub count_key: [u32; 2],
    pub count_run: u32,
    /// A request of the segment was its connection's first use of a function or unit: the
    /// sets below changed, and `news_at` is the payload offset of the first such ADU.
    pub news: u8,
    pub _pad3: u8,
    pub news_at: u16,
    pub _pad4: u32,
    /// The flow's `functions` and `units`, updated as requests are framed (written back when
    /// `news`).
    pub functions: UseSet,
    pub units: UseSet,
}

/// Byte rewrites per segment: two per restored answer, one per refused request.
pub const REWRITES_MAX: usize = 2 * REFUSALS_MAX;

/// Ring buffer `MODBUS_EVENTS`: one record per denied request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModbusEvent {
    pub key: FlowKey,
    pub epoch: u32,
    pub conduit: u16,
    pub unit: u8,
    pub function: u8,
    pub sub: u16,
    pub address: u16,
    pub quantity: u16,
    pub reason: u8,
    pub verdict: u8,
}
