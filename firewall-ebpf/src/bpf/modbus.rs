//! Modbus/TCP inspection: the program `otfw_modbus`, tail called by the main program for every
//! TCP segment of a flow whose conduit rule has `modbus:` (both directions). It frames every ADU
//! of the segment, using the per-flow framing state in `MODBUS_FLOWS` for ADUs that span
//! segments, checks requests against the rule in `MODBUS_RULES`, accounts responses, and makes
//! and accounts the packet's final decision. docs/ARCHITECTURE.md states the framing rules.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    cty::c_void,
    helpers::bpf_xdp_load_bytes,
    programs::XdpContext,
};

use firewall_common::{
    conduit::{MAX_PROTOCOL_RULES, MODE_MONITOR, ON_DENY_REFUSE, ON_DENY_RESET},
    counters::{VERDICT_DROP, VERDICT_MONITOR, VERDICT_PASS, VERDICT_REFUSE, VERDICT_RESET},
    modbus::{
        bit, AduRecord, InspectContext, ModbusEvent, ModbusFlow, ModbusRule, ModbusScratch,
        ModbusStatKey, ModbusStream, Refusal, Refusals, ADU_REQUEST, CARRY_MAX, COUNT_EVENTS_LOST,
        COUNT_RESPONSES_UNFRAMED, KIND_EXCEPTION, KIND_REFUSE, KIND_RESPONSE, KIND_UNSOLICITED,
        MAX_ADUS, MAX_RANGES, MODBUS_BLOCKED, MODBUS_RESET, PREFIX_MAX, REFUSALS_MAX, REWRITES_MAX,
        RULE_DIAG_OTHERS, RULE_PRESENT, RULE_TABLE_LIMITED, STREAM_ACKED, STREAM_BOUNDARY,
        STREAM_SYNCED, TABLE_COILS, TABLE_DISCRETE_INPUTS, TABLE_HOLDING_REGISTERS,
        TABLE_INPUT_REGISTERS,
    },
    observed::{modbus_use, UseSet},
    reason::Reason,
    stream::TcpGuard,
};

use super::{
    delivery,
    maps::{
        INSPECT_CTX, MODBUS_ADUS, MODBUS_COUNTS, MODBUS_COUNT_MEMO, MODBUS_EVENTS, MODBUS_FLOWS,
        MODBUS_RULES, MODBUS_SCRATCH, MODBUS_STATS,
    },
    observe,
    packet::copy_short,
    reset,
    stats::{self, Accounted},
    stream::{self, Commit, Placement},
};

/// `decide_adu` result: the prefix is incomplete, more bytes are needed.
const NEED_MORE: u64 = 1 << 8;

/// What framing a segment found.
struct Run {
    reason: u8,
    /// A request was denied (by the rule or as malformed), as opposed to a segment that could
    /// not be placed in the stream.
    denied: bool,
    skip: u32,
    carry: u32,
    requests: u32,
    adus: u32,
    /// Every byte of the segment was framed (in monitor mode a denied segment still is).
    framed: bool,
    /// The stream state moved past the segment.
    committed: bool,
    /// Requests refused (neutralised) in the segment, and byte rewrites waiting in the scratch.
    refused: u32,
    rewrites: u32,
    /// A refusal could not be carried out (or its answer was wrong): reset the connection.
    fail: bool,
}

/// `on_deny: refuse` as the inspector applies it to one segment.
#[derive(Clone, Copy)]
struct Refuse {
    on: bool,
    function: u8,
    exception: u8,
}

