//! Conduits: which (zone/host -> zone/host, protocol, port) may open flows.

/// Conduit ids index per-generation arrays. The first ids name the defaults so that traffic they
/// decide is counted like a conduit's.
pub const MAX_CONDUITS: u32 = 16384;
/// Denied without any conduit (the verdict's reason says why).
pub const CONDUIT_NONE: u16 = 0;
/// Admitted by `defaults.action: allow`.
pub const CONDUIT_DEFAULT: u16 = 1;
/// Admitted by `defaults.intra_zone: allow`.
pub const CONDUIT_INTRA_ZONE: u16 = 2;
/// Admitted by `defaults.unzoned: allow`.
pub const CONDUIT_UNZONED: u16 = 3;
/// The first id given to a policy's own conduits.
pub const FIRST_CONDUIT: u16 = 4;

/// Port rules per (from, to, protocol) key; a policy needing more is rejected by the compiler.
pub const MAX_RULES: usize = 16;

/// Key of map `CONDUIT_RULES`. A zero host means "any address of the zone". The datapath looks
/// up the most specific key first: (host, host), (host, zone), (zone, host), (zone, zone).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConduitKey {
    pub slot: u8,
    /// IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6.
    pub proto: u8,
    pub _pad: [u8; 2],
    pub from_zone: u16,
    pub from_host: u16,
    pub to_zone: u16,
    pub to_host: u16,
}

/// What inspects the payload of flows a rule admits.
pub const INSPECT_NONE: u8 = 0;
pub const INSPECT_MODBUS: u8 = 1;
pub const INSPECT_ENIP: u8 = 2;
pub const INSPECT_ENIP_IO: u8 = 3;
/// Slot of `INSPECTORS` holding the fast path's forwarder, which the inspectors tail call for
/// a frame they pass (inlined there, it would add to their stack, which has no room).
pub const FORWARD_SLOT: u32 = 4;
/// Entries of `INSPECTORS`.
pub const INSPECTOR_SLOTS: u32 = 5;

/// Protocol rules (a conduit's `modbus:` or `enip:` item) are numbered across the policy from 1;
/// 0 means "no protocol rule". Their contents live in the inspector's own maps.
pub const MAX_PROTOCOL_RULES: u32 = 4096;
pub const NO_PROTOCOL_RULE: u16 = 0;

/// One port range (destination port for TCP/UDP, message type for ICMP) of a conduit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRule {
    pub lo: u16,
    pub hi: u16,
    pub conduit: u16,
    /// The protocol rule that inspects flows admitted by this port rule.
    pub rule: u16,
    pub inspect: u8,
    pub _pad: [u8; 3],
}

/// Value of map `CONDUIT_RULES`: rules in policy order, first match wins.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub count: u32,
    pub _pad: u32,
    pub rules: [PortRule; MAX_RULES],
}

pub const MODE_ENFORCE: u8 = 0;
pub const MODE_MONITOR: u8 = 1;
pub const ON_DENY_DROP: u8 = 0;
pub const ON_DENY_RESET: u8 = 1;
/// An inspected request the rule does not allow is neutralised in place and the server's error
/// restored for the client (`on_deny: refuse`); other denials fall back to drop.
pub const ON_DENY_REFUSE: u8 = 2;

/// Map `CONDUITS`, indexed by `slot * MAX_CONDUITS + conduit`; the pseudo conduits carry the
/// policy defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConduitInfo {
    pub mode: u8,
    pub on_deny: u8,
    pub _pad: [u8; 2],
}

#[inline(always)]
pub const fn conduit_index(slot: u32, conduit: u16) -> u32 {
    slot * MAX_CONDUITS + conduit as u32
}
