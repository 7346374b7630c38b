//! The stream layer the TCP inspectors (`modbus`, `enip`) share: finding or creating a flow's
//! state (`followed`, `create_missing`), what a segment does to the connection before its
//! payload is framed (`track`: the delivery checks with the per-connection `TcpGuard`, SYN and
//! acknowledgement tracking, flows already refused), where a data segment falls in its stream
//! (`place`: in order, out of order, retransmitted, discarded) and moving past it (`advance`),
//! and the in-place rewrite of a payload byte with its checksum (`otfw_rewrite_byte`), and after
//! framing, the connection's first uses for the inventory (`record_news`). The inspector frames
//! the payload in between. Everything but the byte rewrite (a global function,
//! verified once) is `#[inline(always)]` and generic over the inspector's flow and stream state,
//! so each inspector is compiled (and verified) as its own code.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    cty::c_void,
    helpers::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    maps::LruHashMap,
    programs::XdpContext,
};
use firewall_common::{
    counters::{FLOW_CLOSED, VERDICT_DROP, VERDICT_MONITOR, VERDICT_RESET},
    flow::{FlowKey, FLOW_INSPECTED, TABLE_EMBRYOS},
    modbus::InspectContext,
    reason::Reason,
    stream::{TcpGuard, GUARD_FIN, GUARD_RESET},
};

use super::{
    delivery, flow,
    l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{EMBRYOS, FLOWS, FLOW_KEYS, INSPECT_CTX},
    observe,
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
    /// The last passed segment began and ended at a message boundary (`boundary_seq`,
    /// `next_seq`).
    const BOUNDARY: u8;
    fn flags(&mut self) -> &mut u8;
    fn next_seq(&mut self) -> &mut u32;
    fn boundary_seq(&mut self) -> &mut u32;
    fn acked(&mut self) -> &mut u32;
    /// Bytes of a message are pending: still to skip, or carried undecided.
    fn pending(&self) -> bool;
    /// Forgets the position and what is pending (a new stream starts).
    fn clear(&mut self);
}

/// The field accessors of [`Position`] for a stream state whose fields carry its names
/// (`flags`, `next_seq`, `boundary_seq`, `acked`), as both inspectors' do: their `impl`s only
/// add the flag bits, `pending` and `clear`.
macro_rules! position_fields {
    () => {
        #[inline(always)]
        fn flags(&mut self) -> &mut u8 {
            &mut self.flags
        }
        #[inline(always)]
        fn next_seq(&mut self) -> &mut u32 {
            &mut self.next_seq
        }
        #[inline(always)]
        fn boundary_seq(&mut self) -> &mut u32 {
            &mut self.boundary_seq
        }
        #[inline(always)]
        fn acked(&mut self) -> &mut u32 {
            &mut self.acked
        }
    };
}
pub(crate) use position_fields;

/// Remembers the highest acknowledgement of `stream`, never beyond what was passed.
#[inline(always)]
fn note_ack<S: Position>(stream: &mut S, ack: u32) {
    let flags = *stream.flags();
    if flags & S::SYNCED == 0 || (ack.wrapping_sub(*stream.next_seq()) as i32) > 0 {
        return;
    }
    if flags & S::ACKED == 0 || (ack.wrapping_sub(*stream.acked()) as i32) > 0 {
        *stream.acked() = ack;
        *stream.flags() |= S::ACKED;
    }
}

/// A segment (not a RST) of a flow refused earlier: after a reset (`after_reset`) every segment,
/// either direction, is answered with a RST to its sender (passed in monitor mode); after a drop
/// (`blocked`) every client segment is dropped. Accounts it as `reason` and returns the action, or
/// `None` if the segment is not refused this way.
#[inline(always)]
fn refused(
    ctx: &XdpContext,
    acc: &mut Accounted,
    reason: u8,
    after_reset: bool,
    blocked: bool,
    to_server: bool,
    monitor: bool,
) -> Option<u32> {
    if after_reset {
        return Some(if refusal(ctx, acc, reason, VERDICT_RESET, monitor) {
            xdp_action::XDP_PASS
        } else {
            reset::answer(ctx)
        });
    }
    if to_server && blocked {
        refusal(ctx, acc, reason, VERDICT_DROP, false);
        return Some(xdp_action::XDP_DROP);
    }
    None
}

