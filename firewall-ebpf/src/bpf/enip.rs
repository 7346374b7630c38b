//! EtherNet/IP and CIP inspection: the programs `otfw_enip` (TCP and UDP 44818, slot
//! `INSPECT_ENIP`) and `otfw_enip_io` (UDP 2222, slot `INSPECT_ENIP_IO`), tail called by the
//! main program. Every encapsulation message of a segment is assembled in the per-CPU scratch
//! buffer (carrying a message split across segments in `ENIP_FLOWS`) and decided whole: header,
//! session, CPF items, then every CIP request with an explicit work stack for Multiple Service
//! Packet and Unconnected Send nesting. Everything reads the scratch buffer at masked offsets,
//! so the parsers are global functions the verifier checks once. docs/ARCHITECTURE.md states
//! the rules.

use aya_ebpf::{
    bindings::xdp_action,
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};

use firewall_common::{
    conduit::{conduit_index, MAX_PROTOCOL_RULES, MODE_MONITOR, ON_DENY_RESET},
    counters::{VERDICT_DROP, VERDICT_MONITOR, VERDICT_PASS, VERDICT_RESET},
    enip::*,
    modbus::{bit, InspectContext},
    reason::Reason,
    slot_of,
    stream::TcpGuard,
};

use super::{
    l4::{TCP_ACK, TCP_RST, TCP_SYN},
    maps::{
        CONDUITS, ENIP_CLASSES, ENIP_CONNS, ENIP_COUNTS, ENIP_EVENTS, ENIP_FLOWS, ENIP_RULES,
        ENIP_SCRATCH, ENIP_STATS, ENIP_TAGS, ENIP_TRACE, INSPECT_CTX, ZERO_FLOW,
    },
    reset,
    stats::{self, Accounted},
    stream,
};

const MASK: u32 = MSG_MAX - 1;
/// Rounds of the framing loop: a message needs at most two loads (header, then body).
const ROUNDS: u32 = 2 * MAX_MESSAGES + 2;
const R_NONE: u8 = Reason::None as u8;

#[inline(always)]
fn b8(s: &EnipScratch, off: u32) -> u32 {
    s.msg[(off & MASK) as usize] as u32
}

#[inline(always)]
fn b16(s: &EnipScratch, off: u32) -> u32 {
    let o = (off & MASK) as usize;
    u16::from_le_bytes([s.msg[o], s.msg[o + 1]]) as u32
}

#[inline(always)]
fn b32(s: &EnipScratch, off: u32) -> u32 {
    let o = (off & MASK) as usize;
    u32::from_le_bytes([s.msg[o], s.msg[o + 1], s.msg[o + 2], s.msg[o + 3]])
}

/// `v & mask`, computed on a laundered copy: LLVM otherwise merges the mask with earlier range
/// checks on another register, and the verifier loses the bound.
#[inline(always)]
fn masked(v: u32, mask: u32) -> usize {
    // SAFETY: a volatile read of a local.
    (unsafe { core::ptr::read_volatile(&v) } & mask) as usize
}

#[inline(always)]
fn scratch() -> Option<&'static mut EnipScratch> {
    // SAFETY: per-CPU scratch, used by this CPU only for this program run.
    ENIP_SCRATCH.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// How a segment is to be framed (as for Modbus).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    Advance,
    Sync,
    Recheck,
}

