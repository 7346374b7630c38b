//! Stateful flows: a conduit admits new flows in its direction only; packets of tracked flows
//! (both directions) pass; TCP flows already running when tracking began are adopted per
//! `defaults.midstream`; flows admitted under an older policy are re-checked against the new one.
//!
//! Flow first: the packet's flow is looked up before anything else, under one key for both
//! directions, and a packet of an established flow arriving where its side was last seen under
//! the policy in force costs that one lookup: no zone resolution. Packets of no flow are
//! decided from zones and conduits, and their denials remembered (`DENIALS`), so that a flood
//! repeating a denied tuple costs one more lookup, not the resolution again.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    programs::XdpContext,
};

use firewall_common::{
    conduit::{PortRule, CONDUIT_NONE, FIRST_CONDUIT, INSPECT_NONE},
    config::{Config, FLAG_HOST_TABLE, FLAG_MIDSTREAM_ADOPT, FLAG_TRACE},
    counters::{
        FLOW_ADOPTED, FLOW_CLOSED, FLOW_CREATED, FLOW_EXPIRED, FLOW_INSERT_FAILED, FLOW_PROMOTED,
        FLOW_REVALIDATED, FLOW_REVOKED, PATH_DENIAL_CACHED, PATH_DENIAL_STORED, PATH_FLOW_HIT,
    },
    flow::{
        Denial, DenialMemo, DenyKey, FlowKeys, FlowState, ZoneFlows, DENIAL_DROP, DENIAL_NO_RESET,
        DENY_TCP_OTHER, DENY_TCP_RST, DENY_TCP_SYN, FLOW_ADOPTED as ADOPTED, FLOW_CHARGED,
        FLOW_INITIATOR_HIGH, FLOW_INSPECTED, FLOW_PORT_CHECKED, SIDE_HIGH, TABLE_EMBRYOS,
        TABLE_FLOWS, TCP_CLOSING, TCP_CLOSING_IDLE_SECS, TCP_ESTABLISHED, TCP_SYN_SENT,
    },
    reason::Reason,
    zone::{zone_index, HostKey, ZoneMatch},
};

use super::{
    conduit, events, flow_memo,
    ip::Ip,
    l4::{
        ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    },
    maps::{DENIALS, EMBRYOS, FLOWS, RECENT_DENIALS, ZONE_FLOWS, ZONE_INFO, ZONE_SWEPT},
    packet::frame_len,
    stats,
    verdict::{self, Action},
    zone,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Marks in `FlowKeys::flow_flags` above the flow's own flags (`FlowState::flags` is a u8),
/// for the inventory and learning (`observe`): the packet is the answer that moved its flow
/// from `EMBRYOS` to `FLOWS` (once per flow)...
pub const OBSERVE_ANSWERED: u32 = 1 << 8;
/// ... or a packet of no established flow (it opened one, was adopted, or was decided without
/// one).
pub const OBSERVE_UNTRACKED: u32 = 1 << 9;

/// What flow tracking decided: `reason` is `Reason::None` for a pass; the conduit is the one to
/// account the packet to. A plain struct, not an enum with payloads: LLVM leaves the unused
/// payload bytes of such enums undefined, and the verifier rejects reads of undefined registers.
#[derive(Clone, Copy)]
pub struct Outcome {
    pub conduit: u16,
    pub reason: Reason,
    /// For a pass of a tracked flow: the flow's inspector (`INSPECT_*`), its protocol rule,
    /// and whether the packet travels from the initiator to the responder.
    pub inspect: u8,
    pub to_server: bool,
    pub rule: u16,
    /// Whether a memo of this CPU already counted the packet.
    pub counted: Counted,
}

/// Whether a memo counted a packet's decision (`Outcome::counted`, `Decision::counted`).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Counted {
    /// Not counted: the main program accounts it.
    No,
    /// Counted: a pass in the flow memo, a drop in the memo of recent denials (whose event is
    /// still offered).
    Yes,
    /// A drop counted in the memo of recent denials, which offered an event for the same
    /// denial in this timer tick already: no event either (the counters have every drop; the
    /// events are samples, at most `EVENT_RATE` per second per CPU, and repeats within a few
    /// milliseconds would tell nothing new).
    Quiet,
}

impl Outcome {
    #[inline(always)]
    pub const fn pass(conduit: u16) -> Outcome {
        Outcome {
            conduit,
            reason: Reason::None,
            inspect: INSPECT_NONE,
            to_server: false,
            rule: 0,
            counted: Counted::No,
        }
    }

