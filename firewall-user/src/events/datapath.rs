//! Records of the datapath's ring buffer `EVENTS` turned into `denied` and `flow_adopted`
//! events: ids become conduit, zone and port names of the generation that decided.

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv6Addr},
};

use firewall_common::{
    conduit::FIRST_CONDUIT,
    counters::VERDICT_NAMES,
    event::{DatapathEvent, EVENT_ADOPTED, EVENT_DENIED, EVENT_HAS_TUPLE},
    reason::Reason,
};
use serde::Serialize;

use super::Event;
use crate::policy::compiled::{CompiledPolicy, Names};

/// One packet or flow as events describe it. Fields the datapath did not know are absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketEvent {
    /// The policy generation that decided.
    pub epoch: u32,
    /// The bridge port the packet arrived on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    pub conduit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// The inspected protocol's function or service (Modbus function, CIP service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub reason: &'static str,
    pub verdict: &'static str,
}

/// Zones by longest-prefix match, from a compiled policy (for addresses no conduit names).
#[derive(Clone, Debug, Default)]
struct ZoneTable {
    /// `(prefix length in IPv6 bits, network as u128, zone id)`, IPv4 as IPv4-mapped.
    prefixes: Vec<(u32, u128, u16)>,
}

impl ZoneTable {
    fn new(policy: &CompiledPolicy) -> ZoneTable {
        let v4 = policy.prefixes_v4.iter().map(|p| {
            let addr = std::net::Ipv4Addr::from(p.addr).to_ipv6_mapped();
            (96 + p.prefix_len, u128::from(addr), p.target.zone)
        });
        let v6 = policy
            .prefixes_v6
            .iter()
            .map(|p| (p.prefix_len, u128::from_be_bytes(p.addr), p.target.zone));
        let mut prefixes: Vec<_> = v4.chain(v6).collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0));
        ZoneTable { prefixes }
    }

    fn zone(&self, addr: &[u8; 16]) -> Option<u16> {
        let addr = u128::from_be_bytes(*addr);
        self.prefixes
            .iter()
            .find(|(len, net, _)| {
                let mask = if *len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                addr & mask == *net & mask
            })
            .map(|&(_, _, zone)| zone)
    }
}

struct Known {
    epoch: u32,
    names: Names,
    zones: ZoneTable,
}

/// What the controller knows to name the ids of datapath events: the last two generations and
/// the attached ports.
#[derive(Default)]
pub struct DatapathEvents {
    generations: VecDeque<Known>,
    ports: BTreeMap<u32, String>,
}

impl DatapathEvents {
    pub fn generation(&mut self, epoch: u32, policy: &CompiledPolicy) {
        self.generations.push_back(Known {
            epoch,
            names: policy.names.clone(),
            zones: ZoneTable::new(policy),
        });
        while self.generations.len() > 2 {
            self.generations.pop_front();
        }
    }

    pub fn port(&mut self, ifindex: u32, name: &str) {
        self.ports.insert(ifindex, name.to_string());
    }

    /// The event a ring buffer record stands for; `None` for a record of unknown shape.
    pub fn decode(&self, bytes: &[u8]) -> Option<Event<'static>> {
        let raw: DatapathEvent = crate::datapath::read_record(bytes)?;
        let packet = self.describe(&raw);
        match raw.kind {
            EVENT_DENIED => Some(Event::Denied(packet)),
            EVENT_ADOPTED => Some(Event::FlowAdopted(packet)),
            _ => None,
        }
    }

    fn describe(&self, raw: &DatapathEvent) -> PacketEvent {
        let known = self.generations.iter().find(|g| g.epoch == raw.epoch);
        let conduit = known
            .and_then(|g| g.names.conduit(raw.conduit))
            .map_or_else(|| format!("#{}", raw.conduit), str::to_string);
        let tuple = raw.flags & EVENT_HAS_TUPLE != 0;
        let key = &raw.key;
        let (mut src_zone, mut dst_zone) = (None, None);
        if let Some(g) = known {
            if raw.conduit >= FIRST_CONDUIT {
                if let Some(labels) = g.names.conduit_labels.get(raw.conduit as usize) {
                    // Adopted flows are described in the initiator's direction, as the conduit.
                    src_zone = Some(labels.from_zone.clone());
                    dst_zone = Some(labels.to_zone.clone());
                }
            }
            if tuple && src_zone.is_none() {
                let name = |addr| {
                    g.zones
                        .zone(addr)
                        .and_then(|z| g.names.zone(z))
                        .unwrap_or("(none)")
                        .to_string()
                };
                src_zone = Some(name(&key.src));
                dst_zone = Some(name(&key.dst));
            }
        }
        let (protocol, ports) = match key.proto {
            6 => (Some("tcp".to_string()), true),
            17 => (Some("udp".to_string()), true),
            1 => (Some("icmp".to_string()), false),
            58 => (Some("icmpv6".to_string()), false),
            0 => (None, false),
            n => (Some(n.to_string()), false),
        };
        let addr = |bytes: &[u8; 16]| {
            let v6 = Ipv6Addr::from(*bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        };
        let (reason, verdict) = if raw.kind == EVENT_ADOPTED {
            ("none", "pass")
        } else {
            (
                Reason::from_u8(raw.reason).map_or("unknown", Reason::name),
                VERDICT_NAMES
                    .get(raw.verdict as usize)
                    .copied()
                    .unwrap_or("unknown"),
            )
        };
        PacketEvent {
            epoch: raw.epoch,
            port: self.ports.get(&raw.ifindex).cloned(),
            conduit,
            src_zone,
            dst_zone,
            src: tuple.then(|| addr(&key.src)),
            dst: tuple.then(|| addr(&key.dst)),
            protocol: if tuple { protocol } else { None },
            src_port: (tuple && ports).then_some(key.sport),
            dst_port: (tuple && ports).then_some(key.dport),
            function: None,
            reason,
            verdict,
        }
    }
}