/// Accounts a segment refused for `reason`: in monitor mode as monitored (it passes, and
/// `true` says so), else with `verdict`, which the caller carries out.
#[inline(always)]
fn refusal(ctx: &XdpContext, acc: &mut Accounted, reason: u8, verdict: u32, monitor: bool) -> bool {
    acc.reason = reason;
    acc.verdict = if monitor { VERDICT_MONITOR } else { verdict };
    stats::record(ctx, acc);
    monitor
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
fn note_delivery(guard: &mut TcpGuard, ic: &InspectContext) {
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

/// An inspector's per-flow state, as the stream layer keeps it.
pub trait FollowedFlow {
    type Stream: Position;
    /// `[requests (client to server), responses]`.
    fn streams(&mut self) -> &mut [Self::Stream; 2];
    fn guard(&mut self) -> &mut TcpGuard;
    /// Flag: every later segment, either side, is answered with a reset (a denial under
    /// `on_deny: reset`, or lost state).
    const RESET: u8;
    /// Flag: every later client segment is dropped (a denial under `on_deny: drop`).
    const BLOCKED: u8;
    fn flow_flags(&mut self) -> &mut u8;
    /// The server's SYN-ACK starts the state: the client's stream starts at `ack`, what it
    /// acknowledges.
    fn started_by_syn_ack(&mut self, ack: u32);
    /// A client SYN starts a new connection on the flow's addresses and ports: nothing of the
    /// old one applies.
    fn new_connection(&mut self);
}

/// The body of an inspector's out-of-line `otfw_*_missing`: the flow has no state in `flows`;
/// decides what that means (`missing`) and creates the state where it is to be kept, from
/// `fresh` (zeroed state; `None` if it cannot be had). Returns `MISSING_*`; for
/// `MISSING_LOST` the new state answers every later segment with a reset (unless `monitor`).
/// State that cannot be stored is reported as missing all the same (the caller finds none).
#[inline(always)]
pub fn create_missing<F: FollowedFlow>(
    flows: &LruHashMap<FlowKey, F>,
    fresh: impl FnOnce() -> Option<*const F>,
    monitor: u64,
) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return MISSING_CREATE;
    };
    // SAFETY: per-CPU context for this packet, only read.
    let ic = unsafe { &*ic };
    let missing = missing(ic);
    if missing == MISSING_SYN {
        return missing;
    }
    let Some(fresh) = fresh() else {
        return missing;
    };
    // SAFETY: `fresh` points to a value of the map's type, valid for the program's run.
    if unsafe { flows.insert(&ic.key, &*fresh, 0) }.is_err() {
        return missing;
    }
    let Some(flow) = flows.get_ptr_mut(&ic.key) else {
        return MISSING_CREATE;
    };
    // SAFETY: a map value, valid for the program's run.
    start_state(unsafe { &mut *flow }, ic, missing, monitor)
}

/// The packet's flow state in `flows`, created (`create`: the inspector's `otfw_*_missing`,
/// out of line so that it is verified once, not along every path of the framing) where it is
/// missing. `Err(action)`: the segment was decided without state, and accounted.
#[inline(always)]
pub fn followed<'a, F: FollowedFlow>(
    ctx: &XdpContext,
    acc: &mut Accounted,
    ic: &InspectContext,
    flows: &'a LruHashMap<FlowKey, F>,
    create: impl FnOnce(u64) -> u64,
    monitor: bool,
) -> Result<&'a mut F, u32> {
    let mut flow = flows.get_ptr_mut(&ic.key);
    if flow.is_none() {
        match create(monitor as u64) {
            MISSING_SYN => return Err(stateless_syn(ctx, acc, ic, monitor)),
            MISSING_LOST => return Err(lost(ctx, acc, monitor)),
            _ => flow = flows.get_ptr_mut(&ic.key),
        }
    }
    let Some(flow) = flow else {
        acc.reason = Reason::FlowTableFull as u8;
        acc.verdict = VERDICT_DROP;
        stats::record(ctx, acc);
        return Err(xdp_action::XDP_DROP);
    };
    // SAFETY: LRU values stay valid for the program's run; the flow's packets are processed
    // one at a time per CPU, and a race between CPUs on one flow only affects that flow.
    Ok(unsafe { &mut *flow })
}