    #[inline(always)]
    pub const fn deny(conduit: u16, reason: Reason) -> Outcome {
        Outcome {
            conduit,
            reason,
            inspect: INSPECT_NONE,
            to_server: false,
            rule: 0,
            counted: Counted::No,
        }
    }

    /// A pass of a tracked flow, handed to the flow's inspector.
    #[inline(always)]
    const fn inspected(conduit: u16, inspect: u8, rule: u16, to_server: bool) -> Outcome {
        Outcome {
            conduit,
            reason: Reason::None,
            inspect,
            to_server,
            rule,
            counted: Counted::No,
        }
    }
}

/// The packet's view needed to track it.
pub struct Packet<'a> {
    pub ip: &'a Ip,
    pub l4: &'a L4,
    /// The bridge port it arrived on.
    pub ifindex: u32,
    /// Its context (the flow memo counts the frame's length).
    pub ctx: &'a XdpContext,
}

/// Decides the packet as far as flows and conduits go, writing its keys into `keys` (this CPU's
/// `FLOW_KEYS` entry: per-CPU scratch space, not the 512-byte stack). `Err` is a denial made
/// before any conduit was consulted (a spoofed source), never answered with a reset.
#[inline(always)]
pub fn track(
    slot: u32,
    epoch: u32,
    cfg: &Config,
    pkt: &Packet,
    keys: &mut FlowKeys,
) -> Result<Outcome, Reason> {
    let proto = pkt.ip.proto;
    // Field by field: a plain assignment of the key is an out-of-line `memmove`
    // (`firewall_common::mem`).
    // SAFETY: `Ip` holds its addresses 8-aligned (`repr(C, align(8))`, offsets 0 and 16).
    unsafe { keys.forward.set_addrs(&pkt.ip.src, &pkt.ip.dst) };
    keys.forward
        .set_tail(pkt.l4.sport, pkt.l4.dport, proto, [0; 3]);
    keys.side = 0;
    // A packet of no established flow unless one is found below (`observe`).
    keys.flow_flags = OBSERVE_UNTRACKED;
    // A bare SYN asks the decision cache before anything else: a SYN flood against a denied
    // service is answered with that one lookup (or this CPU's memo of it), before the clock,
    // the canonical key or the flow tables. (Only a bare SYN: it never answers anything, so a
    // remembered denial of its key cannot stand for the answer to a flow someone else opened,
    // which a SYN-ACK or a datagram could; and a denial is remembered only for what zones and
    // conduits decide, which a bare SYN of a tracked flow would be denied by as well: a new
    // connection on that tuple by the initiator was denied the same way, and the responder's
    // SYN is a reverse SYN.)
    let flags = pkt.l4.tcp_flags;
    let cache_checked = proto == IPPROTO_TCP && flags & TCP_SYN != 0 && flags & TCP_ACK == 0;
    // Unlikely for the layout only: the bulk of the traffic is the middle of flows, and with
    // this (inlined) check laid out as the hot path a tracked segment paid 2 ns in registers.
    if core::intrinsics::unlikely(cache_checked) {
        if let Some(decided) = cached(ask_denials(keys, pkt, epoch, !traced(cfg))) {
            return decided;
        }
    }
    let stateful = is_stateful(proto, pkt.l4);
    if stateful {
        let side = keys.forward.canonical_into(&mut keys.canonical);
        keys.side = side as u32;
        if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
            // Echo keys are symmetric (both ports hold the identifier), so only the message
            // type tells the direction: a request belongs to the flow it opened, a reply to
            // the flow of the other side's request. Otherwise the responder could send
            // requests along the initiator's flow.
            let initiator = if pkt.l4.is_echo_reply(proto) {
                side ^ 1
            } else {
                side
            };
            keys.canonical.mark_echo(initiator);
        }
        // A busy flow's packet after the first of this tick: this CPU's memo answers, before
        // the clock is read.
        if flow_memo::applies(proto, flags) {
            // Traced packets are accounted one by one, as `TRACE` records each.
            let count = !traced(cfg);
            let len = frame_len(pkt.ctx) as u32;
            let answer = flow_memo::recall(keys, epoch, pkt.ifindex, len, count);
            if let Some(r) = flow_memo::recalled(answer) {
                if !r.counted {
                    stats::path_event(PATH_FLOW_HIT);
                }
                let mut out = Outcome::inspected(r.conduit, r.inspect, r.rule, r.to_server);
                if r.counted {
                    out.counted = Counted::Yes;
                }
                return Ok(out);
            }
        }
    }
    // The coarse monotonic clock (the time of the last tick): idle timeouts are seconds, and
    // reading it costs a load where the precise clock reads the hardware on every packet.
    // SAFETY: reading the clock has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if stateful {
        // Established flows first: their packets are the traffic. On a miss, the table of
        // flows not answered yet.
        let found = match FLOWS.get_ptr_mut(&keys.canonical) {
            Some(state) => {
                keys.table = TABLE_FLOWS;
                Some(state)
            }
            None => {
                keys.table = TABLE_EMBRYOS;
                EMBRYOS.get_ptr_mut(&keys.canonical)
            }
        };
        if let Some(state) = found {
            // SAFETY: LRU values stay valid for the program's run; concurrent writers on other
            // CPUs only race on plain integer fields, which is harmless for this state.
            let state = unsafe { &mut *state };
            keys.flow_flags = state.flags as u32;
            if let Some(out) = existing(slot, epoch, cfg, pkt, keys, state, now)? {
                return Ok(out);
            }
        }
    }
    if !cache_checked {
        if let Some(decided) = cached(cached_denial(keys, pkt, epoch, !traced(cfg))) {
            return decided;
        }
    }
    let out = admit(slot, epoch, cfg, pkt, keys, now);
    // Opening a flow wrote its flags over the mark.
    keys.flow_flags |= OBSERVE_UNTRACKED;
    out
}

