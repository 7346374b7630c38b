//! Validated policy -> map contents ([`CompiledPolicy`]).
//!
//! Ids follow file order: zones 1.., hosts 1.. across the policy, conduits from
//! `FIRST_CONDUIT`. Each allow item becomes port rules under the (protocol, from, to) key of its
//! conduit. Within one key, rules that inspect the payload come before plain ones (each group
//! in policy order): the datapath takes the first match, and a plain TCP range must never let a
//! Modbus or EtherNet/IP flow past its inspection.

use std::collections::BTreeMap;

use firewall_common::conduit::{
    ConduitInfo, PortRule, RuleSet, FIRST_CONDUIT, INSPECT_ENIP, INSPECT_ENIP_IO, INSPECT_MODBUS,
    INSPECT_NONE, MAX_RULES, MODE_ENFORCE, MODE_MONITOR, NO_PROTOCOL_RULE, ON_DENY_DROP,
    ON_DENY_REFUSE, ON_DENY_RESET,
};
use firewall_common::config::{
    Config, FLAG_DEFAULT_ALLOW, FLAG_INTRA_ZONE_ALLOW, FLAG_MIDSTREAM_ADOPT, FLAG_UNZONED_ALLOW,
    MAX_NON_IP,
};
use firewall_common::flow::MAX_FLOWS;
use firewall_common::zone::{
    zone_charge, ZoneInfo, ZoneMatch, MAX_PREFIXES, NO_HOST, UNZONED_CHARGE, ZONE_FLAG_PORTS,
};
use firewall_common::SLOTS;
use ipnet::IpNet;

use super::compiled::{
    CompiledPolicy, ConduitLabels, Names, Prefix, RuleKey, PSEUDO_CONDUIT_NAMES,
};
use super::enip;
use super::source::{child, item};
use super::validated::*;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// A policy that validates but does not fit the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// Policy path of the part to change (e.g. `conduits[3].allow`).
    pub path: String,
    pub message: String,
}

/// Each zone's share of the established-flow table, hosts in no zone counting as one more
/// zone: equal shares that add up to no more than the table, so that no zone can make the
/// table evict another zone's flows (`firewall_common::flow`).
pub fn flow_share(zones: usize) -> u32 {
    MAX_FLOWS / (zones as u32 + 1)
}

