//! EtherNet/IP and CIP inspection: the compiled rules of an `enip:` item, the per-flow framing
//! and session state, recorded connections (connected messaging and implicit I/O pinholes),
//! accounting keys, trace records and event records. The hand-off from the main program is the
//! shared `modbus::InspectContext`.

use crate::{flow::FlowKey, observed::UseSet, stream::TcpGuard};

/// Encapsulation header length.
pub const ENCAP_LEN: u32 = 24;
/// The longest encapsulation message (header included) the inspector assembles and parses. A
/// request that announces more is refused (`enip_too_long`); a longer response is framed
/// (skipped) without being parsed. CIP's own limits are lower (504 bytes unconnected).
pub const MSG_MAX: u32 = 1024;
/// Size of the per-CPU message buffer: a masked offset (`& (MSG_MAX - 1)`) plus a masked length
/// always stays inside it.
pub const MSG_BUF: usize = 2 * MSG_MAX as usize;
/// Encapsulation messages decided in one segment or datagram.
pub const MAX_MESSAGES: u32 = 16;
/// CIP requests checked per encapsulation message (containers and embedded requests).
pub const MAX_REQUESTS: u32 = 32;
/// CIP requests checked per segment or datagram, over all its messages: bounds a packet's work
/// (a Logix client pipelines several full Multiple Service Packets in one segment: 73 requests
/// in the corpus).
pub const MAX_SEGMENT_REQUESTS: u32 = 96;
/// Requests inside one Multiple Service Packet. Logix clients pack as many reads as fit in
/// one message (30 short Read Tags in the corpus); 31 keeps every position a bit of
/// `EnipRefusal::positions` beside `POSITION_WHOLE`.
pub const MAX_MSP_COUNT: u32 = 31;
/// Nesting: top-level request = depth 0; a request inside MSP or Unconnected Send is one deeper.
pub const MAX_DEPTH: u32 = 3;
/// Entries of the explicit work stack of the nesting walk.
pub const MAX_FRAMES: usize = 32;
/// EPATH segments parsed per request path.
pub const MAX_SEGMENTS: u32 = 16;
/// A tag name (symbolic segments joined with `.`) longer than this is refused
/// (`cip_tag_too_long`). Logix names are at most 40 characters per segment.
pub const TAG_MAX: u32 = 64;
/// Records kept per frame for replay, tests and the per-request counters (one per request and
/// per message: `MAX_SEGMENT_REQUESTS` requests and their messages fit). A power of two.
pub const MAX_RECORDS: usize = 128;
/// Bytes of a tag name kept in a record or event.
pub const TAG_KEEP: usize = 40;
/// Recorded connections per flow (for Forward_Close).
pub const FLOW_CONNS: usize = 4;

/// Encapsulation commands the inspector treats specially.
pub const CMD_NOP: u16 = 0x0000;
pub const CMD_LIST_SERVICES: u16 = 0x0004;
pub const CMD_LIST_IDENTITY: u16 = 0x0063;
pub const CMD_LIST_INTERFACES: u16 = 0x0064;
pub const CMD_REGISTER_SESSION: u16 = 0x0065;
pub const CMD_UNREGISTER_SESSION: u16 = 0x0066;
pub const CMD_SEND_RR_DATA: u16 = 0x006F;
pub const CMD_SEND_UNIT_DATA: u16 = 0x0070;

/// CPF item types.
pub const ITEM_NULL: u16 = 0x0000;
pub const ITEM_CONNECTED_ADDRESS: u16 = 0x00A1;
pub const ITEM_CONNECTED_DATA: u16 = 0x00B1;
pub const ITEM_UNCONNECTED_DATA: u16 = 0x00B2;
pub const ITEM_SOCKADDR_O2T: u16 = 0x8000;
pub const ITEM_SOCKADDR_T2O: u16 = 0x8001;
pub const ITEM_SEQUENCED_ADDRESS: u16 = 0x8002;

