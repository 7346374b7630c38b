//! Semantic checks: document -> validated [`Policy`]. Every problem is reported at the value
//! that causes it, and checking goes on after each one so that `otfw check` lists them all.

use std::collections::HashMap;
use std::net::IpAddr;

use firewall_common::conduit::{FIRST_CONDUIT, MAX_CONDUITS};
use firewall_common::config::MAX_NON_IP;
use firewall_common::zone::{MAX_HOSTS, MAX_ZONES};
use ipnet::IpNet;

use super::model::{self, Document, Scalar};
use super::source::{child, item, Diagnostics};
use super::validated::*;
use super::{enip, modbus};

/// Validates `document`; returns the policy if neither this nor an earlier step (reading the
/// document) reported an error.
pub fn validate(document: &Document, diagnostics: &mut Diagnostics) -> Option<Policy> {
    check_version(document.version.as_ref(), diagnostics);
    let gateway = gateway(document.gateway.as_ref(), diagnostics);
    let defaults = defaults(&document.defaults, diagnostics);
    let zones = zones(document, gateway.as_ref(), diagnostics);
    let conduits = conduits(document, &zones, &defaults, diagnostics);
    if diagnostics.has_errors() {
        return None;
    }
    Some(Policy {
        gateway: gateway?,
        defaults,
        zones,
        conduits,
    })
}

fn check_version(version: Option<&Scalar>, diagnostics: &mut Diagnostics) {
    match version.map(Scalar::number) {
        Some(Some(1)) => {}
        None => diagnostics.error("", "missing `version: 1` (the policy format version)"),
        Some(_) => diagnostics.error(
            "version",
            format!(
                "unsupported policy version `{}`; this otfw reads version 1",
                version.unwrap()
            ),
        ),
    }
}

fn gateway(gateway: Option<&model::Gateway>, diagnostics: &mut Diagnostics) -> Option<Attachment> {
    let Some(gateway) = gateway else {
        diagnostics.error(
            "",
            "missing `gateway`: set `gateway.bridge` to the bridge to protect, or \
             `gateway.interfaces` to the bridge ports to attach to",
        );
        return None;
    };
    match (&gateway.bridge, &gateway.interfaces) {
        (Some(bridge), None) => {
            let ok = check_interface_name(bridge, "gateway.bridge", diagnostics);
            ok.then(|| Attachment::Bridge(bridge.clone()))
        }
        (None, Some(interfaces)) => {
            if interfaces.is_empty() {
                diagnostics.error("gateway.interfaces", "`gateway.interfaces` is empty");
                return None;
            }
            let mut ok = true;
            for (i, name) in interfaces.iter().enumerate() {
                let path = item("gateway.interfaces", i);
                ok &= check_interface_name(name, &path, diagnostics);
                if interfaces[..i].contains(name) {
                    diagnostics.error(&path, format!("interface `{name}` is listed twice"));
                    ok = false;
                }
            }
            ok.then(|| Attachment::Interfaces(interfaces.clone()))
        }
        _ => {
            diagnostics.error(
                "gateway",
                "set exactly one of `gateway.bridge` (attach to all its ports) and \
                 `gateway.interfaces` (attach to these ports)",
            );
            None
        }
    }
}

/// Linux interface names: 1..15 bytes, no `/`, `:` or blanks.
fn check_interface_name(name: &str, path: &str, diagnostics: &mut Diagnostics) -> bool {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        diagnostics.error(
            path,
            format!("`{name}` is not a valid interface name (1 to 15 characters, no `/`, `:` or blanks)"),
        );
    }
    !bad
}

