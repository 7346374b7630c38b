//! Frame copies for the controller's inventory (`OBSERVED`) and for `otfw learn --live`
//! (`LEARN_FRAMES`); the record is `firewall_common::observed::ObservedFrame`.
//!
//! Cost per packet that reaches flow tracking, established flows included: two array lookups
//! (`LEARN_UNTIL`, 0 unless learning; the flow tracker's marks in the per-CPU `FLOW_KEYS`) and,
//! unless the packet goes to an inspector that looks itself, a comparison of the source port
//! with 502 and 44818, inline. Only then, for a promotion, a segment with payload from those
//! ports, or while learning, a call of the global function `otfw_observe`: those segments read
//! two payload bytes; only promotions, identity answers and (while learning) learned frames
//! take a clock reading, a bucket's credit or a ring record.
//!
//! The answers of inspected flows (every response of a poll) are their inspector's to look at,
//! where the main program would call `otfw_observe` for each (a response cost about 8% more
//! that way) and cannot afford the read inline after flow tracking (its verification went past
//! the limit): the Modbus inspector reads the two bytes inline ([`inspected_answer`]); the
//! EtherNet/IP inspector, whose entry has no stack to spare (the combined limit of its deepest
//! call chain), copies the ListIdentity replies its framing finds ([`identity_answer`]), over
//! TCP; a UDP datagram's answers are still the main program's.
//!
//! The inspectors call `otfw_observe_use` (through [`first_use`]) for a request segment with its
//! connection's first use of a function, unit, command or service: their per-request cost is a
//! bit test in the flow state they already hold.

use core::intrinsics::{atomic_cxchg, AtomicOrdering};

use aya_ebpf::{
    bindings::xdp_md,
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    maps::{PerCpuArray, RingBuf},
    programs::XdpContext,
};

use firewall_common::{
    conduit::{INSPECT_ENIP, INSPECT_MODBUS},
    event::EventBucket,
    flow::FlowKeys,
    modbus::InspectContext,
    observed::{
        ObservedFrame, ENIP_LIST_IDENTITY, LEARN_COPIED, LEARN_PORTS, LEARN_RING_FULL,
        MODBUS_MEI_FUNCTION, MODBUS_MEI_READ_DEVICE_ID, OBSERVED_BURST, OBSERVED_FLOW_ANSWERED,
        OBSERVED_IDENTITY, OBSERVED_LEARN, OBSERVED_MAX_COPY, OBSERVED_RATE, OBSERVED_RATE_LIMITED,
        OBSERVED_RING_FULL, OBSERVED_SENT, OBSERVED_USE,
    },
    reason::Reason,
};

use super::{
    events::take_credit,
    flow::{OBSERVE_ANSWERED, OBSERVE_UNTRACKED},
    l4::{IPPROTO_TCP, IPPROTO_UDP, L4},
    maps::{
        FLOW_KEYS, LEARN_FRAMES, LEARN_STATS, LEARN_UNTIL, OBSERVED, OBSERVED_BUCKET,
        OBSERVED_STATS, OBSERVED_USES, USES_BUCKET, USES_STATS,
    },
    packet::{frame_len, load},
};

const COST_NS: u64 = 1_000_000_000 / OBSERVED_RATE;
const BURST_NS: u64 = OBSERVED_BURST * COST_NS;

const MODBUS_PORT: u16 = 502;
const ENIP_PORT: u16 = 44818;

/// Whether the inspector a passed packet goes to (`inspect`, `INSPECT_*`) looks for identity
/// answers itself, so that `frame` need not: the Modbus inspector ([`inspected_answer`]) and
/// the EtherNet/IP inspector of a TCP connection (its framing, [`identity_answer`]).
#[inline(always)]
pub fn inspector_looks(inspect: u8, proto: u8) -> bool {
    inspect == INSPECT_MODBUS || (inspect == INSPECT_ENIP && proto == IPPROTO_TCP)
}

/// Copies the frame where it is news for the inventory or for learning. Called after flow
/// tracking, whose keys (`keys`, the per-CPU `FLOW_KEYS` entry: the packet's tuple, and the
/// `flow::OBSERVE_*` marks) describe the packet. `inspector_looks`: the packet goes to an
/// inspector that looks for identity answers itself (`inspected_answer`).
#[inline(always)]
pub fn frame(ctx: &XdpContext, l4: &L4, keys: &FlowKeys, inspector_looks: bool) {
    // What can make the frame news, checked here without a call: a learning deadline set, a
    // segment with payload from an identity port (unless its inspector looks at it), the
    // answer that promoted a flow. The packet of an established flow of other ports (nearly
    // every packet) stops here.
    let learning = LEARN_UNTIL.get(0).is_some_and(|until| *until != 0);
    let identity_port = !inspector_looks
        && l4.payload_len != 0
        && (l4.sport == MODBUS_PORT || l4.sport == ENIP_PORT);
    if !learning && !identity_port && keys.flow_flags & OBSERVE_ANSWERED == 0 {
        return;
    }
    otfw_observe(
        ctx.ctx,
        sizes(ctx, l4.payload as u32, l4.payload_len as u32),
        !inspector_looks as u64,
    );
}

