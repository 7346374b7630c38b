//! The connections Forward_Open opens (map `ENIP_CONNS`, keyed by the flow's endpoints and a
//! connection id): learnt from a successful reply, forgotten at Forward_Close, checked for
//! every SendUnitData (and, in `io`, every implicit I/O datagram). Responses are read, never
//! policed.

use firewall_common::{
    conduit::MAX_PROTOCOL_RULES,
    enip::*,
    modbus::{bit, InspectContext},
    reason::Reason,
    slot_of,
};

use super::{b16, b32, b8, masked, scratch};
use crate::bpf::maps::{ENIP_CLASSES, ENIP_CONNS, ENIP_COUNTS, ENIP_RULES, INSPECT_CTX};

/// Slack for the coarse clock: one jiffy at the lowest common tick rate (100 Hz), which also
/// covers a CPU's reading of the clock being a tick behind another's (`clock`). A connection
/// may outlive its timeout by this much, never be timed out early.
const CLOCK_SLACK_NS: u64 = 10_000_000;

/// The connections' clock: the coarse monotonic clock, read for every SendUnitData and I/O
/// datagram, through this CPU's reading of it in the current tick (a helper call only once a
/// tick). The precise clock costs about 25 ns per read on the benchmark machine, more than a
/// map lookup; CIP timeouts are RPI * 4 and longer, milliseconds at least.
#[inline(always)]
pub(super) fn clock() -> u64 {
    crate::bpf::clock::coarse_ns()
}

/// Whether connection `c`, last used at `c.last_ns`, is still live at `now` (of [`clock`]).
/// A use stamped later than `now` (by a CPU whose reading is a tick ahead of this one's) is a
/// use just now.
#[inline(always)]
pub(super) fn live(c: &EnipConn, now: u64) -> bool {
    now.saturating_sub(c.last_ns) <= c.timeout_ns.saturating_add(CLOCK_SLACK_NS)
}

/// Whether the packet's flow (`ic`) may use connection `c`, which was opened under policy
/// epoch `c.epoch`. Under the epoch in force, it belongs to the conduit that opened it. One
/// opened under an older policy is re-decided once, as flows are (a swap renumbers conduits by
/// file order, so the id it holds may name another conduit now, or none): it follows the
/// conduit and rule the main program has just re-decided the flow under, if that rule allows
/// the Forward_Open that opens connections, and keeps implicit I/O only if the rule allows I/O.
/// Without this, a policy change adding a conduit above an EtherNet/IP one would cut every
/// running I/O and connected-messaging connection through it.
#[inline(always)]
pub(super) fn bound(c: &mut EnipConn, ic: &InspectContext) -> bool {
    if c.epoch == ic.epoch {
        return c.conduit == ic.conduit;
    }
    let slot = slot_of(ic.epoch);
    let Some(rule) = ENIP_RULES.get(slot * MAX_PROTOCOL_RULES + ic.rule as u32) else {
        return false;
    };
    let opens = rule.flags & ENIP_RULE_ALL_SERVICES != 0
        || bit(&rule.any_class, SVC_FORWARD_OPEN as usize)
        || bit(&rule.any_class, SVC_LARGE_FORWARD_OPEN as usize)
        || {
            let mut key = EnipClassKey::default();
            key.set(slot as u8, ic.rule, CLASS_CONNECTION_MANAGER);
            // SAFETY: a hash map value, read once.
            unsafe { ENIP_CLASSES.get(&key) }.is_some_and(|services| {
                bit(services, SVC_FORWARD_OPEN as usize)
                    || bit(services, SVC_LARGE_FORWARD_OPEN as usize)
            })
        };
    if !opens {
        return false;
    }
    if rule.flags & ENIP_RULE_IO == 0 {
        c.flags &= !CONN_IO;
    }
    c.epoch = ic.epoch;
    c.conduit = ic.conduit;
    c.rule = ic.rule;
    true
}

/// The key of connection `id` between the packet's client and server.
#[inline(always)]
pub(super) fn connection_key(ic: &InspectContext, id: u32) -> EnipConnKey {
    EnipConnKey::new(&ic.key, id)
}