/// TCP, UDP and ICMP echo are tracked; other packets are decided one by one.
#[inline(always)]
fn is_stateful(proto: u8, l4: &L4) -> bool {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => true,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => l4.is_echo_request(proto) || l4.is_echo_reply(proto),
        _ => false,
    }
}

/// The zones of the packet's addresses, with the source's port binding checked. `host` is
/// scratch space for the host table's key.
#[inline(always)]
fn zones(
    slot: u32,
    cfg: &Config,
    pkt: &Packet,
    host: &mut HostKey,
) -> Result<(ZoneMatch, ZoneMatch), Reason> {
    let hosts = cfg.flags & FLAG_HOST_TABLE != 0;
    let src = zone::lookup(slot, hosts, host, pkt.ip.v6, &pkt.ip.src);
    let dst = zone::lookup(slot, hosts, host, pkt.ip.v6, &pkt.ip.dst);
    zone::check_ingress(slot, &src, pkt.ifindex)?;
    Ok((src, dst))
}

/// Whether the packet (its source on canonical side `side`) travels from the initiator.
#[inline(always)]
fn is_forward(flow: &FlowState, side: u32) -> bool {
    (side as u8 & 1) == flow.initiator()
}

/// Whether `side` was seen arriving on `ifindex` under the flow's epoch, zones checked.
#[inline(always)]
fn port_checked(flow: &FlowState, side: u32, ifindex: u32) -> bool {
    let i = (side & 1) as usize;
    flow.flags & (FLOW_PORT_CHECKED << i) != 0 && flow.ports[i] == ifindex
}

/// Records that `side` arrived on `ifindex`, zones checked, under the flow's epoch.
#[inline(always)]
fn note_port(flow: &mut FlowState, side: u32, ifindex: u32) {
    let i = (side & 1) as usize;
    flow.ports[i] = ifindex;
    flow.flags |= FLOW_PORT_CHECKED << i;
}

