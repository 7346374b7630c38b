//! Stateful flows: a conduit admits new flows in its direction only; packets of tracked flows
//! (both directions) pass; TCP flows already running when tracking began are adopted per
//! `defaults.midstream`; flows admitted under an older policy are re-checked against the new one.

use aya_ebpf::helpers::bpf_ktime_get_ns;

use firewall_common::{
    conduit::{PortRule, CONDUIT_NONE, FIRST_CONDUIT, INSPECT_NONE},
    config::{Config, FLAG_MIDSTREAM_ADOPT},
    counters::{
        FLOW_ADOPTED, FLOW_CLOSED, FLOW_CREATED, FLOW_EXPIRED, FLOW_INSERT_FAILED,
        FLOW_REVALIDATED, FLOW_REVOKED,
    },
    flow::{
        FlowKey, FlowKeys, FlowState, FLOW_ADOPTED as ADOPTED, TCP_CLOSING, TCP_ESTABLISHED,
        TCP_SYN_SENT,
    },
    reason::Reason,
    zone::ZoneMatch,
};

use super::{
    conduit, events,
    ip::Ip,
    l4::{
        ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    },
    maps::{FLOWS, FLOW_KEYS},
    stats,
};

const NS_PER_SEC: u64 = 1_000_000_000;

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
        }
    }
}

/// The packet's view needed to track it.
pub struct Packet<'a> {
    pub ip: &'a Ip,
    pub l4: &'a L4,
    pub src: ZoneMatch,
    pub dst: ZoneMatch,
}

#[inline(always)]
pub fn track(slot: u32, epoch: u32, cfg: &Config, pkt: &Packet) -> Outcome {
    let proto = pkt.ip.proto;
    // Both keys live in per-CPU scratch space, not on the 512-byte stack.
    let Some(keys) = FLOW_KEYS.get_ptr_mut(0) else {
        return Outcome::deny(CONDUIT_NONE, Reason::FlowTableFull);
    };
    // SAFETY: a per-CPU slot is only used by this CPU for the duration of this program run.
    let keys = unsafe { &mut *keys };
    keys.forward = FlowKey {
        src: pkt.ip.src,
        dst: pkt.ip.dst,
        sport: pkt.l4.sport,
        dport: pkt.l4.dport,
        proto,
        _pad: [0; 3],
    };
    keys.reverse = keys.forward.reversed();
    let now = unsafe { bpf_ktime_get_ns() };
    if is_stateful(proto, pkt.l4) {
        // Echo keys are symmetric (both ports hold the identifier), so only the message type
        // tells the direction: a request belongs to the flow it opened, a reply to the reverse
        // of one. Otherwise the responder could send requests along the initiator's flow.
        let echo_reply = pkt.l4.is_echo_reply(proto);
        let echo_request = pkt.l4.is_echo_request(proto);
        let forward = if echo_reply {
            None
        } else {
            FLOWS.get_ptr_mut(&keys.forward)
        };
        let reverse = if forward.is_some() || echo_request {
            None
        } else {
            FLOWS.get_ptr_mut(&keys.reverse)
        };
        if let Some(state) = forward {
            // SAFETY: LRU values stay valid for the program's run; concurrent writers on other
            // CPUs only race on plain integer fields, which is harmless for this state.
            let state = unsafe { &mut *state };
            if let Some(out) = existing(slot, epoch, cfg, pkt, &keys.forward, state, true, now) {
                return out;
            }
        } else if let Some(state) = reverse {
            // SAFETY: as above.
            let state = unsafe { &mut *state };
            if let Some(out) = existing(slot, epoch, cfg, pkt, &keys.reverse, state, false, now) {
                return out;
            }
        }
    }
    admit(slot, epoch, cfg, pkt, keys, now)
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

/// A packet of a tracked flow; `forward` is true in the initiator's direction. `None` means the
/// flow had expired and was forgotten: decide the packet as new.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn existing(
    slot: u32,
    epoch: u32,
    cfg: &Config,
    pkt: &Packet,
    key: &FlowKey,
    flow: &mut FlowState,
    forward: bool,
    now: u64,
) -> Option<Outcome> {
    let proto = pkt.ip.proto;
    let idle = if proto == IPPROTO_TCP {
        cfg.tcp_idle_secs
    } else {
        cfg.udp_idle_secs
    };
    if now.saturating_sub(flow.last_seen_ns) > idle as u64 * NS_PER_SEC {
        let _ = FLOWS.remove(key);
        stats::flow_event(FLOW_EXPIRED);
        return None;
    }
    let flags = pkt.l4.tcp_flags;
    // Re-check before anything else reads `flow.conduit`: an id of an older generation may
    // name another conduit (or none) in the policy now in force.
    if flow.epoch != epoch {
        // Re-check in the initiator's direction: the key holds it. An echo flow was opened by
        // an echo request (its key's ports hold the echo identifier, not a service).
        let (src, dst) = if forward {
            (pkt.src, pkt.dst)
        } else {
            (pkt.dst, pkt.src)
        };
        let service = match proto {
            IPPROTO_ICMP => ICMP_ECHO_REQUEST as u16,
            IPPROTO_ICMPV6 => ICMPV6_ECHO_REQUEST as u16,
            _ => key.dport,
        };
        match conduit::admit(slot, cfg, proto, &src, &dst, service) {
            Ok(rule) if rule.conduit >= FIRST_CONDUIT => {
                flow.conduit = rule.conduit;
                flow.inspect = rule.inspect;
                flow.rule = rule.rule;
                flow.epoch = epoch;
                stats::flow_event(FLOW_REVALIDATED);
            }
            // Now decided by a default: no longer a tracked flow of any conduit.
            Ok(rule) => {
                let _ = FLOWS.remove(key);
                stats::flow_event(FLOW_CLOSED);
                return Some(Outcome::pass(rule.conduit));
            }
            Err(_) => {
                let _ = FLOWS.remove(key);
                stats::flow_event(FLOW_REVOKED);
                return Some(Outcome::deny(CONDUIT_NONE, Reason::PolicyRevoked));
            }
        }
    }
    if proto == IPPROTO_TCP && !forward && flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        return Some(Outcome::deny(flow.conduit, Reason::ReverseSyn));
    }
    flow.last_seen_ns = now;
    let conduit = flow.conduit;
    let (inspect, rule) = (flow.inspect, flow.rule);
    if proto == IPPROTO_TCP {
        // An inspected flow's RST is the inspector's to judge (`stream::note_delivery`): one
        // its receiver would discard must not end tracking.
        if flags & TCP_RST != 0 && inspect == INSPECT_NONE {
            let _ = FLOWS.remove(key);
            stats::flow_event(FLOW_CLOSED);
        } else if flags & TCP_FIN != 0 {
            flow.tcp_state = TCP_CLOSING;
        } else if !forward && flags & TCP_SYN != 0 {
            flow.tcp_state = TCP_ESTABLISHED;
        }
    }
    Some(Outcome::inspected(conduit, inspect, rule, forward))
}

