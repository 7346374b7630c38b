//! One decision per packet: parse, track the flow (resolving zones only where the flow entry
//! does not answer), then apply the deciding conduit's mode (`enforce`/`monitor`) and deny
//! behaviour (`drop`/`reset`).

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::warn;

use firewall_common::{
    conduit::{conduit_index, CONDUIT_NONE, INSPECT_NONE, MODE_MONITOR, ON_DENY_RESET},
    config::{Config, ACTIVE_INDEX, FLAG_TRACE, NON_IP_STP},
    counters::{VERDICT_DROP, VERDICT_MONITOR, VERDICT_PASS, VERDICT_RESET},
    flow::FlowKeys,
    reason::Reason,
    slot_of,
};

use super::{
    eth::{Eth, ETH_P_IP, ETH_P_IPV6},
    flow::{self, Counted, Outcome, Packet},
    ip::Ip,
    l4::{IPPROTO_ICMPV6, IPPROTO_TCP, L4, TCP_RST},
    maps::{ACTIVE, CONDUITS, CONFIG, FLOW_KEYS, INSPECT_CTX},
    observe,
    packet::load,
};

pub enum Action {
    Pass,
    Drop,
    Reset,
}

pub struct Decision {
    pub action: Action,
    pub verdict: u32,
    pub reason: Reason,
    pub conduit: u16,
    pub slot: u32,
    pub epoch: u32,
    pub trace: bool,
    /// A pass handed to this inspector (`INSPECT_*`), whose context is in `INSPECT_CTX`; the
    /// inspector makes and accounts the final decision.
    pub inspect: u8,
    /// Already counted by a memo: not to be counted again.
    pub counted: Counted,
}

/// What the policy says before modes are applied.
struct Judgement {
    outcome: Outcome,
    /// A TCP segment that may be answered with a reset (not itself a reset).
    resettable: bool,
}

#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Decision {
    let epoch = ACTIVE.get(ACTIVE_INDEX).copied().unwrap_or(0);
    let slot = slot_of(epoch);
    let slot_cfg = CONFIG.get(slot);
    let cfg = match slot_cfg {
        Some(cfg) if epoch != 0 => cfg,
        _ => {
            return Decision {
                action: Action::Drop,
                verdict: VERDICT_DROP,
                reason: Reason::NoPolicy,
                conduit: CONDUIT_NONE,
                slot,
                epoch,
                // Tracing can be switched on before the first policy (replay, tests).
                trace: slot_cfg.is_some_and(|c| c.flags & FLAG_TRACE != 0),
                inspect: INSPECT_NONE,
                counted: Counted::No,
            };
        }
    };
    let judgement = match judge(ctx, slot, epoch, cfg) {
        Ok(j) => j,
        Err(reason) => Judgement {
            outcome: Outcome::deny(CONDUIT_NONE, reason),
            resettable: false,
        },
    };
    let trace = cfg.flags & FLAG_TRACE != 0;
    let Outcome {
        conduit,
        reason,
        inspect,
        counted,
        ..
    } = judgement.outcome;
    if core::intrinsics::unlikely(reason == Reason::FlowTableFull) {
        // Rare and operator-relevant: connections are being refused for want of table space.
        warn!(
            ctx,
            "flow table full: a new flow of conduit {} was refused", conduit
        );
    }
    if reason == Reason::None {
        return Decision {
            action: Action::Pass,
            verdict: VERDICT_PASS,
            reason,
            conduit,
            slot,
            epoch,
            trace,
            inspect,
            counted,
        };
    }
    // A drop the memo of recent denials counted was settled as one when it was remembered
    // (`DENIAL_DROP`): the conduit's settings are not read again.
    let (action, verdict) = if counted != Counted::No {
        (Action::Drop, VERDICT_DROP)
    } else {
        apply(slot, conduit, judgement.resettable)
    };
    Decision {
        action,
        verdict,
        reason,
        conduit,
        slot,
        epoch,
        trace,
        inspect: INSPECT_NONE,
        counted,
    }
}

/// What a denial by `conduit` of the generation in `slot` becomes under the conduit's mode and
/// `on_deny`: a pass in monitor mode, a reset where the conduit asks for one and the packet may
/// be answered with one (`resettable`), otherwise a drop.
#[inline(always)]
pub fn apply(slot: u32, conduit: u16, resettable: bool) -> (Action, u32) {
    let info = CONDUITS
        .get(conduit_index(slot, conduit))
        .copied()
        .unwrap_or_default();
    if info.mode == MODE_MONITOR {
        (Action::Pass, VERDICT_MONITOR)
    } else if info.on_deny == ON_DENY_RESET && resettable {
        (Action::Reset, VERDICT_RESET)
    } else {
        (Action::Drop, VERDICT_DROP)
    }
}

/// Whether a TCP segment may be answered with a reset (it is not one itself).
#[inline(always)]
pub fn resettable(proto: u8, tcp_flags: u8) -> bool {
    proto == IPPROTO_TCP && tcp_flags & TCP_RST == 0
}

/// The decision when the inspector a pass was handed to could not run: fail closed.
#[inline(always)]
pub fn inspector_missing(d: &mut Decision) {
    d.action = Action::Drop;
    d.verdict = VERDICT_DROP;
    d.reason = Reason::InspectorMissing;
    d.inspect = INSPECT_NONE;
    d.counted = Counted::No;
}

