//! Frames the datapath copies for the controller's inventory and for `otfw learn --live`.
//!
//! Three ring buffers carry the same record, an [`ObservedFrame`]:
//!
//! - `OBSERVED`, always on and cheap: the answer that establishes a flow (the SYN-ACK, the
//!   first UDP reply, the echo reply: once per flow, when it moves from `EMBRYOS` to `FLOWS`)
//!   and identity answers (Modbus Read Device Identification, 43/14, from port 502; EtherNet/IP
//!   ListIdentity replies from port 44818). Rate-limited per CPU by its own token bucket
//!   (`OBSERVED_BUCKET`, the scheme of `EVENT_BUCKET`), counted in `OBSERVED_STATS`.
//! - `OBSERVED_USES`, always on: a client's request segment of an inspected connection when one
//!   of its requests is the connection's first use of something the inventory lists per pair of
//!   hosts: a Modbus function (with its sub-function for 8 and 43) or unit id, an EtherNet/IP
//!   command or a CIP service at its class. The inspectors keep what each connection has used in
//!   their flow state ([`UseSet`]s, `enip::EnipUses`): one bit test per request, a copy only
//!   when something is new. Its own token bucket (`USES_BUCKET`, same rate) and counters
//!   (`USES_STATS`, indexes as `OBSERVED_STATS`), so that a plant starting up, when every
//!   connection's first requests are news, does not starve `OBSERVED`.
//! - `LEARN_FRAMES`, only while learning: while the CLOCK_MONOTONIC deadline in `LEARN_UNTIL`
//!   (ns, 0 = off) lies ahead, every frame to or from port 502, 44818 or 2222 and every frame of
//!   no established flow (those that open flows, and those decided without one). No token
//!   bucket; what the full ring refuses is counted in `LEARN_STATS`. When the deadline passes
//!   the datapath stops copying by itself, even if the process that set it is gone.

/// `ObservedHeader::kind`: the answer that established a flow.
pub const OBSERVED_FLOW_ANSWERED: u8 = 1;
/// `ObservedHeader::kind`: a Modbus 43/14 response or an EtherNet/IP ListIdentity reply.
pub const OBSERVED_IDENTITY: u8 = 2;
/// `ObservedHeader::kind`: a frame copied while learning (`LEARN_FRAMES`).
pub const OBSERVED_LEARN: u8 = 3;
/// `ObservedHeader::kind`: a client's request segment with the connection's first use of a
/// function, unit, command or service (`UseSet`); `ObservedHeader::message` says where in the
/// TCP payload the first message with a new use starts.
pub const OBSERVED_USE: u8 = 4;

/// The most of a frame that is copied: a full Ethernet frame without FCS (1500-byte MTU).
pub const OBSERVED_MAX_COPY: u32 = 1514;
/// The data area of a record: a power of two above the copy, so that the datapath can bound
/// the copy's length for the verifier with a mask.
pub const OBSERVED_DATA_BYTES: usize = 2048;

/// The start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObservedHeader {
    /// `bpf_ktime_get_ns()` when the frame was seen (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// The bridge port it arrived on.
    pub ifindex: u32,
    /// The frame's length on the wire (without FCS), and how many of its bytes follow.
    pub frame_len: u16,
    pub copied: u16,
    /// `OBSERVED_*`.
    pub kind: u8,
    pub _pad: u8,
    /// `OBSERVED_USE`: the payload offset of the message with the first new use (messages
    /// before it in the segment may have started in an earlier one).
    pub message: u16,
    pub _pad2: [u8; 4],
}

/// One record of `OBSERVED` or `LEARN_FRAMES`: the header, then the first `copied` bytes of
/// the frame (the rest of `data` is undefined).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ObservedFrame {
    pub header: ObservedHeader,
    pub data: [u8; OBSERVED_DATA_BYTES],
}

/// Sustained `OBSERVED` records per second per CPU, and the burst a bucket holds (a record
/// costs about 2 KiB of ring; new flows come in bursts when a plant starts up).
pub const OBSERVED_RATE: u64 = 200;
pub const OBSERVED_BURST: u64 = 400;
/// Ring sizes in bytes (powers of two, multiples of the page size): `OBSERVED` holds a full
/// burst of one CPU; `LEARN_FRAMES` about 2,000 frames between two reads of `otfw learn`.
pub const OBSERVED_RING_BYTES: u32 = 1024 * 1024;
pub const LEARN_RING_BYTES: u32 = 4 * 1024 * 1024;

/// Map `OBSERVED_STATS` (per-CPU u64) indexes.
pub const OBSERVED_SENT: u32 = 0;
/// Refused by the token bucket.
pub const OBSERVED_RATE_LIMITED: u32 = 1;
/// The ring buffer was full (the controller is not keeping up).
pub const OBSERVED_RING_FULL: u32 = 2;
pub const OBSERVED_STATS_LEN: u32 = 3;
pub const OBSERVED_STAT_NAMES: [&str; OBSERVED_STATS_LEN as usize] =
    ["sent", "rate_limited", "ring_full"];

/// Map `LEARN_STATS` (per-CPU u64) indexes: frames copied into `LEARN_FRAMES`, and frames the
/// full ring refused.
pub const LEARN_COPIED: u32 = 0;
pub const LEARN_RING_FULL: u32 = 1;
pub const LEARN_STATS_LEN: u32 = 2;

/// Ports whose frames are copied while learning (either side): Modbus/TCP, EtherNet/IP
/// explicit messaging and CIP implicit I/O.
pub const LEARN_PORTS: [u16; 3] = [502, 44818, 2222];

/// Modbus: function Encapsulated Interface Transport with MEI type Read Device Identification.
pub const MODBUS_MEI_FUNCTION: u8 = 0x2B;
pub const MODBUS_MEI_READ_DEVICE_ID: u8 = 0x0E;
/// EtherNet/IP encapsulation command ListIdentity (little-endian on the wire).
pub const ENIP_LIST_IDENTITY: u16 = 0x0063;

/// A set of 256 codes (bits), kept per inspected connection: what it has used so far. The
/// inspectors map what they decide onto codes (`USE_*`); a code new to the set makes the
/// request's segment an `OBSERVED_USE` copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UseSet {
    pub bits: [u64; 4],
}

impl UseSet {
    /// Adds `code`; true if it was not in the set yet.
    #[inline(always)]
    pub fn insert(&mut self, code: u8) -> bool {
        let word = &mut self.bits[(code >> 6) as usize & 3];
        let bit = 1u64 << (code & 63);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

/// Modbus function codes of `UseSet`: the function (0-127) itself; diagnostics (8) with a
/// sub-function below 64 at `USE_MODBUS_DIAGNOSTIC + sub`, Encapsulated Interface Transport
/// (43) with an MEI type below 64 at `USE_MODBUS_MEI + type` (the inventory lists them as
/// `8/sub` and `43/type`). Larger sub-functions share their function's code.
pub const USE_MODBUS_DIAGNOSTIC: u8 = 128;
pub const USE_MODBUS_MEI: u8 = 192;

/// The `UseSet` code of a Modbus request.
#[inline(always)]
pub fn modbus_use(function: u8, sub: u16) -> u8 {
    match function {
        8 if sub < 64 => USE_MODBUS_DIAGNOSTIC + sub as u8,
        43 if sub < 64 => USE_MODBUS_MEI + sub as u8,
        f => f & 0x7f,
    }
}