// Inlined into its program: a call frame of its own would push the deepest chain of
// inspector calls past the verifier's eight frames.
#[inline(always)]
pub fn inspect(ctx: &XdpContext) -> u32 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the per-CPU context was written by the main program for this very packet; it
    // is only read (by reference: a copy would cost stack the call chain below needs).
    let ic = unsafe { &*ic };
    let slot = slot_of(ic.epoch);
    let info = CONDUITS
        .get(conduit_index(slot, ic.conduit))
        .copied()
        .unwrap_or_default();
    let monitor = info.mode == MODE_MONITOR;
    let on_deny_reset = info.on_deny == ON_DENY_RESET;
    let mut acc = Accounted {
        reason: R_NONE,
        verdict: VERDICT_PASS,
        conduit: ic.conduit,
        slot,
        epoch: ic.epoch,
        trace: ic.trace != 0,
        adus: 0,
        records: 0,
    };
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { (*t).count = 0 };
    }
    let event_verdict = if monitor {
        VERDICT_MONITOR
    } else if on_deny_reset && ic.key.proto == 6 {
        VERDICT_RESET
    } else {
        VERDICT_DROP
    };
    let rule_index = slot * MAX_PROTOCOL_RULES + ic.rule as u32;
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    if ic.key.proto != 6 {
        // UDP 44818: each datagram is whole encapsulation messages; no session, no state.
        if ic.payload_len == 0 {
            stats::record(ctx, &acc);
            return xdp_action::XDP_PASS;
        }
        setup(s, ic, rule_index, event_verdict, monitor, 0, true, 0, 0);
        s.udp = 1;
        frame(ctx, s as *mut EnipScratch);
        let (reason, _) = result(s);
        acc.records = s.records;
        let mut action = xdp_action::XDP_PASS;
        if reason != R_NONE {
            acc.reason = reason;
            if monitor {
                acc.verdict = VERDICT_MONITOR;
            } else {
                acc.verdict = VERDICT_DROP;
                action = xdp_action::XDP_DROP;
            }
        }
        count_records(&acc);
        stats::record(ctx, &acc);
        return action;
    }

    let mut flow = ENIP_FLOWS.get_ptr_mut(&ic.key);
    if flow.is_none() {
        // Out of line: verified once, not along every path of the framing below.
        match otfw_enip_missing(monitor as u64) {
            stream::MISSING_SYN => return stream::stateless_syn(ctx, &mut acc, ic, monitor),
            stream::MISSING_LOST => return stream::lost(ctx, &mut acc, monitor),
            _ => flow = ENIP_FLOWS.get_ptr_mut(&ic.key),
        }
    }
    let Some(flow) = flow else {
        acc.reason = Reason::FlowTableFull as u8;
        acc.verdict = VERDICT_DROP;
        stats::record(ctx, &acc);
        return xdp_action::XDP_DROP;
    };
    // SAFETY: LRU values stay valid for the program's run.
    let flow = unsafe { &mut *flow };
    let to_server = ic.to_server != 0;
    let flags = ic.tcp_flags;
    if let Some(action) = stream::refuse_undeliverable(
        ctx,
        &mut acc,
        &flow.guard,
        ic,
        &mut flow.streams[(!to_server) as usize],
        monitor,
    ) {
        return action;
    }
    if flags & TCP_SYN != 0 {
        let action = syn(ic, flow, to_server);
        stream::note_delivery(&mut flow.guard, ic);
        stats::record(ctx, &acc);
        return action;
    }
    stream::note_delivery(&mut flow.guard, ic);
    if flags & TCP_RST == 0 {
        if let Some(action) = stream::refused(
            ctx,
            &mut acc,
            Reason::EnipBlocked as u8,
            flow.flags & EFLOW_RESET != 0,
            flow.flags & EFLOW_BLOCKED != 0,
            to_server,
            monitor,
        ) {
            return action;
        }
    }
    if flags & TCP_ACK != 0 {
        let peer = if to_server {
            &mut flow.streams[1]
        } else {
            &mut flow.streams[0]
        };
        stream::note_ack(peer, ic.ack);
    }
    if ic.payload_len == 0 || flags & TCP_RST != 0 {
        stats::record(ctx, &acc);
        return xdp_action::XDP_PASS;
    }
    let flow_flags = flow.flags;
    let session = flow.session;
    let pending = flow.pending;
    let st = if to_server {
        &mut flow.streams[0]
    } else {
        &mut flow.streams[1]
    };
    let (commit, start, refusal) = place(st, ic);
    let mut reason = refusal;
    let mut denied = false;
    let mut committed = false;
    if refusal == R_NONE {
        let exact = commit != Commit::Advance;
        let (skip, have) = if exact {
            (0, 0)
        } else {
            (st.skip, st.have as u32)
        };
        setup(
            s,
            ic,
            rule_index,
            event_verdict,
            monitor,
            start,
            exact,
            skip,
            have,
        );
        s.flow_flags = flow_flags;
        s.session = session;
        s.pending = pending;
        if have != 0 && have <= MSG_MAX {
            s.msg[..MSG_MAX as usize].copy_from_slice(&st.carry);
            if have >= ENCAP_LEN {
                s.need = ENCAP_LEN + b16(s, 2);
            }
        }
        frame(ctx, s as *mut EnipScratch);
        let (r, framed) = result(s);
        reason = r;
        denied = s.denied != 0;
        if r == R_NONE || (monitor && framed) {
            committed = true;
            if commit != Commit::Recheck {
                let end = ic.seq.wrapping_add(ic.payload_len);
                let at_boundary = start == 0 && skip == 0 && have == 0;
                let ends_at_boundary = s.skip == 0 && s.have == 0;
                st.next_seq = end;
                st.flags |= ESTREAM_SYNCED;
                if commit == Commit::Sync {
                    st.flags &= !ESTREAM_ACKED;
                }
                if at_boundary && ends_at_boundary {
                    st.boundary_seq = ic.seq;
                    st.flags |= ESTREAM_BOUNDARY;
                } else {
                    st.flags &= !ESTREAM_BOUNDARY;
                }
                st.skip = s.skip;
                let carried = if s.have > MSG_MAX { 0 } else { s.have };
                st.have = carried as u16;
                if carried != 0 {
                    st.carry.copy_from_slice(&s.msg[..MSG_MAX as usize]);
                }
            }
        }
    }
    acc.records = s.records;
    if !to_server && reason != R_NONE {
        // Responses are framed and read, never policed: lost framing resynchronises.
        st.flags &= !(ESTREAM_SYNCED | ESTREAM_BOUNDARY);
        st.have = 0;
        st.skip = 0;
        if let Some(n) = ENIP_COUNTS.get_ptr_mut(ECOUNT_RESPONSES_UNFRAMED) {
            // SAFETY: per-CPU slot, this CPU only.
            unsafe { *n += 1 };
        }
        reason = R_NONE;
        denied = false;
        committed = true;
    }
    let mut action = xdp_action::XDP_PASS;
    if reason != R_NONE {
        acc.reason = reason;
        if monitor {
            acc.verdict = VERDICT_MONITOR;
            if !committed {
                st.flags &= !(ESTREAM_SYNCED | ESTREAM_BOUNDARY);
                st.have = 0;
                st.skip = 0;
            }
        } else if denied && on_deny_reset {
            flow.flags |= EFLOW_RESET;
            acc.verdict = VERDICT_RESET;
            action = reset::forward(ctx);
        } else {
            if denied {
                flow.flags |= EFLOW_BLOCKED;
            }
            acc.verdict = VERDICT_DROP;
            action = xdp_action::XDP_DROP;
        }
    }
    if committed && action == xdp_action::XDP_PASS {
        apply(ic, flow, s);
    }
    count_records(&acc);
    stats::record(ctx, &acc);
    action
}