/// A packet of a tracked flow (`keys.side` is its source's side of the canonical key). `None`
/// means the flow had expired and was forgotten: decide the packet as new.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn existing(
    slot: u32,
    epoch: u32,
    cfg: &Config,
    pkt: &Packet,
    keys: &mut FlowKeys,
    flow: &mut FlowState,
    now: u64,
) -> Result<Option<Outcome>, Reason> {
    let proto = pkt.ip.proto;
    let idle = if proto != IPPROTO_TCP {
        cfg.udp_idle_secs
    } else if flow.tcp_state == TCP_CLOSING && cfg.tcp_idle_secs > TCP_CLOSING_IDLE_SECS {
        TCP_CLOSING_IDLE_SECS
    } else {
        cfg.tcp_idle_secs
    };
    if now.saturating_sub(flow.last_seen_ns) > idle as u64 * NS_PER_SEC {
        end(keys);
        stats::flow_event(FLOW_EXPIRED);
        return Ok(None);
    }
    if flow.epoch == epoch && port_checked(flow, keys.side, pkt.ifindex) {
        // Same policy, same side, same port: its zones and their port bindings cannot have
        // changed.
        stats::path_event(PATH_FLOW_HIT);
    } else {
        let (src, dst) = zones(slot, cfg, pkt, &mut keys.host)?;
        // Re-check before anything else reads `flow.conduit`: an id of an older generation
        // may name another conduit (or none) in the policy now in force.
        if flow.epoch != epoch {
            // Re-check in the initiator's direction. An echo flow was opened by an echo
            // request (its key's ports hold the echo identifier, not a service).
            let (src, dst, service) = if is_forward(flow, keys.side) {
                (src, dst, keys.forward.dport)
            } else {
                (dst, src, keys.forward.sport)
            };
            let service = match proto {
                IPPROTO_ICMP => ICMP_ECHO_REQUEST as u16,
                IPPROTO_ICMPV6 => ICMPV6_ECHO_REQUEST as u16,
                _ => service,
            };
            match conduit::admit(slot, cfg, proto, &src, &dst, service) {
                Ok(rule) if rule.conduit >= FIRST_CONDUIT => {
                    flow.conduit = rule.conduit;
                    flow.inspect = rule.inspect;
                    flow.rule = rule.rule;
                    flow.epoch = epoch;
                    // Ports checked under the older policy prove nothing under this one.
                    flow.flags &= !(FLOW_PORT_CHECKED | (FLOW_PORT_CHECKED << 1));
                    stats::flow_event(FLOW_REVALIDATED);
                }
                // Now decided by a default: no longer a tracked flow of any conduit.
                Ok(rule) => {
                    end(keys);
                    stats::flow_event(FLOW_CLOSED);
                    return Ok(Some(Outcome::pass(rule.conduit)));
                }
                Err(_) => {
                    end(keys);
                    stats::flow_event(FLOW_REVOKED);
                    return Ok(Some(Outcome::deny(CONDUIT_NONE, Reason::PolicyRevoked)));
                }
            }
        }
        note_port(flow, keys.side, pkt.ifindex);
    }
    // Read again rather than kept: few values may live across the calls above (registers
    // spilled there would cost stack the program does not have).
    let forward = is_forward(flow, keys.side);
    let flags = pkt.l4.tcp_flags;
    if proto == IPPROTO_TCP && !forward && flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        return Ok(Some(Outcome::deny(flow.conduit, Reason::ReverseSyn)));
    }
    // Written only when the coarse clock moved (once a tick): the two directions of a flow are
    // often handled by two CPUs, and a store per packet would move the entry's cache line
    // between them on every packet.
    if flow.last_seen_ns != now {
        flow.last_seen_ns = now;
    }
    let conduit = flow.conduit;
    let (inspect, rule) = (flow.inspect, flow.rule);
    // Whether this packet's decision may stand for the next ones of this tick (`flow_memo`):
    // an established flow whose entry only a removal can change (epoch and port checked
    // above; an inspected TCP flow once its inspector keeps stream state, which
    // `stream::missing` reads from these flags: the inspectors keep none for UDP), or the
    // initiator's datagram of a UDP flow not answered yet (`FlowMemo` says why that is exact;
    // the answer that promotes the flow is decided through its entry).
    let memoised = (keys.table == TABLE_FLOWS || (proto == IPPROTO_UDP && forward))
        && flow_memo::applies(proto, flags)
        && (inspect == INSPECT_NONE || proto == IPPROTO_UDP || flow.flags & FLOW_INSPECTED != 0);
    if proto == IPPROTO_TCP {
        // An inspected flow's RST is the inspector's to judge (`stream::note_delivery`): one
        // its receiver would discard must not end tracking.
        if flags & TCP_RST != 0 && inspect == INSPECT_NONE {
            end(keys);
            stats::flow_event(FLOW_CLOSED);
            return Ok(Some(Outcome::inspected(conduit, inspect, rule, forward)));
        } else if flags & TCP_RST != 0 {
            // The inspector may end the flow: the memos are counted stale now, before it
            // does (a removal counted early only costs a few memo misses). Counting it there
            // would cost the inspector more verifier states than it can afford.
            flow_memo::flow_removed();
        } else if flags & TCP_FIN != 0 {
            flow.tcp_state = TCP_CLOSING;
        } else if !forward && flags & TCP_SYN != 0 {
            flow.tcp_state = TCP_ESTABLISHED;
        }
    }
    // The responder answered (a RST is no answer: the inspector, or the branch above, ends the
    // flow): the flow is established and takes its place in its zone's share.
    if keys.table == TABLE_EMBRYOS && !forward && flags & TCP_RST == 0 {
        if let Err(reason) = promote(keys, flow) {
            return Ok(Some(Outcome::deny(conduit, reason)));
        }
    }
    if memoised {
        flow_memo::note(keys, epoch, pkt.ifindex, flow, forward);
    }
    Ok(Some(Outcome::inspected(conduit, inspect, rule, forward)))
}