// Inlined into its program: a call frame of its own would push the deepest chain of
// inspector calls past the verifier's eight frames.
#[inline(always)]
pub fn inspect(ctx: &XdpContext) -> u32 {
    let Some(ic) = INSPECT_CTX.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    // First, while little else is live: a short segment's checksum, summed inline (where
    // `delivery::check` runs, the stack has no room for it, and a call costs more).
    // SAFETY: the per-CPU context was written by the main program for this very packet; only
    // this CPU touches it while the program runs.
    delivery::sum_short_segment(ctx, unsafe { &mut *ic });
    // SAFETY: as above; from here on it is only read (by reference: a copy would cost stack
    // the call chain below needs).
    let ic = unsafe { &*ic };
    // Before anything can drop it: the inventory sees what the device answered.
    observe::inspected_answer(ctx, ic);
    let (info, mut acc) = stats::inspected(ic);
    let slot = acc.slot;
    let monitor = info.mode == MODE_MONITOR;
    let on_deny_reset = info.on_deny == ON_DENY_RESET;
    let on_deny_refuse = info.on_deny == ON_DENY_REFUSE && !monitor;
    if let Some(t) = MODBUS_ADUS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { (*t).count = 0 };
    }
    // Looked up once for the whole segment: framing works in it, and the news are read from
    // it after framing (the global functions reach the same per-CPU memory).
    let scratch = MODBUS_SCRATCH.get_ptr_mut(0);
    if let Some(s) = scratch {
        // SAFETY: per-CPU scratch, this CPU only.
        unsafe { (*s).news = 0 };
    }
    let flow = match stream::followed(
        ctx,
        &mut acc,
        ic,
        &MODBUS_FLOWS,
        |m| otfw_modbus_missing(m),
        monitor,
    ) {
        Ok(flow) => flow,
        Err(action) => return action,
    };
    let blocked = Reason::ModbusBlocked as u8;
    if let Some(action) = stream::track(ctx, &mut acc, ic, flow, blocked, monitor) {
        return action;
    }
    let to_server = ic.to_server != 0;

    let rule_index = slot * MAX_PROTOCOL_RULES + ic.rule as u32;
    let event_verdict = if monitor {
        VERDICT_MONITOR
    } else if on_deny_reset {
        VERDICT_RESET
    } else {
        VERDICT_DROP
    };
    let stream = if to_server {
        &mut flow.streams[0]
    } else {
        &mut flow.streams[1]
    };
    // The codes are read whatever the mode (answers to requests refused before a policy change
    // are still restored), but only when a refusal is possible: one map lookup less for every
    // other segment.
    let rule = if on_deny_refuse || flow.refusals.used != 0 {
        MODBUS_RULES.get(rule_index)
    } else {
        None
    };
    let refuse = match rule {
        Some(rule) => Refuse {
            on: on_deny_refuse,
            function: rule.refuse_function,
            exception: rule.refuse_exception,
        },
        None => Refuse {
            on: false,
            function: 0,
            exception: 1,
        },
    };
    let run = segment(
        ctx,
        ic,
        scratch,
        stream,
        &mut flow.outstanding,
        &mut flow.refusals,
        (&flow.functions, &flow.units),
        rule_index,
        event_verdict,
        monitor,
        refuse,
    );
    acc.adus = run.adus;
    // Before any rewrite: the inventory records what the client sent. Only a segment with
    // news pays the call (and its return).
    // SAFETY: per-CPU scratch, this CPU only; no reference to it is live.
    if core::intrinsics::unlikely(scratch.is_some_and(|s| unsafe { (*s).news } != 0)) {
        otfw_modbus_news(ctx.ctx);
    }

    // The outcomes other than a plain pass are laid out as unlikely: the bulk of a
    // connection's segments pass, and with these branches laid out as the hot path eight
    // pipelined ADUs paid about 11 ns more in registers.
    let mut action = xdp_action::XDP_PASS;
    if core::intrinsics::unlikely(
        run.fail || (run.rewrites != 0 && !apply_rewrites(ctx, run.rewrites)),
    ) {
        // Fail closed: a refusal that cannot be carried out (or restored) ends the connection.
        flow.flags |= MODBUS_RESET;
        acc.reason = if run.fail {
            run.reason
        } else {
            Reason::ModbusRefusedSplit as u8
        };
        acc.verdict = VERDICT_RESET;
        action = reset::forward(ctx);
    } else if core::intrinsics::unlikely(
        run.refused != 0 && run.reason != Reason::None as u8 && !run.denied,
    ) {
        // Every refusal in the segment was neutralised; the rest of it passes untouched.
        acc.reason = run.reason;
        acc.verdict = VERDICT_REFUSE;
    } else if core::intrinsics::unlikely(run.reason != Reason::None as u8) {
        acc.reason = run.reason;
        if monitor {
            acc.verdict = VERDICT_MONITOR;
            // Framing is lost: passing on means resynchronising on a later segment.
            if !run.committed {
                stream.flags &= !(STREAM_SYNCED | STREAM_BOUNDARY);
            }
        } else if run.denied && on_deny_reset {
            flow.flags |= MODBUS_RESET;
            acc.verdict = VERDICT_RESET;
            action = reset::forward(ctx);
        } else {
            if run.denied {
                flow.flags |= MODBUS_BLOCKED;
            }
            acc.verdict = VERDICT_DROP;
            action = xdp_action::XDP_DROP;
        }
    }
    if to_server && action == xdp_action::XDP_PASS && acc.verdict != VERDICT_RESET {
        flow.outstanding = flow.outstanding.saturating_add(run.requests as u16);
    }
    count_adus(&acc, run.adus);
    stats::record(ctx, &acc);
    action
}

/// After framing: a request that was its connection's first use of a function or unit
/// (`ModbusScratch::news`) updates the flow's sets and has the segment copied for the inventory
/// (`stream::record_news`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_modbus_news(ctx: *mut xdp_md) -> u64 {
    let Some(s) = MODBUS_SCRATCH.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, this CPU only, only read.
    let s = unsafe { &*s };
    let news_at = (s.news != 0).then_some(s.news_at);
    stream::record_news(ctx, &MODBUS_FLOWS, news_at, |flow: &mut ModbusFlow| {
        flow.functions = s.functions;
        flow.units = s.units;
    });
    0
}

/// Applies the byte rewrites framing queued in the scratch (refused requests neutralised,
/// answers restored). False if one is outside the frame (fail closed).
#[inline(always)]
fn apply_rewrites(ctx: &XdpContext, count: u32) -> bool {
    let Some(s) = MODBUS_SCRATCH.get_ptr(0) else {
        return false;
    };
    for i in 0..REWRITES_MAX {
        if i as u32 >= count {
            break;
        }
        // SAFETY: per-CPU scratch, this CPU only.
        let (at, value) = unsafe { ((*s).rewrite_at[i], (*s).rewrite_value[i]) };
        if stream::otfw_rewrite_byte(ctx.ctx, at as u64 | (value as u64) << 16) == 0 {
            return false;
        }
    }
    true
}

/// The flow has no framing state: decides what that means (`stream::missing`) and creates the
/// state where it is to be kept. Returns `stream::MISSING_*`; for `MISSING_LOST` the new state
/// answers every later segment with a reset (unless `monitor`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_modbus_missing(monitor: u64) -> u64 {
    let fresh = ModbusFlow::default();
    stream::create_missing(&MODBUS_FLOWS, || Some(&fresh as *const ModbusFlow), monitor)
}

impl stream::FollowedFlow for ModbusFlow {
    type Stream = ModbusStream;

    #[inline(always)]
    fn streams(&mut self) -> &mut [ModbusStream; 2] {
        &mut self.streams
    }

    #[inline(always)]
    fn guard(&mut self) -> &mut TcpGuard {
        &mut self.guard
    }

    const RESET: u8 = MODBUS_RESET;
    const BLOCKED: u8 = MODBUS_BLOCKED;

    #[inline(always)]
    fn flow_flags(&mut self) -> &mut u8 {
        &mut self.flags
    }

    #[inline(always)]
    fn started_by_syn_ack(&mut self, ack: u32) {
        self.streams[0].next_seq = ack;
        self.streams[0].flags = STREAM_SYNCED;
    }

    #[inline(always)]
    fn new_connection(&mut self) {
        *self = ModbusFlow::default();
    }
}