/// What a passed segment taught: the session handle, a Forward_Open awaiting its reply, a
/// connection opened or closed.
#[inline(always)]
fn apply(ic: &InspectContext, flow: &mut EnipFlow, s: &mut EnipScratch) {
    if s.flow_flags & EFLOW_SESSION != 0 && flow.flags & EFLOW_SESSION == 0 {
        flow.session = s.session;
        flow.flags |= EFLOW_SESSION;
    }
    if s.flow_flags & EFLOW_PENDING != 0 {
        flow.pending = s.pending;
        flow.flags |= EFLOW_PENDING;
    }
    if s.opened_ok != 0 {
        flow.flags &= !EFLOW_PENDING;
        let conn = s.opened;
        let io = flow.pending.class <= 1;
        otfw_enip_open(
            conn.o2t as u64 | (conn.t2o as u64) << 32,
            s.opened_timeout_ns,
            io as u64 | (ic.to_server as u64) << 1,
        );
        let mut slot = FLOW_CONNS - 1;
        for i in 0..FLOW_CONNS {
            if flow.conns[i].o2t == 0 && flow.conns[i].t2o == 0 {
                slot = i;
                break;
            }
        }
        flow.conns[slot] = conn;
    }
    if s.closed_ok != 0 {
        let c = s.closed;
        for i in 0..FLOW_CONNS {
            let f = flow.conns[i];
            if f.serial == c.serial && f.vendor == c.vendor && f.orig_serial == c.orig_serial {
                otfw_enip_close(f.o2t as u64 | (f.t2o as u64) << 32);
                flow.conns[i] = FlowConn::default();
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn setup(
    s: &mut EnipScratch,
    ic: &InspectContext,
    rule_index: u32,
    event_verdict: u32,
    monitor: bool,
    start: u32,
    exact: bool,
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
    s.udp = 0;
    s.exact = exact as u8;
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
    s.opened_ok = 0;
    s.closed_ok = 0;
}

/// The framing loop: its state lives in the scratch map, its work in global functions.
#[inline(always)]
fn frame(ctx: &XdpContext, scratch: *mut EnipScratch) {
    for round in 0..ROUNDS {
        let next = otfw_enip_next();
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
        if otfw_enip_step(take as u64) != 0 {
            break;
        }
    }
}

/// (reason, framed) after the loop.
#[inline(always)]
fn result(s: &EnipScratch) -> (u8, bool) {
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

/// The flow has no state: decides what that means (`stream::missing`) and creates the state
/// where it is to be kept. Returns `stream::MISSING_*`; for `MISSING_LOST` the new state answers
/// every later segment with a reset (unless `monitor`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_missing(monitor: u64) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return stream::MISSING_CREATE;
    };
    // SAFETY: per-CPU context for this packet, only read.
    let ic = unsafe { &*ic };
    let missing = stream::missing(ic);
    if missing == stream::MISSING_SYN {
        return missing;
    }
    let Some(zero) = ZERO_FLOW.get_ptr(0) else {
        return missing;
    };
    // SAFETY: a map value of the right type (the value is too big for the stack: it is copied
    // from `ZERO_FLOW`, which is never written).
    if unsafe { ENIP_FLOWS.insert(&ic.key, &*zero, 0) }.is_err() {
        return missing;
    }
    let Some(flow) = ENIP_FLOWS.get_ptr_mut(&ic.key) else {
        return stream::MISSING_CREATE;
    };
    // SAFETY: a map value, valid for the program's run.
    stream::start_state(unsafe { &mut *flow }, ic, missing, monitor)
}

impl stream::FollowedFlow for EnipFlow {
    fn reset_later(&mut self) {
        self.flags |= EFLOW_RESET;
    }

    /// The connection is also followed from its start (a session must be registered).
    fn started_by_syn_ack(&mut self, ack: u32) {
        self.flags = EFLOW_SYN;
        self.streams[0].next_seq = ack;
        self.streams[0].flags = ESTREAM_SYNCED;
    }
}

#[inline(always)]
fn syn(ic: &InspectContext, flow: &mut EnipFlow, to_server: bool) -> u32 {
    // Data on a SYN never gets here: `delivery` refuses it (`tcp_data_on_syn`).
    let start = ic.seq.wrapping_add(1);
    let dir = if to_server { 0 } else { 1 };
    let st = &mut flow.streams[dir];
    if st.flags & ESTREAM_SYNCED != 0 && st.next_seq == start {
        return xdp_action::XDP_PASS;
    }
    if to_server {
        // A new connection on this 4-tuple: nothing of the old one applies (its connections
        // stay in ENIP_CONNS until they time out or close).
        flow.session = 0;
        flow.flags = EFLOW_SYN;
        flow.guard = TcpGuard::default();
        flow.pending = PendingOpen::default();
        flow.conns = [FlowConn::default(); FLOW_CONNS];
        reset_stream(&mut flow.streams[1]);
    }
    let st = &mut flow.streams[dir];
    reset_stream(st);
    st.next_seq = start;
    st.flags = ESTREAM_SYNCED;
    xdp_action::XDP_PASS
}

#[inline(always)]
fn reset_stream(st: &mut EnipStream) {
    st.next_seq = 0;
    st.boundary_seq = 0;
    st.acked = 0;
    st.skip = 0;
    st.have = 0;
    st.flags = 0;
}

/// Places a data segment in its stream: (commit, payload offset to frame from, refusal).
#[inline(always)]
fn place(st: &EnipStream, ic: &InspectContext) -> (Commit, u32, u8) {
    let seq = ic.seq;
    let end = seq.wrapping_add(ic.payload_len);
    if st.flags & ESTREAM_SYNCED == 0 {
        return (Commit::Sync, 0, R_NONE);
    }
    let diff = seq.wrapping_sub(st.next_seq) as i32;
    let acked = st.flags & ESTREAM_ACKED != 0;
    if diff == 0 {
        (Commit::Advance, 0, R_NONE)
    } else if diff > 0 {
        (Commit::Advance, 0, Reason::EnipOutOfOrder as u8)
    } else if acked && (st.acked.wrapping_sub(end) as i32) >= 0 {
        // Wholly acknowledged: the receiver discards it. Framed as nothing.
        (Commit::Recheck, ic.payload_len, R_NONE)
    } else if (end.wrapping_sub(st.next_seq) as i32) <= 0 {
        if st.flags & ESTREAM_BOUNDARY != 0
            && seq == st.boundary_seq
            && end == st.next_seq
            && st.skip == 0
            && st.have == 0
        {
            (Commit::Recheck, 0, R_NONE)
        } else {
            (Commit::Advance, 0, Reason::EnipRetransmission as u8)
        }
    } else if acked && (st.acked.wrapping_sub(st.next_seq) as i32) >= 0 {
        (Commit::Advance, st.next_seq.wrapping_sub(seq), R_NONE)
    } else {
        (Commit::Advance, 0, Reason::EnipRetransmission as u8)
    }
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
        bpf_xdp_load_bytes(ctx.ctx, offset, dst as *mut c_void, len) == 0
    }
}

/// Where the next bytes come from. Returns 0 when the segment is done, else
/// `offset | at << 32 | take << 48`: load `take` bytes at frame offset `offset` into the
/// message buffer at `at`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_next() -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    let len = s.len;
    let mut pos = s.pos;
    if pos > len {
        pos = len;
    }
    if s.skip > 0 {
        let rest = len - pos;
        if s.skip >= rest {
            s.skip -= rest;
            s.pos = len;
            s.framed = 1;
            return 0;
        }
        pos += s.skip;
        s.skip = 0;
    }
    s.pos = pos;
    if pos >= len {
        s.framed = 1;
        return 0;
    }
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

/// Takes `take` loaded bytes into the current message; decides it when complete. Returns 1
/// when framing of the segment stops (a refusal, or a message continued in the next segment).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_step(take: u64) -> u64 {
    let Some(s) = scratch() else {
        return 1;
    };
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
    }
    0
}

