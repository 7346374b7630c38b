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
///
/// 4-aligned, so that the datapath writes it as three words (`set`); no padding is added.
#[repr(C, align(4))]
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

impl ConduitKey {
    /// Sets the key with three 32-bit stores (`crate::mem::store_words`).
    #[inline(always)]
    pub fn set(&mut self, slot: u8, proto: u8, from: [u16; 2], to: [u16; 2]) {
        let pair = |a: u16, b: u16| {
            let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
            u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
        };
        let head = u32::from_ne_bytes([slot, proto, 0, 0]);
        // SAFETY: a struct of integers.
        unsafe {
            crate::mem::store_words(self, [head, pair(from[0], from[1]), pair(to[0], to[1])])
        };
    }
}

impl ConduitKey {
    /// This key as `full` (a key `set` with both hosts) with each host kept or zeroed, each
    /// of the two changed words with one 32-bit store. Read from `full` in memory rather than
    /// rebuilt from its parts: the rule scan's loop has no registers to spare for them.
    #[inline(always)]
    pub fn set_hosts(&mut self, full: &ConduitKey, from_host: bool, to_host: bool) {
        // The zone's two bytes of a (zone, host) word, whatever the byte order.
        let zone_only = u32::from_ne_bytes([0xff, 0xff, 0, 0]);
        let f = full as *const ConduitKey as *const u32;
        // SAFETY: `full` is a 4-aligned 12-byte key: words 1 and 2 lie inside it.
        let (from, to) = unsafe { (f.add(1).read(), f.add(2).read()) };
        let p = self as *mut ConduitKey as *mut u32;
        // SAFETY: as above, for `self`; any bits are a valid key.
        unsafe {
            core::ptr::write_volatile(p.add(1), if from_host { from } else { from & zone_only });
            core::ptr::write_volatile(p.add(2), if to_host { to } else { to & zone_only });
        }
    }
}

const _: () = {
    assert!(core::mem::offset_of!(ConduitKey, from_zone) == 4);
    assert!(core::mem::offset_of!(ConduitKey, from_host) == 6);
    assert!(core::mem::offset_of!(ConduitKey, to_zone) == 8);
    assert!(core::mem::offset_of!(ConduitKey, to_host) == 10);
    assert!(core::mem::size_of::<ConduitKey>() == 12);
};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_stores_write_the_fields_they_name() {
        let mut full = ConduitKey {
            _pad: [7, 7],
            ..Default::default()
        };
        full.set(1, 6, [0x0102, 0x0304], [0x0506, 0x0708]);
        let want = ConduitKey {
            slot: 1,
            proto: 6,
            _pad: [0, 0],
            from_zone: 0x0102,
            from_host: 0x0304,
            to_zone: 0x0506,
            to_host: 0x0708,
        };
        assert_eq!(full, want);
        // The rule scan's four keys, most specific first.
        let mut key = full;
        for (from_host, to_host) in [(true, true), (true, false), (false, true), (false, false)] {
            key.set_hosts(&full, from_host, to_host);
            assert_eq!(
                key,
                ConduitKey {
                    from_host: if from_host { 0x0304 } else { 0 },
                    to_host: if to_host { 0x0708 } else { 0 },
                    ..want
                }
            );
        }
    }
}