/// Places the segment in its stream, frames it, and commits the stream state if it passes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn segment(
    ctx: &XdpContext,
    ic: &InspectContext,
    scratch: Option<*mut ModbusScratch>,
    st: &mut ModbusStream,
    outstanding: &mut u16,
    refusals: &mut Refusals,
    uses: (&UseSet, &UseSet),
    rule_index: u32,
    event_verdict: u32,
    monitor: bool,
    refuse: Refuse,
) -> Run {
    let request = ic.to_server != 0;
    let mut refused = Run {
        reason: Reason::None as u8,
        denied: false,
        skip: 0,
        carry: 0,
        requests: 0,
        adus: 0,
        framed: false,
        committed: false,
        refused: 0,
        rewrites: 0,
        fail: false,
    };
    let (commit, start) = match stream::place(st, ic) {
        Placement::Frame(commit, start) => (commit, start),
        // The receiver discards every byte of it.
        Placement::Discarded => return refused,
        Placement::OutOfOrder => {
            refused.reason = Reason::ModbusOutOfOrder as u8;
            return unframed_response(request, st, refused);
        }
        Placement::Retransmission => {
            refused.reason = Reason::ModbusRetransmission as u8;
            return unframed_response(request, st, refused);
        }
    };
    let exact = commit != Commit::Advance;
    let (skip, carry) = if exact {
        (0, 0)
    } else {
        (st.skip as u32, st.carry_len as u32)
    };
    let Some(scratch) = scratch else {
        refused.reason = Reason::ModbusUnframed as u8;
        return refused;
    };
    if carry != 0 {
        // SAFETY: per-CPU scratch, this CPU only; both arrays are at least CARRY_MAX long.
        unsafe { (&mut (*scratch).buf)[..CARRY_MAX].copy_from_slice(&st.carry) };
    }
    // SAFETY: per-CPU scratch, this CPU only; no other reference to it is live.
    unsafe {
        (*scratch).refuse = refuse.on as u8;
        (*scratch).refuse_function = refuse.function;
        (*scratch).refuse_exception = refuse.exception;
        (*scratch).refusals.copy_from(refusals);
        (*scratch).functions = *uses.0;
        (*scratch).units = *uses.1;
    }
    let run = frame(
        ctx,
        ic,
        scratch,
        start,
        skip,
        carry,
        exact,
        rule_index,
        outstanding,
        event_verdict,
        monitor,
    );
    if run.fail {
        return run;
    }
    // Refused requests alone let the segment pass (neutralised), and only if framing went
    // through the whole segment: bytes after a request that stopped it (an unframed ADU in a
    // segment that must be whole ADUs) were never decided.
    let refused_only = run.refused != 0 && !run.denied && run.framed;
    if run.reason != Reason::None as u8 && !(monitor && run.framed) && !refused_only {
        if !request {
            return unframed_response(request, st, run);
        }
        // Not framed to its end: the segment does not pass, so its refusals are not carried
        // out (nor recorded).
        return Run {
            refused: 0,
            rewrites: 0,
            ..run
        };
    }
    let mut run = run;
    run.committed = true;
    // SAFETY: as above.
    unsafe { refusals.copy_from(&(*scratch).refusals) };
    match commit {
        Commit::Recheck => {}
        Commit::Sync | Commit::Advance => {
            let from_boundary = start == 0 && skip == 0 && carry == 0;
            let to_boundary = run.skip == 0 && run.carry == 0;
            stream::advance(st, ic, commit, from_boundary, to_boundary);
            st.skip = run.skip as u16;
            st.carry_len = run.carry as u8;
            if run.carry != 0 {
                // SAFETY: as above.
                unsafe { st.carry.copy_from_slice(&(&(*scratch).buf)[..CARRY_MAX]) };
            }
        }
    }
    run
}

/// Responses are accounted, not policed: one that cannot be framed passes, and its stream is
/// resynchronised on a later segment. Requests keep the refusal.
#[inline(always)]
fn unframed_response(request: bool, st: &mut ModbusStream, mut run: Run) -> Run {
    if request {
        return run;
    }
    st.flags &= !(STREAM_SYNCED | STREAM_BOUNDARY);
    if let Some(n) = MODBUS_COUNTS.get_ptr_mut(COUNT_RESPONSES_UNFRAMED) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { *n += 1 };
    }
    run.reason = Reason::None as u8;
    run.denied = false;
    run
}

