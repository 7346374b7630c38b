//! `otfw learn`: a candidate policy that allows exactly what an [`Inventory`] saw, for people to
//! review before they enforce it.
//!
//! - One conduit per (client host, server host) pair: the narrowest ends a policy can name.
//!   `defaults.intra_zone` is `deny`, so conversations inside a zone need their conduit too
//!   (under `allow` a zone's own conduits are never consulted, and a Modbus write inside a
//!   zone would pass whatever the learned rule says).
//! - Modbus: the unit ids, function codes (with diagnostics sub-functions and MEI types) and
//!   address ranges requested; ranges are joined where they touch, and the closest are joined
//!   further when a table has more than the datapath holds.
//! - EtherNet/IP: the encapsulation commands, the CIP services by the class or tag path they
//!   addressed, and the tag names, unless tags were also addressed through the Symbol class by
//!   instance (a tag list refuses those).
//! - Everything else by transport and port; flows whose application bytes otfw could not
//!   decode become a plain `tcp`/`udp` rule with a comment saying why, and so does implicit
//!   I/O on UDP 2222 (`io: true` needs the Forward_Open that opened it to be seen).
//! - For UDP and ICMP the client is the first sender, as the datapath starts those flows.
//!
//! Without zones from a policy, one zone is proposed per IPv4 /24 or IPv6 /64 seen, and hosts
//! are named from their identities. Broadcast and multicast destinations get a zone of their
//! own, since the datapath resolves them like any address.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
};

use ipnet::IpNet;

use super::{
    observe::{is_unicast, CIP_IO_PORT},
    zones::{subnet, subnet_name, Zones},
    Application, Conversation, EnipUse, Inventory, ModbusUse, Seen, Tally, Transport,
};
use crate::{
    decode::modbus::Table,
    policy::{
        self,
        enip::{CipTarget, COMMANDS, FIRST_CLASS_SPECIFIC_SERVICE, SERVICES, SYMBOL_CLASS},
        modbus::{DIAGNOSTICS, FUNCTIONS},
        validated::{Attachment, Zone, ETHERTYPE_ARP, ETHERTYPE_LLDP, ICMP_TYPES, NON_IP_STP},
    },
};

/// The zone that holds broadcast and multicast destinations.
pub const NON_UNICAST_ZONE: &str = "broadcast-multicast";
/// The bridge a learned policy names when no policy gave one.
pub const DEFAULT_BRIDGE: &str = "br-ot";
/// Diagnostics sub-functions above this can only be allowed with the whole function.
const MAX_NAMED_DIAGNOSTIC: u16 = 63;
/// Non-IP entries the datapath holds.
const MAX_NON_IP: usize = 8;
/// The highest encapsulation command a rule can allow (the datapath's command bitmap).
const MAX_ENIP_COMMAND: u16 = 0x00FF;
/// Longest tag name the datapath compares.
const MAX_TAG_LEN: usize = 64;

/// What the learned policy is built from.
pub struct Learn<'a> {
    pub inventory: &'a Inventory,
    /// Zones (and gateway) from a policy, or `None` to propose zones from subnets.
    pub policy: Option<&'a policy::Policy>,
    /// Where the observations came from, for the header comment.
    pub sources: Vec<String>,
}

/// One conduit to write: (client, server), its conversations, its allow items as YAML.
type Learned<'a> = ((IpAddr, IpAddr), Vec<&'a Conversation>, Vec<String>);

/// A zone of the learned policy.
struct ZoneOut {
    zone: Zone,
    comment: Option<String>,
    /// Host comments by name.
    host_comments: BTreeMap<String, String>,
}

