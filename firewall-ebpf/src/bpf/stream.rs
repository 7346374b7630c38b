//! What the TCP inspectors (`modbus`, `enip`) share about a stream: remembering the peer's
//! acknowledgement, refusing the segments of a flow already refused, and the per-connection
//! half of the delivery checks (`TcpGuard`: TTL, data after FIN or RST). Everything is
//! `#[inline(always)]` and generic over the inspector's stream state, so each inspector is
//! compiled (and verified) as before.

use aya_ebpf::{
    bindings::xdp_action,
    cty::c_void,
    helpers::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use firewall_common::{
    counters::{FLOW_CLOSED, VERDICT_DROP, VERDICT_MONITOR, VERDICT_RESET},
    flow::{FLOW_INSPECTED, TABLE_EMBRYOS},
    modbus::InspectContext,
    reason::Reason,
    stream::{TcpGuard, GUARD_FIN, GUARD_RESET},
};

use super::{
    delivery, flow,
    l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{EMBRYOS, FLOWS, FLOW_KEYS},
    packet::ptr_at_mut,
    reset,
    stats::{self, Accounted},
};

/// The sequence position of one direction of an inspected stream. Both inspectors use the same
/// flag bits (`STREAM_SYNCED`/`ESTREAM_SYNCED`, `STREAM_ACKED`/`ESTREAM_ACKED`).
pub trait Position {
    /// The stream's start is known (`next_seq` is meaningful).
    const SYNCED: u8;
    /// `acked` holds an acknowledgement of the peer.
    const ACKED: u8;
    /// The last passed segment ended at a message boundary.
    const BOUNDARY: u8;
    fn flags(&mut self) -> &mut u8;
    fn next_seq(&self) -> u32;
    fn acked(&mut self) -> &mut u32;
}

/// Remembers the highest acknowledgement of `stream`, never beyond what was passed.
#[inline(always)]
pub fn note_ack<S: Position>(stream: &mut S, ack: u32) {
    let flags = *stream.flags();
    if flags & S::SYNCED == 0 || (ack.wrapping_sub(stream.next_seq()) as i32) > 0 {
        return;
    }
    if flags & S::ACKED == 0 || (ack.wrapping_sub(*stream.acked()) as i32) > 0 {
        *stream.acked() = ack;
        *stream.flags() |= S::ACKED;
    }
}

/// A segment (not a RST) of a flow refused earlier: after a reset (`after_reset`) every
/// segment, either direction, is answered with a RST to its sender (passed in monitor mode);
/// after a drop (`blocked`) every client segment is dropped. Accounts it as `reason` and returns the
/// action, or `None` if the segment is not refused this way.
#[inline(always)]
pub fn refused(
    ctx: &XdpContext,
    acc: &mut Accounted,
    reason: u8,
    after_reset: bool,
    blocked: bool,
    to_server: bool,
    monitor: bool,
) -> Option<u32> {
    if after_reset {
        acc.reason = reason;
        acc.verdict = if monitor {
            VERDICT_MONITOR
        } else {
            VERDICT_RESET
        };
        stats::record(ctx, acc);
        return Some(if monitor {
            xdp_action::XDP_PASS
        } else {
            reset::answer(ctx)
        });
    }
    if to_server && blocked {
        acc.reason = reason;
        acc.verdict = VERDICT_DROP;
        stats::record(ctx, acc);
        return Some(xdp_action::XDP_DROP);
    }
    None
}

/// Why the receiver would not deliver this segment as the inspector frames it, from the segment
/// (`delivery`) and what the connection did before (`Reason::None` if it would). A SYN is not
/// held to the connection's past: a client SYN that starts a new connection clears the guard
/// (the inspector's `syn`).
#[inline(always)]
pub fn undeliverable(ctx: &XdpContext, guard: &TcpGuard, ic: &InspectContext) -> Reason {
    let stateless = delivery::check(ctx, ic);
    if stateless != Reason::None {
        return stateless;
    }
    let flags = ic.tcp_flags;
    if flags & TCP_SYN != 0 {
        return Reason::None;
    }
    let side = if ic.to_server != 0 { 0 } else { 1 };
    if ic.hop_limit < guard.ttl[side] {
        return Reason::TcpTtlLowered;
    }
    let data = ic.payload_len != 0;
    if data && guard.flags & GUARD_RESET != 0 {
        return Reason::TcpDataAfterRst;
    }
    if guard.flags & (GUARD_FIN << side) != 0 {
        let end = ic.seq.wrapping_add(ic.payload_len);
        let fin = guard.fin_seq[side];
        let beyond = (end.wrapping_sub(fin) as i32) > 0;
        if (data && beyond) || (flags & TCP_FIN != 0 && end != fin) {
            return Reason::TcpDataAfterFin;
        }
    }
    Reason::None
}

/// Records what a segment that passed `undeliverable` tells about the connection.
#[inline(always)]
pub fn note_delivery(guard: &mut TcpGuard, ic: &InspectContext) {
    let side = if ic.to_server != 0 { 0 } else { 1 };
    if ic.hop_limit > guard.ttl[side] {
        guard.ttl[side] = ic.hop_limit;
    }
    let flags = ic.tcp_flags;
    if flags & TCP_FIN != 0 && guard.flags & (GUARD_FIN << side) == 0 {
        guard.fin_seq[side] = ic.seq.wrapping_add(ic.payload_len);
        guard.flags |= GUARD_FIN << side;
    }
    if flags & TCP_RST != 0 {
        guard.flags |= GUARD_RESET;
        // The main program leaves an inspected flow's RST to this check (a forged one must not
        // end tracking): the connection is over for the flow table now.
        // `FLOWS` is keyed canonically: the main program left this packet's key in the
        // scratch entry before the tail call.
        let removed = FLOW_KEYS.get(0).is_some_and(flow::forget);
        if removed {
            stats::flow_event(FLOW_CLOSED);
        }
    }
}

/// What an inspector does with a TCP segment of a flow it keeps no state for (`missing`).
/// Start keeping state: at the server's SYN-ACK (where both streams start, the client's at its
/// acknowledgement number), or on the first segment of a flow adopted mid-stream.
pub const MISSING_CREATE: u64 = 0;
/// A client SYN: nothing is kept until the server answers, so that a SYN flood cannot push the
/// state of working connections out of the inspector's table (`stateless_syn`).
pub const MISSING_SYN: u64 = 1;
/// The state of a flow the inspector was following is gone (evicted): framing cannot be
/// resumed in the middle of the stream without trusting the sender's segment boundaries, so
/// the connection is reset (`lost`, `Reason::InspectorStateLost`).
pub const MISSING_LOST: u64 = 2;

#[inline(always)]
pub fn missing(ic: &InspectContext) -> u64 {
    let flags = ic.tcp_flags;
    if flags & TCP_SYN != 0 {
        return if flags & TCP_ACK == 0 {
            MISSING_SYN
        } else {
            MISSING_CREATE
        };
    }
    let followed = FLOW_KEYS
        .get(0)
        .is_some_and(|keys| keys.flow_flags & FLOW_INSPECTED as u32 != 0);
    if followed {
        MISSING_LOST
    } else {
        MISSING_CREATE
    }
}

/// An inspector's per-flow state, as `start_state` prepares it.
pub trait FollowedFlow {
    /// Every later segment, either side, is to be answered with a reset.
    fn reset_later(&mut self);
    /// The server's SYN-ACK starts the state: the client's stream starts at `ack`, what it
    /// acknowledges.
    fn started_by_syn_ack(&mut self, ack: u32);
}

/// Prepares state just created for the packet's flow (`missing` said `missing`): marks the
/// flow as followed, and either starts the streams at a SYN-ACK or, for lost state, arranges
/// the reset (unless `monitor`). Returns `missing`.
#[inline(always)]
pub fn start_state<F: FollowedFlow>(
    flow: &mut F,
    ic: &InspectContext,
    missing: u64,
    monitor: u64,
) -> u64 {
    mark_inspected();
    if missing == MISSING_LOST {
        if monitor == 0 {
            flow.reset_later();
        }
    } else if ic.tcp_flags & TCP_SYN != 0 {
        flow.started_by_syn_ack(ic.ack);
    }
    missing
}

/// Marks the packet's flow (left in the scratch by the main program) as one whose inspector
/// keeps state: from now on, state that goes missing was lost.
#[inline(always)]
pub fn mark_inspected() {
    let Some(keys) = FLOW_KEYS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, this CPU only, for this packet.
    let keys = unsafe { &mut *keys };
    let entry = if keys.table == TABLE_EMBRYOS {
        EMBRYOS.get_ptr_mut(&keys.canonical)
    } else {
        FLOWS.get_ptr_mut(&keys.canonical)
    };
    if let Some(f) = entry {
        // SAFETY: a map value, valid for the program's run.
        unsafe { (*f).flags |= FLOW_INSPECTED };
        keys.flow_flags |= FLOW_INSPECTED as u32;
    }
}

/// A client SYN of a flow with no inspector state. Without payload it moves nothing the
/// inspector frames (the state starts at the server's SYN-ACK), so the checksum, urgent and TTL
/// checks have nothing to protect: a bad SYN is the receiver's to discard. With payload (TCP
/// Fast Open) it is refused as on a followed flow. Accounts it and returns the action.
#[inline(always)]
pub fn stateless_syn(
    ctx: &XdpContext,
    acc: &mut Accounted,
    ic: &InspectContext,
    monitor: bool,
) -> u32 {
    if ic.payload_len == 0 {
        stats::record(ctx, acc);
        return xdp_action::XDP_PASS;
    }
    acc.reason = Reason::TcpDataOnSyn as u8;
    if monitor {
        acc.verdict = VERDICT_MONITOR;
        stats::record(ctx, acc);
        return xdp_action::XDP_PASS;
    }
    acc.verdict = VERDICT_DROP;
    stats::record(ctx, acc);
    xdp_action::XDP_DROP
}

/// A segment of a flow whose inspector state was lost (`Missing::Lost`): the connection is
/// reset (the segment goes on as a RST to its receiver; the caller marks the fresh state so
/// that later segments of either side are answered with RSTs). In monitor mode it passes and
/// the fresh state resynchronises, as for a flow adopted mid-stream.
#[inline(always)]
pub fn lost(ctx: &XdpContext, acc: &mut Accounted, monitor: bool) -> u32 {
    acc.reason = Reason::InspectorStateLost as u8;
    if monitor {
        acc.verdict = VERDICT_MONITOR;
        stats::record(ctx, acc);
        return xdp_action::XDP_PASS;
    }
    acc.verdict = VERDICT_RESET;
    stats::record(ctx, acc);
    reset::forward(ctx)
}

/// Refuses a segment the receiver would not deliver as framed (`undeliverable`), accounting
/// it; `None` if it would be delivered. Dropped, never reset (it may be forged) and the flow is
/// not blocked (the sender's own retransmission may be fine). In monitor mode it passes
/// unframed, and `stream`, the direction it would have moved, resynchronises on a later
/// segment.
#[inline(always)]
pub fn refuse_undeliverable<S: Position>(
    ctx: &XdpContext,
    acc: &mut Accounted,
    guard: &TcpGuard,
    ic: &InspectContext,
    stream: &mut S,
    monitor: bool,
) -> Option<u32> {
    let reason = undeliverable(ctx, guard, ic);
    if reason == Reason::None {
        return None;
    }
    acc.reason = reason as u8;
    if monitor {
        *stream.flags() &= !(S::SYNCED | S::BOUNDARY);
        acc.verdict = VERDICT_MONITOR;
        stats::record(ctx, acc);
        return Some(xdp_action::XDP_PASS);
    }
    acc.verdict = VERDICT_DROP;
    stats::record(ctx, acc);
    Some(xdp_action::XDP_DROP)
}

/// Rewrites the payload byte at frame offset `at` to `value` and updates the TCP checksum
/// incrementally (RFC 1624: HC' = ~(~HC + ~m + m')), so the segment keeps its length and
/// sequence numbers. `m` and `m'` are the 16-bit words holding the byte before and after; the
/// other byte of the word is the same in both and cancels out, so it is taken as 0 (it may be
/// past the end of the segment). False if the byte or the checksum field is outside the frame.
#[inline(always)]
pub fn rewrite_byte(ctx: &XdpContext, ic: &InspectContext, at: u32, value: u8) -> bool {
    // Offsets below 16 KiB, as the verifier wants for packet pointer arithmetic.
    let header = (ic.payload.wrapping_sub(ic.header_len as u32) & 0x3fff) as usize;
    let at = (at & 0x3fff) as usize;
    if at < header + 20 {
        return false;
    }
    // Words are counted from the TCP header, which starts on an even offset of the checksummed
    // data (the pseudo-header is 12 or 40 bytes): an even distance is a word's high byte.
    let shift = if at.wrapping_sub(header) & 1 == 0 {
        8
    } else {
        0
    };
    let Ok(check) = ptr_at_mut::<[u8; 2]>(ctx, header + 16) else {
        return false;
    };
    // The byte itself through the helpers, which check the bounds: it may be the last of the
    // frame, which a packet pointer check in the form LLVM leaves does not prove to the
    // verifier.
    let mut old = 0u8;
    let mut new = value;
    // SAFETY: one byte into / from locals; the helpers check the frame side.
    unsafe {
        if bpf_xdp_load_bytes(ctx.ctx, at as u32, &mut old as *mut u8 as *mut c_void, 1) != 0
            || bpf_xdp_store_bytes(ctx.ctx, at as u32, &mut new as *mut u8 as *mut c_void, 1) != 0
        {
            return false;
        }
    }
    let (old, new) = ((old as u32) << shift, (new as u32) << shift);
    // SAFETY: `check` was bounds-checked against the frame by `ptr_at_mut`; the helper calls
    // above do not move packet data (they neither grow nor shrink the frame).
    unsafe {
        let sum = !u16::from_be_bytes(*check) as u32 + (!old & 0xffff) + new;
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = (sum & 0xffff) + (sum >> 16);
        *check = (!(sum as u16)).to_be_bytes();
    }
    true
}