/// What a segment of a followed flow does before its payload is framed: the delivery checks,
/// a SYN, a flow already refused (`blocked_reason` accounts it), the acknowledgement of the
/// peer's stream. `Some(action)`: the segment is decided (accounted); `None`: its payload is to
/// be framed.
#[inline(always)]
pub fn track<F: FollowedFlow>(
    ctx: &XdpContext,
    acc: &mut Accounted,
    ic: &InspectContext,
    flow: &mut F,
    blocked_reason: u8,
    monitor: bool,
) -> Option<u32> {
    let to_server = ic.to_server != 0;
    let flags = ic.tcp_flags;
    if let Some(action) = refuse_undeliverable(ctx, acc, flow, ic, monitor) {
        return Some(action);
    }
    if flags & TCP_SYN != 0 {
        syn(ic, flow);
        note_delivery(flow.guard(), ic);
        stats::record(ctx, acc);
        return Some(xdp_action::XDP_PASS);
    }
    note_delivery(flow.guard(), ic);
    if flags & TCP_RST == 0 {
        if let Some(action) = refused(
            ctx,
            acc,
            blocked_reason,
            *flow.flow_flags() & F::RESET != 0,
            *flow.flow_flags() & F::BLOCKED != 0,
            to_server,
            monitor,
        ) {
            return Some(action);
        }
    }
    if flags & TCP_ACK != 0 {
        // The acknowledgement covers the other direction's stream.
        note_ack(&mut flow.streams()[to_server as usize], ic.ack);
    }
    // A reset's payload is never delivered.
    if ic.payload_len == 0 || flags & TCP_RST != 0 {
        stats::record(ctx, acc);
        return Some(xdp_action::XDP_PASS);
    }
    None
}

/// A SYN (client) or SYN-ACK (server) fixes where the sender's stream starts. A SYN inside a
/// stream already followed (sequence number just before the next expected byte) changes
/// nothing: otherwise a forged SYN could move the framing into the middle of a message.
#[inline(always)]
fn syn<F: FollowedFlow>(ic: &InspectContext, flow: &mut F) {
    // Data on a SYN never gets here: `delivery` refuses it (`tcp_data_on_syn`).
    let to_server = ic.to_server != 0;
    let side = (!to_server) as usize;
    let start = ic.seq.wrapping_add(1);
    let st = &mut flow.streams()[side];
    if *st.flags() & <F::Stream as Position>::SYNCED != 0 && *st.next_seq() == start {
        return;
    }
    if to_server {
        flow.new_connection();
    }
    let st = &mut flow.streams()[side];
    st.clear();
    *st.next_seq() = start;
    *st.flags() = <F::Stream as Position>::SYNCED;
}

/// How one segment's payload is to be framed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// In order: the stream advances past the segment.
    Advance,
    /// First data of a stream with unknown framing: must be whole messages; syncs the stream.
    Sync,
    /// Bytes already passed, re-sent from a known boundary: must be whole messages; no change.
    Recheck,
}

/// Where a data segment falls in its stream (`place`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Frame the payload from the offset, then commit as said.
    Frame(Commit, u32),
    /// Wholly acknowledged already: the receiver discards every byte of it.
    Discarded,
    /// Beyond the next byte expected: a segment before it is missing.
    OutOfOrder,
    /// Bytes already passed, sent again other than as the last segment from a boundary: what
    /// the receiver makes of them cannot be known.
    Retransmission,
}

