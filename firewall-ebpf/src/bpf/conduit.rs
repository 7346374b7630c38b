//! Conduit admission: which rule, if any, lets a flow be opened in this direction.

use firewall_common::{
    conduit::{ConduitKey, PortRule, CONDUIT_DEFAULT, CONDUIT_INTRA_ZONE, CONDUIT_UNZONED,
        INSPECT_NONE, MAX_RULES},
    config::{Config, FLAG_DEFAULT_ALLOW, FLAG_INTRA_ZONE_ALLOW, FLAG_UNZONED_ALLOW},
    reason::Reason,
    zone::ZoneMatch,
};

use super::maps::CONDUIT_RULES;

/// Finds the rule admitting `proto`/`service` from `src` to `dst`, most specific key first:
/// (host, host), (host, zone), (zone, host), (zone, zone).
#[inline(always)]
fn find(slot: u32, proto: u8, src: &ZoneMatch, dst: &ZoneMatch, service: u16) -> Option<PortRule> {
    let mut key = ConduitKey {
        slot: slot as u8,
        proto,
        _pad: [0; 2],
        from_zone: src.zone,
        from_host: src.host,
        to_zone: dst.zone,
        to_host: dst.host,
    };
    for step in 0..4u32 {
        key.from_host = if step < 2 { src.host } else { 0 };
        key.to_host = if step & 1 == 0 { dst.host } else { 0 };
        // Skip host-level keys for addresses that are no named host.
        if (step < 2 && src.host == 0) || (step & 1 == 0 && dst.host == 0) {
            continue;
        }
        // SAFETY: the rule set is copied out before any other map operation.
        if let Some(set) = unsafe { CONDUIT_RULES.get(&key) } {
            let count = set.count as usize;
            for i in 0..MAX_RULES {
                if i >= count {
                    break;
                }
                let rule = set.rules[i];
                if rule.lo <= service && service <= rule.hi {
                    return Some(rule);
                }
            }
        }
    }
    None
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
        inspect: INSPECT_NONE,
        _pad: 0,
    }
}