/// Records a refusal: the first reason of the segment, the record's reason, an event.
#[inline(always)]
fn refuse(s: &mut EnipScratch, reason: u8, idx: u32) {
    if s.reason == R_NONE {
        s.reason = reason;
    }
    s.denied = 1;
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        if idx < MAX_RECORDS as u32 {
            // SAFETY: per-CPU slot, this CPU only; idx < MAX_RECORDS.
            unsafe { (*t).records[idx as usize].reason = reason };
        }
    }
    otfw_enip_event(idx as u64 | (reason as u64) << 32);
}

/// Appends a record; returns its index (MAX_RECORDS when the trace is full).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn note(
    s: &mut EnipScratch,
    command: u32,
    kind: u8,
    service: u32,
    class: u32,
    instance: u32,
    depth: u32,
    flags: u8,
) -> u32 {
    let n = s.records;
    if n >= MAX_RECORDS as u32 {
        return MAX_RECORDS as u32;
    }
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only; n < MAX_RECORDS.
        unsafe {
            let r = &mut (*t).records[n as usize];
            r.command = command as u16;
            r.class = class as u16;
            r.instance = instance;
            r.kind = kind;
            r.service = service as u8;
            r.depth = depth as u8;
            r.reason = 0;
            r.flags = flags;
            r.tag_len = 0;
            (*t).count = n + 1;
        }
    }
    s.records = n + 1;
    n
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
    let r = message(s, total, cmd);
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

