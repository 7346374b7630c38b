//! Zones and hosts: longest-prefix match of an address to (zone, host), and anti-spoofing.

/// Zone ids are 1-based; 0 means "in no zone".
pub const MAX_ZONES: u32 = 1024;
/// Hosts (named single addresses) are numbered across the whole policy, 1-based; 0 = no host.
pub const MAX_HOSTS: u32 = 65535;
/// LPM entries per address family, both slots together (networks plus hosts).
pub const MAX_PREFIXES: u32 = 65536;

pub const NO_ZONE: u16 = 0;
pub const NO_HOST: u16 = 0;

/// LPM trie data for IPv4. `slot` (big-endian) is the leading part of the key, so the prefix
/// length stored with it is `32 + prefix`; a lookup with the full 64 bits only ever matches
/// entries of its own slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneKeyV4 {
    pub slot: [u8; 4],
    pub addr: [u8; 4],
}

/// LPM trie data for IPv6, laid out as `ZoneKeyV4`; prefix length is `32 + prefix`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneKeyV6 {
    pub slot: [u8; 4],
    pub addr: [u8; 16],
}

/// What an address resolves to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneMatch {
    pub zone: u16,
    pub host: u16,
}

/// Key of map `ZONE_HOSTS`: a full-length address (IPv4-mapped for IPv4) of one slot. Named
/// hosts are single addresses; a hash lookup finds them in one step, where the trie walks the
/// prefix bit by bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostKey {
    pub slot: u32,
    /// 1 for an IPv6 address: an IPv6 packet may carry an IPv4-mapped address, which must not
    /// find an IPv4 zone's host.
    pub v6: u32,
    pub addr: [u8; 16],
}

/// Entries of `ZONE_HOSTS`: the full-length prefixes of both families and both slots (at most
/// all of the tries' entries).
pub const MAX_HOST_ENTRIES: u32 = 2 * MAX_PREFIXES;

/// The zone restricts the bridge ports its addresses may arrive on (`ports:`).
pub const ZONE_FLAG_PORTS: u32 = 1 << 0;

/// Map `ZONES`, indexed by `slot * MAX_ZONES + zone`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneInfo {
    pub flags: u32,
    /// The zone's stable id for flow accounting (a hash of its name; `UNZONED_CHARGE` for
    /// index 0): the key of `ZONE_FLOWS`, the same across policy swaps.
    pub charge: u32,
    /// How many flows of `FLOWS` the zone's hosts may have opened at once (its share).
    pub max_flows: u32,
    pub _pad: u32,
}

/// `ZoneInfo::charge` of flows opened by hosts in no zone.
pub const UNZONED_CHARGE: u32 = 0;

/// The stable id of a zone for flow accounting: FNV-1a of its name, never `UNZONED_CHARGE`.
pub fn zone_charge(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    if h == UNZONED_CHARGE {
        1
    } else {
        h
    }
}

/// Map `ZONE_PORTS` key: an address of `zone` may arrive on the port with `ifindex`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ZonePortKey {
    pub slot: u32,
    pub zone: u32,
    pub ifindex: u32,
}

#[inline(always)]
pub const fn zone_index(slot: u32, zone: u16) -> u32 {
    slot * MAX_ZONES + zone as u32
}
