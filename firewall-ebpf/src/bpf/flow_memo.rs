//! Each CPU's memo of busy flows (`BUSY_FLOWS`): after the first packet of a flow in a clock tick
//! has been decided through `FLOWS` (or `EMBRYOS`, for a UDP flow's initiator), the flow's other
//! packets of that tick (from the same side, on the same port) are answered by an array slot and a
//! key compare instead of the clock read, the hash lookups, the idle check and the port check. A
//! flow sending few packets pays a slot compare and a few stores per packet; one sending many saves
//! the lookups on all but the first of each tick. Why a hit is exact:
//! `firewall_common::flow::FlowMemo`.
//!
//! The tick is the kernel's jiffies counter, whose read the verifier inlines as one load (the
//! coarse clock is a helper call). The flow table's times stay coarse nanoseconds: the clock
//! advances on the same timer tick, a moment after the counter, so a flow's `last_seen_ns`
//! written in the tick a memo was made in is at most one tick behind when the memo answers,
//! which no idle timeout (whole seconds) can notice.
//!
//! A hit on a flow without an inspector is counted in the slot (`FlowMemo::packets`), not in
//! the three counter maps a pass is accounted in; the slot's counts go there when it is taken
//! for another lookup (`settle`), and readers add what the slots still hold.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::bpf_jiffies64;

use firewall_common::{
    conduit::INSPECT_NONE,
    fastpath::{GENERATION_CONTROLLER, GENERATION_DATAPATH},
    flow::{
        FlowKeys, FlowMemo, FlowState, MEMO_EMBRYO, MEMO_TO_SERVER, TABLE_EMBRYOS, TABLE_FLOWS,
    },
};