impl Learn<'_> {
    /// The candidate policy as YAML, with comments.
    pub fn policy_yaml(&self) -> String {
        let inv = self.inventory;
        // The conduits first: only their ends become hosts (conversations that yield no rule,
        // such as neighbour discovery, leave no trace in the policy).
        let mut pairs: BTreeMap<(IpAddr, IpAddr), Vec<&Conversation>> = BTreeMap::new();
        for c in inv.conversations.values() {
            pairs.entry((c.client, c.server)).or_default().push(c);
        }
        let conduits: Vec<Learned> = pairs
            .into_iter()
            .map(|(pair, cs)| {
                let items = conduit_items(&cs);
                (pair, cs, items)
            })
            .filter(|(_, _, items)| !items.is_empty())
            .collect();
        let ends: BTreeSet<IpAddr> = conduits
            .iter()
            .flat_map(|((c, s), _, _)| [*c, *s])
            .collect();
        let mut zones = self.zones(&ends);
        let lookup = Zones {
            zones: zones.iter().map(|z| z.zone.clone()).collect(),
            proposed: false,
        };
        let mut names: BTreeMap<IpAddr, (usize, String)> = BTreeMap::new();
        let mut taken: BTreeSet<String> = zones
            .iter()
            .flat_map(|z| z.zone.hosts.iter().map(|h| h.name.clone()))
            .collect();
        for &ip in &ends {
            let Some(z) = lookup.zone_of(ip) else {
                continue;
            };
            if let Some(h) = lookup.host_name(ip) {
                names.insert(ip, (z, h.to_owned()));
                continue;
            }
            let name = self.host_name(ip, &taken);
            taken.insert(name.clone());
            let zone = &mut zones[z];
            zone.zone.hosts.push(policy::validated::Host {
                name: name.clone(),
                addr: ip,
            });
            if let Some(about) = self.describe(ip) {
                zone.host_comments.insert(name.clone(), about);
            }
            names.insert(ip, (z, name));
        }
        let end = |ip: &IpAddr| {
            names
                .get(ip)
                .map(|(z, h)| format!("{}/{h}", zones[*z].zone.name))
        };

        let mut out = String::new();
        self.header(&mut out);
        self.gateway_and_defaults(&mut out);
        out.push_str("\nzones:\n");
        for z in &zones {
            write_zone(&mut out, z);
        }
        out.push_str("\nconduits:\n");
        let mut any = false;
        for ((client, server), conversations, items) in conduits {
            let (Some(from), Some(to)) = (end(&client), end(&server)) else {
                continue;
            };
            let host = |e: &str| e.split_once('/').map_or(e, |(_, h)| h).to_owned();
            let name = format!("{}-to-{}", host(&from), host(&to));
            let mut seen = conversations[0].packets;
            for c in &conversations[1..] {
                seen.merge(&c.packets);
            }
            let flows: u64 = conversations.iter().map(|c| c.flows).sum();
            let _ = writeln!(
                out,
                "\n  # {client} -> {server}: {}",
                packets_in_flows(&seen, flows)
            );
            let _ = writeln!(out, "  - name: {}", quote(&name));
            let _ = writeln!(out, "    from: {}", quote(&from));
            let _ = writeln!(out, "    to: {}", quote(&to));
            out.push_str("    allow:\n");
            for item in items {
                out.push_str(&item);
            }
            any = true;
        }
        if !any {
            out.push_str("  []\n");
        }
        out
    }

    fn header(&self, out: &mut String) {
        let inv = self.inventory;
        let mut all: Option<Seen> = None;
        for c in inv.conversations.values() {
            match &mut all {
                Some(s) => s.merge(&c.packets),
                None => all = Some(c.packets),
            }
        }
        out.push_str(
            "# Candidate policy learned by `otfw learn`: it allows exactly what was seen.\n",
        );
        out.push_str("# Review every conduit (and `otfw diff` it against the current policy)\n");
        out.push_str("# before enforcing it; run it in `mode: monitor` first.\n");
        for s in &self.sources {
            let _ = writeln!(out, "# Source: {}", comment(s));
        }
        if let Some(s) = all {
            let _ = writeln!(
                out,
                "# {} assets, {} conversations, {} packets, {}.",
                inv.assets.len(),
                inv.conversations.len(),
                s.count,
                span(&s)
            );
        }
        out.push_str("\nversion: 1\n");
    }

    fn gateway_and_defaults(&self, out: &mut String) {
        out.push_str("\ngateway:\n");
        match self.policy.map(|p| &p.gateway) {
            Some(Attachment::Bridge(b)) => {
                let _ = writeln!(out, "  bridge: {}", quote(b));
            }
            Some(Attachment::Interfaces(i)) => {
                let list: Vec<String> = i.iter().map(|n| quote(n)).collect();
                let _ = writeln!(out, "  interfaces: [{}]", list.join(", "));
            }
            None => {
                let _ = writeln!(
                    out,
                    "  bridge: {DEFAULT_BRIDGE}   # the gateway bridge: set it to yours"
                );
            }
        }
        out.push_str("\ndefaults:\n");
        out.push_str("  action: deny\n");
        out.push_str(
            "  intra_zone: deny      # every conversation has its conduit, also inside a zone\n",
        );
        out.push_str("  unzoned: deny\n");
        let mut non_ip: Vec<(u16, Option<Seen>)> = vec![(ETHERTYPE_ARP, None)];
        for (t, s) in &self.inventory.non_ip {
            match non_ip.iter_mut().find(|(x, _)| x == t) {
                Some(e) => e.1 = Some(*s),
                None => non_ip.push((*t, Some(*s))),
            }
        }
        let mut left_out = Vec::new();
        if non_ip.len() > MAX_NON_IP {
            non_ip
                .sort_by_key(|(t, s)| (*t != ETHERTYPE_ARP, std::cmp::Reverse(s.map(|s| s.count))));
            left_out = non_ip.split_off(MAX_NON_IP);
        }
        let names: Vec<String> = non_ip.iter().map(|(t, _)| ethertype_name(*t)).collect();
        let _ = writeln!(out, "  non_ip: [{}]", names.join(", "));
        for (t, s) in &non_ip {
            if let Some(s) = s {
                let _ = writeln!(
                    out,
                    "  #   {}: {} frames, {}",
                    ethertype_name(*t),
                    s.count,
                    span(s)
                );
            }
        }
        for (t, s) in &left_out {
            let _ = writeln!(
                out,
                "  #   not allowed (the datapath holds {MAX_NON_IP}): {} ({} frames)",
                ethertype_name(*t),
                s.map_or(0, |s| s.count)
            );
        }
        out.push_str("  midstream: adopt\n");
        out.push_str("  mode: enforce\n");
        out.push_str("  on_deny: drop\n");
    }

    /// The zones of the policy, or proposed ones; plus zones for addresses outside them and
    /// for broadcast and multicast destinations.
    fn zones(&self, ends: &BTreeSet<IpAddr>) -> Vec<ZoneOut> {
        let mut out: Vec<ZoneOut> = match self.policy {
            Some(p) => p
                .zones
                .iter()
                .map(|z| ZoneOut {
                    zone: z.clone(),
                    comment: None,
                    host_comments: BTreeMap::new(),
                })
                .collect(),
            None => Zones::propose(ends.iter().copied())
                .zones
                .into_iter()
                .map(|zone| ZoneOut {
                    comment: Some("proposed from the addresses seen in this subnet".to_owned()),
                    zone,
                    host_comments: BTreeMap::new(),
                })
                .collect(),
        };
        let mut special: Vec<IpAddr> = Vec::new();
        let mut outside: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        {
            let lookup = Zones {
                zones: out.iter().map(|z| z.zone.clone()).collect(),
                proposed: false,
            };
            for &ip in ends {
                if !is_unicast(ip) {
                    special.push(ip);
                } else if lookup.zone_of(ip).is_none() {
                    outside.entry(subnet(ip)).or_default().push(ip);
                }
            }
        }
        let given: Vec<IpNet> = out.iter().flat_map(|z| z.zone.networks.clone()).collect();
        for (net, ips) in outside {
            let overlaps = given.iter().any(|g| g.contains(&net) || net.contains(g));
            let networks = if overlaps {
                ips.iter().map(|ip| IpNet::from(*ip)).collect()
            } else {
                vec![net]
            };
            out.push(ZoneOut {
                zone: Zone {
                    name: unique_zone_name(&out, &subnet_name(&net)),
                    networks,
                    ports: Vec::new(),
                    security_level: None,
                    description: None,
                    hosts: Vec::new(),
                },
                comment: Some("addresses seen outside every zone of the policy".to_owned()),
                host_comments: BTreeMap::new(),
            });
        }
        if !special.is_empty() {
            out.push(ZoneOut {
                zone: Zone {
                    name: unique_zone_name(&out, NON_UNICAST_ZONE),
                    networks: special.iter().map(|ip| IpNet::from(*ip)).collect(),
                    ports: Vec::new(),
                    security_level: None,
                    description: None,
                    hosts: Vec::new(),
                },
                comment: Some(
                    "broadcast and multicast destinations (and unspecified sources) seen"
                        .to_owned(),
                ),
                host_comments: BTreeMap::new(),
            });
        }
        out
    }

    /// A host name for `ip`: from its identity where it has one, with its address to keep it
    /// unique (`1756-enbt-a-10-1-1-164`), else `h-10-1-1-164`.
    fn host_name(&self, ip: IpAddr, taken: &BTreeSet<String>) -> String {
        let address = slug(&ip.to_string());
        let label = self
            .inventory
            .assets
            .get(&ip)
            .and_then(|a| a.identity.label())
            .map(|l| slug(&l))
            .filter(|l| !l.is_empty());
        let base = match label {
            Some(l) => format!("{l}-{address}"),
            None => format!("{}-{address}", address_kind(ip)),
        };
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }

    /// What the inventory knows about `ip`, for a comment.
    fn describe(&self, ip: IpAddr) -> Option<String> {
        let a = self.inventory.assets.get(&ip)?;
        let mut parts = Vec::new();
        if let Some(e) = &a.identity.enip {
            let vendor = super::vendors::cip_vendor(e.vendor_id)
                .map_or_else(|| format!("vendor {}", e.vendor_id), str::to_owned);
            parts.push(format!(
                "{vendor} {} rev {}.{:02} serial 0x{:08x}",
                e.product_name.trim(),
                e.revision_major,
                e.revision_minor,
                e.serial_number
            ));
        }
        if let Some(label) = a.identity.modbus.as_ref().and_then(|m| {
            let parts: Vec<&str> = [&m.vendor_name, &m.product_code, &m.revision]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        }) {
            parts.push(label);
        }
        if !a.macs.is_empty() {
            parts.push(a.macs.iter().cloned().collect::<Vec<_>>().join(" "));
        }
        parts.push(format!("seen {}", span(&a.seen)));
        Some(comment(&parts.join("; ")))
    }
}