pub fn compile(policy: &Policy) -> Result<CompiledPolicy, Vec<CompileError>> {
    let mut errors = Vec::new();
    let (prefixes_v4, prefixes_v6) = prefixes(policy, &mut errors);
    let rules = rules(policy, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let max_flows = flow_share(policy.zones.len());
    let zone_info = policy
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let flags = if z.ports.is_empty() {
                0
            } else {
                ZONE_FLAG_PORTS
            };
            let info = ZoneInfo {
                flags,
                charge: zone_charge(&z.name),
                max_flows,
                _pad: 0,
            };
            (Policy::zone_id(i), info)
        })
        .collect();
    let unzoned_info = ZoneInfo {
        flags: 0,
        charge: UNZONED_CHARGE,
        max_flows,
        _pad: 0,
    };
    let zone_ports = policy
        .zones
        .iter()
        .enumerate()
        .flat_map(|(i, z)| z.ports.iter().map(move |p| (Policy::zone_id(i), p.clone())))
        .collect();
    let ids = protocol_rule_ids(policy);
    let mut modbus_rules = Vec::new();
    let mut modbus_maps = Vec::new();
    let mut enip_rules = Vec::new();
    let mut enip_maps = Vec::new();
    for (c, conduit) in policy.conduits.iter().enumerate() {
        for (a, allow) in conduit.allow.iter().enumerate() {
            match allow {
                Allow::Modbus(r) => {
                    modbus_rules.push((ids[c][a], r.clone()));
                    match super::modbus::to_map(r) {
                        Ok(m) => modbus_maps.push((ids[c][a], m)),
                        Err((key, message)) => errors.push(CompileError {
                            path: format!("conduits[{c}].allow[{a}].modbus.{key}"),
                            message,
                        }),
                    }
                }
                Allow::Enip(r) => {
                    enip_rules.push((ids[c][a], r.clone()));
                    match enip::to_map(r) {
                        Ok(m) => enip_maps.push((ids[c][a], m)),
                        Err((key, message)) => errors.push(CompileError {
                            path: format!("conduits[{c}].allow[{a}].enip.{key}"),
                            message,
                        }),
                    }
                }
                _ => {}
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let defaults = &policy.defaults;
    let pseudo = (0..FIRST_CONDUIT).map(|id| (id, conduit_info(defaults.mode, defaults.on_deny)));
    let own = policy
        .conduits
        .iter()
        .enumerate()
        .map(|(i, c)| (FIRST_CONDUIT + i as u16, conduit_info(c.mode, c.on_deny)));
    Ok(CompiledPolicy {
        config: config(defaults),
        attachment: policy.gateway.clone(),
        prefixes_v4,
        prefixes_v6,
        zone_info,
        unzoned_info,
        zone_ports,
        rules,
        conduits: pseudo.chain(own).collect(),
        names: names(policy),
        modbus_rules,
        modbus_maps,
        enip_rules,
        enip_maps,
    })
}

fn config(defaults: &Defaults) -> Config {
    let flags = [
        (defaults.action == Action::Allow, FLAG_DEFAULT_ALLOW),
        (defaults.intra_zone == Action::Allow, FLAG_INTRA_ZONE_ALLOW),
        (defaults.unzoned == Action::Allow, FLAG_UNZONED_ALLOW),
        (defaults.midstream == Midstream::Adopt, FLAG_MIDSTREAM_ADOPT),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .fold(0, |flags, (_, flag)| flags | flag);
    let mut non_ip = [0; MAX_NON_IP];
    for (slot, ethertype) in non_ip.iter_mut().zip(&defaults.non_ip) {
        *slot = *ethertype;
    }
    Config {
        epoch: 0,
        flags,
        udp_idle_secs: defaults.udp_idle_secs,
        tcp_idle_secs: defaults.tcp_idle_secs,
        non_ip,
        non_ip_count: defaults.non_ip.len().min(MAX_NON_IP) as u32,
        _pad: 0,
    }
}

fn conduit_info(mode: Mode, on_deny: OnDeny) -> ConduitInfo {
    ConduitInfo {
        mode: match mode {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Monitor => MODE_MONITOR,
        },
        on_deny: match on_deny {
            OnDeny::Drop => ON_DENY_DROP,
            OnDeny::Reset => ON_DENY_RESET,
            OnDeny::Refuse => ON_DENY_REFUSE,
        },
        _pad: [0; 2],
    }
}

type Prefixes = (Vec<Prefix<4>>, Vec<Prefix<16>>);

fn prefixes(policy: &Policy, errors: &mut Vec<CompileError>) -> Prefixes {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut add = |net: IpNet, target: ZoneMatch| match net {
        IpNet::V4(n) => v4.push(Prefix {
            addr: n.addr().octets(),
            prefix_len: u32::from(n.prefix_len()),
            target,
        }),
        IpNet::V6(n) => v6.push(Prefix {
            addr: n.addr().octets(),
            prefix_len: u32::from(n.prefix_len()),
            target,
        }),
    };
    for (z, zone) in policy.zones.iter().enumerate() {
        let zone_id = Policy::zone_id(z);
        let host_nets: Vec<IpNet> = zone.hosts.iter().map(|h| IpNet::from(h.addr)).collect();
        // A host may name a single-address network of its zone; its own entry replaces it.
        for net in zone.networks.iter().filter(|n| !host_nets.contains(n)) {
            add(
                *net,
                ZoneMatch {
                    zone: zone_id,
                    host: NO_HOST,
                },
            );
        }
        for (h, net) in host_nets.into_iter().enumerate() {
            let host = policy.host_id(z, h);
            add(
                net,
                ZoneMatch {
                    zone: zone_id,
                    host,
                },
            );
        }
    }
    // Both slots share the tries: one generation may use half of them.
    let limit = (MAX_PREFIXES / SLOTS) as usize;
    for (family, count) in [("IPv4", v4.len()), ("IPv6", v6.len())] {
        if count > limit {
            errors.push(CompileError {
                path: "zones".into(),
                message: format!(
                    "{count} {family} networks and hosts; the datapath holds at most {limit}"
                ),
            });
        }
    }
    (v4, v6)
}

/// One conduit's ranges for one key, inspector and protocol rule, before they join the key's
/// rule set.
struct Contribution {
    conduit: usize,
    inspect: u8,
    rule: u16,
    ranges: Vec<PortRange>,
}

/// Protocol rule ids: every `modbus:` and `enip:` item of every conduit, in file order, from 1.
fn protocol_rule_ids(policy: &Policy) -> Vec<Vec<u16>> {
    let mut next = 1u16;
    policy
        .conduits
        .iter()
        .map(|c| {
            c.allow
                .iter()
                .map(|a| match a {
                    Allow::Modbus(_) | Allow::Enip(_) => {
                        next += 1;
                        next - 1
                    }
                    _ => NO_PROTOCOL_RULE,
                })
                .collect()
        })
        .collect()
}

fn rules(policy: &Policy, errors: &mut Vec<CompileError>) -> Vec<(RuleKey, RuleSet)> {
    let mut by_key: BTreeMap<RuleKey, Vec<Contribution>> = BTreeMap::new();
    let ids = protocol_rule_ids(policy);
    for (c, conduit) in policy.conduits.iter().enumerate() {
        let key = |proto| RuleKey {
            proto,
            from_zone: Policy::zone_id(conduit.from.zone),
            from_host: conduit
                .from
                .host
                .map_or(NO_HOST, |h| policy.host_id(conduit.from.zone, h)),
            to_zone: Policy::zone_id(conduit.to.zone),
            to_host: conduit
                .to
                .host
                .map_or(NO_HOST, |h| policy.host_id(conduit.to.zone, h)),
        };
        for (a, allow) in conduit.allow.iter().enumerate() {
            let rule = ids[c][a];
            for (proto, inspect, ranges) in port_rules(allow) {
                let list = by_key.entry(key(proto)).or_default();
                match list
                    .iter_mut()
                    .find(|k| k.conduit == c && k.inspect == inspect && k.rule == rule)
                {
                    Some(existing) => existing.ranges.extend(ranges),
                    None => list.push(Contribution {
                        conduit: c,
                        inspect,
                        rule,
                        ranges,
                    }),
                }
            }
        }
    }
    let mut rules = Vec::new();
    for (key, mut contributions) in by_key {
        contributions.sort_by_key(|k| k.inspect == INSPECT_NONE);
        let set: Vec<PortRule> = contributions
            .iter()
            .flat_map(|k| {
                merge(k.ranges.clone()).into_iter().map(|r| PortRule {
                    lo: r.lo,
                    hi: r.hi,
                    conduit: FIRST_CONDUIT + k.conduit as u16,
                    rule: k.rule,
                    inspect: k.inspect,
                    _pad: [0; 3],
                })
            })
            .collect();
        if set.len() > MAX_RULES {
            errors.push(overflow(policy, &key, &contributions, set.len()));
            continue;
        }
        let mut rule_set = RuleSet {
            count: set.len() as u32,
            ..RuleSet::default()
        };
        rule_set.rules[..set.len()].copy_from_slice(&set);
        rules.push((key, rule_set));
    }
    rules
}

fn overflow(
    policy: &Policy,
    key: &RuleKey,
    contributions: &[Contribution],
    count: usize,
) -> CompileError {
    let mut conduits: Vec<usize> = contributions.iter().map(|k| k.conduit).collect();
    conduits.sort();
    conduits.dedup();
    let names: Vec<&str> = conduits
        .iter()
        .map(|&c| policy.conduits[c].name.as_str())
        .collect();
    let first = &policy.conduits[conduits[0]];
    let proto = match key.proto {
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        PROTO_ICMP => "ICMP",
        _ => "ICMPv6",
    };
    CompileError {
        path: child(&item("conduits", *conduits.last().unwrap_or(&0)), "allow"),
        message: format!(
            "{proto} from `{}` to `{}` needs {count} port rules, more than the {MAX_RULES} the \
             datapath holds per (protocol, from, to); conduits involved: {}. Join adjacent \
             ports into ranges, or split the traffic by host",
            policy.endpoint_name(&first.from),
            policy.endpoint_name(&first.to),
            names.join(", ")
        ),
    }
}

/// (protocol, inspector, ranges) for one allow item.
fn port_rules(allow: &Allow) -> Vec<(u8, u8, Vec<PortRange>)> {
    let types = |list: &[u8]| {
        list.iter()
            .map(|&t| PortRange::single(u16::from(t)))
            .collect()
    };
    match allow {
        Allow::Tcp(ranges) => vec![(PROTO_TCP, INSPECT_NONE, ranges.clone())],
        Allow::Udp(ranges) => vec![(PROTO_UDP, INSPECT_NONE, ranges.clone())],
        Allow::Icmp(icmp) => [
            (PROTO_ICMP, types(&icmp.v4)),
            (PROTO_ICMPV6, types(&icmp.v6)),
        ]
        .into_iter()
        .filter(|(_, ranges): &(u8, Vec<PortRange>)| !ranges.is_empty())
        .map(|(proto, ranges)| (proto, INSPECT_NONE, ranges))
        .collect(),
        Allow::Modbus(rules) => {
            vec![(
                PROTO_TCP,
                INSPECT_MODBUS,
                vec![PortRange::single(rules.port)],
            )]
        }
        Allow::Enip(rules) => {
            let port = vec![PortRange::single(rules.port)];
            let mut out = vec![
                (PROTO_TCP, INSPECT_ENIP, port.clone()),
                (PROTO_UDP, INSPECT_ENIP, port),
            ];
            if rules.io {
                out.push((
                    PROTO_UDP,
                    INSPECT_ENIP_IO,
                    vec![PortRange::single(enip::IO_PORT)],
                ));
            }
            out
        }
    }
}

/// Sorted, with overlapping and adjacent ranges joined, to spend as few rule slots as possible.
fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut merged: Vec<PortRange> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => merged.push(r),
        }
    }
    merged
}