/// A packet that belongs to no tracked flow.
#[inline(always)]
fn admit(slot: u32, epoch: u32, cfg: &Config, pkt: &Packet, keys: &FlowKeys, now: u64) -> Outcome {
    let key = &keys.forward;
    let proto = pkt.ip.proto;
    let l4 = pkt.l4;
    let flags = l4.tcp_flags;
    let syn = proto == IPPROTO_TCP && flags & TCP_SYN != 0 && flags & TCP_ACK == 0;
    let midstream = proto == IPPROTO_TCP && !syn;
    match conduit::admit(slot, cfg, proto, &pkt.src, &pkt.dst, l4.service(proto)) {
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
                return open(key, epoch, &rule, TCP_ESTABLISHED, ADOPTED, now, true);
            }
            if !is_stateful(proto, l4) {
                return Outcome::pass(rule.conduit);
            }
            let state = if syn { TCP_SYN_SENT } else { 0 };
            open(key, epoch, &rule, state, 0, now, true)
        }
        Err(reason) => {
            // A segment of a connection the responder side is sending, opened before tracking
            // began: adopt it in the initiator's direction if a conduit allows that.
            if midstream && flags & TCP_RST == 0 && cfg.flags & FLAG_MIDSTREAM_ADOPT != 0 {
                if let Ok(rule) = conduit::admit(slot, cfg, proto, &pkt.dst, &pkt.src, l4.sport) {
                    if rule.conduit >= FIRST_CONDUIT {
                        return open(
                            &keys.reverse,
                            epoch,
                            &rule,
                            TCP_ESTABLISHED,
                            ADOPTED,
                            now,
                            false,
                        );
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

/// Tracks a new flow under `key` (initiator direction); `to_server` says whether the packet in
/// hand travels in that direction.
#[inline(always)]
fn open(
    key: &FlowKey,
    epoch: u32,
    rule: &PortRule,
    tcp_state: u8,
    flags: u8,
    now: u64,
    to_server: bool,
) -> Outcome {
    let conduit = rule.conduit;
    let state = FlowState {
        last_seen_ns: now,
        epoch,
        conduit,
        tcp_state,
        flags,
        inspect: rule.inspect,
        _pad: 0,
        rule: rule.rule,
        _pad2: [0; 4],
    };
    if FLOWS.insert(key, &state, 0).is_err() {
        stats::flow_event(FLOW_INSERT_FAILED);
        return Outcome::deny(conduit, Reason::FlowTableFull);
    }
    if flags & ADOPTED != 0 {
        stats::flow_event(FLOW_ADOPTED);
        events::adopted(key, epoch, conduit);
    } else {
        stats::flow_event(FLOW_CREATED);
    }
    Outcome::inspected(conduit, rule.inspect, rule.rule, to_server)
}
