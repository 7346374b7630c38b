//! The encapsulation layer: frames the encapsulation messages of a segment in the scratch
//! buffer (`frame`, with `otfw_enip_step` as the loop's work) and decides
//! each complete request message by its header: command, length, status, session. What a
//! SendRRData / SendUnitData carries is the `cpf` layer's.

use aya_ebpf::{cty::c_void, helpers::bpf_xdp_load_bytes, programs::XdpContext};

use firewall_common::{
    enip::*,
    modbus::{bit, InspectContext},
    reason::Reason,
};

use super::{
    b16, b32,
    connection::{otfw_enip_answer, otfw_enip_response, ANSWER_UNREAD},
    cpf::cpf,
    masked, scratch,
    trace::{note, otfw_enip_use, refuse, USE_COMMAND},
    MASK, R_NONE,
};
use crate::bpf::{
    maps::{ENIP_RULES, ENIP_TRACE},
    packet::copy_short,
    stream,
};

/// Rounds of the framing loop: a message needs at most two loads (header, then body).
const ROUNDS: u32 = 2 * MAX_MESSAGES + 2;

#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn setup(
    s: &mut EnipScratch,
    ic: &InspectContext,
    rule_index: u32,
    event_verdict: u32,
    monitor: bool,
    start: u32,
    exact: bool,
    recheck: bool,
    skip: u32,
    have: u32,
) {
    s.payload = ic.payload;
    s.len = ic.payload_len;
    s.pos = start;
    s.have = have;
    s.need = 0;
    s.skip = skip;
    s.rule_index = rule_index;
    s.epoch = ic.epoch;
    s.conduit = ic.conduit;
    s.rule = ic.rule;
    s.request = ic.to_server;
    s.news = 0;
    s.identity = 0;
    s.udp = 0;
    s.exact = exact as u8;
    s.recheck = recheck as u8;
    s.monitor = monitor as u8;
    s.reason = 0;
    s.denied = 0;
    s.framed = 0;
    s.event_verdict = event_verdict as u8;
    s.flow_flags = 0;
    s.session = 0;
    s.messages = 0;
    s.records = 0;
    s.requests = 0;
    s.segment_requests = 0;
    s.opened_ok = 0;
    s.closed_ok = 0;
    s.total = 0;
    s.rewrites = 0;
    s.refuse = 0;
    s.refused = 0;
    s.fail = 0;
    s.refused_reason = 0;
    // The counters: entries are only read where `used` says so (`EnipRefusals::copy_from`).
    s.refusals.used = 0;
    s.refusals.requests = 0;
    s.refusals.replies = 0;
}

/// The framing loop: its state lives in the scratch map, its work in global functions.
#[inline(always)]
pub(super) fn frame(ctx: &XdpContext, scratch: *mut EnipScratch) {
    // The first load, found inline (a call and its return cost more than the work); each
    // step answers where the next one is (one call per load).
    // SAFETY: the per-CPU scratch, this CPU only; no reference to it is live.
    let mut next = next_load(unsafe { &mut *scratch });
    for round in 0..ROUNDS {
        if next == 0 {
            break;
        }
        if round == ROUNDS - 1 {
            // SAFETY: per-CPU scratch, this CPU only.
            unsafe {
                if (*scratch).reason == R_NONE {
                    (*scratch).reason = Reason::EnipTooManyMessages as u8;
                    (*scratch).denied = (*scratch).request;
                }
            }
            break;
        }
        let (offset, at, take) = (
            next as u32,
            (next >> 32) as u16 as u32,
            (next >> 48) as u16 as u32,
        );
        if !load(ctx, offset, scratch, at, take) {
            // SAFETY: as above.
            unsafe { (*scratch).reason = Reason::EnipUnframed as u8 };
            break;
        }
        next = otfw_enip_step(take as u64);
        if next == STEP_STOP {
            break;
        }
    }
}

/// (reason, framed) after the loop.
#[inline(always)]
pub(super) fn result(s: &EnipScratch) -> (u8, bool) {
    if s.reason != R_NONE {
        return (s.reason, s.framed != 0);
    }
    if s.framed == 0 && s.have == 0 {
        return (Reason::EnipTooManyMessages as u8, false);
    }
    if s.exact != 0 && (s.have != 0 || s.skip != 0) {
        let r = if s.udp != 0 {
            Reason::EnipTrailingBytes
        } else {
            Reason::EnipUnframed
        };
        return (r as u8, false);
    }
    (R_NONE, true)
}