/// Moves an answered flow from `EMBRYOS` to `FLOWS`, charged to its initiator's zone, if the
/// zone's share has room; otherwise the flow is forgotten and the answer denied.
#[inline(always)]
fn promote(keys: &mut FlowKeys, flow: &FlowState) -> Result<(), Reason> {
    keys.fresh = *flow;
    let charge = keys.fresh.charge;
    if !has_room(charge, keys.fresh.max_flows) {
        let _ = EMBRYOS.remove(&keys.canonical);
        return Err(Reason::FlowQuota);
    }
    keys.fresh.flags |= FLOW_CHARGED;
    if FLOWS.insert(&keys.canonical, &keys.fresh, 0).is_err() {
        stats::flow_event(FLOW_INSERT_FAILED);
        return Err(Reason::FlowTableFull);
    }
    count(charge, false);
    let _ = EMBRYOS.remove(&keys.canonical);
    keys.table = TABLE_FLOWS;
    keys.flow_flags = keys.fresh.flags as u32 | OBSERVE_ANSWERED;
    stats::flow_event(FLOW_PROMOTED);
    Ok(())
}

/// Whether the zone with `charge` holds fewer than `max` flows in `FLOWS`.
#[inline(always)]
fn has_room(charge: u32, max: u32) -> bool {
    // SAFETY: plain counters, copied out at once.
    let swept = unsafe { ZONE_SWEPT.get(&charge) }.copied().unwrap_or(0);
    match unsafe { ZONE_FLOWS.get(&charge) } {
        Some(z) => z.live(swept) < max as u64,
        None => max > 0,
    }
}

/// Counts a flow of the zone with `charge` into (`closed` false) or out of `FLOWS`.
#[inline(always)]
fn count(charge: u32, closed: bool) {
    let mut entry = ZONE_FLOWS.get_ptr_mut(&charge);
    if entry.is_none() {
        let _ = ZONE_FLOWS.insert(&charge, &ZoneFlows::default(), BPF_NOEXIST as u64);
        entry = ZONE_FLOWS.get_ptr_mut(&charge);
    }
    let Some(z) = entry else {
        return;
    };
    // SAFETY: a map value stays valid for the program's run; other CPUs update the same
    // counters, hence the atomic add.
    unsafe {
        let counter = if closed {
            &raw mut (*z).closed
        } else {
            &raw mut (*z).opened
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1);
    }
}

/// `forget`, from the main program: a flow removed from `FLOWS` is counted for each CPU's memo
/// (`flow_memo`). (An inspector that ends a flow calls `forget` alone: the main program counted
/// the removal before the tail call, see `existing`.)
#[inline(always)]
fn end(keys: &FlowKeys) {
    if forget(keys) && keys.table == TABLE_FLOWS {
        flow_memo::flow_removed();
    }
}

/// Removes the packet's flow from the table it was found in (`keys.table`), giving its zone's
/// share back. Only the remover that succeeds counts it out, so a flow removed by two CPUs (or
/// by the controller's sweep) at once is counted once.
#[inline(always)]
pub fn forget(keys: &FlowKeys) -> bool {
    if keys.table == TABLE_EMBRYOS {
        return EMBRYOS.remove(&keys.canonical).is_ok();
    }
    // SAFETY: copied out before the removal.
    let charged = unsafe { FLOWS.get(&keys.canonical) }
        .filter(|f| f.flags & FLOW_CHARGED != 0)
        .map(|f| f.charge);
    let removed = FLOWS.remove(&keys.canonical).is_ok();
    if removed {
        if let Some(charge) = charged {
            count(charge, true);
        }
    }
    removed
}

/// Whether decisions are traced (`TRACE` records each): then the memos count nothing, every
/// decision is accounted on its own.
#[inline(always)]
fn traced(cfg: &Config) -> bool {
    cfg.flags & FLAG_TRACE != 0
}

/// `cached_denial` found a remembered denial (the other bits: conduit, reason, flags).
const CACHED: u64 = 1 << 32;
/// ... and counted the packet as a drop in this CPU's memo: the caller accounts nothing.
const COUNTED_DROP: u64 = 1 << 33;
/// ... and an event for the same denial was offered in this timer tick already (`Counted::Quiet`).
const QUIET: u64 = 1 << 34;