/// Classes and services the inspector resolves.
pub const CLASS_MESSAGE_ROUTER: u16 = 0x02;
pub const CLASS_CONNECTION_MANAGER: u16 = 0x06;
pub const CLASS_SYMBOL: u16 = 0x6B;
pub const SVC_MSP: u8 = 0x0A;
pub const SVC_FORWARD_CLOSE: u8 = 0x4E;
pub const SVC_UNCONNECTED_SEND: u8 = 0x52;
pub const SVC_FORWARD_OPEN: u8 = 0x54;
pub const SVC_LARGE_FORWARD_OPEN: u8 = 0x5B;
/// Services addressing a tag by name: read, write, read-modify-write, read/write fragmented.
pub const SVC_TAG_FIRST: u8 = 0x4C;
pub const SVC_TAG_LAST: u8 = 0x53;

/// `EnipRule::flags`: the slot holds a compiled rule.
pub const ENIP_RULE_PRESENT: u32 = 1 << 0;
/// `services: [all]`.
pub const ENIP_RULE_ALL_SERVICES: u32 = 1 << 1;
/// `tags:` limits the tag services to the names in `ENIP_TAGS`.
pub const ENIP_RULE_TAGS: u32 = 1 << 2;
/// `io: true`.
pub const ENIP_RULE_IO: u32 = 1 << 3;

/// Map `ENIP_RULES`, indexed by `slot * MAX_PROTOCOL_RULES + rule`. Bitmaps as in `modbus::bit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnipRule {
    /// Allowed encapsulation commands 0..255 (no command above is defined).
    pub commands: [u64; 4],
    /// Services allowed on every class (codes below 0x31 by name or number).
    pub any_class: [u64; 2],
    /// Lengths `k` (1..63) of `prefix*` tag patterns: bit `k` set when some pattern has a
    /// prefix of `k` bytes.
    pub prefix_lengths: u64,
    pub flags: u32,
    /// `on_deny: refuse`: the service code a refused request is given on its way to the target
    /// (one no object implements), and the general status its answer is given for the client.
    pub refuse_service: u8,
    pub refuse_status: u8,
    pub _pad: [u8; 2],
}

/// Key of map `ENIP_CLASSES`: the services a rule allows on one class (value `[u64; 2]`, a
/// bitmap of codes 0..127). Symbolic (tag) paths count as the Symbol class 0x6B.
///
/// 8-aligned, so that the datapath writes it as one word (`set`); the alignment adds no padding.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EnipClassKey {
    pub slot: u8,
    pub _pad: u8,
    pub rule: u16,
    pub class: u16,
    pub _pad2: u16,
}

impl EnipClassKey {
    /// Sets the key with one 64-bit store (`crate::mem::store_words`).
    #[inline(always)]
    pub fn set(&mut self, slot: u8, rule: u16, class: u16) {
        let (r, c) = (rule.to_ne_bytes(), class.to_ne_bytes());
        let word = u64::from_ne_bytes([slot, 0, r[0], r[1], c[0], c[1], 0, 0]);
        // SAFETY: a struct of integers.
        unsafe { crate::mem::store_words(self, [word]) };
    }
}

/// Entries of each CPU's memo of `ENIP_CLASSES` answers (map `ENIP_CLASS_MEMO`).
pub const ENIP_CLASS_MEMO_SLOTS: u32 = 8;

/// Value of map `ENIP_CLASS_MEMO`: what `ENIP_CLASSES` answered for rule `rule` and class
/// `class` of the policy of `epoch` (`present` 0: no entry, no service allowed). Asked before
/// the hash map, so that the requests of a busy connection (ten in a Multiple Service Packet,
/// one per Read Tag) cost an array slot and a compare instead of a hash lookup each. Exact
/// because a policy's maps are written completely before its epoch is published, never change
/// while it is in force, and a new policy gets a new epoch. An entry of zeros matches nothing
/// (epoch 0 is never active).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnipClassMemo {
    pub epoch: u32,
    pub rule: u16,
    pub class: u16,
    pub present: u64,
    pub services: [u64; 2],
}