/// Copies `len` payload bytes at frame offset `offset` into the message buffer at `at`.
#[inline(always)]
fn load(ctx: &XdpContext, offset: u32, s: *mut EnipScratch, at: u32, len: u32) -> bool {
    // SAFETY: volatile reads of locals initialised here (see the Modbus inspector).
    let (at, len) = unsafe {
        (
            core::ptr::read_volatile(&at),
            core::ptr::read_volatile(&len),
        )
    };
    if at >= MSG_MAX || len == 0 || len > MSG_MAX {
        return false;
    }
    // SAFETY: as above.
    let len = ((unsafe { core::ptr::read_volatile(&len) } - 1) & MASK) + 1;
    // SAFETY: as above.
    let at = unsafe { core::ptr::read_volatile(&at) } & MASK;
    // SAFETY: `at + len` <= 2 * MSG_MAX = MSG_BUF; the helper checks the packet side.
    unsafe {
        let dst = (*s).msg.as_mut_ptr().add(at as usize);
        // The encapsulation header (24 bytes, every message's first load) and short bodies
        // straight from the packet (`packet::copy_short`).
        (len <= 24 && copy_short(ctx, offset, dst, len))
            || bpf_xdp_load_bytes(ctx.ctx, offset, dst as *mut c_void, len) == 0
    }
}

/// `otfw_enip_step`'s answer when framing of the segment stops. Never an answer of
/// `next_load`: its offset (the payload's, past Ethernet, IP and TCP or UDP headers) is never 1.
const STEP_STOP: u64 = 1;

/// Where the next bytes come from: 0 when the segment is done, else
/// `offset | at << 32 | take << 48`: load `take` bytes at frame offset `offset` into the
/// message buffer at `at`. Inline for the segment's first load, and in `otfw_enip_step` when
/// framing goes on.
#[inline(always)]
fn next_load(s: &mut EnipScratch) -> u64 {
    let len = s.len;
    let Some(pos) = stream::next_message(len, s.pos, &mut s.skip) else {
        s.pos = len;
        s.framed = 1;
        return 0;
    };
    s.pos = pos;
    let have = s.have & MASK;
    let want = if s.need == 0 {
        ENCAP_LEN.saturating_sub(have)
    } else {
        s.need.saturating_sub(have)
    };
    let rest = len - pos;
    let take = if rest < want { rest } else { want };
    if take == 0 || take > MSG_MAX {
        s.reason = Reason::EnipUnframed as u8;
        return 0;
    }
    s.payload.wrapping_add(pos) as u64 | (have as u64) << 32 | (take as u64) << 48
}

/// Commands a stream can plausibly start with when framing is being established.
#[inline(always)]
fn known_command(cmd: u32) -> bool {
    matches!(
        cmd,
        0x00 | 0x04 | 0x63 | 0x64 | 0x65 | 0x66 | 0x6F | 0x70 | 0x72 | 0x73
    )
}

/// Takes `take` loaded bytes into the current message; decides it when complete. Returns
/// `STEP_STOP` when framing of the segment stops (a refusal, or a message continued in the next
/// segment), else what `next_load` would answer next (a call per load saved).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_step(take: u64) -> u64 {
    let Some(s) = scratch() else {
        return STEP_STOP;
    };
    if take_loaded(s, take) != 0 {
        return STEP_STOP;
    }
    next_load(s)
}

