//! Per-generation defaults (`defaults:` in the policy) and the published epoch.

/// Map `ACTIVE`, one entry: the epoch of the policy in force. Epoch 0 means no policy was ever
/// published; the datapath then drops everything (`Reason::NoPolicy`).
pub const ACTIVE_INDEX: u32 = 0;

pub const MAX_NON_IP: usize = 8;
/// `non_ip` entry matching every 802.3 length frame (type/length field below 0x0600): that is
/// how STP BPDUs and other LLC frames arrive.
pub const NON_IP_LLC: u16 = 0;

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
    /// Ethertypes (host order) passed without inspection. `NON_IP_LLC` stands for 802.3 frames
    /// with a length instead of an ethertype (STP BPDUs); `non_ip_count` entries are used.
    pub non_ip: [u16; MAX_NON_IP],
    pub non_ip_count: u32,
    pub _pad: u32,
}