/// Places a data segment in its stream. Bytes already passed are framed again only as a
/// whole segment from a boundary (`Recheck`), or skipped when the receiver has acknowledged
/// them (it discards them).
#[inline(always)]
pub fn place<S: Position>(st: &mut S, ic: &InspectContext) -> Placement {
    let seq = ic.seq;
    let end = seq.wrapping_add(ic.payload_len);
    let flags = *st.flags();
    if flags & S::SYNCED == 0 {
        return Placement::Frame(Commit::Sync, 0);
    }
    let next = *st.next_seq();
    let diff = seq.wrapping_sub(next) as i32;
    let acked = flags & S::ACKED != 0;
    if diff == 0 {
        Placement::Frame(Commit::Advance, 0)
    } else if diff > 0 {
        Placement::OutOfOrder
    } else if acked && (st.acked().wrapping_sub(end) as i32) >= 0 {
        Placement::Discarded
    } else if (end.wrapping_sub(next) as i32) <= 0 {
        if flags & S::BOUNDARY != 0 && seq == *st.boundary_seq() && end == next && !st.pending() {
            Placement::Frame(Commit::Recheck, 0)
        } else {
            Placement::Retransmission
        }
    } else if acked && (st.acked().wrapping_sub(next) as i32) >= 0 {
        // The old part is acknowledged and discarded by the receiver: frame the new part.
        Placement::Frame(Commit::Advance, next.wrapping_sub(seq))
    } else {
        Placement::Retransmission
    }
}

/// Where framing of a payload of `len` bytes goes on from `pos`: past the `skip` bytes still to
/// come of a message already decided (`skip` keeps what this payload does not hold). `None`:
/// every byte of the payload is framed.
#[inline(always)]
pub fn next_message(len: u32, pos: u32, skip: &mut u32) -> Option<u32> {
    let mut pos = if pos > len { len } else { pos };
    if *skip > 0 {
        let rest = len - pos;
        if *skip >= rest {
            *skip -= rest;
            return None;
        }
        pos += *skip;
        *skip = 0;
    }
    if pos >= len {
        None
    } else {
        Some(pos)
    }
}

/// Moves `st` past a segment that passed framed as `Sync` or `Advance` (a `Recheck` changes
/// nothing): it began at a message boundary (`from_boundary`: framed from its first byte with
/// nothing pending) and ended at one (`to_boundary`). What is pending is the inspector's.
#[inline(always)]
pub fn advance<S: Position>(
    st: &mut S,
    ic: &InspectContext,
    commit: Commit,
    from_boundary: bool,
    to_boundary: bool,
) {
    *st.next_seq() = ic.seq.wrapping_add(ic.payload_len);
    *st.flags() |= S::SYNCED;
    if commit == Commit::Sync {
        *st.flags() &= !S::ACKED;
    }
    if from_boundary && to_boundary {
        *st.boundary_seq() = ic.seq;
        *st.flags() |= S::BOUNDARY;
    } else {
        *st.flags() &= !S::BOUNDARY;
    }
}