/// `h` (a host), `broadcast`, `multicast` or `unspecified`: how host names start.
fn address_kind(ip: IpAddr) -> &'static str {
    match ip {
        _ if is_unicast(ip) => "h",
        IpAddr::V4(v4) if v4.is_broadcast() => "broadcast",
        _ if ip.is_unspecified() => "unspecified",
        _ => "multicast",
    }
}

fn unique_zone_name(zones: &[ZoneOut], base: &str) -> String {
    let mut name = base.to_owned();
    let mut n = 2;
    while zones.iter().any(|z| z.zone.name == name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

fn write_zone(out: &mut String, z: &ZoneOut) {
    if let Some(c) = &z.comment {
        let _ = writeln!(out, "  # {c}");
    }
    let zone = &z.zone;
    let _ = writeln!(out, "  {}:", quote(&zone.name));
    if let Some(d) = &zone.description {
        let _ = writeln!(out, "    description: {}", quote(d));
    }
    let nets: Vec<String> = zone
        .networks
        .iter()
        .map(|n| quote(&n.to_string()))
        .collect();
    let _ = writeln!(out, "    networks: [{}]", nets.join(", "));
    if !zone.ports.is_empty() {
        let ports: Vec<String> = zone.ports.iter().map(|p| quote(p)).collect();
        let _ = writeln!(out, "    ports: [{}]", ports.join(", "));
    }
    if let Some(l) = zone.security_level {
        let _ = writeln!(out, "    security_level: {l}");
    }
    if !zone.hosts.is_empty() {
        out.push_str("    hosts:\n");
        for h in &zone.hosts {
            let _ = write!(
                out,
                "      {}: {}",
                quote(&h.name),
                quote(&h.addr.to_string())
            );
            match z.host_comments.get(&h.name) {
                Some(c) => {
                    let _ = writeln!(out, "   # {c}");
                }
                None => out.push('\n'),
            }
        }
    }
}

/// The allow items of one conduit, each as YAML text (with its comments).
fn conduit_items(conversations: &[&Conversation]) -> Vec<String> {
    let mut items = Vec::new();
    let mut tcp: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut udp: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut icmp: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut inspected_tcp = 0usize;
    let mut inspected_udp = 0usize;
    // EtherNet/IP over TCP and UDP on one port is one rule.
    let mut enip: BTreeMap<u16, Vec<&Conversation>> = BTreeMap::new();
    for c in conversations {
        // Port 0 is reserved: a policy cannot allow it (`otfw check` refuses the rule), and the
        // datapath drops what is sent to it for want of a conduit. What was seen there yields
        // no rule. (For ICMP, `port` is the message type, and type 0 is an echo reply.)
        if c.port == 0 && c.transport != Transport::Icmp {
            continue;
        }
        let seen = packets_in_flows(&c.packets, c.flows);
        match (c.transport, c.application) {
            (Transport::Tcp, Application::Modbus) if c.undecoded == 0 => {
                items.push(modbus_item(c, &seen));
                inspected_tcp += 1;
            }
            (Transport::Tcp | Transport::Udp, Application::Enip) if c.undecoded == 0 => {
                enip.entry(c.port).or_default().push(c);
            }
            (Transport::Tcp | Transport::Udp, app) => {
                let why = match (app, &c.decode_error) {
                    (Application::Modbus, e) => format!(
                        "Modbus that otfw cannot inspect ({}): allowed uninspected, review",
                        e.as_deref().unwrap_or("?")
                    ),
                    (Application::Enip, e) => format!(
                        "EtherNet/IP that otfw cannot inspect ({}): allowed uninspected, review",
                        e.as_deref().unwrap_or("?")
                    ),
                    (Application::CipIo, _) => format!(
                        "CIP implicit I/O; `io: true` on an enip rule would tie it to the \
                         Forward_Open that opens it (port {CIP_IO_PORT})"
                    ),
                    (Application::Other, _) => match c.answers_from {
                        Some(from) => format!(
                            "answers from udp/{from} to a request the client sent to a broadcast \
                             or multicast address; its port may change from run to run"
                        ),
                        None => "not decoded".to_owned(),
                    },
                };
                let map = if c.transport == Transport::Tcp {
                    &mut tcp
                } else {
                    &mut udp
                };
                map.entry(c.port)
                    .or_default()
                    .push(format!("{}: {why}; {seen}", c.port));
            }
            (Transport::Icmp, _) => {
                let v6 = c.client.is_ipv6();
                let kind = c.port as u8;
                let name = ICMP_TYPES
                    .iter()
                    .find(|(_, v4t, v6t)| {
                        if v6 {
                            *v6t == Some(kind)
                        } else {
                            *v4t == Some(kind)
                        }
                    })
                    .map(|(n, _, _)| (*n).to_owned());
                match (name, v6) {
                    (Some(n), _) => icmp.entry(n).or_default().push(seen),
                    (None, false) => icmp.entry(kind.to_string()).or_default().push(seen),
                    // ICMPv6 types without a name cannot be written; neighbour discovery and
                    // multicast listener messages pass without a conduit anyway.
                    (None, true) => {}
                }
            }
        }
    }
    for (port, cs) in &enip {
        items.push(enip_item(*port, cs));
        // An enip rule is a rule for TCP and for UDP.
        inspected_tcp += 1;
        inspected_udp += 1;
    }
    for (map, key, inspected) in [(&tcp, "tcp", inspected_tcp), (&udp, "udp", inspected_udp)] {
        if map.is_empty() {
            continue;
        }
        let budget = firewall_common::conduit::MAX_RULES
            .saturating_sub(inspected)
            .max(1);
        let ranges = fit_ranges(map.keys().map(|&p| (p, p)).collect(), budget);
        let mut item = String::new();
        for notes in map.values() {
            for n in notes {
                let _ = writeln!(item, "      # {key} {n}");
            }
        }
        let _ = writeln!(
            item,
            "      - {key}: {{ ports: [{}] }}",
            format_ranges(&ranges)
        );
        items.push(item);
    }
    if !icmp.is_empty() {
        let mut item = String::new();
        for (t, notes) in &icmp {
            let _ = writeln!(item, "      # icmp {t}: {}", notes.join("; "));
        }
        let types: Vec<&str> = icmp.keys().map(String::as_str).collect();
        let _ = writeln!(item, "      - icmp: {{ types: [{}] }}", types.join(", "));
        items.push(item);
    }
    items
}

fn modbus_item(c: &Conversation, seen: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "      # modbus {}: {seen}", c.port);
    let empty = ModbusUse::default();
    let m = c.modbus.as_ref().unwrap_or(&empty);
    let _ = writeln!(s, "      - modbus:");
    let _ = writeln!(s, "          port: {}", c.port);
    let units: Vec<String> = m.units.keys().map(u8::to_string).collect();
    let _ = writeln!(s, "          units: [{}]", units.join(", "));
    // Functions as the datapath can hold them: diagnostics sub-functions above 63 only as
    // the whole function.
    let mut functions: BTreeMap<String, Seen> = BTreeMap::new();
    for (f, seen) in &m.functions {
        let key = match f.split_once('/') {
            Some((code, sub)) if code == DIAGNOSTICS.to_string() => {
                if sub.parse::<u16>().is_ok_and(|n| n <= MAX_NAMED_DIAGNOSTIC) {
                    f.clone()
                } else {
                    code.to_owned()
                }
            }
            _ => f.clone(),
        };
        functions
            .entry(key)
            .and_modify(|s| s.merge(seen))
            .or_insert(*seen);
    }
    if functions.contains_key(&DIAGNOSTICS.to_string()) {
        functions.retain(|k, _| !k.starts_with(&format!("{DIAGNOSTICS}/")));
    }
    if functions.is_empty() {
        // Connections were seen, requests were not: the connection is allowed, no request.
        let _ = writeln!(
            s,
            "          # connections without a request: `units: []` refuses every request"
        );
        let _ = writeln!(s, "          functions: [read]");
    } else {
        let ordered = in_code_order(&functions);
        for (f, seen) in &ordered {
            let _ = writeln!(
                s,
                "          #   {}: {}",
                function_name(f),
                counted(seen, "request")
            );
        }
        let list: Vec<String> = ordered
            .iter()
            .map(|(f, _)| {
                if f.contains('/') {
                    quote(f)
                } else {
                    (*f).clone()
                }
            })
            .collect();
        let _ = writeln!(s, "          functions: [{}]", list.join(", "));
    }
    if !m.addresses.is_empty() {
        let _ = writeln!(s, "          addresses:");
        for table in Table::ALL {
            if let Some(ranges) = m.addresses.get(&table) {
                let fitted = fit_ranges(ranges.clone(), firewall_common::modbus::MAX_RANGES);
                let _ = writeln!(
                    s,
                    "            {}: [{}]",
                    table.key(),
                    format_ranges(&fitted)
                );
            }
        }
    }
    s
}

/// Modbus functions as tallied (`"3"`, `"8/4"`) in code order: 3 before 16, 8/4 after 8.
pub fn in_code_order(functions: &Tally<String>) -> Vec<(&String, &Seen)> {
    let mut ordered: Vec<(&String, &Seen)> = functions.iter().collect();
    ordered.sort_by_key(|(f, _)| {
        let (code, sub) = f.split_once('/').unwrap_or((f.as_str(), ""));
        (code.parse::<u8>().unwrap_or(0), sub.parse::<u16>().ok())
    });
    ordered
}

/// `read_holding_registers (3)`, `diagnostics (8/4)`.
pub fn function_name(f: &str) -> String {
    let (code, sub) = match f.split_once('/') {
        Some((c, s)) => (c.parse::<u8>().ok(), s.parse::<u16>().ok()),
        None => (f.parse().ok(), None),
    };
    let name = FUNCTIONS
        .iter()
        .find(|(_, c, s)| Some(*c) == code && (*s == sub || s.is_none()))
        .map(|(n, _, _)| *n);
    match name {
        Some(n) => format!("{n} ({f})"),
        None => f.to_owned(),
    }
}

fn enip_item(port: u16, conversations: &[&Conversation]) -> String {
    let mut used = EnipUse::default();
    let mut transports = BTreeSet::new();
    for c in conversations {
        transports.insert(c.transport.to_string());
        if let Some(e) = &c.enip {
            merge_into(&mut used.commands, &e.commands);
            merge_into(&mut used.services, &e.services);
            merge_into(&mut used.tags, &e.tags);
        }
    }
    let mut s = String::new();
    for c in conversations {
        let _ = writeln!(
            s,
            "      # enip {} {port}: {}",
            c.transport,
            packets_in_flows(&c.packets, c.flows)
        );
    }
    let _ = writeln!(s, "      - enip:");
    let _ = writeln!(s, "          port: {port}");
    // Commands above 0x00FF are reserved: the datapath refuses them whatever a rule says, and
    // `otfw check` refuses a rule that names one, so they are noted, not written.
    let commands: Vec<String> = used
        .commands
        .keys()
        .filter(|&&c| c <= MAX_ENIP_COMMAND)
        .map(|c| command_name(*c))
        .collect();
    for (c, seen) in &used.commands {
        let reserved = if *c > MAX_ENIP_COMMAND {
            " (reserved: refused by the datapath, not allowed here)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "          #   command 0x{c:04x}: {}{reserved}",
            counted(seen, "message")
        );
    }
    let _ = writeln!(s, "          commands: [{}]", commands.join(", "));
    // Services by name where a name covers the (service, target) pair, generic codes as
    // numbers, class-specific ones under `objects`.
    let mut services: BTreeSet<String> = BTreeSet::new();
    let mut objects: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    let mut by_instance = false;
    let mut unwritable = Vec::new();
    for (key, seen) in &used.services {
        let Some((code, target)) = key.split_once('@') else {
            continue;
        };
        let Ok(code) = u8::from_str_radix(code.trim_start_matches("0x"), 16) else {
            continue;
        };
        let class = if target == "tag" {
            None
        } else {
            u16::from_str_radix(target.trim_start_matches("0x"), 16).ok()
        };
        let named = SERVICES.iter().find(|(_, svc)| {
            svc.code == code
                && match (svc.target, class) {
                    (CipTarget::AnyClass, _) => true,
                    (CipTarget::Symbolic, None) => true,
                    (CipTarget::Symbolic, Some(c)) => c == SYMBOL_CLASS,
                    (CipTarget::Class(k), Some(c)) => k == c,
                    (CipTarget::Class(_), None) => false,
                }
        });
        if class == Some(SYMBOL_CLASS)
            && named.is_some_and(|(_, s)| s.target == CipTarget::Symbolic)
        {
            by_instance = true;
        }
        let _ = writeln!(
            s,
            "          #   service {key}: {}",
            counted(seen, "request")
        );
        // Requests addressed to a class are allowed on that class only (`objects`); tag
        // services on symbolic paths under `services`.
        let name = named.map(|(n, _)| (*n).to_owned());
        match class {
            Some(c) => {
                let entry = name.unwrap_or_else(|| format!("0x{code:02x}"));
                objects.entry(c).or_default().insert(entry);
            }
            None => match name {
                Some(n) => {
                    services.insert(n);
                }
                None if code < FIRST_CLASS_SPECIFIC_SERVICE => {
                    services.insert(format!("0x{code:02x}"));
                }
                None => unwritable.push(key.clone()),
            },
        }
    }
    for u in &unwritable {
        let _ = writeln!(
            s,
            "          #   service {u} cannot be written in a policy: not allowed"
        );
    }
    let list: Vec<String> = services.into_iter().collect();
    let _ = writeln!(s, "          services: [{}]", list.join(", "));
    if !objects.is_empty() {
        let _ = writeln!(s, "          objects:");
        for (class, codes) in &objects {
            let codes: Vec<String> = codes.iter().cloned().collect();
            let _ = writeln!(
                s,
                "            - {{ class: 0x{class:02x}, services: [{}] }}",
                codes.join(", ")
            );
        }
    }
    if !used.tags.is_empty() {
        let writable = |t: &str| {
            t.len() <= MAX_TAG_LEN
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:[],".contains(c))
        };
        if by_instance {
            let _ = writeln!(
                s,
                "          # tags not listed: tags were also addressed through the Symbol class \
                 by instance, which a tag list refuses"
            );
        } else if !used.tags.keys().all(|t| writable(t)) {
            let _ = writeln!(
                s,
                "          # tags not listed: some names cannot be written in a policy"
            );
        } else {
            for (t, seen) in &used.tags {
                let (t, seen) = (comment(t), counted(seen, "request"));
                let _ = writeln!(s, "          #   tag {t}: {seen}");
            }
            let tags: Vec<String> = used.tags.keys().map(|t| quote(t)).collect();
            let _ = writeln!(s, "          tags: [{}]", tags.join(", "));
        }
    }
    s
}

/// An encapsulation command by name (`list_identity`), else as a number (`0x0099`).
pub fn command_name(code: u16) -> String {
    COMMANDS
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("0x{code:04x}"), |(n, _)| (*n).to_owned())
}

