//! Warnings about valid policies that probably do not mean what their authors think. They never
//! stop a policy from loading.

use ipnet::IpNet;

use super::enip;
use super::source::{child, item, Diagnostics};
use super::validated::*;

/// Adds every warning for `policy` (which has passed validation).
pub fn lint(policy: &Policy, diagnostics: &mut Diagnostics) {
    if policy.zones.is_empty() {
        diagnostics.warning(
            "",
            "the policy defines no zones, so every address is unzoned",
        );
    }
    if policy.defaults.action == Action::Allow {
        diagnostics.warning(
            "defaults.action",
            "`defaults.action: allow` lets any inter-zone traffic through that no conduit \
             covers; conduits then only add inspection",
        );
    }
    zones(policy, diagnostics);
    for (i, conduit) in policy.conduits.iter().enumerate() {
        conduit_lints(policy, i, conduit, diagnostics);
    }
    redundant_conduits(policy, diagnostics);
}

fn zone_path(zone: &Zone) -> String {
    child("zones", &zone.name)
}

fn zones(policy: &Policy, diagnostics: &mut Diagnostics) {
    for zone in &policy.zones {
        let path = zone_path(zone);
        if zone.networks.is_empty() {
            let message = if zone.hosts.is_empty() {
                format!(
                    "zone `{}` has no networks and no hosts, so no address is in it",
                    zone.name
                )
            } else {
                format!(
                    "zone `{}` has no networks; only its hosts are in it",
                    zone.name
                )
            };
            diagnostics.warning(&path, message);
        } else {
            for host in &zone.hosts {
                if !zone.networks.iter().any(|n| n.contains(&host.addr)) {
                    diagnostics.warning(
                        &child(&child(&path, "hosts"), &host.name),
                        format!(
                            "host `{}` ({}) lies outside the networks of zone `{}`",
                            host.name, host.addr, zone.name
                        ),
                    );
                }
            }
        }
    }
    network_overlaps(policy, diagnostics);
}

/// Warns, at the later of two overlapping networks (file order), about each earlier one it
/// overlaps. CIDR blocks either nest or are disjoint, so one sweep over the networks sorted by
/// start address (wider first) with a stack of the blocks still open finds every overlapping
/// pair in O(n log n + pairs); policies with thousands of networks stay fast to check.
fn network_overlaps(policy: &Policy, diagnostics: &mut Diagnostics) {
    // (zone, network index) in file order, with the address range of each network.
    let mut nets: Vec<(usize, usize, bool, u128, u128)> = Vec::new();
    for (z, zone) in policy.zones.iter().enumerate() {
        for (n, net) in zone.networks.iter().enumerate() {
            let (v6, start, end) = match net {
                IpNet::V4(v4) => (
                    false,
                    u128::from(u32::from(v4.network())),
                    u128::from(u32::from(v4.broadcast())),
                ),
                IpNet::V6(v6) => (true, u128::from(v6.network()), u128::from(v6.broadcast())),
            };
            nets.push((z, n, v6, start, end));
        }
    }
    let mut order: Vec<usize> = (0..nets.len()).collect();
    order.sort_by_key(|&i| (nets[i].2, nets[i].3, std::cmp::Reverse(nets[i].4), i));
    // For each network (by its position in `nets`, which is file order), the earlier networks
    // it overlaps.
    let mut overlaps: Vec<Vec<usize>> = vec![Vec::new(); nets.len()];
    let mut open: Vec<usize> = Vec::new();
    for &i in &order {
        let (_, _, v6, start, _) = nets[i];
        while let Some(&top) = open.last() {
            if nets[top].2 != v6 || nets[top].4 < start {
                open.pop();
            } else {
                break;
            }
        }
        for &outer in &open {
            let (earlier, later) = if outer < i { (outer, i) } else { (i, outer) };
            overlaps[later].push(earlier);
        }
        open.push(i);
    }
    for (i, earlier) in overlaps.iter_mut().enumerate() {
        earlier.sort_unstable();
        let (z, n, ..) = nets[i];
        let zone = &policy.zones[z];
        let net = zone.networks[n];
        let net_path = item(&child(&zone_path(zone), "networks"), n);
        for &e in earlier.iter() {
            let (oz, on, ..) = nets[e];
            let other = &policy.zones[oz];
            let other_net = other.networks[on];
            let message = if oz == z {
                format!("network {net} overlaps {other_net} of the same zone; keep one")
            } else {
                format!(
                    "network {net} overlaps {other_net} of zone `{}`; addresses in both \
                     belong to the zone with the longer prefix",
                    other.name
                )
            };
            diagnostics.warning(&net_path, message);
        }
    }
}