fn names(policy: &Policy) -> Names {
    let zones =
        std::iter::once("(none)".to_string()).chain(policy.zones.iter().map(|z| z.name.clone()));
    let hosts = std::iter::once(String::new()).chain(policy.zones.iter().flat_map(|z| {
        z.hosts
            .iter()
            .map(move |h| format!("{}/{}", z.name, h.name))
    }));
    let conduits = PSEUDO_CONDUIT_NAMES
        .iter()
        .map(|n| n.to_string())
        .chain(policy.conduits.iter().map(|c| c.name.clone()));
    let pseudo = |zone: &str| ConduitLabels {
        from_zone: zone.to_string(),
        to_zone: zone.to_string(),
        protocol: "any".to_string(),
    };
    let labels = [
        pseudo("(any)"),
        pseudo("(any)"),
        pseudo("(same)"),
        pseudo("(unzoned)"),
    ]
    .into_iter()
    .chain(policy.conduits.iter().map(|c| {
        let mut protocols: Vec<&str> = Vec::new();
        for allow in &c.allow {
            let name = match allow {
                Allow::Tcp(_) => "tcp",
                Allow::Udp(_) => "udp",
                Allow::Icmp(_) => "icmp",
                Allow::Modbus(_) => "modbus",
                Allow::Enip(_) => "enip",
            };
            if !protocols.contains(&name) {
                protocols.push(name);
            }
        }
        ConduitLabels {
            from_zone: policy.zones[c.from.zone].name.clone(),
            to_zone: policy.zones[c.to.zone].name.clone(),
            protocol: protocols.join("+"),
        }
    }));
    Names {
        zones: zones.collect(),
        hosts: hosts.collect(),
        conduits: conduits.collect(),
        conduit_labels: labels.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_joins_overlapping_and_adjacent_ranges() {
        let r = |lo, hi| PortRange { lo, hi };
        assert_eq!(
            merge(vec![
                r(30, 40),
                r(1, 10),
                r(11, 12),
                r(35, 50),
                r(60, 60),
                r(65535, 65535)
            ]),
            vec![r(1, 12), r(30, 50), r(60, 60), r(65535, 65535)]
        );
    }
}
