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

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    programs::XdpContext,
};

use firewall_common::{
    conduit::{MAX_PROTOCOL_RULES, MODE_MONITOR, ON_DENY_REFUSE, ON_DENY_RESET},
    counters::{VERDICT_DROP, VERDICT_MONITOR, VERDICT_REFUSE, VERDICT_RESET},
    enip::*,
    mem::copy_each,
    modbus::InspectContext,
    reason::Reason,
    stream::TcpGuard,
};

use super::{
    delivery,
    maps::{ENIP_COUNTS, ENIP_FLOWS, ENIP_SCRATCH, ENIP_TRACE, INSPECT_CTX, ZERO_FLOW},
    observe, reset, stats,
    stream::{self, Commit, Placement},
};
use connection::{otfw_enip_close, otfw_enip_open};
use encap::{frame, result, setup};
use trace::{count_records, otfw_enip_refused_events};

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

// Inlined into its program: a call frame of its own would push the deepest chain of
// inspector calls past the verifier's eight frames.
#[inline(always)]
pub fn inspect(ctx: &XdpContext) -> u32 {
    // First, while nothing else is live: a short segment's checksum, summed inline (where
    // `delivery::check` runs, the stack has no room for it, and a call costs more). With a
    // lookup of the context of its own, and for UDP datagrams too (their sum is never read):
    // keeping the pointer for the rest, or testing the protocol first, each grew the entry's
    // frame by 8 bytes, past what its deepest call chain leaves (the datapath tests'
    // `loads_within_the_verifier_budget` fails then).
    if let Some(ic) = INSPECT_CTX.get_ptr_mut(0) {
        // SAFETY: the per-CPU context was written by the main program for this very packet;
        // only this CPU touches it while the program runs.
        delivery::sum_short_segment(ctx, unsafe { &mut *ic });
    }
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the per-CPU context was written by the main program for this very packet; it
    // is only read (by reference: a copy would cost stack the call chain below needs).
    let ic = unsafe { &*ic };
    let (info, mut acc) = stats::inspected(ic);
    let slot = acc.slot;
    let monitor = info.mode == MODE_MONITOR;
    let on_deny_reset = info.on_deny == ON_DENY_RESET;
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
        setup(
            s,
            ic,
            rule_index,
            event_verdict,
            monitor,
            0,
            true,
            false,
            0,
            0,
        );
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

    let flow = match stream::followed(
        ctx,
        &mut acc,
        ic,
        &ENIP_FLOWS,
        |m| otfw_enip_missing(m),
        monitor,
    ) {
        Ok(flow) => flow,
        Err(action) => return action,
    };
    let blocked = Reason::EnipBlocked as u8;
    if let Some(action) = stream::track(ctx, &mut acc, ic, flow, blocked, monitor) {
        return action;
    }
    let to_server = ic.to_server != 0;
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
            commit == Commit::Recheck,
            skip,
            have,
        );
        s.flow_flags = flow_flags;
        s.session = session;
        s.pending = pending;
        s.refuse = (info.on_deny == ON_DENY_REFUSE && !monitor) as u8;
        s.refusals.copy_from(&flow.refusals);
        copy_each(&mut s.commands.bits, &flow.commands.bits);
        copy_each(&mut s.services.pairs, &flow.services.pairs);
        if have != 0 && have <= MSG_MAX {
            s.msg[..MSG_MAX as usize].copy_from_slice(&st.carry);
            if have >= ENCAP_LEN {
                s.need = ENCAP_LEN + b16(s, 2);
            }
        }
        frame(ctx, s as *mut EnipScratch);
        // Before any rewrite: the inventory records what the client sent, and what a device
        // answered to ListIdentity. Only a segment with news or an identity answer pays the
        // call (and its return): `news` and `identity` read as one u16.
        // (Read afresh: the global functions of `frame` set them through their own lookup.)
        // SAFETY: two adjacent u8 fields of the per-CPU scratch this CPU holds, `news` at an
        // even offset (`news_at`, a u16, follows them).
        if unsafe { core::ptr::read_volatile(&s.news as *const u8 as *const u16) } != 0 {
            otfw_enip_news(ctx.ctx);
        }
        let (r, framed) = result(s);
        reason = r;
        denied = s.denied != 0;
        if r == R_NONE || (monitor && framed) {
            committed = true;
            if commit != Commit::Recheck {
                let from_boundary = start == 0 && skip == 0 && have == 0;
                let to_boundary = s.skip == 0 && s.have == 0;
                stream::advance(st, ic, commit, from_boundary, to_boundary);
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
    let mut fail = s.fail;
    if !to_server && reason != R_NONE && fail == R_NONE && flow.refusals.used != 0 {
        // Response framing is lost while a refused request awaits its answer: it cannot be
        // restored.
        fail = Reason::EnipRefusedAnswer as u8;
    }
    if fail == R_NONE && !to_server && reason != R_NONE {
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
    if fail != R_NONE {
        // Fail closed: a refusal that cannot be carried out (or restored) ends the connection.
        flow.flags |= EFLOW_RESET;
        acc.reason = fail;
        acc.verdict = VERDICT_RESET;
        action = reset::forward(ctx);
    } else if reason != R_NONE {
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
        if s.rewrites != 0 && otfw_enip_rewrite(ctx.ctx) == 0 {
            flow.flags |= EFLOW_RESET;
            acc.reason = Reason::EnipRefusedSplit as u8;
            acc.verdict = VERDICT_RESET;
            action = reset::forward(ctx);
        } else {
            if reason == R_NONE && s.refused != 0 {
                // Refused requests were neutralised; the rest of the segment passes untouched.
                acc.reason = s.refused_reason;
                acc.verdict = VERDICT_REFUSE;
                otfw_enip_refused_events();
            }
            if s.recheck == 0 {
                // A retransmission is neutralised (and restored) again; its refusals and
                // messages were recorded when it first passed.
                flow.refusals.copy_from(&s.refusals);
            }
            apply(ic, flow, s);
        }
    }
    count_records(&acc);
    stats::record(ctx, &acc);
    action
}

/// After framing: a request message that was its connection's first use of a command or a
/// (service, class) pair (`EnipScratch::news`) updates the flow's sets and has the segment
/// copied for the inventory (`stream::record_news`); a segment of answers with a ListIdentity
/// reply (`EnipScratch::identity`) is copied as an identity answer.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_news(ctx: *mut xdp_md) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    if s.identity != 0 {
        if let Some(ic) = INSPECT_CTX.get_ptr(0) {
            // SAFETY: the per-CPU context of the packet in hand, only read.
            let ic = unsafe { &*ic };
            observe::identity_answer(ctx, ic.payload, ic.payload_len);
        }
    }
    let news_at = (s.news != 0).then_some(s.news_at);
    stream::record_news(ctx, &ENIP_FLOWS, news_at, |flow: &mut EnipFlow| {
        flow.commands = s.commands;
        flow.services = s.services;
    });
    0
}

