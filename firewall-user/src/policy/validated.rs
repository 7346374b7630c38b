//! The validated policy: every name resolved, every number range-checked, every default filled
//! in. This is what lints read and what `compile` turns into map contents.

use std::net::IpAddr;

use ipnet::IpNet;

pub use super::compiled::Attachment;
pub use super::enip::EnipRules;
pub use super::modbus::ModbusRules;
pub use super::model::{Action, Midstream, Mode, OnDeny};

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub gateway: Attachment,
    pub defaults: Defaults,
    /// In file order; a zone's id is its index + 1.
    pub zones: Vec<Zone>,
    /// In file order; a conduit's id is `FIRST_CONDUIT` + its index.
    pub conduits: Vec<Conduit>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    pub action: Action,
    pub intra_zone: Action,
    pub unzoned: Action,
    /// Ethertypes passed without inspection, in file order, without repeats. `NON_IP_STP`
    /// stands for spanning tree BPDUs, which carry a length, not an ethertype.
    pub non_ip: Vec<u16>,
    pub midstream: Midstream,
    pub mode: Mode,
    pub on_deny: OnDeny,
    pub udp_idle_secs: u32,
    pub tcp_idle_secs: u32,
}

impl Default for Defaults {
    /// The values a policy gets for the keys it leaves out (see policies/README.md).
    fn default() -> Self {
        Defaults {
            action: Action::Deny,
            intra_zone: Action::Allow,
            unzoned: Action::Deny,
            non_ip: vec![ETHERTYPE_ARP],
            midstream: Midstream::Adopt,
            mode: Mode::Enforce,
            on_deny: OnDeny::Drop,
            udp_idle_secs: 120,
            tcp_idle_secs: 7200,
        }
    }
}

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_LLDP: u16 = 0x88cc;
pub use firewall_common::config::NON_IP_STP;

#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    pub name: String,
    pub networks: Vec<IpNet>,
    /// Bridge ports the zone's addresses may arrive on; empty = any port.
    pub ports: Vec<String>,
    pub security_level: Option<u8>,
    pub description: Option<String>,
    pub hosts: Vec<Host>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub name: String,
    pub addr: IpAddr,
}

/// One end of a conduit: a whole zone, or one host of it (indexes into `Policy::zones` and
/// that zone's `hosts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub zone: usize,
    pub host: Option<usize>,
}

impl Endpoint {
    /// Every address of `other` is also an address of `self`.
    pub fn contains(&self, other: &Endpoint) -> bool {
        self.zone == other.zone && (self.host.is_none() || self.host == other.host)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conduit {
    pub name: String,
    pub description: Option<String>,
    pub from: Endpoint,
    pub to: Endpoint,
    /// The conduit's own setting, or the default.
    pub mode: Mode,
    pub on_deny: OnDeny,
    pub allow: Vec<Allow>,
}

/// One entry of a conduit's `allow`.
#[derive(Clone, Debug, PartialEq)]
pub enum Allow {
    Tcp(Vec<PortRange>),
    Udp(Vec<PortRange>),
    Icmp(IcmpTypes),
    Modbus(ModbusRules),
    Enip(EnipRules),
}

/// Destination ports `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }
}

/// Whether `ranges` together include every port of `range`.
pub fn ranges_cover(ranges: &[PortRange], range: PortRange) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut next = u32::from(range.lo);
    for r in sorted {
        if u32::from(r.lo) <= next && u32::from(r.hi) >= next {
            next = u32::from(r.hi) + 1;
        }
    }
    next > u32::from(range.hi)
}

/// ICMP message types, per family: a name stands for both its ICMPv4 and its ICMPv6 type where
/// the two protocols have one; a number is an ICMPv4 type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IcmpTypes {
    pub v4: Vec<u8>,
    pub v6: Vec<u8>,
}

/// ICMP type names: (name, ICMPv4 type, ICMPv6 type).
pub const ICMP_TYPES: &[(&str, Option<u8>, Option<u8>)] = &[
    ("echo_reply", Some(0), Some(129)),
    ("destination_unreachable", Some(3), Some(1)),
    ("packet_too_big", None, Some(2)),
    ("redirect", Some(5), None),
    ("echo_request", Some(8), Some(128)),
    ("router_advertisement", Some(9), None),
    ("router_solicitation", Some(10), None),
    ("time_exceeded", Some(11), Some(3)),
    ("parameter_problem", Some(12), Some(4)),
    ("timestamp_request", Some(13), None),
    ("timestamp_reply", Some(14), None),
];

impl Policy {
    /// The zone id of zone index `zone`.
    pub fn zone_id(zone: usize) -> u16 {
        (zone + 1) as u16
    }

    /// Host ids run 1.. across the policy, in file order.
    pub fn host_id(&self, zone: usize, host: usize) -> u16 {
        let before: usize = self.zones[..zone].iter().map(|z| z.hosts.len()).sum();
        (before + host + 1) as u16
    }

    /// `zone` or `zone/host`, as written in `from`/`to`.
    pub fn endpoint_name(&self, endpoint: &Endpoint) -> String {
        let zone = &self.zones[endpoint.zone];
        match endpoint.host {
            Some(h) => format!("{}/{}", zone.name, zone.hosts[h].name),
            None => zone.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_cover_joins_adjacent_ranges() {
        let r = |lo, hi| PortRange { lo, hi };
        assert!(ranges_cover(&[r(10, 20), r(21, 30)], r(15, 25)));
        assert!(ranges_cover(&[r(21, 30), r(1, 20)], r(1, 30)));
        assert!(!ranges_cover(&[r(10, 20), r(22, 30)], r(15, 25)));
        assert!(ranges_cover(&[r(1, 65535)], r(65535, 65535)));
        assert!(!ranges_cover(&[], r(1, 1)));
    }

    #[test]
    fn endpoints_contain_their_hosts() {
        let zone = Endpoint {
            zone: 1,
            host: None,
        };
        let host = Endpoint {
            zone: 1,
            host: Some(0),
        };
        assert!(zone.contains(&host) && zone.contains(&zone) && host.contains(&host));
        assert!(!host.contains(&zone));
    }
}