fn defaults(doc: &model::Defaults, diagnostics: &mut Diagnostics) -> Defaults {
    let mut defaults = Defaults::default();
    defaults.action = doc.action.unwrap_or(defaults.action);
    defaults.intra_zone = doc.intra_zone.unwrap_or(defaults.intra_zone);
    defaults.unzoned = doc.unzoned.unwrap_or(defaults.unzoned);
    defaults.midstream = doc.midstream.unwrap_or(defaults.midstream);
    defaults.mode = doc.mode.unwrap_or(defaults.mode);
    defaults.on_deny = doc.on_deny.unwrap_or(defaults.on_deny);
    if let Some(list) = &doc.non_ip {
        defaults.non_ip.clear();
        for (i, entry) in list.iter().enumerate() {
            match ethertype(entry) {
                Ok(t) if !defaults.non_ip.contains(&t) => defaults.non_ip.push(t),
                Ok(_) => {}
                Err(e) => diagnostics.error(&item("defaults.non_ip", i), e),
            }
        }
        if defaults.non_ip.len() > MAX_NON_IP {
            diagnostics.error(
                "defaults.non_ip",
                format!(
                    "{} ethertypes in `non_ip`; the datapath holds at most {MAX_NON_IP}",
                    defaults.non_ip.len()
                ),
            );
        }
    }
    if let Some(timeouts) = &doc.timeouts {
        let limits = [
            ("udp", &timeouts.udp, &mut defaults.udp_idle_secs),
            ("tcp", &timeouts.tcp, &mut defaults.tcp_idle_secs),
        ];
        for (name, written, resolved) in limits {
            let Some(written) = written else { continue };
            match written.number_in("timeout (seconds)", 1, i64::from(u32::MAX)) {
                Ok(secs) => *resolved = secs as u32,
                Err(e) => diagnostics.error(&child("defaults.timeouts", name), e),
            }
        }
    }
    defaults
}

fn ethertype(entry: &Scalar) -> Result<u16, String> {
    match entry.text().filter(|_| entry.number().is_none()) {
        Some("arp") => Ok(ETHERTYPE_ARP),
        Some("lldp") => Ok(ETHERTYPE_LLDP),
        Some("stp") => Ok(NON_IP_STP),
        Some(other) => Err(format!(
            "unknown ethertype name `{other}`; expected arp, lldp, stp or a number 0x0600..0xffff"
        )),
        None => match entry.number() {
            Some(n) if (0x0600..=0xFFFF).contains(&n) => Ok(n as u16),
            _ => Err(format!(
                "ethertype `{entry}` is out of range 0x0600..0xffff (values below 0x0600 are \
                 802.3 lengths; write `stp` for spanning tree)"
            )),
        },
    }
}