/// Applies the byte rewrites framing queued (refused requests neutralised, answers restored).
/// 0 if one is outside the frame (fail closed). A global function: its loop keeps no state on
/// the inspector's stack.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_rewrite(ctx: *mut xdp_md) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    for i in 0..ENIP_REWRITES_MAX {
        if i as u32 >= s.rewrites {
            break;
        }
        let (at, value) = (s.rewrite_at[i], s.rewrite_value[i]);
        if stream::otfw_rewrite_byte(ctx, at as u64 | (value as u64) << 16) == 0 {
            return 0;
        }
    }
    1
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
    // The value is too big for the stack: it is copied from `ZERO_FLOW`, which is never
    // written.
    stream::create_missing(&ENIP_FLOWS, || ZERO_FLOW.get_ptr(0), monitor)
}

impl stream::FollowedFlow for EnipFlow {
    type Stream = EnipStream;

    #[inline(always)]
    fn streams(&mut self) -> &mut [EnipStream; 2] {
        &mut self.streams
    }

    #[inline(always)]
    fn guard(&mut self) -> &mut TcpGuard {
        &mut self.guard
    }

    const RESET: u8 = EFLOW_RESET;
    const BLOCKED: u8 = EFLOW_BLOCKED;

    #[inline(always)]
    fn flow_flags(&mut self) -> &mut u8 {
        &mut self.flags
    }

    /// The connection is also followed from its start (a session must be registered).
    #[inline(always)]
    fn started_by_syn_ack(&mut self, ack: u32) {
        self.flags = EFLOW_SYN;
        self.streams[0].next_seq = ack;
        self.streams[0].flags = ESTREAM_SYNCED;
    }

    /// Its connections stay in `ENIP_CONNS` until they time out or close.
    #[inline(always)]
    fn new_connection(&mut self) {
        self.session = 0;
        self.flags = EFLOW_SYN;
        self.guard = TcpGuard::default();
        self.pending = PendingOpen::default();
        self.conns = [FlowConn::default(); FLOW_CONNS];
        self.refusals = EnipRefusals::default();
        self.commands = Default::default();
        self.services = EnipUses::default();
        stream::Position::clear(&mut self.streams[1]);
    }
}

/// Places a data segment in its stream (`stream::place`): (commit, payload offset to frame
/// from, refusal).
#[inline(always)]
fn place(st: &mut EnipStream, ic: &InspectContext) -> (Commit, u32, u8) {
    match stream::place(st, ic) {
        Placement::Frame(commit, start) => (commit, start, R_NONE),
        // The receiver discards it: framed as nothing.
        Placement::Discarded => (Commit::Recheck, ic.payload_len, R_NONE),
        Placement::OutOfOrder => (Commit::Advance, 0, Reason::EnipOutOfOrder as u8),
        Placement::Retransmission => (Commit::Advance, 0, Reason::EnipRetransmission as u8),
    }
}

impl stream::Position for EnipStream {
    const SYNCED: u8 = ESTREAM_SYNCED;
    const ACKED: u8 = ESTREAM_ACKED;
    const BOUNDARY: u8 = ESTREAM_BOUNDARY;
    stream::position_fields!();
    #[inline(always)]
    fn pending(&self) -> bool {
        self.skip != 0 || self.have != 0
    }
    /// The carry keeps its bytes: `have` says none are held.
    #[inline(always)]
    fn clear(&mut self) {
        self.next_seq = 0;
        self.boundary_seq = 0;
        self.acked = 0;
        self.skip = 0;
        self.have = 0;
        self.flags = 0;
    }
}
