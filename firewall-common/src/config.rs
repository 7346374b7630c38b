//! Per-generation defaults (`defaults:` in the policy) and the published epoch.

/// Map `ACTIVE`, one entry: the epoch of the policy in force. Epoch 0 means no policy was ever
/// published; the datapath then drops everything (`Reason::NoPolicy`).
pub const ACTIVE_INDEX: u32 = 0;

pub const MAX_NON_IP: usize = 8;
/// Stands in `Config::non_ip` for spanning tree BPDUs (`non_ip: [stp]`). BPDUs are IEEE 802.3
/// frames: the type field holds a length (below 0x0600) and an LLC header with DSAP and SSAP
/// 0x42 follows. The value is that SAP: below 0x0600 it can never equal a real ethertype, and
/// being non-zero it cannot be mistaken for an unused entry. The datapath matches it against
/// length frames whose DSAP is 0x42, never against an ethertype.
pub const NON_IP_STP: u16 = 0x0042;

/// Inter-zone traffic without a conduit is allowed (`defaults.action: allow`).
pub const FLAG_DEFAULT_ALLOW: u32 = 1 << 0;
/// Traffic with both ends in the same zone is allowed (`defaults.intra_zone: allow`).
pub const FLAG_INTRA_ZONE_ALLOW: u32 = 1 << 1;
/// Traffic to or from an address in no zone is allowed (`defaults.unzoned: allow`).
pub const FLAG_UNZONED_ALLOW: u32 = 1 << 2;
/// TCP flows first seen without their SYN are adopted if a conduit allows them.
pub const FLAG_MIDSTREAM_ADOPT: u32 = 1 << 3;
/// Record every decision in map `TRACE` (used by `otfw replay`; off on a live gateway).
pub const FLAG_TRACE: u32 = 1 << 4;
/// The slot's named hosts (full-length prefixes) are also in map `ZONE_HOSTS`, looked up by
/// hash before the trie.
pub const FLAG_HOST_TABLE: u32 = 1 << 5;

/// Map `CONFIG`, indexed by slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The epoch this slot was filled for; lets the datapath notice flows admitted under an
    /// older policy and re-check them.
    pub epoch: u32,
    pub flags: u32,
    /// Idle time after which a UDP or ICMP flow is forgotten.
    pub udp_idle_secs: u32,
    /// Idle time after which a TCP flow is forgotten.
    pub tcp_idle_secs: u32,
    /// Ethertypes (host order) passed without inspection, or `NON_IP_STP`; the first
    /// `non_ip_count` entries are used.
    pub non_ip: [u16; MAX_NON_IP],
    pub non_ip_count: u32,
    pub _pad: u32,
}