fn zones(
    document: &Document,
    gateway: Option<&Attachment>,
    diagnostics: &mut Diagnostics,
) -> Vec<Zone> {
    if document.zones.len() >= MAX_ZONES as usize {
        diagnostics.error(
            "zones",
            format!(
                "{} zones; at most {} fit the datapath",
                document.zones.len(),
                MAX_ZONES - 1
            ),
        );
    }
    let host_count: usize = document.zones.values().map(|z| z.hosts.len()).sum();
    if host_count > MAX_HOSTS as usize {
        diagnostics.error(
            "zones",
            format!("{host_count} hosts; at most {MAX_HOSTS} fit the datapath"),
        );
    }
    // Who already claimed each prefix (networks as written, hosts as /32 or /128).
    let mut owners: HashMap<IpNet, (String, bool)> = HashMap::new();
    let mut zones = Vec::new();
    for (name, doc) in &document.zones {
        let path = child("zones", name);
        check_name(name, "zone", &path, diagnostics);
        let mut zone = Zone {
            name: name.clone(),
            networks: Vec::new(),
            ports: doc.ports.clone(),
            security_level: None,
            description: doc.description.clone(),
            hosts: Vec::new(),
        };
        for (i, text) in doc.networks.iter().enumerate() {
            let net_path = item(&child(&path, "networks"), i);
            let Some(net) = network(text, &net_path, diagnostics) else {
                continue;
            };
            match owners.get(&net) {
                Some((owner, _)) => diagnostics.error(
                    &net_path,
                    format!("network {net} is already listed in zone `{owner}`"),
                ),
                None => {
                    owners.insert(net, (name.clone(), false));
                    zone.networks.push(net);
                }
            }
        }
        for (i, port) in doc.ports.iter().enumerate() {
            let port_path = item(&child(&path, "ports"), i);
            if !check_interface_name(port, &port_path, diagnostics) {
                continue;
            }
            if let Some(Attachment::Interfaces(interfaces)) = gateway {
                if !interfaces.contains(port) {
                    diagnostics.error(
                        &port_path,
                        format!(
                            "port `{port}` is not one of `gateway.interfaces` ({}); the \
                             firewall only sees those ports",
                            interfaces.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(level) = &doc.security_level {
            match level.number_in("security_level", 0, 4) {
                Ok(l) => zone.security_level = Some(l as u8),
                Err(e) => diagnostics.error(&child(&path, "security_level"), e),
            }
        }
        for (host, text) in &doc.hosts {
            let host_path = child(&child(&path, "hosts"), host);
            check_name(host, "host", &host_path, diagnostics);
            let Ok(addr) = text.trim().parse::<IpAddr>() else {
                diagnostics.error(
                    &host_path,
                    format!("host `{host}`: `{text}` is not an IP address (e.g. 10.0.0.5 or 2001:db8::5)"),
                );
                continue;
            };
            let prefix = IpNet::from(addr);
            match owners.get(&prefix) {
                // A host may name a /32 network of its own zone; the host entry wins.
                Some((owner, false)) if owner == name => {}
                Some((owner, is_host)) => {
                    let what = if *is_host { "a host" } else { "a network" };
                    diagnostics.error(
                        &host_path,
                        format!("address {addr} is already {what} of zone `{owner}`"),
                    );
                    continue;
                }
                None => {}
            }
            owners.insert(prefix, (name.clone(), true));
            zone.hosts.push(Host {
                name: host.clone(),
                addr,
            });
        }
        zones.push(zone);
    }
    zones
}

/// Zone and host names appear in `from`/`to` as `zone/host`, and in metrics labels.
fn check_name(name: &str, what: &str, path: &str, diagnostics: &mut Diagnostics) {
    if name.is_empty() || name.contains(|c: char| c == '/' || c.is_whitespace()) {
        diagnostics.key_error(
            path,
            format!("{what} name `{name}` must be non-empty, without `/` or blanks"),
        );
    }
}

fn network(text: &str, path: &str, diagnostics: &mut Diagnostics) -> Option<IpNet> {
    let text = text.trim();
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            diagnostics.error(
                path,
                format!(
                    "network `{text}` has host bits set; write {} (or list the address under `hosts`)",
                    net.trunc()
                ),
            );
            None
        }
        Ok(net) => Some(net),
        Err(_) => {
            let hint = match text.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => format!("; for one address write {text}/32"),
                Ok(IpAddr::V6(_)) => format!("; for one address write {text}/128"),
                Err(_) => String::new(),
            };
            diagnostics.error(
                path,
                format!("`{text}` is not a network in CIDR notation (e.g. 10.0.0.0/24){hint}"),
            );
            None
        }
    }
}

fn conduits(
    document: &Document,
    zones: &[Zone],
    defaults: &Defaults,
    diagnostics: &mut Diagnostics,
) -> Vec<Conduit> {
    let max = usize::from(MAX_CONDUITS as u16 - FIRST_CONDUIT);
    if document.conduits.len() > max {
        diagnostics.error(
            "conduits",
            format!(
                "{} conduits; at most {max} fit the datapath",
                document.conduits.len()
            ),
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut conduits = Vec::new();
    for (i, doc) in document.conduits.iter().enumerate() {
        let path = item("conduits", i);
        let name = match doc.name.as_deref() {
            None | Some("") => {
                diagnostics.error(
                    &path,
                    "conduit needs a `name` (used in metrics, events and errors)",
                );
                None
            }
            Some(name) => {
                if let Some(first) = names.insert(name, i) {
                    let line = diagnostics
                        .position(&child(&item("conduits", first), "name"))
                        .line;
                    diagnostics.error(
                        &child(&path, "name"),
                        format!("conduit name `{name}` is already used on line {line}"),
                    );
                }
                Some(name)
            }
        };
        let from = endpoint(doc.from.as_deref(), &path, "from", zones, diagnostics);
        let to = endpoint(doc.to.as_deref(), &path, "to", zones, diagnostics);
        let allow = allow_list(doc.allow.as_deref(), &path, diagnostics);
        if let (Some(name), Some(from), Some(to), Some(allow)) = (name, from, to, allow) {
            conduits.push(Conduit {
                name: name.to_string(),
                description: doc.description.clone(),
                from,
                to,
                mode: doc.mode.unwrap_or(defaults.mode),
                on_deny: doc.on_deny.unwrap_or(defaults.on_deny),
                allow,
            });
        }
    }
    conduits
}

fn endpoint(
    text: Option<&str>,
    conduit: &str,
    key: &str,
    zones: &[Zone],
    diagnostics: &mut Diagnostics,
) -> Option<Endpoint> {
    let path = child(conduit, key);
    let Some(text) = text else {
        diagnostics.error(
            conduit,
            format!("conduit needs `{key}`: a zone, or zone/host"),
        );
        return None;
    };
    let (zone_name, host_name) = match text.split_once('/') {
        Some((z, h)) => (z, Some(h)),
        None => (text, None),
    };
    let Some(zone) = zones.iter().position(|z| z.name == zone_name) else {
        let known: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        let known = if known.is_empty() {
            "the policy defines none".to_string()
        } else {
            format!("zones are: {}", known.join(", "))
        };
        diagnostics.error(
            &path,
            format!("unknown zone `{zone_name}` in `{key}`; {known}"),
        );
        return None;
    };
    let Some(host_name) = host_name else {
        return Some(Endpoint { zone, host: None });
    };
    let hosts = &zones[zone].hosts;
    match hosts.iter().position(|h| h.name == host_name) {
        Some(host) => Some(Endpoint {
            zone,
            host: Some(host),
        }),
        None => {
            let known = if hosts.is_empty() {
                "it has no hosts".to_string()
            } else {
                let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                format!("its hosts are: {}", names.join(", "))
            };
            diagnostics.error(
                &path,
                format!("zone `{zone_name}` has no host `{host_name}` (in `{key}`); {known}"),
            );
            None
        }
    }
}

const PROTOCOLS: &str = "tcp, udp, icmp, modbus, enip";

fn allow_list(
    items: Option<&[model::AllowItem]>,
    conduit: &str,
    diagnostics: &mut Diagnostics,
) -> Option<Vec<Allow>> {
    let path = child(conduit, "allow");
    let items = match items {
        None => {
            diagnostics.error(
                conduit,
                format!("conduit needs `allow`: a list of {PROTOCOLS} rules"),
            );
            return None;
        }
        Some([]) => {
            diagnostics.error(
                &path,
                "`allow` is empty, so the conduit allows nothing; add rules or remove the conduit",
            );
            return None;
        }
        Some(items) => items,
    };
    let mut allow = Vec::new();
    let mut ok = true;
    for (i, doc) in items.iter().enumerate() {
        let path = item(&path, i);
        let present: Vec<&str> = [
            ("tcp", doc.tcp.is_some()),
            ("udp", doc.udp.is_some()),
            ("icmp", doc.icmp.is_some()),
            ("modbus", doc.modbus.is_some()),
            ("enip", doc.enip.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, here)| here.then_some(name))
        .collect();
        let rule = match present.as_slice() {
            [] => {
                diagnostics.error(
                    &path,
                    format!("allow item names no protocol; use one of {PROTOCOLS}"),
                );
                None
            }
            [_, _, ..] => {
                diagnostics.error(
                    &path,
                    format!(
                        "allow item names several protocols ({}); give each its own `- ` item",
                        present.join(", ")
                    ),
                );
                None
            }
            [protocol] => {
                let path = child(&path, protocol);
                if let Some(tcp) = &doc.tcp {
                    ports(tcp, &path, diagnostics).map(Allow::Tcp)
                } else if let Some(udp) = &doc.udp {
                    ports(udp, &path, diagnostics).map(Allow::Udp)
                } else if let Some(icmp) = &doc.icmp {
                    icmp_types(icmp, &path, diagnostics).map(Allow::Icmp)
                } else if let Some(rules) = &doc.modbus {
                    modbus::resolve(rules, &path, diagnostics).map(Allow::Modbus)
                } else {
                    let rules = doc.enip.as_ref()?;
                    enip::resolve(rules, &path, diagnostics).map(Allow::Enip)
                }
            }
        };
        match rule {
            Some(rule) => allow.push(rule),
            None => ok = false,
        }
    }
    ok.then_some(allow)
}

fn ports(doc: &model::Ports, path: &str, diagnostics: &mut Diagnostics) -> Option<Vec<PortRange>> {
    let list = required_list(
        doc.ports.as_deref(),
        path,
        "ports",
        "ports: [22, \"8000-8100\"]",
        diagnostics,
    )?;
    let mut ranges = Vec::new();
    let mut ok = true;
    for (i, entry) in list.iter().enumerate() {
        match entry.range_in("port", 1, 65535) {
            Ok((lo, hi)) => ranges.push(PortRange {
                lo: lo as u16,
                hi: hi as u16,
            }),
            Err(e) => {
                diagnostics.error(&item(&child(path, "ports"), i), e);
                ok = false;
            }
        }
    }
    ok.then_some(ranges)
}

fn icmp_types(doc: &model::Icmp, path: &str, diagnostics: &mut Diagnostics) -> Option<IcmpTypes> {
    let list = required_list(
        doc.types.as_deref(),
        path,
        "types",
        "types: [echo_request]",
        diagnostics,
    )?;
    let mut types = IcmpTypes::default();
    let mut ok = true;
    for (i, entry) in list.iter().enumerate() {
        let resolved = match entry.text().filter(|_| entry.number().is_none()) {
            Some(name) => ICMP_TYPES
                .iter()
                .find(|(n, ..)| *n == name)
                .map(|&(_, v4, v6)| (v4, v6))
                .ok_or_else(|| {
                    let names: Vec<&str> = ICMP_TYPES.iter().map(|t| t.0).collect();
                    format!(
                        "unknown ICMP type `{name}`; expected a name ({}) or an ICMPv4 type number 0..255",
                        names.join(", ")
                    )
                }),
            None => entry.number_in("ICMP type", 0, 255).map(|n| (Some(n as u8), None)),
        };
        match resolved {
            Ok((v4, v6)) => {
                types.v4.extend(v4.filter(|t| !types.v4.contains(t)));
                types.v6.extend(v6.filter(|t| !types.v6.contains(t)));
            }
            Err(e) => {
                diagnostics.error(&item(&child(path, "types"), i), e);
                ok = false;
            }
        }
    }
    ok.then_some(types)
}

/// A list key a rule cannot do without; missing or empty is an error with an example.
fn required_list<'a>(
    list: Option<&'a [Scalar]>,
    path: &str,
    key: &str,
    example: &str,
    diagnostics: &mut Diagnostics,
) -> Option<&'a [Scalar]> {
    match list {
        Some(list) if !list.is_empty() => Some(list),
        Some(_) => {
            diagnostics.error(
                &child(path, key),
                format!("`{key}` is empty, e.g. `{example}`"),
            );
            None
        }
        None => {
            diagnostics.error(path, format!("rule needs `{key}`, e.g. `{example}`"));
            None
        }
    }
}
