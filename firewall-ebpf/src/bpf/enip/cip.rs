//! CIP requests: each request's service and path against the rule, and what a request carries,
//! checked with an explicit bounded work stack: the requests of a Multiple Service Packet, the
//! embedded request of an Unconnected Send (its route path must be port segments),
//! Forward_Open (remembered until its reply) and Forward_Close.

use firewall_common::{counters::VERDICT_RESET, enip::*, modbus::bit, reason::Reason, slot_of};

use super::{
    b16, b32, b8, masked,
    path::{copy_tag, otfw_enip_route, otfw_enip_tag, request_path},
    scratch,
    trace::{mark_use, note, refused},
    R_NONE,
};
use crate::bpf::maps::{ENIP_CLASSES, ENIP_CLASS_MEMO, ENIP_RULES};

/// Checks the CIP request at `off` (bits 0..16) of length `len` (bits 16..32) and everything
/// nested in it. The request itself is checked by a direct call, what it queued (Multiple
/// Service Packet entries, an Unconnected Send's request) by the work loop `otfw_enip_cip`: most
/// requests carry nothing nested, and pay no call of the loop.
#[inline(always)]
pub(super) fn check(packed: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::CipMalformed as u64;
    };
    s.frames = 0;
    s.cip_index = FRAME_WHOLE;
    let r = otfw_enip_request(packed & 0xffff_ffff);
    if r != 0 {
        return r;
    }
    // Looked up again: the request's call pushed its frames behind the compiler's back.
    let Some(s) = scratch() else {
        return Reason::CipMalformed as u64;
    };
    if s.frames == 0 {
        return 0;
    }
    otfw_enip_cip()
}

/// Checks the requests queued on the per-CPU work stack (a bounded loop: the first request of
/// the message, checked by `check`, counts against `MAX_REQUESTS`) and what they queue in turn.
/// Returns the first refusal.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_cip() -> u64 {
    let Some(s) = scratch() else {
        return Reason::CipMalformed as u64;
    };
    for _ in 1..MAX_REQUESTS {
        let n = s.frames;
        if n == 0 {
            return 0;
        }
        let i = ((n - 1) as usize) & (MAX_FRAMES - 1);
        s.frames = n - 1;
        let arg =
            s.frame_off[i] as u64 | (s.frame_len[i] as u64) << 16 | (s.frame_depth[i] as u64) << 32;
        s.cip_index = s.frame_index[i];
        let r = otfw_enip_request(arg);
        if r != 0 {
            return r;
        }
    }
    if s.frames != 0 {
        return Reason::CipTooDeep as u64;
    }
    0
}

/// Pushes a nested request onto the work stack.
#[inline(always)]
fn push(s: &mut EnipScratch, off: u32, len: u32, depth: u32, index: u8) -> bool {
    let n = s.frames;
    if n as usize >= MAX_FRAMES || depth >= MAX_DEPTH {
        return false;
    }
    let i = (n as usize) & (MAX_FRAMES - 1);
    s.frame_off[i] = off as u16;
    s.frame_len[i] = len as u16;
    s.frame_depth[i] = depth as u8;
    s.frame_index[i] = index;
    s.frames = n + 1;
    true
}