impl EnipClassMemo {
    /// The entry that may hold `rule` and `class`.
    #[inline(always)]
    pub fn slot(rule: u16, class: u16) -> u32 {
        (class as u32 ^ (rule as u32) << 1) & (ENIP_CLASS_MEMO_SLOTS - 1)
    }
}

const _: () = {
    assert!(core::mem::offset_of!(EnipClassKey, rule) == 2);
    assert!(core::mem::offset_of!(EnipClassKey, class) == 4);
    assert!(core::mem::size_of::<EnipClassKey>() == 8);
};

/// Key of map `ENIP_TAGS` (value u8, unused): an allowed tag name of a rule. `len` 0 is an
/// exact name; `len` k > 0 a `prefix*` pattern whose first k bytes hash to `hash`. The hash is
/// 64-bit FNV-1a over the ASCII-lowercased name (`tag_hash`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EnipTagKey {
    pub hash: u64,
    pub slot: u8,
    pub len: u8,
    pub rule: u16,
    pub _pad: u32,
}

impl EnipTagKey {
    /// Sets the key with two 64-bit stores (`crate::mem::store_words`).
    #[inline(always)]
    pub fn set(&mut self, hash: u64, slot: u8, len: u8, rule: u16) {
        let r = rule.to_ne_bytes();
        let rest = u64::from_ne_bytes([slot, len, r[0], r[1], 0, 0, 0, 0]);
        // SAFETY: a struct of integers.
        unsafe { crate::mem::store_words(self, [hash, rest]) };
    }
}

const _: () = {
    assert!(core::mem::offset_of!(EnipTagKey, slot) == 8);
    assert!(core::mem::offset_of!(EnipTagKey, len) == 9);
    assert!(core::mem::offset_of!(EnipTagKey, rule) == 10);
    assert!(core::mem::size_of::<EnipTagKey>() == 16);
};

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the tag hash (the datapath hashes byte by byte).
#[inline(always)]
pub const fn tag_hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte.to_ascii_lowercase() as u64).wrapping_mul(FNV_PRIME)
}

/// The tag hash of `name` (Logix tag names are case-insensitive).
pub fn tag_hash(name: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < name.len() {
        h = tag_hash_step(h, name[i]);
        i += 1;
    }
    h
}

/// `EnipStream::flags`.
pub const ESTREAM_SYNCED: u8 = 1 << 0;
pub const ESTREAM_BOUNDARY: u8 = 1 << 1;
pub const ESTREAM_ACKED: u8 = 1 << 2;

/// Framing state of one direction of an EtherNet/IP connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnipStream {
    pub next_seq: u32,
    pub boundary_seq: u32,
    pub acked: u32,
    /// Bytes of a message not parsed (a long response) still to come.
    pub skip: u32,
    /// Bytes of an undecided message held in `carry` (they passed: an incomplete message is
    /// nothing a server acts on; the segment completing it is decided before it passes).
    pub have: u16,
    pub flags: u8,
    pub _pad: u8,
    pub carry: [u8; MSG_MAX as usize],
}

impl Default for EnipStream {
    fn default() -> Self {
        EnipStream {
            next_seq: 0,
            boundary_seq: 0,
            acked: 0,
            skip: 0,
            have: 0,
            flags: 0,
            _pad: 0,
            carry: [0; MSG_MAX as usize],
        }
    }
}

/// `EnipFlow::flags`: the session handle is known.
pub const EFLOW_SESSION: u8 = 1 << 0;
/// A request was denied under `on_deny: drop`: later client segments are dropped.
pub const EFLOW_BLOCKED: u8 = 1 << 1;
/// A request was denied under `on_deny: reset`: later segments are answered with resets.
pub const EFLOW_RESET: u8 = 1 << 2;
/// The client's SYN was seen (the flow was not adopted mid-stream).
pub const EFLOW_SYN: u8 = 1 << 3;
/// `pending` holds a Forward_Open that passed and awaits its reply.
pub const EFLOW_PENDING: u8 = 1 << 4;