/// Frames the payload from `start`: `skip` bytes finish an ADU already decided, `carry` bytes
/// of an undecided prefix are in the scratch buffer. Every ADU header in the segment is decided;
/// with `exact`, the segment must be whole ADUs. The loop keeps its state in the scratch map and
/// does its work in global functions, so that the verifier walks a small body per iteration.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn frame(
    ctx: &XdpContext,
    ic: &InspectContext,
    scratch: *mut ModbusScratch,
    start: u32,
    skip: u32,
    carry: u32,
    exact: bool,
    rule_index: u32,
    outstanding: &mut u16,
    event_verdict: u32,
    monitor: bool,
) -> Run {
    // SAFETY: per-CPU scratch, this CPU only; no other reference to it is live.
    let s = unsafe { &mut *scratch };
    s.payload = ic.payload;
    s.len = ic.payload_len;
    s.pos = start;
    s.skip = skip;
    s.carry = carry;
    s.have = 0;
    s.rule_index = rule_index;
    s.epoch = ic.epoch;
    s.conduit = ic.conduit;
    s.outstanding = *outstanding;
    s.event_verdict = event_verdict as u8;
    s.request = ic.to_server;
    s.exact = exact as u8;
    s.monitor = monitor as u8;
    s.reason = 0;
    s.denied = 0;
    s.framed = 0;
    s.requests = 0;
    s.adus = 0;
    s.refused = 0;
    s.fail = 0;
    s.rewrites = 0;
    let mut stopped = false;
    // The first ADU's prefix, inline (a call and the scratch's lookup fewer per segment: read
    // request -16 ns); each step answers where the next one is (one call per ADU).
    let mut next = next_prefix(s);
    // One round more than ADUs decided: the last only finds out whether the segment is done.
    for round in 0..=MAX_ADUS {
        if next == 0 || round == MAX_ADUS {
            break;
        }
        let (offset, at, take) = (next as u32, (next >> 32) as u8 as u32, (next >> 40) as u32);
        if !load_prefix(ctx, offset, scratch, at, take) {
            // SAFETY: as above.
            unsafe { (*scratch).reason = Reason::ModbusUnframed as u8 };
            stopped = true;
            break;
        }
        next = otfw_modbus_step(take as u64);
        if next == STEP_STOP {
            stopped = true;
            break;
        }
    }
    // The global functions changed the scratch state: read it afresh.
    // SAFETY: as above.
    let s = unsafe { &*scratch };
    let mut run = Run {
        reason: s.reason,
        denied: s.denied != 0,
        skip: 0,
        carry: 0,
        requests: s.requests,
        adus: s.adus,
        framed: false,
        committed: false,
        refused: s.refused as u32,
        rewrites: s.rewrites,
        fail: s.fail != 0,
    };
    *outstanding = s.outstanding;
    if stopped {
        // A carried prefix ends the segment, with no refusal before it or only refused
        // requests (neutralised when the segment passes): the prefix is the next segment's to
        // decide, and its bytes reach the server now, so the stream must carry them.
        if run.reason == 0 || (run.refused != 0 && !run.denied && s.have != 0) {
            run.carry = s.have;
            run.framed = true;
        } else if run.refused != 0 && !run.denied {
            // A refusal never stops framing: what stopped it after one is an ADU that does
            // not fit a segment that must be whole ADUs. The bytes from there were never
            // decided, so the segment cannot pass as refused.
            run.reason = Reason::ModbusUnframed as u8;
        }
        return run;
    }
    if s.framed == 0 {
        if run.reason == 0 {
            run.reason = Reason::ModbusTooManyAdus as u8;
            run.denied = s.request != 0;
        }
        return run;
    }
    if exact && s.skip != 0 {
        if run.reason == 0 {
            run.reason = Reason::ModbusUnframed as u8;
        }
        return run;
    }
    run.skip = s.skip;
    run.framed = true;
    run
}

/// `otfw_modbus_step`'s answer when framing of the segment stops. Never a prefix's answer of
/// `next_prefix`: its offset (the payload's, past Ethernet, IP and TCP headers) is never 1.
const STEP_STOP: u64 = 1;

/// Where the next ADU's prefix starts, after finishing the body of the current one: 0 when the
/// segment is done, else `offset | at << 32 | take << 40`: load `take` payload bytes at frame
/// offset `offset` into the scratch buffer at `at`. Inline for a segment's first ADU, and in
/// `otfw_modbus_step` after each.
#[inline(always)]
fn next_prefix(s: &mut ModbusScratch) -> u64 {
    let len = s.len;
    let Some(pos) = stream::next_message(len, s.pos, &mut s.skip) else {
        s.pos = len;
        s.framed = 1;
        return 0;
    };
    s.pos = pos;
    let c = if s.carry > CARRY_MAX as u32 {
        0
    } else {
        s.carry
    };
    let rest = len - pos;
    let room = PREFIX_MAX as u32 - c;
    let take = if rest < room { rest } else { room };
    s.payload.wrapping_add(pos) as u64 | (c as u64) << 32 | (take as u64) << 40
}

