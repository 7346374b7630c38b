//! Passive asset inventory: what the gateway learns about the devices behind it from traffic
//! that crosses it, never by sending anything.
//!
//! - [`Inventory`] is the observation model: every address seen (an [`Asset`]: MACs, first and
//!   last seen, what it serves and uses, its identity) and every [`Conversation`] between a
//!   client and a server port, with the Modbus and CIP requests made on it. It is kept as a
//!   JSON state file that survives restarts; loading merges.
//! - `observe` turns frames into observations (TCP streams reassembled, requests decoded).
//! - `identity` parses what devices say about themselves; `vendors` names vendors.
//! - `report` (`otfw inventory`) and `learn` (`otfw learn`) read the model.

pub mod exporter;
pub mod identity;
pub mod learn;
pub mod live;
pub mod observe;
pub mod report;
pub mod vendors;
pub mod zones;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::decode::modbus::Table;

/// The state file format; bumped when an old file could not be read as the new one.
pub const STATE_VERSION: u32 = 1;

/// A point in time, written as RFC 3339 (`2024-05-01T10:00:00.123456Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub SystemTime);

impl Time {
    pub fn from_unix(since_epoch: Duration) -> Time {
        Time(SystemTime::UNIX_EPOCH + since_epoch)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_micros(self.0))
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map(Time)
            .map_err(serde::de::Error::custom)
    }
}

/// How often and when something was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub count: u64,
    pub first: Time,
    pub last: Time,
}

impl Seen {
    pub fn once(at: Time) -> Seen {
        Seen {
            count: 1,
            first: at,
            last: at,
        }
    }

    pub fn record(&mut self, at: Time) {
        self.count += 1;
        self.first = self.first.min(at);
        self.last = self.last.max(at);
    }

    pub fn merge(&mut self, other: &Seen) {
        self.count += other.count;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// Counts and times per key: seen once more with [`tally`].
pub type Tally<K> = BTreeMap<K, Seen>;

fn tally<K: Ord>(map: &mut Tally<K>, key: K, at: Time) {
    map.entry(key)
        .and_modify(|s| s.record(at))
        .or_insert_with(|| Seen::once(at));
}

fn merge_tally<K: Ord + Clone>(into: &mut Tally<K>, from: &Tally<K>) {
    for (k, s) in from {
        into.entry(k.clone())
            .and_modify(|mine| mine.merge(s))
            .or_insert(*s);
    }
}

/// The transport of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    /// ICMP and ICMPv6; the "port" is the message type the client sent.
    Icmp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
        })
    }
}

/// A transport and port, as an asset serves or uses it: `tcp/502`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Service {
    pub transport: Transport,
    pub port: u16,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.transport, self.port)
    }
}

/// What a device said about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modbus: Option<identity::modbus::DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enip: Option<identity::enip::Identity>,
}

impl Identity {
    pub fn is_empty(&self) -> bool {
        self.modbus.is_none() && self.enip.is_none()
    }

    /// A short name for the device: the EtherNet/IP product name, else the Modbus label.
    pub fn label(&self) -> Option<String> {
        self.enip
            .as_ref()
            .map(|e| e.product_name.trim().to_owned())
            .filter(|n| !n.is_empty())
            .or_else(|| self.modbus.as_ref().and_then(|m| m.label()))
    }

    fn merge(&mut self, other: &Identity) {
        if other.enip.is_some() {
            self.enip.clone_from(&other.enip);
        }
        if let Some(theirs) = &other.modbus {
            let mine = self.modbus.get_or_insert_with(Default::default);
            mine.merge_id(theirs);
        }
    }
}