/// The CPF items of SendRRData / SendUnitData, then the CIP request they carry.
#[inline(always)]
fn cpf(s: &mut EnipScratch, total: u32, connected: bool) -> u8 {
    let bad = Reason::EnipBadCpf as u8;
    if total < ENCAP_LEN + 8 {
        return bad;
    }
    let count = b16(s, 30);
    if !(2..=4).contains(&count) {
        return bad;
    }
    let mut off = 32;
    let mut data_off = 0;
    let mut data_len = 0;
    let mut conn_id = 0;
    for i in 0..4u32 {
        if i >= count {
            break;
        }
        if off + 4 > total {
            return bad;
        }
        let t = b16(s, off) as u16;
        let l = b16(s, off + 2);
        let body = off + 4;
        if body + l > total {
            return bad;
        }
        let ok = match i {
            0 if connected => t == ITEM_CONNECTED_ADDRESS && l == 4,
            0 => t == ITEM_NULL && l == 0,
            1 if connected => t == ITEM_CONNECTED_DATA && l >= 4,
            1 => t == ITEM_UNCONNECTED_DATA && l >= 2,
            _ => (t == ITEM_SOCKADDR_O2T || t == ITEM_SOCKADDR_T2O) && l == 16,
        };
        if !ok {
            return bad;
        }
        if i == 0 && connected {
            conn_id = b32(s, body);
        }
        if i == 1 {
            data_off = body;
            data_len = l;
        }
        off = body + l;
    }
    if off != total {
        return bad;
    }
    if connected {
        let r = otfw_enip_connected(conn_id as u64) as u8;
        if r != R_NONE {
            return r;
        }
        // The sequence count precedes the request.
        data_off += 2;
        data_len -= 2;
    }
    otfw_enip_cip(data_off as u64 | (data_len as u64) << 16) as u8
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
    let key = EnipConnKey {
        client: ic.key.src,
        server: ic.key.dst,
        id: id as u32,
        _pad: 0,
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(c) = ENIP_CONNS.get_ptr_mut(&key) {
        // SAFETY: LRU value, valid for this run.
        let c = unsafe { &mut *c };
        if c.conduit == ic.conduit && now.wrapping_sub(c.last_ns) <= c.timeout_ns {
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

/// Checks the CIP request at `off` (bits 0..16) of length `len` (bits 16..32) and everything
/// nested in it, with an explicit bounded work stack. Returns the first refusal.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_cip(packed: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::CipMalformed as u64;
    };
    s.frame_off[0] = packed as u16;
    s.frame_len[0] = (packed >> 16) as u16;
    s.frame_depth[0] = 0;
    s.frames = 1;
    for _ in 0..MAX_REQUESTS {
        let n = s.frames;
        if n == 0 {
            return 0;
        }
        let i = ((n - 1) as usize) & (MAX_FRAMES - 1);
        s.frames = n - 1;
        let arg =
            s.frame_off[i] as u64 | (s.frame_len[i] as u64) << 16 | (s.frame_depth[i] as u64) << 32;
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
fn push(s: &mut EnipScratch, off: u32, len: u32, depth: u32) -> bool {
    let n = s.frames;
    if n as usize >= MAX_FRAMES || depth >= MAX_DEPTH {
        return false;
    }
    let i = (n as usize) & (MAX_FRAMES - 1);
    s.frame_off[i] = off as u16;
    s.frame_len[i] = len as u16;
    s.frame_depth[i] = depth as u8;
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
    let cmd = b16(s, 0);
    s.requests += 1;
    if s.requests > MAX_REQUESTS {
        return Reason::CipTooDeep as u64;
    }
    if len < 2 {
        let idx = note(s, cmd, REC_CIP, 0, 0, 0, depth, 0);
        let _ = idx;
        return Reason::CipMalformed as u64;
    }
    let service = b8(s, off);
    let psize = b8(s, off + 1) * 2;
    if service & 0x80 != 0 || 2 + psize > len {
        note(s, cmd, REC_CIP, service, 0, 0, depth, 0);
        return Reason::CipMalformed as u64;
    }
    let path = otfw_enip_path((off + 2) as u64 | (psize as u64) << 16);
    let reason = path as u8;
    let flags = (path >> 8) as u8;
    let class = (path >> 16) as u16 as u32;
    let instance = (path >> 32) as u32;
    let idx = note(s, cmd, REC_CIP, service, class, instance, depth, flags);
    if flags & REC_SYMBOLIC != 0 {
        copy_tag(s, idx);
    }
    if reason != R_NONE {
        return reason as u64;
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
        return Reason::CipServiceDenied as u64;
    }
    if rule.flags & ENIP_RULE_TAGS != 0 {
        let tag_service = (SVC_TAG_FIRST as u32..=SVC_TAG_LAST as u32).contains(&service);
        if symbolic {
            if otfw_enip_tag(rule.prefix_lengths) == 0 {
                return Reason::CipTagDenied as u64;
            }
        } else if class == CLASS_SYMBOL as u32 && tag_service {
            // A tag addressed by Symbol instance cannot be matched against names.
            return Reason::CipTagDenied as u64;
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
fn class_allows(s: &EnipScratch, class: u32, service: u32) -> bool {
    let key = EnipClassKey {
        slot: slot_of(s.epoch) as u8,
        _pad: 0,
        rule: s.rule,
        class: class as u16,
        _pad2: 0,
    };
    // SAFETY: a hash map value, read once.
    match unsafe { ENIP_CLASSES.get(&key) } {
        Some(bits) => bit(bits, masked(service, 0x7f)),
        None => false,
    }
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
        if !push(s, data + o, next_start - o, depth + 1) {
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
    if depth + 1 >= MAX_DEPTH || !push(s, data + 4, size, depth + 1) {
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

/// Parses a request path (`off | len << 16`). Returns reason | flags << 8 | class << 16 |
/// instance << 32; the tag name (symbolic segments joined with `.`) goes to `name`. Each
/// segment is parsed by `otfw_enip_segment` (verified once).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_path(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::CipBadPath as u64;
    };
    let start = arg as u16 as u32 & 0x7ff;
    let len = (arg >> 16) as u16 as u32 & 0x7ff;
    let end = start + len;
    s.name_len = 0;
    s.path_flags = 0;
    s.path_class = 0;
    s.path_instance = 0;
    let mut p = start;
    let mut reason = R_NONE;
    for _ in 0..MAX_SEGMENTS {
        if p >= end {
            break;
        }
        let r = otfw_enip_segment(p as u64 | (end as u64) << 16);
        reason = (r >> 32) as u8;
        if reason != R_NONE {
            break;
        }
        p = r as u32 & 0xffff;
    }
    if reason == R_NONE && p != end {
        // More segments than parsed, or a segment running past the path.
        reason = Reason::CipBadPath as u8;
    }
    let Some(s) = scratch() else {
        return Reason::CipBadPath as u64;
    };
    reason as u64
        | (s.path_flags as u64) << 8
        | (s.path_class as u64 & 0xffff) << 16
        | (s.path_instance as u64) << 32
}

/// Parses the path segment at `p` (bits 0..16), the path ending at `end` (bits 16..32).
/// Returns the next segment's offset, or a reason << 32.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_segment(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return (Reason::CipBadPath as u64) << 32;
    };
    let p = arg as u16 as u32 & 0x7ff;
    let end = (arg >> 16) as u16 as u32 & 0xfff;
    let bad = (Reason::CipBadPath as u64) << 32;
    let seg = b8(s, p);
    if seg == 0x91 {
        if p + 2 > end {
            return bad;
        }
        let n = b8(s, p + 1);
        let size = 2 + n + (n & 1);
        if p + size > end || n == 0 || s.path_flags & REC_CLASS != 0 {
            // A class and a tag name: which one is addressed would be a guess.
            return bad;
        }
        s.path_flags |= REC_SYMBOLIC;
        let sep = if s.name_len > 0 { 1 } else { 0 };
        if s.name_len + sep + n > TAG_MAX {
            return (Reason::CipTagTooLong as u64) << 32;
        }
        if sep == 1 {
            let at = (s.name_len & 127) as usize;
            s.name[at] = b'.';
            s.name_len += 1;
        }
        otfw_enip_name((p + 2) as u64 | (n as u64) << 16);
        return (p + size) as u64;
    }
    if seg & 0xE0 != 0x20 {
        // Port, network, data and other segment types do not belong in a request path.
        return bad;
    }
    let (size, value) = match seg & 0x03 {
        0 => (2, b8(s, p + 1)),
        1 => (4, b16(s, p + 2)),
        2 => (6, b32(s, p + 2)),
        _ => return bad,
    };
    if p + size > end {
        return bad;
    }
    match seg & 0x1C {
        0x00 => {
            if s.path_flags & (REC_CLASS | REC_SYMBOLIC) != 0 || value > 0xFFFF {
                return bad;
            }
            s.path_class = value;
            s.path_flags |= REC_CLASS;
        }
        0x04 => {
            if s.path_flags & REC_INSTANCE == 0 {
                s.path_instance = value;
                s.path_flags |= REC_INSTANCE;
            }
        }
        // Member (also array elements after a tag name), connection point, attribute.
        0x08 | 0x0C | 0x10 => {}
        _ => return bad,
    }
    (p + size) as u64
}

/// Appends `n` (bits 16..32) name bytes at `off` (bits 0..16) to the tag name.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_name(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    let off = arg as u16 as u32 & 0x7ff;
    let n = (arg >> 16) as u16 as u32;
    for j in 0..TAG_MAX {
        if j >= n {
            break;
        }
        let at = (s.name_len & 127) as usize;
        s.name[at] = b8(s, off + j) as u8;
        s.name_len += 1;
    }
    0
}

/// Checks a route path (`off | len << 16`): port segments only. Returns 0 when valid.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_route(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let start = arg as u16 as u32 & 0x7ff;
    let end = start + ((arg >> 16) as u16 as u32 & 0x7ff);
    let mut p = start;
    for _ in 0..8 {
        if p >= end {
            break;
        }
        let seg = b8(s, p);
        if seg & 0xE0 != 0 {
            return 1;
        }
        let extended_port = seg & 0x0F == 0x0F;
        let mut size = 1;
        let link = if seg & 0x10 != 0 {
            size += 1;
            b8(s, p + 1)
        } else {
            1
        };
        if extended_port {
            size += 2;
        }
        size += link;
        size += size & 1;
        p += size;
    }
    (p != end) as u64
}

/// Whether the tag name in `name` is allowed by the rule (exact names and `prefix*` patterns
/// as hashes in `ENIP_TAGS`). `prefix_lengths`: the rule's prefix lengths bitmap.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_tag(prefix_lengths: u64) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    let n = s.name_len;
    let slot = slot_of(s.epoch) as u8;
    let mut key = EnipTagKey {
        hash: FNV_OFFSET,
        slot,
        len: 0,
        rule: s.rule,
        _pad: 0,
    };
    let mut h = FNV_OFFSET;
    for i in 0..TAG_MAX as usize {
        if i as u32 >= n {
            break;
        }
        h = tag_hash_step(h, s.name[i]);
        let k = i + 1;
        if k < 64 && prefix_lengths >> k & 1 != 0 {
            key.hash = h;
            key.len = k as u8;
            // SAFETY: a hash map value, only tested for presence.
            if unsafe { ENIP_TAGS.get(&key) }.is_some() {
                return 1;
            }
        }
    }
    key.hash = h;
    key.len = 0;
    // SAFETY: as above.
    unsafe { ENIP_TAGS.get(&key) }.is_some() as u64
}

/// Copies the start of the tag name into record `idx`.
#[inline(always)]
fn copy_tag(s: &EnipScratch, idx: u32) {
    if idx >= MAX_RECORDS as u32 {
        return;
    }
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only; idx < MAX_RECORDS.
        unsafe {
            let r = &mut (*t).records[idx as usize];
            r.tag.copy_from_slice(&s.name[..TAG_KEEP]);
            r.tag_len = if s.name_len > TAG_KEEP as u32 {
                TAG_KEEP as u8
            } else {
                s.name_len as u8
            };
        }
    }
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
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let conn = EnipConn {
        timeout_ns,
        last_ns: now,
        epoch: ic.epoch,
        conduit: ic.conduit,
        rule: ic.rule,
        flags: if io { CONN_IO } else { 0 },
        _pad: [0; 7],
    };
    let mut key = EnipConnKey {
        client: ic.key.src,
        server: ic.key.dst,
        id: ids as u32,
        _pad: 0,
    };
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
    let mut key = EnipConnKey {
        client: ic.key.src,
        server: ic.key.dst,
        id: ids as u32,
        _pad: 0,
    };
    let _ = ENIP_CONNS.remove(&key);
    key.id = (ids >> 32) as u32;
    let _ = ENIP_CONNS.remove(&key);
    0
}

/// Implicit I/O (UDP 2222): a sequenced address item naming a live connection opened with
/// `io` on this conduit, then a connected data item filling the datagram.
pub fn inspect_io(ctx: &XdpContext) -> u32 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the per-CPU context was written by the main program for this very packet.
    let ic = unsafe { *ic };
    let slot = slot_of(ic.epoch);
    let info = CONDUITS
        .get(conduit_index(slot, ic.conduit))
        .copied()
        .unwrap_or_default();
    let mut acc = Accounted {
        reason: R_NONE,
        verdict: VERDICT_PASS,
        conduit: ic.conduit,
        slot,
        epoch: ic.epoch,
        trace: ic.trace != 0,
        adus: 0,
        records: 0,
    };
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { (*t).count = 0 };
    }
    let mut head = [0u8; 18];
    let mut reason = Reason::EnipIoMalformed as u8;
    let mut id = 0u32;
    if ic.payload_len >= 18 && ic.payload_len <= 1500 {
        // SAFETY: 18 bytes into an 18-byte stack buffer; the helper checks the packet side.
        let ok = unsafe {
            bpf_xdp_load_bytes(ctx.ctx, ic.payload, head.as_mut_ptr() as *mut c_void, 18) == 0
        };
        let w = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
        if ok
            && w(0) == 2
            && w(2) == ITEM_SEQUENCED_ADDRESS
            && w(4) == 8
            && w(14) == ITEM_CONNECTED_DATA
            && 18 + w(16) as u32 == ic.payload_len
        {
            id = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
            reason = otfw_enip_io_check(id as u64) as u8;
        }
    }
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe {
            let r = &mut (*t).records[0];
            *r = EnipRecord::default();
            r.kind = REC_IO;
            r.instance = id;
            r.reason = reason;
            (*t).count = 1;
        }
        acc.records = 1;
    }
    let mut action = xdp_action::XDP_PASS;
    if reason != R_NONE {
        acc.reason = reason;
        if info.mode == MODE_MONITOR {
            acc.verdict = VERDICT_MONITOR;
        } else {
            acc.verdict = VERDICT_DROP;
            action = xdp_action::XDP_DROP;
        }
        otfw_enip_event((reason as u64) << 32 | acc.verdict as u64 | 1 << 40);
    }
    count_records(&acc);
    stats::record(ctx, &acc);
    action
}