/// A connection of a flow: the ids from the Forward_Open reply and the connection triple that
/// Forward_Close names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowConn {
    pub o2t: u32,
    pub t2o: u32,
    pub orig_serial: u32,
    pub serial: u16,
    pub vendor: u16,
}

/// A Forward_Open request that passed, waiting for its reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingOpen {
    pub orig_serial: u32,
    pub serial: u16,
    pub vendor: u16,
    /// Timeout multiplier (the connection times out after RPI * 4 << multiplier).
    pub multiplier: u8,
    /// Transport class (0/1 implicit I/O, 3 explicit).
    pub class: u8,
    pub _pad: [u8; 2],
}

/// Refusals of one flow awaiting their answer (`on_deny: refuse`): one entry per reply message
/// and refused service, however many requests of that service the message carries (a Logix
/// client packs thirty reads of a class the rule does not allow into one Multiple Service
/// Packet). Past this bound the connection is reset (`enip_refusals_full`): explicit messaging
/// clients wait for each reply or pipeline a few, so a client with more messages holding
/// refused requests in flight is not one otfw keeps alive. The table lives in map memory
/// (`EnipFlow::refusals`, copied to `EnipScratch::refusals` while a segment is framed), never
/// on the stack.
pub const ENIP_REFUSALS_MAX: usize = 8;
/// Byte rewrites per segment: one per refused request, two per restored answer (a full segment
/// of Multiple Service Packet replies to refused reads needs about 120). Past it the connection
/// is reset (`enip_refusals_full`).
pub const ENIP_REWRITES_MAX: usize = 256;
/// Events of refused requests sent per segment; the counters count every one.
pub const ENIP_REFUSED_EVENTS_MAX: usize = 8;

/// Refused requests of one reply message and one service. Of SendRRData: its answer is the
/// SendRRData reply number `ordinal` of the connection (targets answer explicit requests of a
/// connection in order; clients such as pycomm3 send one sender context for all), and it must
/// echo the request's sender context (`context`). Of SendUnitData (`connected`, connected
/// explicit messaging): its answer is the SendUnitData reply echoing the request's sequence
/// count (`context`), as the transport requires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnipRefusal {
    pub context: u64,
    /// The rest of what an entry is matched by, packed so that a match is two compares
    /// (`EnipRefusal::key`): the ordinal, the client's service code (restored | 0x80 in the
    /// answer), the code the target got, the general status the client gets, whether the
    /// requests reached their target through an Unconnected Send (the router's own error,
    /// `SVC_UNCONNECTED_SEND | 0x80`, may answer instead of the target's), and whether they are
    /// of SendUnitData.
    pub key: u64,
    /// Where in the reply the refused requests' replies are: bit `k`, entry `k` of a Multiple
    /// Service Packet reply; `POSITION_WHOLE`, the whole CIP reply.
    pub positions: u32,
    pub _pad: u32,
}

impl EnipRefusal {
    pub const fn key(
        ordinal: u32,
        service: u8,
        neutral: u8,
        status: u8,
        routed: bool,
        connected: bool,
    ) -> u64 {
        ordinal as u64
            | (service as u64) << 32
            | (neutral as u64) << 40
            | (status as u64) << 48
            | (routed as u64) << 56
            | (connected as u64) << 57
    }
    pub const fn ordinal(&self) -> u32 {
        self.key as u32
    }
    pub const fn service(&self) -> u8 {
        (self.key >> 32) as u8
    }
    pub const fn neutral(&self) -> u8 {
        (self.key >> 40) as u8
    }
    pub const fn status(&self) -> u8 {
        (self.key >> 48) as u8
    }
    pub const fn routed(&self) -> bool {
        self.key & 1 << 56 != 0
    }
    pub const fn connected(&self) -> bool {
        self.key & 1 << 57 != 0
    }
}

