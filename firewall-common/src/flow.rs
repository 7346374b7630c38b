//! Tracked flows: the LRU table that lets replies through.

pub const MAX_FLOWS: u32 = 262144;

/// Key of map `FLOWS`, in the direction of the initiator. IPv4 addresses are stored IPv4-mapped
/// (`::ffff:a.b.c.d`). Ports are in host order; for ICMP echo both ports carry the identifier so
/// that the reversed key of a reply matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    #[inline(always)]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Per-CPU scratch space for the keys of the packet in hand (map `FLOW_KEYS`): they would take
/// 80 of the program's 512 stack bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKeys {
    pub forward: FlowKey,
    pub reverse: FlowKey,
}

/// TCP flow states as far as a middlebox needs them.
pub const TCP_SYN_SENT: u8 = 1;
pub const TCP_ESTABLISHED: u8 = 2;
pub const TCP_CLOSING: u8 = 3;

/// The flow was adopted mid-stream (no SYN seen).
pub const FLOW_ADOPTED: u8 = 1 << 0;

/// Value of map `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub last_seen_ns: u64,
    /// Epoch of the policy the flow was last admitted under; when it differs from the active
    /// epoch, the datapath re-checks the flow against the policy now in force.
    pub epoch: u32,
    pub conduit: u16,
    pub tcp_state: u8,
    pub flags: u8,
    /// `INSPECT_*` and protocol rule id of the admitting port rule.
    pub inspect: u8,
    pub _pad: u8,
    pub rule: u16,
    pub _pad2: [u8; 4],
}