/// The work of `otfw_enip_step` before the next load: 1 when framing stops, else 0.
#[inline(always)]
fn take_loaded(s: &mut EnipScratch, take: u64) -> u64 {
    s.have += take as u32 & 0x7ff;
    s.pos += take as u32 & 0x7ff;
    let request = s.request != 0;
    let exact = s.exact != 0;
    if s.need == 0 {
        if s.have < ENCAP_LEN {
            return 1;
        }
        let total = ENCAP_LEN + b16(s, 2);
        let cmd = b16(s, 0);
        if exact && s.udp == 0 && (!known_command(cmd) || total > MSG_MAX) {
            s.reason = Reason::EnipUnframed as u8;
            return 1;
        }
        if total > MSG_MAX {
            if !request && cmd == CMD_SEND_RR_DATA as u32 && s.udp == 0 {
                // Too long to restore: it must not be the answer to a refused request.
                otfw_enip_answer(total as u64 | ANSWER_UNREAD);
                if s.fail != 0 {
                    return 1;
                }
            }
            if request {
                let idx = note(s, cmd, REC_COMMAND, 0, 0, 0, 0, 0);
                refuse(s, Reason::EnipTooLong as u8, idx);
                if s.monitor == 0 {
                    return 1;
                }
            }
            s.skip = total - s.have;
            s.have = 0;
            return 0;
        }
        s.need = total;
    }
    if s.have < s.need {
        // The body follows in this segment, or the message continues in the next one.
        return (s.pos >= s.len) as u64;
    }
    let total = s.need;
    s.have = 0;
    s.need = 0;
    s.messages += 1;
    if request {
        let r = otfw_enip_message(total as u64) as u8;
        if r != R_NONE && s.monitor == 0 {
            return 1;
        }
    } else {
        otfw_enip_response(total as u64);
        if s.fail != 0 {
            return 1;
        }
    }
    0
}

/// Decides one complete request message of `total` bytes in the buffer. Returns its reason.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_message(total: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::EnipUnframed as u64;
    };
    let total = total as u32 & 0x7ff;
    let cmd = b16(s, 0);
    let idx = note(s, cmd, REC_COMMAND, 0, 0, 0, 0, 0);
    s.total = total;
    s.requests = 0;
    otfw_enip_use(cmd as u64 | USE_COMMAND);
    let r = message(s, total, cmd);
    if cmd == CMD_SEND_RR_DATA as u32 && s.udp == 0 && (r == R_NONE || s.monitor != 0) {
        // It reaches the target, which answers it: the ordinal of its reply.
        s.refusals.requests = s.refusals.requests.wrapping_add(1);
    }
    if r != R_NONE {
        // The denied CIP request (the last record) carries its own reason; the command
        // record carries it too.
        if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
            if idx < MAX_RECORDS as u32 {
                // SAFETY: per-CPU slot, this CPU only.
                unsafe { (*t).records[idx as usize].reason = r };
            }
        }
        let last = s.records.wrapping_sub(1);
        let at = if last < MAX_RECORDS as u32 { last } else { idx };
        refuse(s, r, at);
    }
    r as u64
}

#[inline(always)]
fn message(s: &mut EnipScratch, total: u32, cmd: u32) -> u8 {
    let Some(rule) = ENIP_RULES.get(s.rule_index) else {
        return Reason::EnipCommandDenied as u8;
    };
    if rule.flags & ENIP_RULE_PRESENT == 0 || cmd > 255 || !bit(&rule.commands, masked(cmd, 0xff)) {
        return Reason::EnipCommandDenied as u8;
    }
    let len = total - ENCAP_LEN;
    let session = b32(s, 4);
    if b32(s, 8) != 0 {
        return Reason::EnipBadHeader as u8;
    }
    match cmd as u16 {
        CMD_LIST_IDENTITY | CMD_LIST_SERVICES | CMD_LIST_INTERFACES | CMD_UNREGISTER_SESSION => {
            if len != 0 {
                return Reason::EnipBadHeader as u8;
            }
            R_NONE
        }
        CMD_REGISTER_SESSION => {
            if len != 4 {
                return Reason::EnipBadHeader as u8;
            }
            R_NONE
        }
        CMD_SEND_RR_DATA | CMD_SEND_UNIT_DATA => {
            if s.udp == 0 {
                if s.flow_flags & EFLOW_SESSION != 0 {
                    if session != s.session {
                        return Reason::EnipBadSession as u8;
                    }
                } else if s.flow_flags & EFLOW_SYN != 0 {
                    // The connection was followed from its start: no session was registered.
                    return Reason::EnipBadSession as u8;
                } else {
                    // Adopted mid-stream: the first valid message teaches the handle.
                    s.session = session;
                    s.flow_flags |= EFLOW_SESSION;
                }
            }
            cpf(s, total, cmd as u16 == CMD_SEND_UNIT_DATA)
        }
        _ => R_NONE,
    }
}