/// Whether connection `id` is a live implicit I/O pinhole between the flow's endpoints.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_io_check(id: u64) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return Reason::EnipIoNoConnection as u64;
    };
    // SAFETY: per-CPU context for this packet.
    let ic = unsafe { &*ic };
    let key = EnipConnKey {
        client: ic.key.src,
        server: ic.key.dst,
        id: id as u32,
        _pad: 0,
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(c) = ENIP_CONNS.get_ptr_mut(&key) {
        // SAFETY: LRU value, valid for this run.
        let c = unsafe { &mut *c };
        if c.flags & CONN_IO != 0
            && c.conduit == ic.conduit
            && now.wrapping_sub(c.last_ns) <= c.timeout_ns
        {
            c.last_ns = now;
            return 0;
        }
        if now.wrapping_sub(c.last_ns) > c.timeout_ns {
            let _ = ENIP_CONNS.remove(&key);
        }
    }
    Reason::EnipIoNoConnection as u64
}

/// Sends one denied-request event. `a`: record index (bits 0..32) | reason << 32; with bit 40
/// set (implicit I/O), bits 0..8 are the verdict and the record is trace entry 0.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_event(a: u64) -> u64 {
    let (Some(ic), Some(t)) = (INSPECT_CTX.get_ptr(0), ENIP_TRACE.get_ptr(0)) else {
        return 0;
    };
    let io = a >> 40 & 1 != 0;
    let (idx, verdict) = if io {
        (0, a as u8)
    } else {
        let v = scratch().map_or(VERDICT_DROP as u8, |s| s.event_verdict);
        (a as u32, v)
    };
    let reason = (a >> 32) as u8;
    match ENIP_EVENTS.reserve::<EnipEvent>(0) {
        Some(mut entry) => {
            // SAFETY: per-CPU context and trace of this packet.
            let (key, epoch, conduit) = unsafe { ((*ic).key, (*ic).epoch, (*ic).conduit) };
            let mut record = if idx < MAX_RECORDS as u32 {
                // SAFETY: idx < MAX_RECORDS.
                unsafe { (*t).records[idx as usize] }
            } else {
                EnipRecord::default()
            };
            record.reason = reason;
            entry.write(EnipEvent {
                key,
                epoch,
                conduit,
                verdict,
                _pad: 0,
                record,
            });
            entry.submit(0);
        }
        None => {
            if let Some(n) = ENIP_COUNTS.get_ptr_mut(ECOUNT_EVENTS_LOST) {
                // SAFETY: per-CPU slot, this CPU only.
                unsafe { *n += 1 };
            }
        }
    }
    0
}

