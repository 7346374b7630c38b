//! Zones: longest-prefix match of an address in the active generation, and anti-spoofing.

use aya_ebpf::maps::lpm_trie::Key;

use firewall_common::{
    reason::Reason,
    zone::{zone_index, HostKey, ZoneKeyV4, ZoneKeyV6, ZoneMatch, ZonePortKey, ZONE_FLAG_PORTS},
};

use super::{
    ip::Ip,
    maps::{ZONES_V4, ZONES_V6, ZONE_HOSTS, ZONE_INFO, ZONE_PORTS},
};

/// The slot occupies the first 32 bits of every key, so prefix lengths are offset by 32.
const SLOT_BITS: u32 = 32;

/// The zone and host of `addr`. With `hosts` (the slot has full-length prefixes), the host
/// table is asked first: a full-length prefix is the longest match there can be, so a hit is
/// exactly what the trie would find, in one hash lookup instead of a walk. The host key is
/// built in `scratch` (per-CPU map memory): the stack has no room for it.
#[inline(always)]
pub fn lookup(
    slot: u32,
    hosts: bool,
    scratch: &mut HostKey,
    v6: bool,
    addr: &[u8; 16],
) -> ZoneMatch {
    if hosts {
        scratch.slot = slot;
        scratch.v6 = v6 as u32;
        scratch.addr = *addr;
        // SAFETY: the value is copied out at once, never held across a map update.
        if let Some(m) = unsafe { ZONE_HOSTS.get(scratch) } {
            return *m;
        }
    }
    let found = if v6 {
        let key = Key::new(
            SLOT_BITS + 128,
            ZoneKeyV6 {
                slot: slot.to_be_bytes(),
                addr: *addr,
            },
        );
        ZONES_V6.get(&key).copied()
    } else {
        let key = Key::new(
            SLOT_BITS + 32,
            ZoneKeyV4 {
                slot: slot.to_be_bytes(),
                addr: Ip::v4_addr(addr),
            },
        );
        ZONES_V4.get(&key).copied()
    };
    found.unwrap_or_default()
}

/// A zone that lists `ports` accepts its source addresses only from those bridge ports.
#[inline(always)]
pub fn check_ingress(slot: u32, src: &ZoneMatch, ifindex: u32) -> Result<(), Reason> {
    if src.zone == 0 {
        return Ok(());
    }
    let restricted = ZONE_INFO
        .get(zone_index(slot, src.zone))
        .is_some_and(|z| z.flags & ZONE_FLAG_PORTS != 0);
    if !restricted {
        return Ok(());
    }
    let key = ZonePortKey {
        slot,
        zone: src.zone as u32,
        ifindex,
    };
    // SAFETY: the value is only tested for presence, never held across a map update.
    match unsafe { ZONE_PORTS.get(&key) } {
        Some(_) => Ok(()),
        None => Err(Reason::Spoofed),
    }
}