fn conduit_lints(policy: &Policy, index: usize, conduit: &Conduit, diagnostics: &mut Diagnostics) {
    let path = item("conduits", index);
    let from = &policy.zones[conduit.from.zone];
    let to = &policy.zones[conduit.to.zone];
    if conduit.from.zone == conduit.to.zone && policy.defaults.intra_zone == Action::Allow {
        diagnostics.warning(
            &child(&path, "to"),
            format!(
                "conduit `{}` stays inside zone `{}`, where `defaults.intra_zone: allow` already \
                 lets all traffic through",
                conduit.name, from.name
            ),
        );
    }
    let climbs = matches!((from.security_level, to.security_level), (Some(f), Some(t)) if t > f);
    for (j, allow) in conduit.allow.iter().enumerate() {
        let allow_path = item(&child(&path, "allow"), j);
        let risky = match allow {
            Allow::Modbus(rules) if rules.grants_write_or_program() => {
                Some("modbus write or program functions")
            }
            Allow::Enip(rules) if rules.grants_write_or_admin() => {
                Some("CIP write or admin services")
            }
            _ => None,
        };
        if let (true, Some(what)) = (climbs, risky) {
            diagnostics.warning(
                &allow_path,
                format!(
                    "conduit `{}` grants {what} from zone `{}` (security level {}) into zone `{}` \
                     (security level {}); a lower level should not change a higher one",
                    conduit.name,
                    from.name,
                    from.security_level.unwrap_or_default(),
                    to.name,
                    to.security_level.unwrap_or_default()
                ),
            );
        }
        if let Allow::Enip(rules) = allow {
            if rules.io && !rules.opens_connections() {
                diagnostics.warning(
                    &child(&child(&allow_path, "enip"), "io"),
                    "`io: true` admits I/O only for connections opened by an allowed \
                     Forward_Open, and this rule allows neither forward_open nor \
                     large_forward_open",
                );
            }
        }
    }
}

/// Conduits that another conduit makes redundant.
fn redundant_conduits(policy: &Policy, diagnostics: &mut Diagnostics) {
    let conduits = &policy.conduits;
    // Only conduits between the same two zones can cover one another; comparing within those
    // groups keeps large policies fast to check.
    let mut by_zones: std::collections::HashMap<(usize, usize), Vec<usize>> =
        std::collections::HashMap::new();
    for (i, c) in conduits.iter().enumerate() {
        by_zones
            .entry((c.from.zone, c.to.zone))
            .or_default()
            .push(i);
    }
    for (b, narrow) in conduits.iter().enumerate() {
        let group = &by_zones[&(narrow.from.zone, narrow.to.zone)];
        // Of two equivalent conduits, only the later one is reported.
        let wider = group.iter().map(|&a| (a, &conduits[a])).find(|&(a, wide)| {
            a != b && subsumes(wide, narrow) && !(a > b && subsumes(narrow, wide))
        });
        if let Some((_, wide)) = wider {
            diagnostics.warning(
                &child(&item("conduits", b), "name"),
                format!(
                    "conduit `{}` is redundant: conduit `{}` already allows everything it allows",
                    narrow.name, wide.name
                ),
            );
        }
    }
}

/// `wide` has the same or wider ends than `narrow` and allows every allow item of it.
fn subsumes(wide: &Conduit, narrow: &Conduit) -> bool {
    wide.from.contains(&narrow.from)
        && wide.to.contains(&narrow.to)
        && narrow.allow.iter().all(|allow| covered(wide, allow))
}

fn plain_ranges(conduit: &Conduit, udp: bool) -> Vec<PortRange> {
    conduit
        .allow
        .iter()
        .flat_map(|a| match (a, udp) {
            (Allow::Tcp(r), false) | (Allow::Udp(r), true) => r.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// Whether `conduit` allows (at least) what `allow` does, for the same ends.
fn covered(conduit: &Conduit, allow: &Allow) -> bool {
    let tcp = plain_ranges(conduit, false);
    let udp = plain_ranges(conduit, true);
    let port = |ranges: &[PortRange], p: u16| ranges_cover(ranges, PortRange::single(p));
    match allow {
        Allow::Tcp(ranges) => ranges.iter().all(|r| ranges_cover(&tcp, *r)),
        Allow::Udp(ranges) => ranges.iter().all(|r| ranges_cover(&udp, *r)),
        Allow::Icmp(types) => {
            let (v4, v6): (Vec<u8>, Vec<u8>) = conduit
                .allow
                .iter()
                .filter_map(|a| match a {
                    Allow::Icmp(t) => Some((t.v4.clone(), t.v6.clone())),
                    _ => None,
                })
                .fold((Vec::new(), Vec::new()), |(mut a4, mut a6), (t4, t6)| {
                    a4.extend(t4);
                    a6.extend(t6);
                    (a4, a6)
                });
            types.v4.iter().all(|t| v4.contains(t)) && types.v6.iter().all(|t| v6.contains(t))
        }
        Allow::Modbus(rules) => conduit.allow.contains(allow) || port(&tcp, rules.port),
        Allow::Enip(rules) => {
            conduit.allow.contains(allow)
                || (port(&tcp, rules.port)
                    && port(&udp, rules.port)
                    && (!rules.io || port(&udp, enip::IO_PORT)))
        }
    }
}