/// Counts the frame's records by conduit, command, service, class and verdict.
#[inline(always)]
fn count_records(acc: &Accounted) {
    if acc.records != 0 {
        otfw_enip_count_all(
            acc.slot as u64 | (acc.verdict as u64) << 8 | (acc.conduit as u64) << 16,
            acc.records as u64,
        );
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_count_all(packed: u64, records: u64) -> u64 {
    let slot = packed as u8;
    let verdict = (packed >> 8) as u8;
    let conduit = (packed >> 16) as u16;
    let Some(t) = ENIP_TRACE.get_ptr(0) else {
        return 0;
    };
    for i in 0..MAX_RECORDS {
        if i as u64 >= records {
            break;
        }
        // SAFETY: per-CPU slot, this CPU only.
        let r = unsafe { &(*t).records[i] };
        let v = if verdict == VERDICT_MONITOR as u8 && r.reason == R_NONE {
            VERDICT_PASS as u8
        } else {
            verdict
        };
        let class = if r.flags & REC_SYMBOLIC != 0 {
            CLASS_SYMBOL
        } else {
            r.class
        };
        let key = EnipStatKey {
            slot,
            service: r.service,
            verdict: v,
            kind: r.kind,
            conduit,
            class,
            command: r.command,
            _pad: 0,
        };
        if let Some(n) = ENIP_STATS.get_ptr_mut(&key) {
            // SAFETY: per-CPU value, this CPU only.
            unsafe { *n += 1 };
        } else {
            let _ = ENIP_STATS.insert(&key, &1, 0);
        }
    }
    0
}

impl stream::Position for EnipStream {
    const SYNCED: u8 = ESTREAM_SYNCED;
    const ACKED: u8 = ESTREAM_ACKED;
    const BOUNDARY: u8 = ESTREAM_BOUNDARY;
    #[inline(always)]
    fn flags(&mut self) -> &mut u8 {
        &mut self.flags
    }
    #[inline(always)]
    fn next_seq(&self) -> u32 {
        self.next_seq
    }
    #[inline(always)]
    fn acked(&mut self) -> &mut u32 {
        &mut self.acked
    }
}