/// One address seen on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    pub ip: IpAddr,
    /// Source MAC addresses of its packets (`aa:bb:cc:dd:ee:ff`); several when it sits behind
    /// a router or moved. Captures without Ethernet headers give none.
    #[serde(default)]
    pub macs: BTreeSet<String>,
    /// Packets it sent or received.
    pub seen: Seen,
    /// The gateway's bridge ports its frames arrived on (the live inventory knows them;
    /// captures do not say).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ports: BTreeSet<String>,
    /// Ports it answered on.
    #[serde(default)]
    pub serves: BTreeSet<Service>,
    /// Ports of other assets it opened conversations to.
    #[serde(default)]
    pub uses: BTreeSet<Service>,
    #[serde(default, skip_serializing_if = "Identity::is_empty")]
    pub identity: Identity,
}

/// The application protocol of a conversation, as far as otfw decodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Application {
    Modbus,
    Enip,
    /// EtherNet/IP class 0/1 implicit I/O (UDP 2222).
    CipIo,
    /// Nothing otfw decodes.
    Other,
}

/// The Modbus requests of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModbusUse {
    pub units: Tally<u8>,
    /// `"3"`, or `"8/4"` and `"43/14"` with the sub-function or MEI type.
    pub functions: Tally<String>,
    /// Addresses requested per table, joined where they touch or overlap.
    #[serde(default)]
    pub addresses: BTreeMap<Table, Vec<(u16, u16)>>,
}

/// The EtherNet/IP messages and CIP requests of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnipUse {
    /// Encapsulation commands.
    pub commands: Tally<u16>,
    /// CIP requests by service and what they address: `"0x0e@0x01"` (service at class),
    /// `"0x4c@tag"` (symbolic path).
    pub services: Tally<String>,
    /// Tag names of symbolic requests.
    #[serde(default)]
    pub tags: Tally<String>,
}

/// Traffic from a client to one port of a server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub client: IpAddr,
    pub server: IpAddr,
    pub transport: Transport,
    pub port: u16,
    pub application: Application,
    /// Packets, both directions.
    pub packets: Seen,
    /// Connections (TCP) or flows (UDP, ICMP) started.
    pub flows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modbus: Option<ModbusUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enip: Option<EnipUse>,
    /// For UDP: the well-known port the client sent from, when it did (an EtherNet/IP device
    /// answering a broadcast ListIdentity from 44818 starts a flow of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_from: Option<u16>,
    /// Client messages the decoder could not read, and the first such problem.
    #[serde(default)]
    pub undecoded: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
}

pub type ConversationKey = (IpAddr, IpAddr, Transport, u16);

impl Conversation {
    /// A conversation seen for the first time at `at`, its first flow started.
    pub fn new(key: ConversationKey, application: Application, at: Time) -> Conversation {
        let (client, server, transport, port) = key;
        Conversation {
            client,
            server,
            transport,
            port,
            application,
            packets: Seen::once(at),
            flows: 1,
            modbus: None,
            enip: None,
            answers_from: None,
            undecoded: 0,
            decode_error: None,
        }
    }

    pub fn key(&self) -> ConversationKey {
        (self.client, self.server, self.transport, self.port)
    }

    fn merge(&mut self, other: &Conversation) {
        self.packets.merge(&other.packets);
        self.flows += other.flows;
        if self.application == Application::Other {
            self.application = other.application;
        }
        if let Some(theirs) = &other.modbus {
            let mine = self.modbus.get_or_insert_with(Default::default);
            merge_tally(&mut mine.units, &theirs.units);
            merge_tally(&mut mine.functions, &theirs.functions);
            for (table, ranges) in &theirs.addresses {
                for &(lo, hi) in ranges {
                    add_range(mine.addresses.entry(*table).or_default(), lo, hi);
                }
            }
        }
        if let Some(theirs) = &other.enip {
            let mine = self.enip.get_or_insert_with(Default::default);
            merge_tally(&mut mine.commands, &theirs.commands);
            merge_tally(&mut mine.services, &theirs.services);
            merge_tally(&mut mine.tags, &theirs.tags);
        }
        self.answers_from = self.answers_from.or(other.answers_from);
        self.undecoded += other.undecoded;
        if self.decode_error.is_none() {
            self.decode_error.clone_from(&other.decode_error);
        }
    }
}

