//! Frames the datapath copies for the controller's inventory and for `otfw learn --live`.
//!
//! Two ring buffers carry the same record, an [`ObservedFrame`]:
//!
//! - `OBSERVED`, always on and cheap: the answer that establishes a flow (the SYN-ACK, the
//!   first UDP reply, the echo reply: once per flow, when it moves from `EMBRYOS` to `FLOWS`)
//!   and identity answers (Modbus Read Device Identification, 43/14, from port 502; EtherNet/IP
//!   ListIdentity replies from port 44818). Rate-limited per CPU by its own token bucket
//!   (`OBSERVED_BUCKET`, the scheme of `EVENT_BUCKET`), counted in `OBSERVED_STATS`.
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
    pub _pad: [u8; 7],
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