fn merge_into<K: Ord + Clone>(into: &mut Tally<K>, from: &Tally<K>) {
    for (k, s) in from {
        into.entry(k.clone())
            .and_modify(|m| m.merge(s))
            .or_insert(*s);
    }
}

/// Joins sorted disjoint ranges across the smallest gaps until at most `max` remain.
pub fn fit_ranges(mut ranges: Vec<(u16, u16)>, max: usize) -> Vec<(u16, u16)> {
    ranges.sort();
    // Touching ranges are one.
    let mut joined: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in ranges {
        match joined.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => joined.push((lo, hi)),
        }
    }
    while joined.len() > max.max(1) {
        let (i, _) = joined
            .windows(2)
            .enumerate()
            .min_by_key(|(_, w)| w[1].0 - w[0].1)
            .expect("at least two ranges");
        joined[i].1 = joined[i + 1].1;
        joined.remove(i + 1);
    }
    joined
}

fn format_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("\"{lo}-{hi}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ethertype_name(t: u16) -> String {
    match t {
        ETHERTYPE_ARP => "arp".to_owned(),
        ETHERTYPE_LLDP => "lldp".to_owned(),
        NON_IP_STP => "stp".to_owned(),
        t => format!("0x{t:04x}"),
    }
}

/// `3 requests, FIRST .. LAST`.
fn counted(s: &Seen, what: &str) -> String {
    let plural = if s.count == 1 { "" } else { "s" };
    format!("{} {what}{plural}, {}", s.count, span(s))
}