/// `EnipRefusal::positions` of a request whose reply is the whole CIP reply
/// (`1 << FRAME_WHOLE`).
pub const POSITION_WHOLE: u32 = 1 << FRAME_WHOLE;

/// A reply position meaning the whole CIP reply, not an entry of a Multiple Service Packet
/// reply (replay's model of the datapath's positions).
pub const WHOLE_REPLY: u8 = 0xFF;

/// `EnipScratch::frame_index`: the request's reply is entry `index & FRAME_POSITION` of a
/// Multiple Service Packet reply, or (`FRAME_WHOLE`) the whole CIP reply. An Unconnected Send
/// is transparent: its reply is the embedded request's (or the router's error). A reply inside
/// an entry of a reply inside an entry (a packet in a packet) is `FRAME_UNLOCATED`: such a
/// request cannot be refused in-band.
pub const FRAME_POSITION: u8 = 0x1F;
pub const FRAME_WHOLE: u8 = 0x1F;
pub const FRAME_UNLOCATED: u8 = 0x20;
/// The request travels through an Unconnected Send.
pub const FRAME_ROUTED: u8 = 0x40;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnipRefusals {
    /// Bit `i`: `entries[i]` is in use.
    pub used: u8,
    pub _pad: [u8; 3],
    /// SendRRData requests passed to the target and replies seen, from the flow's start.
    pub requests: u32,
    pub replies: u32,
    pub _pad2: u32,
    pub entries: [EnipRefusal; ENIP_REFUSALS_MAX],
}

impl EnipRefusals {
    /// `*self = *src` on the datapath, where it is done for every segment: the counters, and
    /// the entries only while one is in use (unused entries are never read), field by field
    /// (`crate::mem`).
    #[inline(always)]
    pub fn copy_from(&mut self, src: &EnipRefusals) {
        self.used = src.used;
        self.requests = src.requests;
        self.replies = src.replies;
        if src.used != 0 {
            for i in 0..ENIP_REFUSALS_MAX {
                let (d, s) = (&mut self.entries[i], &src.entries[i]);
                d.context = s.context;
                d.key = s.key;
                d.positions = s.positions;
            }
        }
    }
}

/// Map `ENIP_FLOWS` (LRU, keyed by the flow's initiator-direction `FlowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnipFlow {
    /// `[requests (client to server), responses]`.
    pub streams: [EnipStream; 2],
    pub guard: TcpGuard,
    pub session: u32,
    pub flags: u8,
    pub _pad: [u8; 3],
    pub pending: PendingOpen,
    pub conns: [FlowConn; FLOW_CONNS],
    pub refusals: EnipRefusals,
    /// What the client has used on this connection, for the inventory: encapsulation commands
    /// (`UseSet`, commands above 255 are not kept) and CIP requests (`EnipUses`).
    pub commands: UseSet,
    pub services: EnipUses,
}

/// The (service, class) pairs of CIP requests a connection has used, the first
/// `ENIP_USES_MAX` of them: a pair new to the table makes its segment an inventory copy
/// (`observed::OBSERVED_USE`); once the table is full, further pairs of the connection are
/// not reported (its copies may still show them). An entry is service | class << 8 |
/// `USE_SYMBOLIC` | `USE_PRESENT`; 0 is free.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnipUses {
    pub pairs: [u32; ENIP_USES_MAX],
}

pub const ENIP_USES_MAX: usize = 16;
/// `EnipUses` entry: the request addressed a tag (a symbolic path; its class bits are 0).
pub const USE_SYMBOLIC: u32 = 1 << 24;
pub const USE_PRESENT: u32 = 1 << 25;

/// Key of map `ENIP_CONNS`: a connection id between a client and a server (addresses as in
/// `FlowKey`). Both ids of a Forward_Open reply are recorded. 8-aligned, as `FlowKey`, so that
/// the datapath writes it in words (`new`); the alignment adds no padding (40 bytes either way).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EnipConnKey {
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub id: u32,
    pub _pad: u32,
}