/// Decides the ADU whose prefix is in the scratch buffer (`take` bytes were just loaded after
/// the carried ones) and moves past it. Returns `STEP_STOP` (1) when framing of the segment
/// stops here (a refusal, or a prefix carried to the next segment), else what
/// `next_prefix` would answer next: 0 when the segment is done, else where the next ADU's
/// prefix is (a call per ADU saved).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_modbus_step(take: u64) -> u64 {
    let Some(s) = MODBUS_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, this CPU only.
    let s = unsafe { &mut *s };
    let c = s.carry & 0x1f;
    let have = c + (take as u32 & 0x1f);
    let request = s.request != 0;
    let exact = s.exact != 0;
    let buf = &s.buf;
    let mlen = u16::from_be_bytes([buf[4], buf[5]]) as u32;
    let head = (u16::from_be_bytes([buf[2], buf[3]]) as u64) << 48
        | (mlen as u64) << 32
        | (buf[6] as u64) << 24
        | (buf[7] as u64) << 16
        | (have as u64 & 0xff) << 8
        | request as u64;
    let data = u64::from_be_bytes([
        buf[8], buf[9], buf[10], buf[11], buf[12], buf[13], buf[14], buf[15],
    ]);
    let r = decide_adu(s.rule_index as u64, head, data, buf[16] as u64);
    let reason = r as u8;
    let function = buf[7];
    let unit = buf[6];
    let transaction = u16::from_be_bytes([buf[0], buf[1]]);
    if r & NEED_MORE != 0 {
        if reason != Reason::None as u8 {
            s.reason = if exact {
                Reason::ModbusUnframed as u8
            } else {
                Reason::ModbusTrailingBytes as u8
            };
            s.denied = (request && !exact) as u8;
        } else if exact {
            s.reason = Reason::ModbusUnframed as u8;
        } else {
            s.have = have;
        }
        return 1;
    }
    let address = (r >> 16) as u16;
    let quantity = (r >> 32) as u16;
    let sub = (r >> 48) as u16;
    if !request {
        if reason != Reason::None as u8 {
            s.reason = reason;
            return 1;
        }
        let (mut function, mut exception) = (function, sub);
        if s.refusals.used != 0 {
            if let Some(i) = find_refusal(&s.refusals, transaction, unit) {
                if restore_answer(s, i, c, mlen, function, sub as u8) != 0 {
                    return 1;
                }
                function = s.refusals.entries[i].function | 0x80;
                exception = s.refuse_exception as u16;
                s.refusals.used &= !(1 << i);
            }
        }
        let kind = if s.outstanding == 0 {
            KIND_UNSOLICITED
        } else {
            s.outstanding -= 1;
            if function & 0x80 != 0 {
                KIND_EXCEPTION
            } else {
                KIND_RESPONSE
            }
        };
        note_adu(
            s,
            unit,
            function & 0x7f,
            kind,
            0,
            address,
            quantity,
            exception,
        );
    } else {
        let sanity = is_sanity(reason);
        // In a segment that syncs a stream, a malformed ADU means the guess of where ADUs
        // start was wrong: unframed, not a malformed request.
        let unframed = exact && sanity;
        let reason = if unframed {
            Reason::ModbusUnframed as u8
        } else {
            reason
        };
        // A request that is the protocol (whatever the policy says of it), whose header is in
        // this segment: the inventory can decode it from a copy of the segment.
        if !sanity && c == 0 {
            let new_function = s.functions.insert(modbus_use(function, sub));
            let new_unit = s.units.insert(unit);
            if (new_function || new_unit) && s.news == 0 {
                s.news = 1;
                s.news_at = s.pos as u16;
            }
        }
        let refusing = reason != Reason::None as u8
            && !unframed
            && s.refuse != 0
            && is_refusable(reason)
            && (2..=254).contains(&mlen);
        note_adu(
            s,
            unit,
            function,
            ADU_REQUEST,
            reason,
            address,
            quantity,
            sub,
        );
        if reason != Reason::None as u8 {
            if refusing {
                if refuse_request(s, c, transaction, unit, function) != 0 {
                    return 1;
                }
            } else if !unframed {
                s.denied = 1;
            }
            if !unframed {
                let verdict = if refusing {
                    VERDICT_REFUSE as u8
                } else {
                    s.event_verdict
                };
                otfw_modbus_event(
                    reason as u64
                        | (verdict as u64) << 8
                        | (unit as u64) << 16
                        | (function as u64) << 24
                        | (sub as u64) << 32
                        | (s.conduit as u64) << 48,
                    address as u64 | (quantity as u64) << 16 | (s.epoch as u64) << 32,
                );
            }
            if s.reason == Reason::None as u8 {
                s.reason = reason;
            }
            if !refusing && (s.monitor == 0 || unframed || !(2..=254).contains(&mlen)) {
                return 1;
            }
        }
        if reason == Reason::None as u8 || refusing {
            // A refused request still reaches the server (neutralised) and is answered.
            s.requests += 1;
        }
    }
    let total = mlen + 6;
    let here = total.wrapping_sub(c);
    let rest = s.len.wrapping_sub(s.pos);
    if here <= rest {
        s.pos += here;
    } else {
        s.skip = here - rest;
        s.pos = s.len;
    }
    s.carry = 0;
    next_prefix(s)
}

/// Denials `on_deny: refuse` answers in-band: the rule forbids the request, or its fields
/// are out of range, while the MBAP header frames it as the server will. Other denials (a bad
/// protocol id or length) fall back to drop.
#[inline(always)]
fn is_refusable(reason: u8) -> bool {
    reason == Reason::ModbusFunctionDenied as u8
        || reason == Reason::ModbusUnitDenied as u8
        || reason == Reason::ModbusSubFunctionDenied as u8
        || reason == Reason::ModbusAddressDenied as u8
        || reason == Reason::ModbusBadQuantity as u8
        || reason == Reason::ModbusBadValue as u8
}

/// The refusal waiting for the answer with this transaction and unit id.
#[inline(always)]
fn find_refusal(r: &Refusals, transaction: u16, unit: u8) -> Option<usize> {
    (0..REFUSALS_MAX).find(|&i| {
        r.used & (1 << i) != 0
            && r.entries[i].transaction == transaction
            && r.entries[i].unit == unit
    })
}

/// Queues a rewrite of the payload byte that is `buf[k]` of the prefix being decided (`c`
/// bytes of it were carried, so it must be at `k >= c`). Returns false if it cannot be done.
#[inline(always)]
fn queue_rewrite(s: &mut ModbusScratch, c: u32, k: u32, value: u8) -> bool {
    let n = s.rewrites as usize;
    if k < c || n >= REWRITES_MAX {
        return false;
    }
    // Masked after a volatile read: LLVM would drop a plain mask (it knows `n` is in range)
    // and the verifier would see an unbounded index.
    // SAFETY: a volatile read of a local initialised above.
    let i = unsafe { core::ptr::read_volatile(&n) } & (REWRITES_MAX - 1);
    s.rewrite_at[i] = (s.payload + s.pos + k - c) as u16;
    s.rewrite_value[i] = value;
    s.rewrites = i as u32 + 1;
    true
}

/// Neutralises a refused request: its function code becomes the unassigned one of the rule, so
/// the server executes nothing and answers with an exception, and the refusal is remembered
/// until that answer. Returns 1 (and sets the reason) when it cannot be done: the function code
/// passed in an earlier segment, or too many refusals are waiting.
#[inline(always)]
fn refuse_request(s: &mut ModbusScratch, c: u32, transaction: u16, unit: u8, function: u8) -> u64 {
    // A retransmission of a segment already refused is neutralised again, remembered once.
    if find_refusal(&s.refusals, transaction, unit).is_none() {
        let Some(i) = (0..REFUSALS_MAX).find(|&i| s.refusals.used & (1 << i) == 0) else {
            return fail(s, Reason::ModbusRefusalsFull);
        };
        s.refusals.entries[i] = Refusal {
            transaction,
            unit,
            function,
        };
        s.refusals.used |= 1 << i;
    }
    if !queue_rewrite(s, c, 7, s.refuse_function) {
        return fail(s, Reason::ModbusRefusedSplit);
    }
    s.refused = s.refused.saturating_add(1);
    0
}

