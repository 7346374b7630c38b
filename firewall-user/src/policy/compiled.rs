//! The compiled form of a policy: exactly what the datapath maps will hold, minus the slot (which
//! is chosen when the generation is installed) and interface indexes (resolved on the host).

use super::{
    enip::{EnipMaps, EnipRules},
    modbus::ModbusRules,
};
use firewall_common::{
    conduit::{ConduitInfo, RuleSet},
    config::Config,
    modbus::ModbusRule,
    zone::{ZoneInfo, ZoneMatch},
};

/// One LPM entry: `prefix_len` bits of `addr` map to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix<const N: usize> {
    pub addr: [u8; N],
    pub prefix_len: u32,
    pub target: ZoneMatch,
}

/// A conduit lookup key without the slot (see `firewall_common::conduit::ConduitKey`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    pub proto: u8,
    pub from_zone: u16,
    pub from_host: u16,
    pub to_zone: u16,
    pub to_host: u16,
}

/// Where the firewall attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    Bridge(String),
    Interfaces(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    /// `epoch` is left 0; the installer sets it.
    pub config: Config,
    pub attachment: Attachment,
    pub prefixes_v4: Vec<Prefix<4>>,
    pub prefixes_v6: Vec<Prefix<16>>,
    /// `(zone id, info)` for every zone.
    pub zone_info: Vec<(u16, ZoneInfo)>,
    /// What index 0 (no zone) gets: the flow share of hosts in no zone.
    pub unzoned_info: ZoneInfo,
    /// `(zone id, interface name)`: anti-spoofing; names are resolved to ifindexes at install.
    pub zone_ports: Vec<(u16, String)>,
    pub rules: Vec<(RuleKey, RuleSet)>,
    /// `(conduit id, info)` for the pseudo conduits (defaults) and every policy conduit.
    pub conduits: Vec<(u16, ConduitInfo)>,
    /// Names for ids, for metrics, events and replay output.
    pub names: Names,
    /// Protocol rules by id (`PortRule::rule`), for the payload inspectors.
    pub modbus_rules: Vec<(u16, ModbusRules)>,
    /// The same rules as map `MODBUS_RULES` holds them.
    pub modbus_maps: Vec<(u16, ModbusRule)>,
    pub enip_rules: Vec<(u16, EnipRules)>,
    /// The same rules as maps `ENIP_RULES`, `ENIP_CLASSES` and `ENIP_TAGS` hold them.
    pub enip_maps: Vec<(u16, EnipMaps)>,
}

#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Indexed by zone id (index 0 = "(none)").
    pub zones: Vec<String>,
    /// Indexed by host id (index 0 = "").
    pub hosts: Vec<String>,
    /// Indexed by conduit id, including the pseudo conduits.
    pub conduits: Vec<String>,
    /// Indexed by conduit id like `conduits`: zone pair and protocols, for metric labels.
    pub conduit_labels: Vec<ConduitLabels>,
}

/// What metrics say about a conduit besides its name. Pseudo conduits have zone labels in
/// parentheses: `(any)` for `(none)` and `(default)`, `(same)` for `(intra-zone)`, `(unzoned)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConduitLabels {
    pub from_zone: String,
    pub to_zone: String,
    /// The protocols of the conduit's `allow` items in file order, joined by `+`
    /// (`modbus+icmp`); `any` for pseudo conduits.
    pub protocol: String,
}

impl Names {
    pub fn conduit(&self, id: u16) -> Option<&str> {
        self.conduits.get(id as usize).map(String::as_str)
    }
    /// The conduit's name, or its id as text when this generation has no such conduit.
    pub fn conduit_label(&self, id: u16) -> String {
        self.conduit(id)
            .map_or_else(|| id.to_string(), str::to_owned)
    }

    pub fn zone(&self, id: u16) -> Option<&str> {
        self.zones.get(id as usize).map(String::as_str)
    }
}

/// Names of the pseudo conduits `CONDUIT_NONE`, `CONDUIT_DEFAULT`, `CONDUIT_INTRA_ZONE`,
/// `CONDUIT_UNZONED` as they appear in metrics, events and replay output.
pub const PSEUDO_CONDUIT_NAMES: [&str; firewall_common::conduit::FIRST_CONDUIT as usize] =
    ["(none)", "(default)", "(intra-zone)", "(unzoned)"];