impl EnipConnKey {
    /// The key of connection `id` between `flow`'s source (the client) and destination (the
    /// server), as five 64-bit words: built field by field, the addresses were two calls of an
    /// out-of-line byte-wise `memmove` (`crate::mem`), and the kernel's hash of the key, reading
    /// words, waited on the byte stores.
    #[inline(always)]
    pub fn new(flow: &FlowKey, id: u32) -> EnipConnKey {
        let (src, dst) = (
            flow.src.as_ptr() as *const u64,
            flow.dst.as_ptr() as *const u64,
        );
        let i = id.to_ne_bytes();
        let tail = u64::from_ne_bytes([i[0], i[1], i[2], i[3], 0, 0, 0, 0]);
        // SAFETY: `FlowKey` is 8-aligned with its addresses at offsets 0 and 16, so each
        // address is two aligned words; five words are the 40 bytes of a struct of integers
        // (client, server, id, padding in memory order).
        unsafe {
            core::mem::transmute::<[u64; 5], EnipConnKey>([
                src.read(),
                src.add(1).read(),
                dst.read(),
                dst.add(1).read(),
                tail,
            ])
        }
    }
}

const _: () = {
    assert!(core::mem::size_of::<EnipConnKey>() == 40);
    assert!(core::mem::offset_of!(EnipConnKey, id) == 32);
};

/// `EnipConn::flags`: implicit I/O on UDP 2222 may use the connection.
pub const CONN_IO: u8 = 1 << 0;
/// Recorded from a flow adopted mid-stream (its Forward_Open was never seen).
pub const CONN_ADOPTED: u8 = 1 << 1;

/// Value of map `ENIP_CONNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnipConn {
    /// Idle time after which the connection is gone (RPI * 4 << multiplier), and last use.
    pub timeout_ns: u64,
    pub last_ns: u64,
    pub epoch: u32,
    pub conduit: u16,
    pub rule: u16,
    pub flags: u8,
    pub _pad: [u8; 7],
}

/// `EnipRecord::kind`.
pub const REC_COMMAND: u8 = 0;
pub const REC_CIP: u8 = 1;
/// An implicit I/O datagram (`instance` holds the connection id).
pub const REC_IO: u8 = 2;
/// `EnipRecord::flags`: the path was symbolic.
pub const REC_SYMBOLIC: u8 = 1 << 0;
/// The path named a class.
pub const REC_CLASS: u8 = 1 << 1;
pub const REC_INSTANCE: u8 = 1 << 2;

/// One request seen in a frame (map `ENIP_TRACE`, for replay and tests; also the body of
/// `EnipEvent`). 8-aligned (no padding added: 56 bytes either way), so that the tag's start
/// (offset 16) is copied in words, not byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnipRecord {
    pub command: u16,
    pub class: u16,
    pub instance: u32,
    pub kind: u8,
    pub service: u8,
    pub depth: u8,
    /// 0 = allowed by itself.
    pub reason: u8,
    pub flags: u8,
    pub tag_len: u8,
    pub _pad: [u8; 2],
    pub tag: [u8; TAG_KEEP],
}

// The record's tag and the scratch's name are copied into each other in words (`copy_words`).
const _: () = assert!(
    core::mem::offset_of!(EnipRecord, tag).is_multiple_of(8)
        && core::mem::offset_of!(EnipScratch, name).is_multiple_of(8)
        && core::mem::align_of::<EnipScratch>() == 8
        && TAG_KEEP.is_multiple_of(8)
);

impl Default for EnipRecord {
    fn default() -> Self {
        EnipRecord {
            command: 0,
            class: 0,
            instance: 0,
            kind: 0,
            service: 0,
            depth: 0,
            reason: 0,
            flags: 0,
            tag_len: 0,
            _pad: [0; 2],
            tag: [0; TAG_KEEP],
        }
    }
}