/// Checks one CIP request (`off | len << 16 | depth << 32`) and queues what it carries.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_request(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::CipMalformed as u64;
    };
    let off = arg as u16 as u32 & 0x7ff;
    let len = (arg >> 16) as u16 as u32 & 0x7ff;
    let depth = (arg >> 32) as u8 as u32;
    s.requests += 1;
    s.segment_requests += 1;
    if s.requests > MAX_REQUESTS || s.segment_requests > MAX_SEGMENT_REQUESTS {
        return Reason::CipTooDeep as u64;
    }
    if len < 2 {
        let idx = note(s, b16(s, 0), REC_CIP, 0, 0, 0, depth, 0);
        let _ = idx;
        return Reason::CipMalformed as u64;
    }
    let service = b8(s, off);
    let psize = b8(s, off + 1) * 2;
    if service & 0x80 != 0 || 2 + psize > len {
        note(s, b16(s, 0), REC_CIP, service, 0, 0, depth, 0);
        return Reason::CipMalformed as u64;
    }
    let path = request_path((off + 2) as u64 | (psize as u64) << 16);
    // Read again rather than kept across the path's parsing: fewer values live there (the
    // stack of the deepest call chain through this function has no byte to spare).
    // SAFETY: reading a local.
    let arg = unsafe { core::ptr::read_volatile(&arg) };
    let off = arg as u16 as u32 & 0x7ff;
    let len = (arg >> 16) as u16 as u32 & 0x7ff;
    let depth = (arg >> 32) as u8 as u32;
    let cmd = b16(s, 0);
    let service = b8(s, off);
    let psize = b8(s, off + 1) * 2;
    let reason = path as u8;
    let flags = (path >> 8) as u8;
    let class = (path >> 16) as u16 as u32;
    let instance = (path >> 32) as u32;
    let idx = note(s, cmd, REC_CIP, service, class, instance, depth, flags);
    s.cip_record = idx;
    if flags & REC_SYMBOLIC != 0 {
        copy_tag(s, idx);
    }
    if reason != R_NONE {
        return reason as u64;
    }
    // What the inventory lists per pair of hosts, whatever the rule says of it.
    if flags & REC_SYMBOLIC != 0 {
        mark_use(service as u64 | USE_SYMBOLIC as u64 | USE_PRESENT as u64);
    } else if flags & REC_CLASS != 0 {
        mark_use(service as u64 | (class as u64) << 8 | USE_PRESENT as u64);
    }
    let symbolic = flags & REC_SYMBOLIC != 0;
    if !symbolic && flags & REC_CLASS == 0 {
        return Reason::CipBadPath as u64;
    }
    let class = if symbolic { CLASS_SYMBOL as u32 } else { class };
    let Some(rule) = ENIP_RULES.get(s.rule_index) else {
        return Reason::CipServiceDenied as u64;
    };
    let allowed = rule.flags & ENIP_RULE_ALL_SERVICES != 0
        || bit(&rule.any_class, masked(service, 0x7f))
        || class_allows(s, class, service);
    if !allowed {
        return otfw_enip_refuse(refusal(off, depth, Reason::CipServiceDenied));
    }
    if rule.flags & ENIP_RULE_TAGS != 0 {
        let tag_service = (SVC_TAG_FIRST as u32..=SVC_TAG_LAST as u32).contains(&service);
        if symbolic {
            if otfw_enip_tag(rule.prefix_lengths) == 0 {
                return otfw_enip_refuse(refusal(off, depth, Reason::CipTagDenied));
            }
        } else if class == CLASS_SYMBOL as u32 && tag_service {
            // A tag addressed by Symbol instance cannot be matched against names.
            return otfw_enip_refuse(refusal(off, depth, Reason::CipTagDenied));
        }
    }
    let data = off + 2 + psize;
    let dlen = len - 2 - psize;
    if symbolic {
        return 0;
    }
    // A Multiple Service Packet is unpacked whatever class it names (the Message Router is the
    // only one defining it, but nothing it carries may go unchecked).
    let r = if service == SVC_MSP as u32 {
        msp(s, data, dlen, depth)
    } else if class == CLASS_CONNECTION_MANAGER as u32 {
        match service as u8 {
            SVC_UNCONNECTED_SEND => unconnected_send(s, data, dlen, depth),
            SVC_FORWARD_OPEN => forward_open(s, data, dlen, false),
            SVC_LARGE_FORWARD_OPEN => forward_open(s, data, dlen, true),
            SVC_FORWARD_CLOSE => forward_close(s, data, dlen),
            _ => R_NONE,
        }
    } else {
        R_NONE
    };
    r as u64
}

#[inline(always)]
fn refusal(off: u32, depth: u32, reason: Reason) -> u64 {
    off as u64 | (depth as u64) << 16 | (reason as u64) << 24
}

/// A request the rule forbids (`a`: its message offset | depth << 16 | reason << 24; its record is
/// `s.cip_record`). Under `on_deny: refuse` a request of SendRRData or SendUnitData (connected
/// explicit messaging) whose reply can be located (top-level, an entry of a Multiple Service Packet
/// that is not itself an entry of one, either through Unconnected Sends at any depth) is
/// neutralised in place and passes (nothing nested in it reaches an object that acts on it): the
/// rewrite of its service byte to the neutral code is queued and what its answer must be is
/// recorded. Returns 0 (refused in-band), or the reason it is denied: its own when it cannot be
/// refused in-band, else the reason the connection is reset for (`s.fail`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_refuse(a: u64) -> u64 {
    let reason = (a >> 24) as u8;
    let Some(s) = scratch() else {
        return reason as u64;
    };
    if s.refuse == 0 {
        return reason as u64;
    }
    // The rule first: few values live across the lookup keeps this frame small enough for the
    // deepest call chain.
    let Some(rule) = ENIP_RULES.get(s.rule_index) else {
        return reason as u64;
    };
    let codes = rule.refuse_service as u64 | (rule.refuse_status as u64) << 8;
    let off = a as u32 & 0x7ff;
    // A request of SendRRData or SendUnitData whose reply can be found in the reply: the whole
    // CIP reply or one entry of a Multiple Service Packet reply, through any Unconnected Sends.
    // (Values are read from the scratch where they are needed, not kept: the frame must stay
    // small for the deepest call chain, inspect -> ... -> request -> refuse -> event.)
    let cmd = b16(s, 0);
    if s.cip_index & FRAME_UNLOCATED != 0
        || !(cmd == CMD_SEND_UNIT_DATA as u32 || cmd == CMD_SEND_RR_DATA as u32)
    {
        return reason as u64;
    }
    // The service byte's offset in the frame: the message ends at `pos` in the payload.
    let fail = if s.pos + off < s.total {
        Reason::EnipRefusedSplit as u8
    } else if s.rewrites as usize >= ENIP_REWRITES_MAX {
        Reason::EnipRefusalsFull as u8
    } else if otfw_enip_record(off as u64 | codes << 16) != 0 {
        Reason::EnipRefusalsFull as u8
    } else {
        let n = masked(s.rewrites, (ENIP_REWRITES_MAX - 1) as u32);
        s.rewrite_at[n] = (s.payload + s.pos + off - s.total) as u16;
        s.rewrite_value[n] = codes as u8;
        s.rewrites += 1;
        0
    };
    if fail != 0 {
        s.fail = fail;
        s.event_verdict = VERDICT_RESET as u8;
        return fail as u64;
    }
    let idx = s.cip_record;
    refused(s, reason, idx);
    0
}