/// Looks the packet in hand up in the decision cache (`DENIALS`), writing its key to
/// `keys.deny`: 0 when no denial is remembered, otherwise `CACHED` with the conduit in bits
/// 16..32, the reason in bits 8..16 and the denial's flags in bits 0..8 (see `cached`), and
/// `COUNTED_DROP` where this CPU's memo answered a drop and counted it (`count`: the decision
/// is not traced). It is asked from two places of the main program, whose stack has no room for
/// two inlined copies: where a bare SYN asks first (a SYN flood's path) it is inlined
/// (`ask_denials`); after the flow tables it is this call, its answer one register.
#[inline(never)]
fn cached_denial(keys: &mut FlowKeys, pkt: &Packet, epoch: u32, count: bool) -> u64 {
    ask_denials(keys, pkt, epoch, count)
}

/// The work of `cached_denial`, inlined where a bare SYN asks: a call and its return were
/// about 8 of the 86 ns of a repeated denial.
#[inline(always)]
fn ask_denials(keys: &mut FlowKeys, pkt: &Packet, epoch: u32, count: bool) -> u64 {
    let proto = pkt.ip.proto;
    let flags = pkt.l4.tcp_flags;
    // Everything the decision depends on besides the tuple and the policy: the kind of TCP
    // segment, the ICMP type (the service of ICMP rules), the port (zone bindings).
    let class = match proto {
        IPPROTO_TCP if flags & TCP_RST != 0 => DENY_TCP_RST,
        IPPROTO_TCP if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 => DENY_TCP_SYN,
        IPPROTO_TCP => DENY_TCP_OTHER,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => pkt.l4.icmp_type,
        _ => 0,
    };
    // The source port decides nothing for a packet of no flow except a mid-stream TCP segment
    // (adopted in the other direction, where it is the service): leaving it out lets a flood
    // that varies it (a SYN flood, a UDP spray) hit the cache.
    let sport = if class == DENY_TCP_OTHER {
        keys.forward.sport
    } else {
        0
    };
    // Whole words (`FlowKey::set_tail`): the key is hashed and compared word by word.
    // SAFETY: both are `FlowKey`s' addresses, 8-aligned.
    unsafe {
        keys.deny
            .tuple
            .set_addrs(&keys.forward.src, &keys.forward.dst)
    };
    keys.deny
        .tuple
        .set_tail(sport, keys.forward.dport, proto, [class, 0, 0]);
    keys.deny.set_scope(epoch, pkt.ifindex);
    // This CPU's memo first: a flood repeating a denied tuple stops at an array slot, and
    // where the denial is a drop, is counted there.
    let memo = RECENT_DENIALS.get_ptr_mut(keys.deny.memo_index());
    if let Some(m) = memo {
        // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
        let m = unsafe { &mut *m };
        if flow_memo::same_words(&m.key, &keys.deny) {
            if count && m.denial.flags & DENIAL_DROP != 0 {
                m.bytes += frame_len(pkt.ctx) as u64;
                m.packets += 1;
                // SAFETY: reading the counter has no preconditions.
                let tick = unsafe { bpf_jiffies64() };
                let quiet = m.offered_tick == tick;
                m.offered_tick = tick;
                return answer(&m.denial) | COUNTED_DROP | (quiet as u64) << 34;
            }
            return answer(&m.denial);
        }
    }
    // SAFETY: the value is copied out at once, never held across a map update.
    let Some(d) = (unsafe { DENIALS.get(&keys.deny) }).copied() else {
        return 0;
    };
    if let Some(m) = memo {
        // SAFETY: as above.
        note(unsafe { &mut *m }, &keys.deny, &d);
    }
    answer(&d)
}

/// `cached_denial`'s answer for a remembered denial.
#[inline(always)]
fn answer(d: &Denial) -> u64 {
    CACHED | (d.conduit as u64) << 16 | (d.reason as u64) << 8 | d.flags as u64
}

/// Writes `denial` of `key` into a memo entry (field by field: a struct assignment between two
/// map values is a `memmove`, see `firewall_common::mem`), after moving the drops it counted for
/// the denial it held into the counter maps.
#[inline(always)]
fn note(m: &mut DenialMemo, key: &DenyKey, denial: &Denial) {
    if m.packets != 0 {
        stats::settle_drops(m);
    }
    key.tuple.copy_into(&mut m.key.tuple);
    m.key.set_scope(key.epoch, key.ifindex);
    m.denial = *denial;
    m.offered_tick = 0;
}