/// Map `ENIP_TRACE` (per CPU, one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnipTrace {
    pub count: u32,
    pub _pad: u32,
    pub records: [EnipRecord; MAX_RECORDS],
}

impl Default for EnipTrace {
    fn default() -> Self {
        EnipTrace {
            count: 0,
            _pad: 0,
            records: [EnipRecord::default(); MAX_RECORDS],
        }
    }
}

/// Key of map `ENIP_STATS` (per-CPU hash, value u64): requests by conduit, command, service,
/// class and verdict (`VERDICT_*`; in monitor mode allowed requests count as pass).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EnipStatKey {
    pub slot: u8,
    pub service: u8,
    pub verdict: u8,
    pub kind: u8,
    pub conduit: u16,
    pub class: u16,
    pub command: u16,
    pub _pad: u16,
}

impl EnipStatKey {
    /// The key as two words: slot, service, verdict, kind, conduit and class in the first,
    /// the command in the second (the datapath's counting functions pass it so).
    #[inline(always)]
    pub const fn packed(&self) -> [u64; 2] {
        [
            self.slot as u64
                | (self.service as u64) << 8
                | (self.verdict as u64) << 16
                | (self.kind as u64) << 24
                | (self.conduit as u64) << 32
                | (self.class as u64) << 48,
            self.command as u64,
        ]
    }

    #[inline(always)]
    pub const fn unpacked(packed: [u64; 2]) -> EnipStatKey {
        let a = packed[0];
        EnipStatKey {
            slot: a as u8,
            service: (a >> 8) as u8,
            verdict: (a >> 16) as u8,
            kind: (a >> 24) as u8,
            conduit: (a >> 32) as u16,
            class: (a >> 48) as u16,
            command: packed[1] as u16,
            _pad: 0,
        }
    }
}

/// Map `ENIP_COUNTS` indexes.
pub const ECOUNT_EVENTS_LOST: u32 = 0;
pub const ECOUNT_RESPONSES_UNFRAMED: u32 = 1;
pub const ECOUNT_CONNECTIONS: u32 = 2;
pub const ECOUNTS_LEN: u32 = 3;

/// Ring buffer `ENIP_EVENTS`: one record per denied request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnipEvent {
    pub key: FlowKey,
    pub epoch: u32,
    pub conduit: u16,
    pub verdict: u8,
    pub _pad: u8,
    pub record: EnipRecord,
}