/// Restores the server's answer to refusal `i` for the client: it must be the exception an
/// unassigned function code gets (illegal function, with the neutral code or, from servers that
/// do not echo unknown codes, 0x80), whole in this segment; its function code becomes the
/// client's own | 0x80 and its exception code the rule's. Returns 1 (and sets the reason) when
/// the answer is anything else.
#[inline(always)]
fn restore_answer(
    s: &mut ModbusScratch,
    i: usize,
    c: u32,
    mlen: u32,
    function: u8,
    exception: u8,
) -> u64 {
    let neutral = s.refuse_function | 0x80;
    let expected = mlen == 3 && (function == neutral || function == 0x80) && exception == 1;
    let original = s.refusals.entries[i].function | 0x80;
    let restored = s.refuse_exception;
    if !expected || !queue_rewrite(s, c, 7, original) || !queue_rewrite(s, c, 8, restored) {
        return fail(s, Reason::ModbusRefusedAnswer);
    }
    0
}

/// A refusal that cannot be carried out: framing stops and the connection is reset.
#[inline(always)]
fn fail(s: &mut ModbusScratch, reason: Reason) -> u64 {
    s.reason = reason as u8;
    s.fail = 1;
    1
}

/// Malformed rather than forbidden.
#[inline(always)]
fn is_sanity(reason: u8) -> bool {
    reason == Reason::ModbusBadLength as u8
        || reason == Reason::ModbusBadProtocolId as u8
        || reason == Reason::ModbusBadQuantity as u8
        || reason == Reason::ModbusBadValue as u8
}

/// Copies `len` payload bytes at frame offset `offset` into the scratch buffer at `at`.
#[inline(always)]
fn load_prefix(
    ctx: &XdpContext,
    offset: u32,
    scratch: *mut ModbusScratch,
    at: u32,
    len: u32,
) -> bool {
    // Laundered so that the checks below stay on the registers the helper gets: the verifier
    // needs `len` >= 1 and `at + len` inside the buffer, and LLVM would otherwise fold these
    // checks into earlier ones about other registers.
    // SAFETY: volatile reads of locals initialised here.
    let (at, len) = unsafe {
        (
            core::ptr::read_volatile(&at),
            core::ptr::read_volatile(&len),
        )
    };
    if at > CARRY_MAX as u32 || len == 0 || len > PREFIX_MAX as u32 {
        return false;
    }
    // LLVM turns the check above into a range test on a copy of `len`; re-read it and give the
    // verifier a form it can bound on its own: 1..=32, equal to `len` for 1..=17.
    // SAFETY: as above.
    let len = ((unsafe { core::ptr::read_volatile(&len) } - 1) & 31) + 1;
    // SAFETY: `at` <= CARRY_MAX: the buffer's address plus at most 16.
    let dst = unsafe { (*scratch).buf.as_mut_ptr().add(at as usize) };
    // A prefix of 8 bytes or more (every ADU's but a segment's last few bytes) is copied straight
    // from the packet.
    // SAFETY: `at + len` <= CARRY_MAX + PREFIX_MAX, inside the 64-byte scratch buffer.
    if unsafe { copy_short(ctx, offset, dst, len) } {
        return true;
    }
    // SAFETY: `at + len` <= CARRY_MAX + PREFIX_MAX, inside the 64-byte scratch buffer; the
    // helper checks the packet side.
    unsafe { bpf_xdp_load_bytes(ctx.ctx, offset, dst as *mut c_void, len) == 0 }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn note_adu(
    s: &mut ModbusScratch,
    unit: u8,
    function: u8,
    kind: u8,
    reason: u8,
    address: u16,
    quantity: u16,
    sub: u16,
) {
    let n = s.adus;
    if n as usize >= MAX_ADUS {
        return;
    }
    if let Some(t) = MODBUS_ADUS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only; n < MAX_ADUS.
        unsafe {
            (*t).adus[n as usize] = AduRecord {
                unit,
                function,
                kind,
                reason,
                address,
                quantity,
                sub,
                _pad: 0,
            };
            (*t).count = n + 1;
        }
    }
    s.adus = n + 1;
}

/// Counts the recorded ADUs by conduit, function and the verdict their segment got. A segment
/// of one ADU (most of a poller's traffic) is counted inline; more go through
/// `otfw_modbus_count_all`, whose loop is verified once: the call and its return cost about as
/// much as the count itself.
#[inline(always)]
fn count_adus(acc: &Accounted, adus: u32) {
    let packed = acc.slot as u64 | (acc.verdict as u64) << 8 | (acc.conduit as u64) << 16;
    if adus == 1 {
        if let Some(t) = MODBUS_ADUS.get_ptr(0) {
            // SAFETY: per-CPU slot, this CPU only.
            let a = unsafe { &(*t).adus[0] };
            count(adu_counter(a, packed), 1);
        }
    } else if adus != 0 {
        otfw_modbus_count_all(packed, adus as u64);
    }
}

/// The `MODBUS_STATS` counter (packed as `ModbusStatKey::packed` packs it) of ADU `a` of a
/// segment whose slot, verdict and conduit are packed as `count_adus` packs them.
#[inline(always)]
fn adu_counter(a: &AduRecord, packed: u64) -> u64 {
    let slot = packed as u8;
    let verdict = (packed >> 8) as u8;
    let conduit = (packed >> 16) as u16;
    let (kind, detail) = if a.kind != ADU_REQUEST {
        (
            a.kind,
            if a.kind == KIND_EXCEPTION {
                a.sub as u8
            } else {
                0
            },
        )
    } else if (verdict == VERDICT_MONITOR as u8 || verdict == VERDICT_REFUSE as u8)
        && a.reason == Reason::None as u8
    {
        (VERDICT_PASS as u8, 0)
    } else if verdict == VERDICT_REFUSE as u8 {
        (KIND_REFUSE, 0)
    } else {
        (verdict, 0)
    };
    slot as u64
        | (a.function as u64) << 8
        | (kind as u64) << 16
        | (detail as u64) << 24
        | (conduit as u64) << 32
}