/// The decision a `cached_denial` answer stands for; `None` for none remembered, or an entry
/// naming no reason this version knows (then the packet is decided as if nothing were remembered).
#[inline(always)]
fn cached(hit: u64) -> Option<Result<Outcome, Reason>> {
    if hit & CACHED == 0 {
        return None;
    }
    let reason = Reason::from_u8((hit >> 8) as u8)?;
    let mut out = Outcome::deny((hit >> 16) as u16, reason);
    if hit & COUNTED_DROP != 0 {
        out.counted = if hit & QUIET != 0 {
            Counted::Quiet
        } else {
            Counted::Yes
        };
        return Some(Ok(out));
    }
    stats::path_event(PATH_DENIAL_CACHED);
    if hit as u8 & DENIAL_NO_RESET != 0 {
        return Some(Err(reason));
    }
    Some(Ok(out))
}

/// A packet that belongs to no tracked flow and no remembered denial (`cached_denial` was
/// asked): zones and conduits decide, and a denial is remembered for the next packet of the
/// same kind.
#[inline(always)]
fn admit(
    slot: u32,
    epoch: u32,
    cfg: &Config,
    pkt: &Packet,
    keys: &mut FlowKeys,
    now: u64,
) -> Result<Outcome, Reason> {
    let (src, dst) = match zones(slot, cfg, pkt, &mut keys.host) {
        Ok(z) => z,
        Err(reason) => {
            remember(keys, CONDUIT_NONE, reason, DENIAL_NO_RESET);
            return Err(reason);
        }
    };
    let out = decide_new(slot, epoch, cfg, pkt, keys, &src, &dst, now);
    // A full flow table or a zone at its share is a state of the moment, not a decision about
    // the tuple.
    if out.reason != Reason::None
        && out.reason != Reason::FlowTableFull
        && out.reason != Reason::FlowQuota
    {
        // Whether the denial will be a drop, as the verdict will find (the conduit's settings
        // are the epoch's): the memo counts only those.
        let resettable = verdict::resettable(pkt.ip.proto, pkt.l4.tcp_flags);
        let flags = match verdict::apply(slot, out.conduit, resettable) {
            (Action::Drop, _) => DENIAL_DROP,
            _ => 0,
        };
        remember(keys, out.conduit, out.reason, flags);
    }
    Ok(out)
}

/// Stores a denial of the packet in hand in the decision cache. The key names the policy's
/// epoch: an entry can never decide a packet under another policy, and the LRU reclaims the
/// stale ones.
#[inline(always)]
fn remember(keys: &FlowKeys, conduit: u16, reason: Reason, flags: u8) {
    let denial = Denial {
        conduit,
        reason: reason as u8,
        flags,
    };
    if DENIALS.insert(&keys.deny, &denial, 0).is_ok() {
        stats::path_event(PATH_DENIAL_STORED);
        if let Some(m) = RECENT_DENIALS.get_ptr_mut(keys.deny.memo_index()) {
            // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
            note(unsafe { &mut *m }, &keys.deny, &denial);
        }
    }
}

/// Zones and conduits decide a packet of no tracked flow.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decide_new(
    slot: u32,
    epoch: u32,
    cfg: &Config,
    pkt: &Packet,
    keys: &mut FlowKeys,
    src: &ZoneMatch,
    dst: &ZoneMatch,
    now: u64,
) -> Outcome {
    let proto = pkt.ip.proto;
    let l4 = pkt.l4;
    let flags = l4.tcp_flags;
    let syn = proto == IPPROTO_TCP && flags & TCP_SYN != 0 && flags & TCP_ACK == 0;
    let midstream = proto == IPPROTO_TCP && !syn;
    match conduit::admit(slot, cfg, proto, src, dst, l4.service(proto)) {
        // Decided by a default (intra-zone, unzoned, action): nothing to track.
        Ok(rule) if rule.conduit < FIRST_CONDUIT => Outcome::pass(rule.conduit),
        Ok(rule) => {
            if midstream {
                if flags & TCP_RST != 0 {
                    return Outcome::deny(rule.conduit, Reason::NotTracked);
                }
                if cfg.flags & FLAG_MIDSTREAM_ADOPT == 0 {
                    return Outcome::deny(rule.conduit, Reason::MidstreamDenied);
                }
                let to = Opening::new(slot, src, TCP_ESTABLISHED, ADOPTED);
                return open(pkt, keys, epoch, &rule, to, now, true);
            }
            if !is_stateful(proto, l4) {
                return Outcome::pass(rule.conduit);
            }
            let state = if syn { TCP_SYN_SENT } else { 0 };
            open(
                pkt,
                keys,
                epoch,
                &rule,
                Opening::new(slot, src, state, 0),
                now,
                true,
            )
        }
        Err(reason) => {
            // A segment of a connection the responder side is sending, opened before tracking
            // began: adopt it in the initiator's direction if a conduit allows that.
            if midstream && flags & TCP_RST == 0 && cfg.flags & FLAG_MIDSTREAM_ADOPT != 0 {
                if let Ok(rule) = conduit::admit(slot, cfg, proto, dst, src, l4.sport) {
                    if rule.conduit >= FIRST_CONDUIT {
                        let to = Opening::new(slot, dst, TCP_ESTABLISHED, ADOPTED);
                        return open(pkt, keys, epoch, &rule, to, now, false);
                    }
                }
            }
            // Looks like the answer to something never asked: say so rather than "no conduit".
            let reply = midstream || l4.is_echo_reply(proto);
            let reason = if reply && reason == Reason::NoConduit {
                Reason::NotTracked
            } else {
                reason
            };
            Outcome::deny(CONDUIT_NONE, reason)
        }
    }
}