#[inline(always)]
fn judge(ctx: &XdpContext, slot: u32, epoch: u32, cfg: &Config) -> Result<Judgement, Reason> {
    let eth = Eth::parse(ctx)?;
    let ip = match eth.ethertype {
        ETH_P_IP => Ip::parse_v4(ctx, eth.l3)?,
        ETH_P_IPV6 => Ip::parse_v6(ctx, eth.l3)?,
        _ => return non_ip(ctx, cfg, &eth),
    };
    let l4 = L4::parse(ctx, &ip)?;
    if ip.proto == IPPROTO_ICMPV6 {
        if let Some(j) = link_local_control(&ip, &l4)? {
            return Ok(j);
        }
    }
    let pkt = Packet {
        ip: &ip,
        l4: &l4,
        // SAFETY: reading the ingress ifindex from the xdp_md context is always allowed.
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        ctx,
    };
    // The flow keys live in per-CPU scratch space, not on the 512-byte stack; looked up once
    // here for flow tracking, the observation and the hand-over (each lookup is a handful of
    // instructions on every packet's path).
    let Some(keys) = FLOW_KEYS.get_ptr_mut(0) else {
        return Ok(Judgement {
            outcome: Outcome::deny(CONDUIT_NONE, Reason::FlowTableFull),
            resettable: false,
        });
    };
    // SAFETY: a per-CPU slot is only used by this CPU for the duration of this program run
    // (and the inspector it tail calls).
    let keys = unsafe { &mut *keys };
    // Zones are resolved inside, only when the flow entry does not already answer.
    let mut outcome = flow::track(slot, epoch, cfg, &pkt, keys)?;
    // Before any inspector: a tail call does not come back.
    let inspected = outcome.reason == Reason::None && outcome.inspect != INSPECT_NONE;
    let inspector_looks = inspected && observe::inspector_looks(outcome.inspect, ip.proto);
    observe::frame(ctx, &l4, keys, inspector_looks);
    if inspected {
        // Inspected flows are TCP (Modbus, EtherNet/IP) or UDP (EtherNet/IP, implicit I/O);
        // UDP hands over seq/ack/flags 0.
        if !hand_over(&outcome, &l4, epoch, cfg, keys) {
            outcome.inspect = INSPECT_NONE;
            outcome.reason = Reason::InspectorMissing;
        }
    }
    Ok(Judgement {
        outcome,
        resettable: resettable(ip.proto, l4.tcp_flags),
    })
}

/// Writes what the inspector needs into `INSPECT_CTX`.
#[inline(always)]
fn hand_over(outcome: &Outcome, l4: &L4, epoch: u32, cfg: &Config, keys: &FlowKeys) -> bool {
    let Some(ic) = INSPECT_CTX.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, used by this CPU only for the duration of this program run (and
    // the inspector it tail calls).
    let ic = unsafe { &mut *ic };
    if outcome.to_server {
        keys.forward.copy_into(&mut ic.key);
    } else {
        keys.forward.reversed_into(&mut ic.key);
    }
    ic.seq = l4.seq;
    ic.ack = l4.ack;
    ic.epoch = epoch;
    ic.payload = l4.payload as u32;
    ic.payload_len = l4.payload_len as u32;
    ic.conduit = outcome.conduit;
    ic.rule = outcome.rule;
    ic.tcp_flags = l4.tcp_flags;
    ic.to_server = outcome.to_server as u8;
    ic.hop_limit = l4.hop_limit;
    ic.header_len = l4.header_len;
    ic.trace = (cfg.flags & FLAG_TRACE != 0) as u8;
    // Not summed yet: the inspector sums a short segment first thing (`delivery`), never
    // reading an earlier packet's result.
    ic.checksum = 0;
    true
}

#[inline(always)]
fn non_ip(ctx: &XdpContext, cfg: &Config, eth: &Eth) -> Result<Judgement, Reason> {
    // 802.3 frames carry a length, not a type; an LLC header follows. Only spanning tree
    // (DSAP 0x42) has a name in the policy; other LLC frames match nothing.
    let wanted = if eth.ethertype < 0x0600 {
        let dsap: u8 = load(ctx, eth.l3, Reason::NonIpDenied)?;
        if dsap as u16 != NON_IP_STP {
            return Err(Reason::NonIpDenied);
        }
        NON_IP_STP
    } else {
        eth.ethertype
    };
    let count = cfg.non_ip_count as usize;
    for i in 0..cfg.non_ip.len() {
        if i >= count {
            break;
        }
        if cfg.non_ip[i] == wanted {
            return Ok(Judgement {
                outcome: Outcome::pass(CONDUIT_NONE),
                resettable: false,
            });
        }
    }
    Err(Reason::NonIpDenied)
}

const ND_ROUTER_SOLICIT: u8 = 133;
const ND_REDIRECT: u8 = 137;
const MLD_QUERY: u8 = 130;
const MLD_DONE: u8 = 132;
const MLDV2_REPORT: u8 = 143;

/// IPv6 cannot work without neighbour discovery and multicast listener reports, which stay on
/// the link: they pass without a conduit, but only in the form no router would forward (hop
/// limit 255 for ND, a link-local source for MLD), so they cannot come from another network.
#[inline(always)]
fn link_local_control(ip: &Ip, l4: &L4) -> Result<Option<Judgement>, Reason> {
    let t = l4.icmp_type;
    let pass = Judgement {
        outcome: Outcome::pass(CONDUIT_NONE),
        resettable: false,
    };
    if (ND_ROUTER_SOLICIT..=ND_REDIRECT).contains(&t) {
        if ip.hop_limit != 255 {
            return Err(Reason::NdBadHopLimit);
        }
        return Ok(Some(pass));
    }
    let link_local = ip.src[0] == 0xfe && ip.src[1] & 0xc0 == 0x80;
    if ((MLD_QUERY..=MLD_DONE).contains(&t) || t == MLDV2_REPORT) && link_local {
        return Ok(Some(pass));
    }
    Ok(None)
}