/// Adds `lo..=hi` to sorted disjoint ranges, joining ranges it touches or overlaps.
pub fn add_range(ranges: &mut Vec<(u16, u16)>, lo: u16, hi: u16) {
    let (mut lo, mut hi) = (lo, hi);
    ranges.retain(|&(a, b)| {
        let apart = u32::from(b) + 1 < u32::from(lo) || u32::from(hi) + 1 < u32::from(a);
        if !apart {
            lo = lo.min(a);
            hi = hi.max(b);
        }
        apart
    });
    let at = ranges.partition_point(|&(a, _)| a < lo);
    ranges.insert(at, (lo, hi));
}

/// Everything observed: the model `otfw inventory` shows and `otfw learn` writes policies from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub assets: BTreeMap<IpAddr, Asset>,
    pub conversations: BTreeMap<ConversationKey, Conversation>,
    /// Non-IP frames by ethertype (0x0042 for spanning tree, as policies write `stp`).
    pub non_ip: Tally<u16>,
}

/// The state file: the inventory with a format version.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    assets: Vec<Asset>,
    conversations: Vec<Conversation>,
    #[serde(default)]
    non_ip: Tally<u16>,
}

impl Inventory {
    /// Joins what `other` observed into this inventory.
    pub fn merge(&mut self, other: &Inventory) {
        for (ip, theirs) in &other.assets {
            match self.assets.get_mut(ip) {
                Some(mine) => {
                    mine.macs.extend(theirs.macs.iter().cloned());
                    mine.ports.extend(theirs.ports.iter().cloned());
                    mine.seen.merge(&theirs.seen);
                    mine.serves.extend(theirs.serves.iter().copied());
                    mine.uses.extend(theirs.uses.iter().copied());
                    mine.identity.merge(&theirs.identity);
                }
                None => {
                    self.assets.insert(*ip, theirs.clone());
                }
            }
        }
        for (key, theirs) in &other.conversations {
            match self.conversations.get_mut(key) {
                Some(mine) => mine.merge(theirs),
                None => {
                    self.conversations.insert(*key, theirs.clone());
                }
            }
        }
        merge_tally(&mut self.non_ip, &other.non_ip);
    }

    /// Reads a state file written by [`Inventory::save`].
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the inventory state {}", path.display()))?;
        let state: StateFile = serde_json::from_str(&text)
            .with_context(|| format!("inventory state {}", path.display()))?;
        anyhow::ensure!(
            state.version == STATE_VERSION,
            "inventory state {}: version {}, this otfw reads version {STATE_VERSION}",
            path.display(),
            state.version
        );
        Ok(Inventory {
            assets: state.assets.into_iter().map(|a| (a.ip, a)).collect(),
            conversations: state
                .conversations
                .into_iter()
                .map(|c| (c.key(), c))
                .collect(),
            non_ip: state.non_ip,
        })
    }

    /// Writes the state file: to a temporary file beside it, then renamed over it, so a crash
    /// leaves the old state or the new one, never half of one; readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let state = StateFile {
            version: STATE_VERSION,
            assets: self.assets.values().cloned().collect(),
            conversations: self.conversations.values().cloned().collect(),
            non_ip: self.non_ip.clone(),
        };
        // Owner-only (0600) from creation: it maps every asset of the plant.
        let text = serde_json::to_string_pretty(&state)? + "\n";
        crate::private::write(path, text.as_bytes())
            .with_context(|| format!("keeping the inventory state {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_where_they_touch() {
        let mut r = Vec::new();
        add_range(&mut r, 10, 19);
        add_range(&mut r, 30, 39);
        assert_eq!(r, vec![(10, 19), (30, 39)]);
        add_range(&mut r, 20, 29);
        assert_eq!(r, vec![(10, 39)]);
        add_range(&mut r, 0, 0);
        add_range(&mut r, 65535, 65535);
        assert_eq!(r, vec![(0, 0), (10, 39), (65535, 65535)]);
        add_range(&mut r, 0, 65535);
        assert_eq!(r, vec![(0, 65535)]);
    }
}