/// Whether a SendUnitData connection id was opened by an allowed Forward_Open on this flow's
/// endpoints and conduit (flows adopted mid-stream learn it).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_connected(id: u64) -> u64 {
    let (Some(ic), Some(s)) = (INSPECT_CTX.get_ptr(0), scratch()) else {
        return Reason::EnipUnknownConnection as u64;
    };
    // SAFETY: per-CPU context for this packet.
    let ic = unsafe { &*ic };
    let key = connection_key(ic, id as u32);
    let now = clock();
    if let Some(c) = ENIP_CONNS.get_ptr_mut(&key) {
        // SAFETY: LRU value, valid for this run.
        let c = unsafe { &mut *c };
        if live(c, now) && bound(c, ic) {
            c.last_ns = now;
            return 0;
        }
        return Reason::EnipUnknownConnection as u64;
    }
    if s.flow_flags & EFLOW_SYN == 0 {
        let conn = EnipConn {
            timeout_ns: 3600 * 1_000_000_000,
            last_ns: now,
            epoch: ic.epoch,
            conduit: ic.conduit,
            rule: ic.rule,
            flags: CONN_ADOPTED,
            _pad: [0; 7],
        };
        let _ = ENIP_CONNS.insert(&key, &conn, 0);
        return 0;
    }
    Reason::EnipUnknownConnection as u64
}

/// Reads a complete response message: the session handle of a RegisterSession reply, the
/// connection ids of a Forward_Open reply. Responses are never policed.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_response(total: u64) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    let total = total as u32 & 0x7ff;
    let cmd = b16(s, 0) as u16;
    if cmd == CMD_LIST_IDENTITY {
        // A device describing itself: the inventory's (`otfw_enip_news`; over TCP; a UDP
        // datagram's are found by the main program).
        s.identity = 1;
    }
    if s.udp == 0 {
        let answer = match cmd {
            CMD_SEND_RR_DATA => otfw_enip_answer(total as u64),
            CMD_SEND_UNIT_DATA => otfw_enip_answer(total as u64 | ANSWER_CONNECTED),
            _ => 0,
        };
        if answer != 0 {
            return 0;
        }
    }
    let status = b32(s, 8);
    if status != 0 || s.udp != 0 {
        return 0;
    }
    if cmd == CMD_REGISTER_SESSION {
        s.session = b32(s, 4);
        s.flow_flags |= EFLOW_SESSION;
        return 0;
    }
    if cmd != CMD_SEND_RR_DATA || total < 40 || b16(s, 30) < 2 {
        return 0;
    }
    let len0 = b16(s, 34);
    let item1 = 36 + len0;
    if item1 + 4 > total || b16(s, item1) as u16 != ITEM_UNCONNECTED_DATA {
        return 0;
    }
    let cip = item1 + 4;
    if cip + 4 > total {
        return 0;
    }
    let service = b8(s, cip);
    if (service != 0xD4 && service != 0xDB) || b8(s, cip + 2) != 0 {
        return 0;
    }
    let d = cip + 4 + b8(s, cip + 3) * 2;
    if d + 24 > total || s.flow_flags & EFLOW_PENDING == 0 {
        return 0;
    }
    let conn = FlowConn {
        o2t: b32(s, d),
        t2o: b32(s, d + 4),
        serial: b16(s, d + 8) as u16,
        vendor: b16(s, d + 10) as u16,
        orig_serial: b32(s, d + 12),
    };
    let p = s.pending;
    if conn.serial != p.serial || conn.vendor != p.vendor || conn.orig_serial != p.orig_serial {
        return 0;
    }
    let o2t_api = b32(s, d + 16) as u64;
    let t2o_api = b32(s, d + 20) as u64;
    let api = if o2t_api > t2o_api { o2t_api } else { t2o_api };
    let mult = (p.multiplier & 7) as u64;
    // RPI (microseconds) * 4 << multiplier; at least a second.
    let mut timeout = api * (4u64 << mult) * 1000;
    if timeout < 1_000_000_000 {
        timeout = 1_000_000_000;
    }
    s.opened = conn;
    s.opened_timeout_ns = timeout;
    s.opened_ok = 1;
    0
}

/// `otfw_enip_answer` argument bit: the reply is too long to be read (only its header is).
pub(super) const ANSWER_UNREAD: u64 = 1 << 16;
/// `otfw_enip_answer` argument bit: a SendUnitData reply (connected explicit messaging).
pub(super) const ANSWER_CONNECTED: u64 = 1 << 17;

/// The sequence count of a SendUnitData reply: the connected data item follows the connected
/// address item (4 bytes) that starts the items.
const CONNECTED_SEQUENCE: u32 = 44;