/// The loop of `count_adus` as a global function: verified once.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_modbus_count_all(packed: u64, adus: u64) -> u64 {
    let Some(t) = MODBUS_ADUS.get_ptr(0) else {
        return 0;
    };
    let Some(c) = MODBUS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU slot, this CPU only; the framing that used the scratch is done.
    unsafe { (*c).count_run = 0 };
    for i in 0..MAX_ADUS {
        if i as u64 >= adus {
            break;
        }
        // SAFETY: per-CPU slot, this CPU only.
        let key = adu_counter(unsafe { &(*t).adus[i] }, packed);
        // Batched: a run of ADUs with the same counter (pipelined polls of one function) is
        // one map update.
        // SAFETY: as above.
        unsafe {
            let pending = (*c).count_key[0] as u64 | ((*c).count_key[1] as u64) << 32;
            if (*c).count_run != 0 && key != pending {
                count(pending, (*c).count_run as u64);
                (*c).count_run = 0;
            }
            (*c).count_key = [key as u32, (key >> 32) as u32];
            (*c).count_run += 1;
        }
    }
    // SAFETY: as above.
    unsafe {
        if (*c).count_run != 0 {
            let pending = (*c).count_key[0] as u64 | ((*c).count_key[1] as u64) << 32;
            count(pending, (*c).count_run as u64);
        }
    }
    0
}

/// Adds `n` to one `MODBUS_STATS` counter of the packet's generation (through this CPU's memo,
/// `stats::add_memoized`); the key is packed as `ModbusStatKey::packed` packs it.
#[inline(always)]
fn count(packed: u64, n: u64) {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return;
    };
    // SAFETY: the packet's per-CPU context, only read.
    let epoch = unsafe { (*ic).epoch };
    stats::add_memoized(
        (&MODBUS_COUNT_MEMO, &MODBUS_STATS),
        [packed, 0],
        epoch,
        n,
        |key| ModbusStatKey::unpacked(key[0]),
    );
}

/// Sends one denied-request event; counts it as lost when the ring buffer is full.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_modbus_event(a: u64, b: u64) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return 0;
    };
    match MODBUS_EVENTS.reserve::<ModbusEvent>(0) {
        Some(mut entry) => {
            // SAFETY: the context was written by the main program for this packet.
            let key = unsafe { (*ic).key };
            entry.write(ModbusEvent {
                key,
                epoch: (b >> 32) as u32,
                conduit: (a >> 48) as u16,
                unit: (a >> 16) as u8,
                function: (a >> 24) as u8,
                sub: (a >> 32) as u16,
                address: b as u16,
                quantity: (b >> 16) as u16,
                reason: a as u8,
                verdict: (a >> 8) as u8,
            });
            entry.submit(0);
        }
        None => {
            if let Some(n) = MODBUS_COUNTS.get_ptr_mut(COUNT_EVENTS_LOST) {
                // SAFETY: per-CPU slot, this CPU only.
                unsafe { *n += 1 };
            }
        }
    }
    0
}

/// Bytes of request data (after the function code) needed to decide a request.
#[inline(always)]
fn data_prefix(function: u8) -> u32 {
    match function {
        1..=6 => 4,
        8 | 24 => 2,
        15 | 16 => 5,
        20 | 21 | 43 => 1,
        22 => 6,
        23 => 9,
        _ => 0,
    }
}

/// Decides one ADU from its prefix, as packed scalars. Inlined into `otfw_modbus_step` (a global
/// function, verified once): a call per ADU and its return cost more than passing the scalars.
/// `head`: protocol id << 48 | MBAP length << 32 | unit << 24 | function << 16 | bytes
/// present << 8 | request; `data`: the 8 bytes after the function code, big-endian; `tail`: the
/// ninth. Returns reason | NEED_MORE | address << 16 | quantity << 32 | sub-function << 48. With
/// NEED_MORE, a non-zero reason says the bytes present already cannot start an ADU.
#[inline(always)]
fn decide_adu(rule_index: u64, head: u64, data: u64, tail: u64) -> u64 {
    let protocol = (head >> 48) as u16;
    let mlen = (head >> 32) as u16 as u32;
    let unit = (head >> 24) as u8;
    let function = (head >> 16) as u8;
    let have = (head >> 8) as u8 as u32;
    let request = head & 1 != 0;
    if have >= 4 && protocol != 0 {
        return Reason::ModbusBadProtocolId as u64 | need_more(have, 8);
    }
    if have >= 6 && !(2..=254).contains(&mlen) {
        return Reason::ModbusBadLength as u64 | need_more(have, 8);
    }
    if have < 8 {
        return NEED_MORE;
    }
    let total = mlen + 6;
    if !request {
        if function & 0x80 == 0 {
            return 0;
        }
        if have < 9 && total >= 9 {
            return NEED_MORE;
        }
        // The exception code travels in the sub-function field.
        return (data >> 56) << 48;
    }
    let prefix = 8 + data_prefix(function);
    let needed = if total < prefix { total } else { prefix };
    if have < needed {
        return NEED_MORE;
    }
    let w = |k: u32| (data >> (48 - 16 * k)) as u16;
    let b = |k: u32| (data >> (56 - 8 * k)) as u8;
    let laid_out = total >= prefix;
    let (address, quantity, sub) = if !laid_out {
        (0, 0, 0)
    } else {
        match function {
            1..=4 | 15 | 16 | 23 => (w(0), w(1), 0),
            5 | 6 | 22 => (w(0), 1, 0),
            8 => (0, 0, w(0)),
            43 => (0, 0, b(0) as u16),
            _ => (0, 0, 0),
        }
    };
    let fields = (address as u64) << 16 | (quantity as u64) << 32 | (sub as u64) << 48;
    let reason = match MODBUS_RULES.get(rule_index as u32) {
        Some(rule) if rule.flags & RULE_PRESENT != 0 => check(
            rule, function, unit, mlen, laid_out, address, quantity, sub, data, tail as u8,
        ),
        _ => Reason::ModbusFunctionDenied,
    };
    reason as u64 | fields
}