/// An inspector's look at the segment it was handed (`ic`): an answer from an identity port
/// (the server's port is the key's destination) that is an identity answer is copied for the
/// inventory, as the main program copies those of flows it does not hand over. Inline: two
/// payload bytes read; the call only for an identity answer.
#[inline(always)]
pub fn inspected_answer(ctx: &XdpContext, ic: &InspectContext) {
    if ic.to_server != 0 {
        return;
    }
    let (payload, payload_len) = (ic.payload as usize, ic.payload_len as usize);
    if is_identity(ctx, ic.key.proto, ic.key.dport, payload, payload_len) {
        identity_answer(ctx.ctx, ic.payload, ic.payload_len);
    }
}

/// An identity answer an inspector found (`payload_len` bytes at `payload`: by its first bytes,
/// `inspected_answer`, or among the messages it framed): copied for the inventory.
#[inline(always)]
pub fn identity_answer(ctx: *mut xdp_md, payload: u32, payload_len: u32) {
    let sizes = sizes(&XdpContext::new(ctx), payload, payload_len);
    otfw_observe_identity(ctx, sizes);
}

/// A client's request segment with its connection's first use of something (`UseSet`), found
/// by an inspector: `message` is the payload offset of the first message with a new use. Called
/// before the inspector rewrites the segment, so that the copy holds what the client sent.
#[inline(always)]
pub fn first_use(ctx: *mut xdp_md, payload: u32, payload_len: u32, message: u32) {
    let sizes = sizes(&XdpContext::new(ctx), payload, payload_len);
    otfw_observe_use(ctx, sizes, message as u64);
}

/// Packed scalars, as global functions require: `payload offset | payload length << 16 |
/// bytes to copy << 32 | frame length << 48`.
#[inline(always)]
fn sizes(ctx: &XdpContext, payload: u32, payload_len: u32) -> u64 {
    let len = frame_len(ctx);
    let copied = if len > OBSERVED_MAX_COPY as usize {
        OBSERVED_MAX_COPY as u64
    } else {
        len as u64
    };
    let len = if len > u16::MAX as usize {
        u16::MAX as u64
    } else {
        len as u64
    };
    (payload as u64 & 0xffff) | (payload_len as u64 & 0xffff) << 16 | copied << 32 | len << 48
}

/// The work of [`frame`], a global function: the verifier checks it once, not once for every
/// path through the decision before it. `sizes`: see [`sizes`]. Its frame must stay within 32
/// bytes (with the main program's 480, the limit of 512): values are read again from `keys`
/// and `sizes` rather than kept, and nothing is built on the stack. `identity`: whether an
/// identity answer is this function's to copy (not when the packet goes to an inspector that
/// copies it itself: `inspected_answer`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_observe(ctx: *mut xdp_md, sizes: u64, identity: u64) -> u64 {
    let Some(keys) = FLOW_KEYS.get_ptr(0) else {
        return 0;
    };
    // SAFETY: the per-CPU scratch of the packet in hand, only read.
    let keys = unsafe { &*keys };
    let kind = if keys.flow_flags & OBSERVE_ANSWERED != 0 {
        OBSERVED_FLOW_ANSWERED
    } else if identity != 0
        && is_identity(
            // SAFETY: the context the program was given, passed down unchanged.
            &XdpContext::new(ctx),
            keys.forward.proto,
            keys.forward.sport,
            (sizes & 0xffff) as usize,
            ((sizes >> 16) & 0xffff) as usize,
        )
    {
        OBSERVED_IDENTITY
    } else {
        0
    };
    if kind != 0 {
        offer(
            ctx,
            sizes,
            &OBSERVED,
            (&OBSERVED_BUCKET, &OBSERVED_STATS),
            kind,
            0,
        );
    }
    if learning() && learned(keys) {
        let index = if copy(ctx, sizes, &LEARN_FRAMES, OBSERVED_LEARN, 0) {
            LEARN_COPIED
        } else {
            LEARN_RING_FULL
        };
        count(&LEARN_STATS, index);
    }
    0
}

/// The copy of an identity answer found by an inspector (`inspected_answer`), unless the main
/// program copied the frame already as the answer that promoted its flow.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_observe_identity(ctx: *mut xdp_md, sizes: u64) -> u64 {
    let Some(keys) = FLOW_KEYS.get_ptr(0) else {
        return 0;
    };
    // SAFETY: the per-CPU scratch of the packet in hand (the main program's, which tail called
    // this inspector), only read.
    if unsafe { (*keys).flow_flags } & OBSERVE_ANSWERED != 0 {
        return 0;
    }
    offer(
        ctx,
        sizes,
        &OBSERVED,
        (&OBSERVED_BUCKET, &OBSERVED_STATS),
        OBSERVED_IDENTITY,
        0,
    );
    0
}

/// The work of [`first_use`], a global function (called from the inspectors' programs).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_observe_use(ctx: *mut xdp_md, sizes: u64, message: u64) -> u64 {
    offer(
        ctx,
        sizes,
        &OBSERVED_USES,
        (&USES_BUCKET, &USES_STATS),
        OBSERVED_USE,
        message as u16,
    );
    0
}