/// Per-CPU scratch of the inspector (map `ENIP_SCRATCH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnipScratch {
    /// The message being assembled or parsed.
    pub msg: [u8; MSG_BUF],
    /// The tag name of the request being parsed (segments joined with `.`).
    pub name: [u8; 128],
    /// Nesting work stack: (offset, length, depth) of requests still to check.
    pub frame_off: [u16; MAX_FRAMES],
    pub frame_len: [u16; MAX_FRAMES],
    pub frame_depth: [u8; MAX_FRAMES],
    /// Where the request's reply will be (`FRAME_*`): its position in the Multiple Service
    /// Packet reply it is an entry of, or the whole reply; whether it travels through an
    /// Unconnected Send.
    pub frame_index: [u8; MAX_FRAMES],
    /// Frame offset and length of the payload; next payload byte to frame.
    pub payload: u32,
    pub len: u32,
    pub pos: u32,
    /// Bytes of the current message in `msg`; its total length once the header is in (0 before).
    pub have: u32,
    pub need: u32,
    pub skip: u32,
    pub rule_index: u32,
    pub epoch: u32,
    pub session: u32,
    pub frames: u32,
    /// CIP requests checked in the current message, and in the segment.
    pub requests: u32,
    pub segment_requests: u32,
    pub records: u32,
    pub name_len: u32,
    pub conduit: u16,
    pub rule: u16,
    pub request: u8,
    pub udp: u8,
    pub exact: u8,
    pub monitor: u8,
    pub reason: u8,
    pub denied: u8,
    pub framed: u8,
    pub event_verdict: u8,
    pub flow_flags: u8,
    pub messages: u8,
    /// State of the path being parsed (`REC_*` flags, class, instance).
    pub path_flags: u8,
    pub _pad: u8,
    pub pending: PendingOpen,
    /// A Forward_Open reply seen in this segment (recorded when the segment passes).
    pub opened: FlowConn,
    pub opened_timeout_ns: u64,
    pub opened_ok: u8,
    /// A Forward_Close request passed in this segment for `closed`.
    pub closed_ok: u8,
    pub _pad2: [u8; 6],
    pub closed: FlowConn,
    pub path_class: u32,
    pub path_instance: u32,
    /// Length of the request message being decided (its first byte is `pos - total` in the
    /// payload once it is complete).
    pub total: u32,
    /// Byte rewrites to apply to the segment if it passes: frame offsets and new values.
    pub rewrites: u32,
    pub rewrite_at: [u16; ENIP_REWRITES_MAX],
    pub rewrite_value: [u8; ENIP_REWRITES_MAX],
    /// `on_deny: refuse` applies (enforcing, TCP).
    pub refuse: u8,
    /// Requests refused (neutralised) in this segment.
    pub refused: u8,
    /// A refusal could not be carried out or restored: the reason the connection is reset for.
    pub fail: u8,
    /// The reason of the first request refused in this segment.
    pub refused_reason: u8,
    /// The trace record of the CIP request being checked, and its `frame_index`.
    pub cip_record: u32,
    pub cip_index: u8,
    /// The segment re-sends bytes that passed (`Commit::Recheck`): it is neutralised and
    /// restored again, but its refusals and messages were recorded when it first passed.
    pub recheck: u8,
    pub _pad4: [u8; 2],
    /// The trace records of the requests refused in this segment (`refused` of them): their
    /// events are sent once the segment passes.
    pub refused_records: [u8; ENIP_REFUSED_EVENTS_MAX],
    /// The flow's refusals, updated as the segment is framed (written back if it passes).
    pub refusals: EnipRefusals,
    /// The counter the run of records being counted adds to (`EnipStatKey` packed: slot,
    /// service, verdict, kind, conduit, class; and the command), and the run's length: a run
    /// of records with the same counter (the requests of a Multiple Service Packet of reads) is
    /// one map update. In the scratch, not in registers: the verifier's walk of the counting
    /// loop then prunes.
    pub count_key: [u32; 2],
    pub count_command: u32,
    pub count_run: u32,
    /// A request message of the segment was its connection's first use of a command or a
    /// (service, class) pair: the sets below changed, and `news_at` is the payload offset of
    /// the first such message.
    pub news: u8,
    /// An answer message of the segment was a ListIdentity reply: the segment is copied for
    /// the inventory (`observe::identity_answer`). Next to `news`, so that one 16-bit load
    /// tells whether the segment needs either (what was padding: the layout is unchanged).
    pub identity: u8,
    pub news_at: u16,
    pub _pad6: u32,
    /// The flow's `commands` and `services`, updated as requests are decided (written back
    /// when `news`).
    pub commands: UseSet,
    pub services: EnipUses,
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn word_stores_write_the_fields_they_name() {
        let mut class = EnipClassKey {
            _pad: 9,
            _pad2: 9,
            ..Default::default()
        };
        class.set(1, 0x0203, 0x6b);
        assert_eq!(
            class,
            EnipClassKey {
                slot: 1,
                _pad: 0,
                rule: 0x0203,
                class: 0x6b,
                _pad2: 0
            }
        );
        let mut tag = EnipTagKey {
            _pad: 9,
            ..Default::default()
        };
        tag.set(0x1122_3344_5566_7788, 1, 5, 0x0203);
        assert_eq!(
            tag,
            EnipTagKey {
                hash: 0x1122_3344_5566_7788,
                slot: 1,
                len: 5,
                rule: 0x0203,
                _pad: 0
            }
        );
    }
}