#[inline(always)]
fn need_more(have: u32, needed: u32) -> u64 {
    if have < needed {
        NEED_MORE
    } else {
        0
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn check(
    rule: &ModbusRule,
    function: u8,
    unit: u8,
    mlen: u32,
    laid_out: bool,
    address: u16,
    quantity: u16,
    sub: u16,
    data: u64,
    tail: u8,
) -> Reason {
    if function == 0 || function >= 128 || !bit(&rule.functions, function as usize) {
        return Reason::ModbusFunctionDenied;
    }
    if !bit(&rule.units, unit as usize) {
        return Reason::ModbusUnitDenied;
    }
    let w = |k: u32| (data >> (48 - 16 * k)) as u16;
    let b = |k: u32| (data >> (56 - 8 * k)) as u8;
    let length = |ok: bool| {
        if ok && laid_out {
            Reason::None
        } else {
            Reason::ModbusBadLength
        }
    };
    let r = match function {
        1 | 2 => length(mlen == 6).or(limit(quantity, 2000)).or_table(
            rule,
            table_of(function),
            address,
            quantity,
        ),
        3 | 4 => length(mlen == 6).or(limit(quantity, 125)).or_table(
            rule,
            table_of(function),
            address,
            quantity,
        ),
        5 => {
            let value = w(1);
            length(mlen == 6)
                .or(if value == 0 || value == 0xff00 {
                    Reason::None
                } else {
                    Reason::ModbusBadValue
                })
                .or_table(rule, TABLE_COILS, address, 1)
        }
        6 => length(mlen == 6).or_table(rule, TABLE_HOLDING_REGISTERS, address, 1),
        7 | 11 | 12 | 17 => length(mlen == 2),
        8 => {
            let allowed = if sub < 64 {
                rule.diagnostics >> sub & 1 != 0
            } else {
                rule.flags & RULE_DIAG_OTHERS != 0
            };
            length(mlen >= 4).or(if allowed {
                Reason::None
            } else {
                Reason::ModbusSubFunctionDenied
            })
        }
        15 => {
            let count = b(4) as u32;
            limit(quantity, 1968)
                .or(counted(count == (quantity as u32 + 7) / 8))
                .or(length(mlen == 7 + count))
                .or_table(rule, TABLE_COILS, address, quantity)
        }
        16 => {
            let count = b(4) as u32;
            limit(quantity, 123)
                .or(counted(count == 2 * quantity as u32))
                .or(length(mlen == 7 + count))
                .or_table(rule, TABLE_HOLDING_REGISTERS, address, quantity)
        }
        20 | 21 => length(mlen >= 3 && mlen == 3 + b(0) as u32),
        22 => length(mlen == 8).or_table(rule, TABLE_HOLDING_REGISTERS, address, 1),
        23 => {
            let write_quantity = w(3);
            let count = tail as u32;
            limit(quantity, 125)
                .or(limit(write_quantity, 121))
                .or(counted(count == 2 * write_quantity as u32))
                .or(length(mlen == 11 + count))
                .or_table(rule, TABLE_HOLDING_REGISTERS, address, quantity)
                .or_table(rule, TABLE_HOLDING_REGISTERS, w(2), write_quantity)
        }
        24 => length(mlen == 4),
        43 => length(mlen >= 3).or(if bit(&rule.mei, sub as usize & 0xff) {
            Reason::None
        } else {
            Reason::ModbusSubFunctionDenied
        }),
        _ => Reason::None,
    };
    r
}

#[inline(always)]
fn table_of(function: u8) -> usize {
    match function {
        1 => TABLE_COILS,
        2 => TABLE_DISCRETE_INPUTS,
        3 => TABLE_HOLDING_REGISTERS,
        _ => TABLE_INPUT_REGISTERS,
    }
}

#[inline(always)]
fn limit(quantity: u16, max: u16) -> Reason {
    if quantity >= 1 && quantity <= max {
        Reason::None
    } else {
        Reason::ModbusBadQuantity
    }
}

#[inline(always)]
fn counted(ok: bool) -> Reason {
    if ok {
        Reason::None
    } else {
        Reason::ModbusBadQuantity
    }
}

/// Chaining of checks: the first failing check gives the reason.
trait Then {
    fn or(self, next: Reason) -> Reason;
    fn or_table(self, rule: &ModbusRule, table: usize, address: u16, quantity: u16) -> Reason;
}

impl Then for Reason {
    #[inline(always)]
    fn or(self, next: Reason) -> Reason {
        if self != Reason::None {
            self
        } else {
            next
        }
    }

    #[inline(always)]
    fn or_table(self, rule: &ModbusRule, table: usize, address: u16, quantity: u16) -> Reason {
        if self != Reason::None {
            return self;
        }
        if contained(rule, table, address, quantity) {
            Reason::None
        } else {
            Reason::ModbusAddressDenied
        }
    }
}

/// The whole range `[address, address + quantity)` lies inside one allowed range of `table`.
#[inline(always)]
fn contained(rule: &ModbusRule, table: usize, address: u16, quantity: u16) -> bool {
    if table >= 4 || rule.flags & (RULE_TABLE_LIMITED << table) == 0 {
        return true;
    }
    let first = address as u32;
    let last = first + quantity as u32 - 1;
    let count = rule.range_count[table] as usize;
    let ranges = &rule.ranges[table];
    for i in 0..MAX_RANGES {
        if i >= count {
            break;
        }
        let r = ranges[i];
        if r.lo as u32 <= first && last <= r.hi as u32 {
            return true;
        }
    }
    false
}

impl stream::Position for ModbusStream {
    const SYNCED: u8 = STREAM_SYNCED;
    const ACKED: u8 = STREAM_ACKED;
    const BOUNDARY: u8 = STREAM_BOUNDARY;
    stream::position_fields!();
    #[inline(always)]
    fn pending(&self) -> bool {
        self.skip != 0 || self.carry_len != 0
    }
    #[inline(always)]
    fn clear(&mut self) {
        *self = ModbusStream::default();
    }
}