/// Counts a SendRRData reply (`a`: its length, `ANSWER_UNREAD`, `ANSWER_CONNECTED` for a
/// SendUnitData reply) and, if it answers refused requests (SendRRData: the reply of the same
/// rank; SendUnitData: the reply echoing the request's sequence count), checks each is the
/// target's error reply to the neutral service (the whole CIP reply, or its entry in a Multiple
/// Service Packet reply) and queues its restoration: service = the client's | 0x80, general
/// status = the rule's. A refused request routed by an Unconnected Send may be answered by the
/// router's error instead, which passes as it is. Returns 1 when it was such an answer (or
/// `s.fail` is set: the connection is reset), else 0.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_answer(a: u64) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    let connected = a & ANSWER_CONNECTED != 0;
    let key = if connected {
        // A reply too long to read is not the error a neutral request gets, whatever it answers.
        if a & ANSWER_UNREAD != 0 || (a as u32 & 0x7ff) < CONNECTED_SEQUENCE + 2 {
            return 0;
        }
        b16(s, CONNECTED_SEQUENCE) as u64
    } else {
        let ordinal = s.refusals.replies;
        if ordinal == s.refusals.requests {
            // A reply beyond the requests that reached the target: it answers one sent before
            // otfw followed the connection (adopted mid-stream), or none; either way it is no
            // refused request's, and counting it would shift every later reply's rank.
            return 0;
        }
        s.refusals.replies = ordinal.wrapping_add(1);
        ordinal as u64
    };
    if s.refusals.used == 0 {
        return 0;
    }
    let mut answered = 0;
    for i in 0..ENIP_REFUSALS_MAX {
        let e = &s.refusals.entries[i];
        let matches = if connected {
            e.connected() && e.context == key
        } else {
            !e.connected() && e.ordinal() as u64 == key
        };
        if s.refusals.used & (1 << i) == 0 || !matches {
            continue;
        }
        s.refusals.used &= !(1 << i);
        answered = 1;
        let fail = otfw_enip_restore(a | (i as u64) << 32);
        if fail != 0 {
            s.fail = fail as u8;
            return 1;
        }
    }
    answered
}

/// Checks the reply in the scratch buffer answers refusal entry `a >> 32` (`a`'s low bits as
/// `otfw_enip_answer`'s) as the target answers the neutral service, at each of the entry's
/// positions, and queues two rewrites per position. Returns 0, or the reason the connection is
/// reset for. A global function: its walk of the positions is checked once.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_restore(a: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::EnipRefusedAnswer as u64;
    };
    let e = s.refusals.entries[(a >> 32) as usize & (ENIP_REFUSALS_MAX - 1)];
    let total = a as u32 & 0x7ff;
    // Where the CIP reply starts and ends: after the CPF item count, an address item and the
    // data item's header. SendRRData: a null address item and an unconnected data item (the
    // CIP reply), and the request's sender context echoed. SendUnitData: the connected address
    // item (the connection id) and the connected data item (the sequence count, the CIP reply).
    let (address, address_len, data, before) = if e.connected() {
        (ITEM_CONNECTED_ADDRESS, 4, ITEM_CONNECTED_DATA, 2)
    } else {
        (ITEM_NULL, 0, ITEM_UNCONNECTED_DATA, 0)
    };
    let item_at = 36 + address_len;
    let item = b16(s, item_at + 2);
    let cip = item_at + 4 + before;
    let end = item_at + 4 + item;
    let context = b32(s, 12) as u64 | (b32(s, 16) as u64) << 32;
    let framed = a & ANSWER_UNREAD == 0
        && b32(s, 8) == 0
        && b16(s, 30) >= 2
        && b16(s, 32) as u16 == address
        && b16(s, 34) == address_len
        && b16(s, item_at) as u16 == data
        && item >= 4 + before
        && end <= total
        && (e.connected() || context == e.context);
    if !framed {
        return Reason::EnipRefusedAnswer as u64;
    }
    let place = |at: u32| a & 0x7ff | (at as u64) << 16 | (end as u64) << 32 | (a >> 32) << 48;
    if e.positions == POSITION_WHOLE {
        return otfw_enip_restore_at(place(cip));
    }
    // A Multiple Service Packet reply: count and offsets (from the count) after the general
    // and additional status; each refused request's reply is the entry at its position.
    let data = cip + 4 + b8(s, cip + 3) * 2;
    if b8(s, cip) != (SVC_MSP | 0x80) as u32 || data + 2 > end {
        return Reason::EnipRefusedAnswer as u64;
    }
    let count = b16(s, data);
    for k in 0..MAX_MSP_COUNT {
        if e.positions & (1 << k) == 0 {
            continue;
        }
        if k >= count || data + 4 + 2 * k > end {
            return Reason::EnipRefusedAnswer as u64;
        }
        let fail = otfw_enip_restore_at(place(data + b16(s, data + 2 + 2 * k)));
        if fail != 0 {
            return fail;
        }
    }
    0
}