/// `12 packets in 1 flow, FIRST .. LAST`.
fn packets_in_flows(s: &Seen, flows: u64) -> String {
    let plural = if flows == 1 { "" } else { "s" };
    let packets = if s.count == 1 { "" } else { "s" };
    format!(
        "{} packet{packets} in {flows} flow{plural}, {}",
        s.count,
        span(s)
    )
}

/// `first .. last` of what was seen.
fn span(s: &Seen) -> String {
    if s.first == s.last {
        format!("at {}", s.first)
    } else {
        format!("{} .. {}", s.first, s.last)
    }
}

/// Lower case letters, digits and single `-` between them.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// A YAML double-quoted scalar.
/// `text` as it may stand in a YAML comment: devices name themselves and their tags, and a
/// line break in a name (`\n`, `\r`, NEL, U+2028, U+2029, which serde_yaml also ends lines at)
/// would end the comment and put the rest of the name into the policy. Such characters, and
/// every other control character, are written as escapes.
fn comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_fit_by_joining_the_closest() {
        assert_eq!(
            fit_ranges(vec![(5, 5), (0, 4), (10, 12)], 8),
            vec![(0, 5), (10, 12)]
        );
        let many: Vec<(u16, u16)> = (0..10).map(|i| (i * 10, i * 10 + 1)).collect();
        let fitted = fit_ranges(many, 8);
        assert_eq!(fitted.len(), 8);
        assert_eq!(fitted[0], (0, 21), "equal gaps: the first are joined");
        assert_eq!(fitted.last(), Some(&(90, 91)));
        assert_eq!(
            fit_ranges(vec![(1, 1), (100, 100), (101, 200)], 1),
            vec![(1, 200)]
        );
    }

    use crate::inventory::{tally, Asset, Time};

    fn at() -> Time {
        Time::from_unix(std::time::Duration::from_secs(1_700_000_000))
    }

    /// A conversation from 10.0.0.1 to 10.0.0.2.
    fn conversation(transport: Transport, port: u16, app: Application) -> Conversation {
        let (c, s) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        Conversation::new((c, s, transport, port), app, at())
    }

    fn learned(conversations: Vec<Conversation>) -> (String, policy::Policy) {
        let mut inventory = Inventory::default();
        for c in conversations {
            inventory.conversations.insert(c.key(), c);
        }
        let yaml = Learn {
            inventory: &inventory,
            policy: None,
            sources: vec![],
        }
        .policy_yaml();
        let (loaded, diagnostics) = policy::check_str("learned.yaml", &yaml);
        let loaded = loaded.unwrap_or_else(|| panic!("{diagnostics:#?}\n{yaml}"));
        (yaml, loaded.policy)
    }

    #[test]
    fn many_ports_become_ranges_within_the_rule_limit() {
        let ports: Vec<u16> = (0..40).map(|i| 1000 + 7 * i).collect();
        let (yaml, policy) = learned(
            ports
                .iter()
                .map(|&p| conversation(Transport::Tcp, p, Application::Other))
                .collect(),
        );
        let policy::validated::Allow::Tcp(ranges) = &policy.conduits[0].allow[0] else {
            panic!("{yaml}");
        };
        assert!(
            ranges.len() <= firewall_common::conduit::MAX_RULES,
            "{yaml}"
        );
        for p in ports {
            assert!(
                policy::validated::ranges_cover(ranges, policy::validated::PortRange::single(p)),
                "port {p} in {yaml}"
            );
        }
    }

    #[test]
    fn reserved_encapsulation_commands_are_noted_not_allowed() {
        let mut c = conversation(Transport::Tcp, 44818, Application::Enip);
        let mut e = EnipUse::default();
        tally(&mut e.commands, 0x65, at());
        tally(&mut e.commands, 0x0640, at());
        c.enip = Some(e);
        let (yaml, policy) = learned(vec![c]);
        let policy::validated::Allow::Enip(rules) = &policy.conduits[0].allow[0] else {
            panic!("{yaml}");
        };
        assert_eq!(
            rules.commands.iter().copied().collect::<Vec<_>>(),
            [0x65],
            "{yaml}"
        );
        assert!(yaml.contains("command 0x0640: "), "{yaml}");
    }

    #[test]
    fn names_from_devices_cannot_break_out_of_comments() {
        let mut c = conversation(Transport::Tcp, 44818, Application::Enip);
        let mut e = EnipUse::default();
        tally(&mut e.commands, 0x6f, at());
        tally(&mut e.services, "0x4c@tag".into(), at());
        // A device whose product name carries line breaks and a key.
        c.enip = Some(e);
        let mut inventory = Inventory::default();
        let mut asset = Asset {
            ip: c.server,
            macs: Default::default(),
            ports: Default::default(),
            seen: c.packets,
            serves: Default::default(),
            uses: Default::default(),
            identity: Default::default(),
        };
        asset.identity.enip = Some(crate::inventory::identity::enip::Identity {
            encapsulation_version: 1,
            socket_address: std::net::Ipv4Addr::UNSPECIFIED,
            socket_port: 44818,
            vendor_id: 1,
            device_type: 12,
            product_code: 58,
            revision_major: 4,
            revision_minor: 3,
            status: 0,
            serial_number: 1,
            product_name: "PLC\n\u{2028}zones: {}\u{85}".into(),
            state: 3,
        });
        inventory.assets.insert(c.server, asset);
        inventory.conversations.insert(c.key(), c);
        let yaml = Learn {
            inventory: &inventory,
            policy: None,
            sources: vec!["shift\n.pcap".into()],
        }
        .policy_yaml();
        let (loaded, diagnostics) = policy::check_str("learned.yaml", &yaml);
        assert!(loaded.is_some(), "{diagnostics:#?}\n{yaml}");
        assert!(yaml.contains(r"PLC\n\u{2028}zones: {} rev 4.03"), "{yaml}");
        assert!(yaml.contains(r"# Source: shift\n.pcap"), "{yaml}");
    }

    #[test]
    fn traffic_to_port_0_yields_no_rule() {
        let mut modbus = conversation(Transport::Tcp, 0, Application::Modbus);
        let mut m = ModbusUse::default();
        tally(&mut m.units, 1, at());
        tally(&mut m.functions, "3".into(), at());
        modbus.modbus = Some(m);
        let (yaml, policy) = learned(vec![
            modbus,
            conversation(Transport::Udp, 0, Application::Other),
            conversation(Transport::Tcp, 22, Application::Other),
        ]);
        assert_eq!(policy.conduits.len(), 1, "{yaml}");
        assert_eq!(
            policy.conduits[0].allow,
            [policy::validated::Allow::Tcp(vec![
                policy::validated::PortRange::single(22)
            ])],
            "{yaml}"
        );
        // Nothing else was seen: no conduit at all, rather than one with nothing to allow.
        let (yaml, policy) = learned(vec![conversation(Transport::Udp, 0, Application::Other)]);
        assert!(policy.conduits.is_empty(), "{yaml}");
    }

    #[test]
    fn modbus_tables_fit_and_odd_requests_are_written_as_the_format_allows() {
        let mut c = conversation(Transport::Tcp, 502, Application::Modbus);
        let mut m = ModbusUse::default();
        tally(&mut m.units, 3, at());
        tally(&mut m.functions, "3".into(), at());
        tally(&mut m.functions, "8/100".into(), at());
        tally(&mut m.functions, "8/4".into(), at());
        let ranges: Vec<(u16, u16)> = (0..12).map(|i| (i * 100, i * 100 + 9)).collect();
        m.addresses.insert(Table::HoldingRegisters, ranges);
        c.modbus = Some(m);
        let idle = conversation(Transport::Tcp, 5020, Application::Modbus);
        let (yaml, policy) = learned(vec![c, idle]);
        let mut rules = policy.conduits[0].allow.iter().filter_map(|a| match a {
            policy::validated::Allow::Modbus(m) => Some(m),
            _ => None,
        });
        let (busy, idle) = (rules.next().unwrap(), rules.next().unwrap());
        assert_eq!(busy.units, Some([3].into()));
        // 8/100 cannot be named: the whole of 8 it is, and 8/4 with it.
        assert!(busy.functions.contains_key(&8) && busy.functions.contains_key(&3));
        assert_eq!(
            busy.addresses.holding_registers.as_ref().map(Vec::len),
            Some(firewall_common::modbus::MAX_RANGES),
            "{yaml}"
        );
        // Connections without requests: no unit, so no request, is allowed.
        assert_eq!(
            (idle.port, idle.units.clone()),
            (5020, Some(Default::default()))
        );
    }

    #[test]
    fn tags_are_listed_unless_a_list_would_refuse_what_was_seen() {
        let enip = |services: &[&str], tags: &[&str]| {
            let mut c = conversation(Transport::Tcp, 44818, Application::Enip);
            let mut e = EnipUse::default();
            tally(&mut e.commands, 0x6F, at());
            for s in services {
                tally(&mut e.services, (*s).into(), at());
            }
            for t in tags {
                tally(&mut e.tags, (*t).into(), at());
            }
            c.enip = Some(e);
            c
        };
        let (yaml, _) = learned(vec![enip(&["0x4c@tag", "0x0e@0x01"], &["Line1.Speed"])]);
        assert!(yaml.contains("tags: [\"Line1.Speed\"]"), "{yaml}");
        assert!(yaml.contains("services: [read_tag]"), "{yaml}");
        assert!(
            yaml.contains("{ class: 0x01, services: [get_attribute_single] }"),
            "{yaml}"
        );
        let (yaml, _) = learned(vec![enip(&["0x4c@tag", "0x4c@0x6b"], &["A"])]);
        assert!(!yaml.contains("tags: ["), "by instance: {yaml}");
        let (yaml, _) = learned(vec![enip(&["0x4c@tag"], &["a b"])]);
        assert!(!yaml.contains("tags: ["), "a blank: {yaml}");
    }

    #[test]
    fn names_are_slugs() {
        assert_eq!(slug("1756-ENBT/A"), "1756-enbt-a");
        assert_eq!(slug("2001:db8::1"), "2001-db8-1");
        assert_eq!(slug("  Zeek Modbus Test "), "zeek-modbus-test");
    }
}