/// Prepares state just created for the packet's flow (`missing` said `missing`): marks the
/// flow as followed, and either starts the streams at a SYN-ACK or, for lost state, arranges
/// the reset (unless `monitor`). Returns `missing`.
#[inline(always)]
fn start_state<F: FollowedFlow>(
    flow: &mut F,
    ic: &InspectContext,
    missing: u64,
    monitor: u64,
) -> u64 {
    mark_inspected();
    if missing == MISSING_LOST {
        if monitor == 0 {
            *flow.flow_flags() |= F::RESET;
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
fn stateless_syn(ctx: &XdpContext, acc: &mut Accounted, ic: &InspectContext, monitor: bool) -> u32 {
    if ic.payload_len == 0 {
        stats::record(ctx, acc);
        return xdp_action::XDP_PASS;
    }
    let reason = Reason::TcpDataOnSyn as u8;
    if refusal(ctx, acc, reason, VERDICT_DROP, monitor) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// A segment of a flow whose inspector state was lost (`Missing::Lost`): the connection is
/// reset (the segment goes on as a RST to its receiver; the caller marks the fresh state so
/// that later segments of either side are answered with RSTs). In monitor mode it passes and
/// the fresh state resynchronises, as for a flow adopted mid-stream.
#[inline(always)]
fn lost(ctx: &XdpContext, acc: &mut Accounted, monitor: bool) -> u32 {
    let reason = Reason::InspectorStateLost as u8;
    if refusal(ctx, acc, reason, VERDICT_RESET, monitor) {
        xdp_action::XDP_PASS
    } else {
        reset::forward(ctx)
    }
}

/// Refuses a segment the receiver would not deliver as framed (`undeliverable`), accounting
/// it; `None` if it would be delivered. Dropped, never reset (it may be forged) and the flow is
/// not blocked (the sender's own retransmission may be fine). In monitor mode it passes
/// unframed, and `stream`, the direction it would have moved, resynchronises on a later
/// segment.
#[inline(always)]
fn refuse_undeliverable<F: FollowedFlow>(
    ctx: &XdpContext,
    acc: &mut Accounted,
    flow: &mut F,
    ic: &InspectContext,
    monitor: bool,
) -> Option<u32> {
    let reason = undeliverable(ctx, flow.guard(), ic);
    if reason == Reason::None {
        return None;
    }
    if refusal(ctx, acc, reason as u8, VERDICT_DROP, monitor) {
        let stream = &mut flow.streams()[(ic.to_server == 0) as usize];
        *stream.flags() &= !(<F::Stream as Position>::SYNCED | <F::Stream as Position>::BOUNDARY);
        return Some(xdp_action::XDP_PASS);
    }
    Some(xdp_action::XDP_DROP)
}

/// `rewrite_byte` on the packet `INSPECT_CTX` describes, as a global function: the verifier
/// checks it once, not once per queued rewrite along every path of the inspector. `packed`:
/// frame offset | new value << 16. 1 if done.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_rewrite_byte(ctx: *mut xdp_md, packed: u64) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return 0;
    };
    if ctx.is_null() {
        return 0;
    }
    let ctx = XdpContext::new(ctx);
    // SAFETY: per-CPU context written by the main program for this packet, only read.
    let ic = unsafe { &*ic };
    rewrite_byte(&ctx, ic, packed as u16 as u32, (packed >> 16) as u8) as u64
}

/// Rewrites the payload byte at frame offset `at` to `value` and updates the TCP checksum
/// incrementally (RFC 1624: HC' = ~(~HC + ~m + m')), so the segment keeps its length and
/// sequence numbers. `m` and `m'` are the 16-bit words holding the byte before and after; the
/// other byte of the word is the same in both and cancels out, so it is taken as 0 (it may be
/// past the end of the segment). False if the byte or the checksum field is outside the frame.
#[inline(always)]
fn rewrite_byte(ctx: &XdpContext, ic: &InspectContext, at: u32, value: u8) -> bool {
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

/// After framing: when a request was its connection's first use of something the inventory
/// lists (the inspector's scratch says so, `news_at` being the payload offset of the first such
/// message), `store` writes the inspector's updated use sets into the flow, looked up again by
/// the packet's key, and the segment is copied for the inventory (`observe::first_use`),
/// whatever the segment's fate: it was seen. Called from a global function of each inspector,
/// whatever there is to do, so that the verifier does not walk the rest of the decision once
/// for each outcome.
#[inline(always)]
pub fn record_news<F>(
    ctx: *mut xdp_md,
    flows: &LruHashMap<FlowKey, F>,
    news_at: Option<u16>,
    store: impl FnOnce(&mut F),
) {
    let (Some(at), Some(ic)) = (news_at, INSPECT_CTX.get_ptr(0)) else {
        return;
    };
    // SAFETY: the per-CPU context of the packet in hand, only read.
    let ic = unsafe { &*ic };
    if let Some(flow) = flows.get_ptr_mut(&ic.key) {
        // SAFETY: LRU values stay valid for the program's run (see `followed`).
        store(unsafe { &mut *flow });
    }
    observe::first_use(ctx, ic.payload, ic.payload_len, at as u32);
}