/// A copy into `ring`, if the token bucket has a credit for it; counted either way.
#[inline(always)]
fn offer(
    ctx: *mut xdp_md,
    sizes: u64,
    ring: &RingBuf,
    (bucket, stats): (&PerCpuArray<EventBucket>, &PerCpuArray<u64>),
    kind: u8,
    message: u16,
) {
    let index = if !take_credit(bucket, COST_NS, BURST_NS) {
        OBSERVED_RATE_LIMITED
    } else if copy(ctx, sizes, ring, kind, message) {
        OBSERVED_SENT
    } else {
        OBSERVED_RING_FULL
    };
    count(stats, index);
}

/// Whether `otfw learn --live` is learning now. A deadline found past is cleared (unless a
/// new one was set meanwhile), so that after it packets pay one lookup again, not a clock read.
#[inline(always)]
fn learning() -> bool {
    let Some(until) = LEARN_UNTIL.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: an array value stays valid for the program's run.
    let deadline = unsafe { *until };
    if deadline == 0 {
        return false;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if now < deadline {
        return true;
    }
    // SAFETY: as above; the compare-and-exchange leaves a deadline written since alone.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            until, deadline, 0,
        )
    };
    false
}

/// What learning copies: frames of no established flow, and every TCP or UDP frame to or from
/// a port of `LEARN_PORTS`.
#[inline(always)]
fn learned(keys: &FlowKeys) -> bool {
    if keys.flow_flags & OBSERVE_UNTRACKED != 0 {
        return true;
    }
    let key = &keys.forward;
    if key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP {
        return false;
    }
    let mut i = 0;
    while i < LEARN_PORTS.len() {
        if key.sport == LEARN_PORTS[i] || key.dport == LEARN_PORTS[i] {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether a segment (`payload_len` bytes at `payload`, from port `sport`) is a Modbus Read
/// Device Identification response (function 0x2B, MEI type 0x0E, after the 7-byte MBAP
/// header) from port 502, or an EtherNet/IP ListIdentity reply (command 0x0063, the first two
/// bytes of the encapsulation header, little-endian) from port 44818, over TCP or UDP.
#[inline(always)]
fn is_identity(
    ctx: &XdpContext,
    proto: u8,
    sport: u16,
    payload: usize,
    payload_len: usize,
) -> bool {
    let modbus = sport == MODBUS_PORT;
    if !modbus && sport != ENIP_PORT {
        return false;
    }
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return false;
    }
    let (at, need) = if modbus {
        (payload + 7, 9)
    } else {
        (payload, 24)
    };
    if payload_len < need {
        return false;
    }
    // Read in place, not by the load helper: the helper's call chain in the kernel was most
    // of the cost of every response from those ports. The offset is masked so that the
    // verifier knows its range (`otfw_tcp_checksum` reads the payload the same way).
    // As one u16 in the byte order it was sent in: no array on the stack.
    let Ok(two) = load::<u16>(ctx, at & 0x3fff, Reason::None) else {
        return false;
    };
    two == if modbus {
        u16::from_ne_bytes([MODBUS_MEI_FUNCTION, MODBUS_MEI_READ_DEVICE_ID])
    } else {
        u16::from_ne_bytes(ENIP_LIST_IDENTITY.to_le_bytes())
    }
}

/// Copies the frame (up to `OBSERVED_MAX_COPY` bytes) into a record of `ring`; false if the
/// ring is full (or the copy failed).
#[inline(always)]
fn copy(ctx: *mut xdp_md, sizes: u64, ring: &RingBuf, kind: u8, message: u16) -> bool {
    let Some(mut entry) = ring.reserve::<ObservedFrame>(0) else {
        return false;
    };
    // Masked here, where LLVM cannot know that the caller clamped it to OBSERVED_MAX_COPY:
    // the verifier sees the bound on the register passed to the helper (the data area holds
    // 2048 bytes).
    let copied = (sizes >> 32) as u32 & 0x7ff;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to the reserved record, ours until submitted or discarded; the
    // copy's length is at most the record's data area (checked above, and by the verifier).
    // Fields are written one by one: a header built first would take stack this function
    // does not have.
    unsafe {
        let header = core::ptr::addr_of_mut!((*record).header);
        (*header).ktime_ns = bpf_ktime_get_ns();
        (*header).ifindex = (*ctx).ingress_ifindex;
        (*header).frame_len = (sizes >> 48) as u16;
        (*header).copied = copied as u16;
        (*header).kind = kind;
        (*header)._pad = 0;
        (*header).message = message;
        (*header)._pad2 = [0; 4];
        if copied == 0
            || bpf_xdp_load_bytes(
                ctx,
                0,
                core::ptr::addr_of_mut!((*record).data) as *mut c_void,
                copied,
            ) != 0
        {
            entry.discard(0);
            return false;
        }
    }
    entry.submit(0);
    true
}

#[inline(always)]
fn count(stats: &PerCpuArray<u64>, index: u32) {
    if let Some(n) = stats.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe { *n += 1 };
    }
}