/// Records what the answer to the refused request (service byte at `off`, bits 0..16;
/// neutralised to the code in bits 16..24, the general status for the client in bits 24..32)
/// must be: its position joins the entry of the same reply and service, else a free entry is
/// taken. Returns 0, or 1 when the table is full. A global function: its walk of the table is
/// checked once, and it keeps nothing on the refusing chain's stack.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_record(a: u64) -> u64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let off = a as u32 & 0x7ff;
    let connected = b16(s, 0) == CMD_SEND_UNIT_DATA as u32;
    // SendUnitData: the sequence count of the connected data item (`cpf` checked the connected
    // address item before it), which the reply echoes. SendRRData: the sender context, and the
    // request's place among the connection's.
    let context = if connected {
        b16(s, 44) as u64
    } else {
        b32(s, 12) as u64 | (b32(s, 16) as u64) << 32
    };
    let frame = s.cip_index;
    let key = EnipRefusal::key(
        s.refusals.requests,
        b8(s, off) as u8,
        (a >> 16) as u8,
        (a >> 24) as u8,
        frame & FRAME_ROUTED != 0,
        connected,
    );
    let position = 1u32 << (frame & FRAME_POSITION);
    // A request joins the entry of the same reply, service and codes, at a position of a
    // Multiple Service Packet reply the entry does not hold yet.
    let taken = if position == POSITION_WHOLE {
        u32::MAX
    } else {
        position | POSITION_WHOLE
    };
    let mut slot = ENIP_REFUSALS_MAX;
    for i in 0..ENIP_REFUSALS_MAX {
        let e = &mut s.refusals.entries[i];
        if s.refusals.used & (1 << i) == 0 {
            if slot == ENIP_REFUSALS_MAX {
                slot = i;
            }
        } else if e.context == context && e.key == key && e.positions & taken == 0 {
            e.positions |= position;
            return 0;
        }
    }
    if slot == ENIP_REFUSALS_MAX {
        return 1;
    }
    let e = &mut s.refusals.entries[slot & (ENIP_REFUSALS_MAX - 1)];
    e.context = context;
    e.key = key;
    e.positions = position;
    s.refusals.used |= 1 << slot;
    0
}

/// Whether the rule allows `service` on `class`: this CPU's memo (`EnipClassMemo`) answers
/// when it holds the rule and class under the epoch in force; otherwise `otfw_enip_class`.
#[inline(always)]
fn class_allows(s: &EnipScratch, class: u32, service: u32) -> bool {
    let code = masked(service, 0x7f);
    if let Some(m) = ENIP_CLASS_MEMO.get_ptr(EnipClassMemo::slot(s.rule, class as u16)) {
        // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
        let m = unsafe { &*m };
        if m.epoch == s.epoch && m.rule == s.rule && m.class == class as u16 {
            return m.present != 0 && bit(&m.services, code);
        }
    }
    otfw_enip_class(class as u64 | (code as u64) << 16) != 0
}

