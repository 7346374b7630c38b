//! Conduit admission: which rule, if any, lets a flow be opened in this direction.

use firewall_common::{
    conduit::{
        ConduitKey, PortRule, CONDUIT_DEFAULT, CONDUIT_INTRA_ZONE, CONDUIT_UNZONED, INSPECT_NONE,
        MAX_RULES, NO_PROTOCOL_RULE,
    },
    config::{Config, FLAG_DEFAULT_ALLOW, FLAG_INTRA_ZONE_ALLOW, FLAG_UNZONED_ALLOW},
    reason::Reason,
    zone::ZoneMatch,
};

use super::maps::CONDUIT_RULES;

/// Finds the rule admitting `proto`/`service` from `src` to `dst`, most specific key first:
/// (host, host), (host, zone), (zone, host), (zone, zone).
#[inline(always)]
fn find(slot: u32, proto: u8, src: &ZoneMatch, dst: &ZoneMatch, service: u16) -> Option<PortRule> {
    let packed = otfw_find_rule(
        (slot as u64) << 8 | proto as u64,
        (src.zone as u64) << 48
            | (src.host as u64) << 32
            | (dst.zone as u64) << 16
            | dst.host as u64,
        service as u64,
    );
    if packed == 0 {
        return None;
    }
    Some(PortRule {
        lo: 0,
        hi: 0,
        conduit: packed as u16,
        rule: (packed >> 16) as u16,
        inspect: (packed >> 32) as u8,
        _pad: [0; 3],
    })
}

/// The rule scan as a global BPF function: the verifier checks it once, on its own, instead of
/// once per call site and caller state (which multiplied the program's verification cost).
/// Arguments and result are packed scalars, as global functions require. Returns 0 for "no
/// rule", else `conduit | rule << 16 | inspect << 32` (conduit ids are never 0 there).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_find_rule(slot_proto: u64, zones: u64, service: u64) -> u64 {
    let service = service as u16;
    let (src_zone, src_host) = ((zones >> 48) as u16, (zones >> 32) as u16);
    let (dst_zone, dst_host) = ((zones >> 16) as u16, zones as u16);
    // Whole words (the key is hashed word by word): `full` once, then each step's key made of
    // it with the hosts it names.
    let mut full = ConduitKey::default();
    full.set(
        (slot_proto >> 8) as u8,
        slot_proto as u8,
        [src_zone, src_host],
        [dst_zone, dst_host],
    );
    let mut key = full;
    for step in 0..4u32 {
        // Skip host-level keys for addresses that are no named host.
        if (step < 2 && src_host == 0) || (step & 1 == 0 && dst_host == 0) {
            continue;
        }
        key.set_hosts(&full, step < 2, step & 1 == 0);
        // SAFETY: the rule set is read before any other map operation.
        if let Some(set) = unsafe { CONDUIT_RULES.get(&key) } {
            let count = set.count as usize;
            for i in 0..MAX_RULES {
                if i >= count {
                    break;
                }
                let rule = &set.rules[i];
                if rule.lo <= service && service <= rule.hi {
                    return rule.conduit as u64
                        | (rule.rule as u64) << 16
                        | (rule.inspect as u64) << 32;
                }
            }
        }
    }
    0
}

/// The rule under which a flow from `src` to `dst` may be opened: a conduit's, or a pseudo
/// conduit standing for a default that allows it. `Err` says why it may not.
#[inline(always)]
pub fn admit(
    slot: u32,
    cfg: &Config,
    proto: u8,
    src: &ZoneMatch,
    dst: &ZoneMatch,
    service: u16,
) -> Result<PortRule, Reason> {
    if src.zone == 0 || dst.zone == 0 {
        return if cfg.flags & FLAG_UNZONED_ALLOW != 0 {
            Ok(pseudo(CONDUIT_UNZONED))
        } else {
            Err(Reason::Unzoned)
        };
    }
    let same_zone = src.zone == dst.zone;
    if same_zone && cfg.flags & FLAG_INTRA_ZONE_ALLOW != 0 {
        return Ok(pseudo(CONDUIT_INTRA_ZONE));
    }
    if let Some(rule) = find(slot, proto, src, dst, service) {
        return Ok(rule);
    }
    if same_zone {
        return Err(Reason::IntraZoneDenied);
    }
    if cfg.flags & FLAG_DEFAULT_ALLOW != 0 {
        return Ok(pseudo(CONDUIT_DEFAULT));
    }
    Err(Reason::NoConduit)
}

#[inline(always)]
fn pseudo(conduit: u16) -> PortRule {
    PortRule {
        lo: 0,
        hi: u16::MAX,
        conduit,
        rule: NO_PROTOCOL_RULE,
        inspect: INSPECT_NONE,
        _pad: [0; 3],
    }
}
