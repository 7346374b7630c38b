//! EtherNet/IP and CIP inspection: the programs `otfw_enip` (TCP and UDP 44818, slot
//! `INSPECT_ENIP`) and `otfw_enip_io` (UDP 2222, slot `INSPECT_ENIP_IO`), tail called by the
//! main program. Every encapsulation message of a segment is assembled in the per-CPU scratch
//! buffer (carrying a message split across segments in `ENIP_FLOWS`) and decided whole: header,
//! session, CPF items, then every CIP request with an explicit work stack for Multiple Service
//! Packet and Unconnected Send nesting. Everything reads the scratch buffer at masked offsets,
//! so the parsers are global functions the verifier checks once. docs/ARCHITECTURE.md states
//! the rules.
//!
//! One module per layer of the protocol, in the order a request is decided: `encap` (framing
//! of encapsulation messages, command and session), `cpf` (the items of SendRRData and
//! SendUnitData), `cip` (services, Multiple Service Packet, Unconnected Send, Forward_Open and
//! Forward_Close), `path` (request and route paths, tag names); `connection` keeps the
//! connections Forward_Open replies open, `io` polices class 1 implicit I/O on them, `trace`
//! records, reports and counts what was decided. This module is the TCP entry and the per-flow
//! stream state.

mod cip;
mod connection;
mod cpf;
mod encap;
mod io;
mod path;
mod trace;

pub use io::inspect_io;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use firewall_common::{
    conduit::{conduit_index, MAX_PROTOCOL_RULES, MODE_MONITOR, ON_DENY_RESET},
    counters::{VERDICT_DROP, VERDICT_MONITOR, VERDICT_PASS, VERDICT_RESET},
    enip::*,
    modbus::InspectContext,
    reason::Reason,
    slot_of,
    stream::TcpGuard,
};

use super::{
    l4::{TCP_ACK, TCP_RST, TCP_SYN},
    maps::{CONDUITS, ENIP_COUNTS, ENIP_FLOWS, ENIP_SCRATCH, ENIP_TRACE, INSPECT_CTX, ZERO_FLOW},
    reset,
    stats::{self, Accounted},
    stream,
};
use connection::{otfw_enip_close, otfw_enip_open};
use encap::{frame, result, setup};
use trace::count_records;

const MASK: u32 = MSG_MAX - 1;

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