/// `class_allows` when the memo does not hold the rule and class (`packed`: the class in bits
/// 0..16, the service code in bits 16..23): asks `ENIP_CLASSES` and leaves its answer in the
/// memo. Out of line: it is the rare path, and inlined its registers spill onto a stack the
/// inspector's deepest call chain needs every byte of.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_class(packed: u64) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    let class = packed as u16;
    let code = (packed >> 16) as usize & 0x7f;
    let mut key = EnipClassKey::default();
    key.set(slot_of(s.epoch) as u8, s.rule, class);
    // SAFETY: a hash map value, read at once.
    let services = unsafe { ENIP_CLASSES.get(&key) };
    if let Some(m) = ENIP_CLASS_MEMO.get_ptr_mut(EnipClassMemo::slot(s.rule, class)) {
        // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
        let m = unsafe { &mut *m };
        m.epoch = s.epoch;
        m.rule = s.rule;
        m.class = class;
        // Word by word: a copy of the value would be a `memmove` (`firewall_common::mem`).
        match services {
            Some(bits) => {
                m.present = 1;
                m.services[0] = bits[0];
                m.services[1] = bits[1];
            }
            None => m.present = 0,
        }
    }
    services.is_some_and(|bits| bit(bits, code)) as u64
}

/// Multiple Service Packet: count, offsets from the count field, requests in order.
#[inline(always)]
fn msp(s: &mut EnipScratch, data: u32, dlen: u32, depth: u32) -> u8 {
    let bad = Reason::CipBadMsp as u8;
    if dlen < 2 {
        return bad;
    }
    let count = b16(s, data);
    if count == 0 || count > MAX_MSP_COUNT || 2 + 2 * count > dlen {
        return bad;
    }
    if depth + 1 >= MAX_DEPTH {
        return Reason::CipTooDeep as u8;
    }
    // Where the entries' replies are: in this packet's reply, if that is a whole reply.
    let parent = s.cip_index;
    let entry = if parent & (FRAME_POSITION | FRAME_UNLOCATED) == FRAME_WHOLE {
        parent & FRAME_ROUTED
    } else {
        parent | FRAME_UNLOCATED
    } & !FRAME_POSITION;
    // Offsets are pushed last-first so that the requests are checked in order.
    let mut next_start = dlen;
    let mut k = 0;
    while k < MAX_MSP_COUNT {
        if k >= count {
            break;
        }
        let i = count - 1 - k;
        let o = b16(s, data + 2 + 2 * i);
        let first = i == 0;
        if o >= next_start || (first && o != 2 + 2 * count) || (!first && o < 2 + 2 * count) {
            return bad;
        }
        if !push(s, data + o, next_start - o, depth + 1, entry | i as u8) {
            return Reason::CipTooDeep as u8;
        }
        next_start = o;
        k += 1;
    }
    R_NONE
}

/// Unconnected Send: the embedded request is checked against its own class; the route path
/// must be port segments and end the request exactly.
#[inline(always)]
fn unconnected_send(s: &mut EnipScratch, data: u32, dlen: u32, depth: u32) -> u8 {
    let bad = Reason::CipMalformed as u8;
    if dlen < 4 {
        return bad;
    }
    let size = b16(s, data + 2);
    let after = 4 + size + (size & 1);
    if size < 2 || after + 2 > dlen {
        return bad;
    }
    let route = b8(s, data + after) * 2;
    if after + 2 + route != dlen {
        return bad;
    }
    if otfw_enip_route((data + after + 2) as u64 | (route as u64) << 16) != 0 {
        return Reason::CipBadPath as u8;
    }
    // The embedded request's reply is the Unconnected Send's, where that is.
    let routed = s.cip_index | FRAME_ROUTED;
    if depth + 1 >= MAX_DEPTH || !push(s, data + 4, size, depth + 1, routed) {
        return Reason::CipTooDeep as u8;
    }
    R_NONE
}

#[inline(always)]
fn forward_open(s: &mut EnipScratch, data: u32, dlen: u32, large: bool) -> u8 {
    let fixed = if large { 40 } else { 36 };
    if dlen < fixed {
        return Reason::CipMalformed as u8;
    }
    let psize = b8(s, data + fixed - 1) * 2;
    if fixed + psize != dlen {
        return Reason::CipMalformed as u8;
    }
    let transport = b8(s, data + fixed - 2);
    s.pending = PendingOpen {
        orig_serial: b32(s, data + 14),
        serial: b16(s, data + 10) as u16,
        vendor: b16(s, data + 12) as u16,
        multiplier: b8(s, data + 18) as u8,
        class: (transport & 0x0f) as u8,
        _pad: [0; 2],
    };
    s.flow_flags |= EFLOW_PENDING;
    R_NONE
}

#[inline(always)]
fn forward_close(s: &mut EnipScratch, data: u32, dlen: u32) -> u8 {
    if dlen < 12 {
        return Reason::CipMalformed as u8;
    }
    let psize = b8(s, data + 10) * 2;
    if 12 + psize != dlen {
        return Reason::CipMalformed as u8;
    }
    s.closed = FlowConn {
        o2t: 0,
        t2o: 0,
        orig_serial: b32(s, data + 6),
        serial: b16(s, data + 2) as u16,
        vendor: b16(s, data + 4) as u16,
    };
    s.closed_ok = 1;
    R_NONE
}