use super::{
    l4::{IPPROTO_TCP, IPPROTO_UDP, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{BUSY_FLOWS, FLOW_GENERATION},
    stats,
};

/// `recall` found the packet's flow (the other bits: counted, to_server, inspect, rule,
/// conduit).
const HIT: u64 = 1 << 63;
/// ... and counted the packet as a pass in the slot: the caller accounts nothing.
const COUNTED: u64 = 1 << 62;

/// A hit's decision, unpacked.
pub struct Recalled {
    pub conduit: u16,
    pub rule: u16,
    pub inspect: u8,
    pub to_server: bool,
    /// The pass is counted (`FlowMemo::packets`).
    pub counted: bool,
}

/// Whether a packet is of the kind memoised: the middle of a TCP flow (a SYN, FIN or RST
/// changes the flow's entry, and is decided through it) or a UDP datagram.
#[inline(always)]
pub fn applies(proto: u8, tcp_flags: u8) -> bool {
    proto == IPPROTO_UDP || (proto == IPPROTO_TCP && tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0)
}

/// `FLOW_GENERATION`'s sum: changes whenever a flow leaves `FLOWS`.
#[inline(always)]
fn generation() -> Option<u64> {
    Some(*FLOW_GENERATION.get(GENERATION_CONTROLLER)? + *FLOW_GENERATION.get(GENERATION_DATAPATH)?)
}

/// Counts a removal from `FLOWS` by the datapath: every memo made before it is stale.
#[inline(always)]
pub fn flow_removed() {
    if let Some(count) = FLOW_GENERATION.get_ptr_mut(GENERATION_DATAPATH) {
        // SAFETY: an array value stays valid for the program's run; the add is atomic against
        // other CPUs doing the same.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, 1) };
    }
}

/// Looks the packet in hand (its canonical key, side and `ifindex`; `applies` holds) up in this
/// CPU's memo. On a hit, sets `keys.table` and `keys.flow_flags` as the `FLOWS` lookup would
/// and returns the decision, packed with `HIT`; a flow without an inspector has the pass
/// counted in the slot (`frame_len` bytes) where `count` allows, marked `COUNTED`. On a miss
/// returns 0 and leaves the slot as a lookup in progress (no epoch; the tick and the
/// generation read now, before the lookup), for `note`, its counts settled.
/// Its answer is one register. Inlined (it has one call site): out of line, its call and return
/// were about 8 ns of the 85 of a tracked segment.
#[inline(always)]
pub fn recall(keys: &mut FlowKeys, epoch: u32, ifindex: u32, frame_len: u32, count: bool) -> u64 {
    let side = keys.side as u8;
    let Some(m) = BUSY_FLOWS.get_ptr_mut(FlowMemo::slot(&keys.canonical, side, ifindex)) else {
        return 0;
    };
    // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
    let m = unsafe { &mut *m };
    let Some(generation) = generation() else {
        settle(m);
        m.epoch = 0;
        return 0;
    };
    // SAFETY: reading the counter has no preconditions.
    let now = unsafe { bpf_jiffies64() };
    if m.epoch == epoch
        && m.tick == now
        && m.generation == generation
        && m.ifindex == ifindex
        && m.side == side
        && same_words(&m.key, &keys.canonical)
    {
        keys.table = if m.marks & MEMO_EMBRYO != 0 {
            TABLE_EMBRYOS
        } else {
            TABLE_FLOWS
        };
        keys.flow_flags = m.flow_flags as u32;
        // An inspected flow's packet is accounted by its inspector.
        let counted = count && m.inspect == INSPECT_NONE;
        if counted {
            m.packets += 1;
            m.bytes += frame_len as u64;
        }
        return HIT
            | (counted as u64) << 62
            | ((m.marks & MEMO_TO_SERVER) as u64) << 40
            | (m.inspect as u64) << 32
            | (m.rule as u64) << 16
            | m.conduit as u64;
    }
    // Whatever the slot held is not this packet's: it is unusable from here on (a later
    // `note` completes it; without one it matches nothing).
    settle(m);
    m.epoch = 0;
    m.generation = generation;
    m.tick = now;
    0
}

/// The decision a `recall` answer stands for, `None` for a miss.
#[inline(always)]
pub fn recalled(answer: u64) -> Option<Recalled> {
    if answer & HIT == 0 {
        return None;
    }
    Some(Recalled {
        conduit: answer as u16,
        rule: (answer >> 16) as u16,
        inspect: (answer >> 32) as u8,
        to_server: (answer >> 40) & 1 != 0,
        counted: answer & COUNTED != 0,
    })
}

/// Adds the passes slot `m` counted to the counter maps and clears them.
#[inline(always)]
fn settle(m: &mut FlowMemo) {
    if m.packets != 0 {
        stats::settle_passes(m);
    }
}

/// Memoises the decision just made through `flow`'s entry (in the table `keys.table` names) for
/// the packet in hand, which `recall` missed in this program run (so the slot holds the tick and
/// the generation read before the lookup). The caller has checked that the entry is the one a
/// hit may stand for: in `FLOWS` (or in `EMBRYOS`, a UDP datagram from the initiator: see
/// `FlowMemo`), decided under `epoch`, the packet's side checked on `ifindex`, its
/// TCP inspector's state marked if it has one, and `last_seen_ns` at the clock's now.
#[inline(always)]
pub fn note(keys: &FlowKeys, epoch: u32, ifindex: u32, flow: &FlowState, to_server: bool) {
    let side = keys.side as u8;
    let Some(m) = BUSY_FLOWS.get_ptr_mut(FlowMemo::slot(&keys.canonical, side, ifindex)) else {
        return;
    };
    // SAFETY: as in `recall`.
    let m = unsafe { &mut *m };
    keys.canonical.copy_into(&mut m.key);
    m.ifindex = ifindex;
    m.side = side;
    m.conduit = flow.conduit;
    m.rule = flow.rule;
    m.inspect = flow.inspect;
    m.flow_flags = flow.flags;
    let direction = if to_server { MEMO_TO_SERVER } else { 0 };
    let table = if keys.table == TABLE_EMBRYOS {
        MEMO_EMBRYO
    } else {
        0
    };
    m.marks = direction | table;
    m.epoch = epoch;
}

/// Whether two memo keys (`FlowKey`, `DenyKey`) are equal, compared as the 8-byte words they
/// are: both are 8-aligned, a multiple of 8 long, and have no padding.
#[inline(always)]
pub fn same_words<T>(a: &T, b: &T) -> bool {
    let (a, b) = (a as *const T as *const u64, b as *const T as *const u64);
    let mut diff = 0;
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: both point to 8-aligned values of `T`; word `i` lies inside.
        diff |= unsafe { a.add(i).read() ^ b.add(i).read() };
    }
    diff == 0
}
