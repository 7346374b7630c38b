//! Events for the controller (denied packets, adopted flows) through the ring buffer `EVENTS`,
//! rate-limited per CPU before the ring is touched, with what was sent and lost counted in
//! `EVENT_STATS`.

use aya_ebpf::{maps::PerCpuArray, programs::XdpContext};

use firewall_common::{
    event::{
        reason_has_tuple, DatapathEvent, EventBucket, EVENTS_RATE_LIMITED, EVENTS_RING_FULL,
        EVENTS_SENT, EVENT_ADOPTED, EVENT_BURST, EVENT_DENIED, EVENT_HAS_TUPLE, EVENT_RATE,
    },
    flow::FlowKey,
};

use super::{
    clock,
    maps::{EVENTS, EVENT_BUCKET, EVENT_STATS, FLOW_KEYS},
    verdict::Decision,
};

const COST_NS: u64 = 1_000_000_000 / EVENT_RATE;
const BURST_NS: u64 = EVENT_BURST * COST_NS;

#[inline(always)]
fn count(index: u32) {
    if let Some(n) = EVENT_STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe { *n += 1 };
    }
}

/// Takes one event's worth of credit from this CPU's bucket; false (and counted) if empty.
#[inline(always)]
fn admit() -> bool {
    if take_credit(&EVENT_BUCKET, COST_NS, BURST_NS) {
        return true;
    }
    count(EVENTS_RATE_LIMITED);
    false
}

/// Takes `cost_ns` of credit from this CPU's entry of a token bucket map (credit grows with
/// time up to `burst_ns`); false if there is not enough. The coarse clock (one tick per jiffy)
/// is enough for rates of at most thousands per second, and a flood of denied frames asks it
/// for every frame: the precise clock would be a measurable share of a denial's cost, and so
/// was the coarse clock's helper call, hence this CPU's reading of it per tick (`clock`).
#[inline(always)]
pub fn take_credit(buckets: &PerCpuArray<EventBucket>, cost_ns: u64, burst_ns: u64) -> bool {
    let Some(bucket) = buckets.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
    let bucket = unsafe { &mut *bucket };
    let now = clock::coarse_ns();
    let credit = bucket
        .credit_ns
        .saturating_add(now.saturating_sub(bucket.last_ns));
    bucket.last_ns = now;
    let credit = if credit > burst_ns { burst_ns } else { credit };
    if credit < cost_ns {
        bucket.credit_ns = credit;
        return false;
    }
    bucket.credit_ns = credit - cost_ns;
    true
}

#[inline(always)]
fn send(event: &DatapathEvent) {
    match EVENTS.reserve::<DatapathEvent>(0) {
        Some(mut entry) => {
            entry.write(*event);
            entry.submit(0);
            count(EVENTS_SENT);
        }
        None => count(EVENTS_RING_FULL),
    }
}

/// A denied packet (any verdict but pass).
#[inline(always)]
pub fn denied(ctx: &XdpContext, d: &Decision) {
    if !admit() {
        return;
    }
    let reason = d.reason as u8;
    let mut event = DatapathEvent {
        epoch: d.epoch,
        // SAFETY: reading the ingress ifindex from the xdp_md context is always allowed.
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        conduit: d.conduit,
        kind: EVENT_DENIED,
        reason,
        verdict: d.verdict as u8,
        ..DatapathEvent::default()
    };
    if reason_has_tuple(reason) {
        if let Some(keys) = FLOW_KEYS.get(0) {
            event.key = keys.forward;
            event.flags = EVENT_HAS_TUPLE;
        }
    }
    send(&event);
}

/// A TCP flow adopted mid-stream. `key` is the packet's tuple; `reverse` when the packet
/// travels to the initiator (the event carries the initiator's direction). Reversed here, into
/// the event, rather than by the caller: another key on the stack would not fit.
#[inline(always)]
pub fn adopted(key: &FlowKey, reverse: bool, epoch: u32, conduit: u16) {
    if !admit() {
        return;
    }
    let mut event = DatapathEvent {
        epoch,
        conduit,
        kind: EVENT_ADOPTED,
        flags: EVENT_HAS_TUPLE,
        ..DatapathEvent::default()
    };
    event.key.proto = key.proto;
    if reverse {
        event.key.src = key.dst;
        event.key.dst = key.src;
        event.key.sport = key.dport;
        event.key.dport = key.sport;
    } else {
        event.key.src = key.src;
        event.key.dst = key.dst;
        event.key.sport = key.sport;
        event.key.dport = key.dport;
    }
    send(&event);
}