/// How a new flow starts: its TCP state, flags, and the initiator's zone (whose share of
/// `FLOWS` it will use).
#[derive(Clone, Copy)]
struct Opening {
    tcp_state: u8,
    flags: u8,
    charge: u32,
    max_flows: u32,
}

impl Opening {
    #[inline(always)]
    fn new(slot: u32, initiator: &ZoneMatch, tcp_state: u8, flags: u8) -> Opening {
        let info = ZONE_INFO
            .get(zone_index(slot, initiator.zone))
            .copied()
            .unwrap_or_default();
        Opening {
            tcp_state,
            flags,
            charge: info.charge,
            max_flows: info.max_flows,
        }
    }
}

/// Tracks a new flow under the canonical key; `to_server` says whether the packet in hand
/// travels from the initiator (it opened the flow) or to it (an adopted connection's
/// responder spoke first). A flow adopted mid-stream is established at once (`FLOWS`, charged
/// to its zone); any other waits in `EMBRYOS` for its answer. A zone at its share opens none.
#[inline(always)]
fn open(
    pkt: &Packet,
    keys: &mut FlowKeys,
    epoch: u32,
    rule: &PortRule,
    to: Opening,
    now: u64,
    to_server: bool,
) -> Outcome {
    let conduit = rule.conduit;
    let (tcp_state, flags) = (to.tcp_state, to.flags);
    if !has_room(to.charge, to.max_flows) {
        return Outcome::deny(conduit, Reason::FlowQuota);
    }
    // The packet's side of the canonical key; the initiator is the other one when the
    // responder's packet opened the flow.
    let side = (keys.side & 1) as u8;
    let initiator = if to_server { side } else { side ^ 1 };
    // Built in the scratch entry: the stack has no room for it.
    keys.fresh = FlowState {
        last_seen_ns: now,
        epoch,
        conduit,
        tcp_state,
        flags,
        inspect: rule.inspect,
        _pad: 0,
        rule: rule.rule,
        ports: [0; 2],
        charge: to.charge,
        max_flows: to.max_flows,
        _pad2: 0,
    };
    if initiator == SIDE_HIGH {
        keys.fresh.flags |= FLOW_INITIATOR_HIGH;
    }
    // The zones of this packet were resolved and its port checked on the way here.
    note_port(&mut keys.fresh, keys.side, pkt.ifindex);
    let adopted = flags & ADOPTED != 0;
    if adopted {
        keys.fresh.flags |= FLOW_CHARGED;
    }
    let inserted = if adopted {
        FLOWS.insert(&keys.canonical, &keys.fresh, 0)
    } else {
        EMBRYOS.insert(&keys.canonical, &keys.fresh, 0)
    };
    if inserted.is_err() {
        stats::flow_event(FLOW_INSERT_FAILED);
        return Outcome::deny(conduit, Reason::FlowTableFull);
    }
    keys.table = if adopted { TABLE_FLOWS } else { TABLE_EMBRYOS };
    keys.flow_flags = keys.fresh.flags as u32;
    if adopted {
        count(to.charge, false);
        stats::flow_event(FLOW_ADOPTED);
        events::adopted(&keys.forward, !to_server, epoch, conduit);
    } else {
        stats::flow_event(FLOW_CREATED);
    }
    Outcome::inspected(conduit, rule.inspect, rule.rule, to_server)
}