/// Checks the reply at `at` (`a`: the message's length, bits 0..11; `at`, bits 16..27; where
/// the CIP reply ends, bits 32..43; the refusal entry, bits 48..51) is the target's error for
/// the neutral service and queues its restoration: service = the client's | 0x80, general
/// status = the rule's. A routed request's router error passes as it is. Returns 0, or the
/// reason the connection is reset for. A global function: checked once, not once per position
/// of a Multiple Service Packet reply.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_restore_at(a: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::EnipRefusedAnswer as u64;
    };
    let total = a as u32 & 0x7ff;
    let at = (a >> 16) as u32 & 0x7ff;
    let end = (a >> 32) as u32 & 0x7ff;
    let e = s.refusals.entries[(a >> 48) as usize & (ENIP_REFUSALS_MAX - 1)];
    let fail = Reason::EnipRefusedAnswer as u64;
    if at + 4 > end || b8(s, at + 2) == 0 {
        return fail;
    }
    let service = b8(s, at);
    if e.routed() && service == (SVC_UNCONNECTED_SEND | 0x80) as u32 {
        // The router's error for the Unconnected Send the client sent: the neutralised request
        // never reached its target, and the client gets the router's answer as it is.
        return 0;
    }
    if service != (e.neutral() | 0x80) as u32 {
        return fail;
    }
    if s.pos + at < total {
        return Reason::EnipRefusedSplit as u64;
    }
    let n = s.rewrites;
    if n as usize + 2 > ENIP_REWRITES_MAX {
        return Reason::EnipRefusalsFull as u64;
    }
    let at = s.payload + s.pos + at - total;
    let j = masked(n, (ENIP_REWRITES_MAX - 1) as u32);
    s.rewrite_at[j] = at as u16;
    s.rewrite_value[j] = e.service() | 0x80;
    let j = masked(n + 1, (ENIP_REWRITES_MAX - 1) as u32);
    s.rewrite_at[j] = (at + 2) as u16;
    s.rewrite_value[j] = e.status();
    s.rewrites = n + 2;
    0
}

/// Records both ids of an opened connection (`ids`: o2t | t2o << 32) for the packet's
/// endpoints. `flags`: bit 0 implicit I/O allowed by the transport class.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_open(ids: u64, timeout_ns: u64, flags: u64) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU context for this packet.
    let ic = unsafe { &*ic };
    let slot = slot_of(ic.epoch);
    let rule_io = match ENIP_RULES.get(slot * MAX_PROTOCOL_RULES + ic.rule as u32) {
        Some(r) => r.flags & ENIP_RULE_IO != 0,
        None => false,
    };
    let io = rule_io && flags & 1 != 0;
    let now = clock();
    let conn = EnipConn {
        timeout_ns,
        last_ns: now,
        epoch: ic.epoch,
        conduit: ic.conduit,
        rule: ic.rule,
        flags: if io { CONN_IO } else { 0 },
        _pad: [0; 7],
    };
    let mut key = connection_key(ic, ids as u32);
    let _ = ENIP_CONNS.insert(&key, &conn, 0);
    key.id = (ids >> 32) as u32;
    let _ = ENIP_CONNS.insert(&key, &conn, 0);
    if let Some(n) = ENIP_COUNTS.get_ptr_mut(ECOUNT_CONNECTIONS) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { *n += 1 };
    }
    0
}

/// Forgets both ids of a closed connection.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_close(ids: u64) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU context for this packet.
    let ic = unsafe { &*ic };
    let mut key = connection_key(ic, ids as u32);
    let _ = ENIP_CONNS.remove(&key);
    key.id = (ids >> 32) as u32;
    let _ = ENIP_CONNS.remove(&key);
    0
}
