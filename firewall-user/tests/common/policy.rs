//! A small policy builder producing `CompiledPolicy` directly, so that the datapath tests do not
//! depend on the YAML compiler. Ids follow the order of declaration: zones and hosts from 1,
//! conduits from `FIRST_CONDUIT`.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use firewall_common::{
    conduit::{
        ConduitInfo, PortRule, RuleSet, FIRST_CONDUIT, MAX_RULES, MODE_ENFORCE, MODE_MONITOR,
        ON_DENY_DROP, ON_DENY_RESET,
    },
    config::{
        Config, FLAG_DEFAULT_ALLOW, FLAG_INTRA_ZONE_ALLOW, FLAG_MIDSTREAM_ADOPT,
        FLAG_UNZONED_ALLOW, MAX_NON_IP,
    },
    zone::{zone_charge, ZoneInfo, ZoneMatch, UNZONED_CHARGE, ZONE_FLAG_PORTS},
};
use otfw::policy::compile::flow_share;
use otfw::policy::compiled::{
    Attachment, CompiledPolicy, Names, Prefix, RuleKey, PSEUDO_CONDUIT_NAMES,
};

pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_LLDP: u16 = 0x88cc;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// A port (or ICMP type) or an inclusive range of them.
pub trait Ports {
    fn range(self) -> (u16, u16);
}

impl Ports for u16 {
    fn range(self) -> (u16, u16) {
        (self, self)
    }
}

impl Ports for RangeInclusive<u16> {
    fn range(self) -> (u16, u16) {
        (*self.start(), *self.end())
    }
}

#[derive(Clone, Debug)]
struct Zone {
    name: String,
    networks: Vec<(IpAddr, u32)>,
    hosts: Vec<(String, IpAddr)>,
    ports: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Conduit {
    name: String,
    from: String,
    to: String,
    mode: Option<u8>,
    on_deny: Option<u8>,
    rules: Vec<(u8, u16, u16)>,
}

impl Conduit {
    /// `from` and `to` are `zone` or `zone/host`, as in the policy format.
    pub fn new(name: &str, from: &str, to: &str) -> Conduit {
        Conduit {
            name: name.into(),
            from: from.into(),
            to: to.into(),
            mode: None,
            on_deny: None,
            rules: Vec::new(),
        }
    }

    pub fn tcp(mut self, ports: impl Ports) -> Conduit {
        let (lo, hi) = ports.range();
        self.rules.push((IPPROTO_TCP, lo, hi));
        self
    }

    pub fn udp(mut self, ports: impl Ports) -> Conduit {
        let (lo, hi) = ports.range();
        self.rules.push((IPPROTO_UDP, lo, hi));
        self
    }

    pub fn icmp(mut self, types: impl Ports) -> Conduit {
        let (lo, hi) = types.range();
        self.rules.push((IPPROTO_ICMP, lo, hi));
        self
    }

    pub fn icmpv6(mut self, types: impl Ports) -> Conduit {
        let (lo, hi) = types.range();
        self.rules.push((IPPROTO_ICMPV6, lo, hi));
        self
    }

    pub fn monitor(mut self) -> Conduit {
        self.mode = Some(MODE_MONITOR);
        self
    }

    pub fn reset(mut self) -> Conduit {
        self.on_deny = Some(ON_DENY_RESET);
        self
    }
}

/// The defaults are those of the policy format: action deny, intra_zone allow, unzoned deny,
/// non_ip [arp], midstream adopt, mode enforce, on_deny drop.
#[derive(Clone, Debug)]
pub struct Policy {
    flags: u32,
    udp_idle_secs: u32,
    tcp_idle_secs: u32,
    non_ip: Vec<u16>,
    mode: u8,
    on_deny: u8,
    zones: Vec<Zone>,
    conduits: Vec<Conduit>,
    /// Every zone's share of the flow table, instead of the compiler's equal shares.
    max_flows: Option<u32>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            flags: FLAG_INTRA_ZONE_ALLOW | FLAG_MIDSTREAM_ADOPT,
            udp_idle_secs: 60,
            tcp_idle_secs: 3600,
            non_ip: vec![ETH_P_ARP],
            mode: MODE_ENFORCE,
            on_deny: ON_DENY_DROP,
            zones: Vec::new(),
            conduits: Vec::new(),
            max_flows: None,
        }
    }
}

fn parse_network(s: &str) -> (IpAddr, u32) {
    let (addr, len) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("{s}: no prefix length"));
    let addr: IpAddr = addr.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    let len: u32 = len.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    (addr, len)
}

fn masked<const N: usize>(addr: [u8; N], len: u32) -> [u8; N] {
    let mut out = addr;
    for (i, byte) in out.iter_mut().enumerate() {
        let bits = len.saturating_sub(i as u32 * 8).min(8);
        *byte &= !(0xffu16 >> bits) as u8;
    }
    out
}

impl Policy {
    pub fn new() -> Policy {
        Policy::default()
    }

    pub fn zone(mut self, name: &str, networks: &[&str]) -> Policy {
        self.zones.push(Zone {
            name: name.into(),
            networks: networks.iter().map(|n| parse_network(n)).collect(),
            hosts: Vec::new(),
            ports: Vec::new(),
        });
        self
    }

    pub fn host(mut self, zone: &str, name: &str, addr: &str) -> Policy {
        let addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("host {name}: {addr}: {e}"));
        self.zone_mut(zone).hosts.push((name.into(), addr));
        self
    }

    /// Anti-spoofing: addresses of `zone` may only arrive on these interfaces.
    pub fn ports(mut self, zone: &str, ports: &[&str]) -> Policy {
        self.zone_mut(zone).ports = ports.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn conduit(mut self, conduit: Conduit) -> Policy {
        self.conduits.push(conduit);
        self
    }

    /// Gives every zone (and hosts in no zone) this share of the flow table.
    #[allow(dead_code)] // not every test binary that shares this module uses it
    pub fn max_flows(mut self, flows: u32) -> Policy {
        self.max_flows = Some(flows);
        self
    }

    pub fn default_allow(mut self) -> Policy {
        self.flags |= FLAG_DEFAULT_ALLOW;
        self
    }

    pub fn intra_zone_deny(mut self) -> Policy {
        self.flags &= !FLAG_INTRA_ZONE_ALLOW;
        self
    }

    pub fn unzoned_allow(mut self) -> Policy {
        self.flags |= FLAG_UNZONED_ALLOW;
        self
    }

    pub fn midstream_deny(mut self) -> Policy {
        self.flags &= !FLAG_MIDSTREAM_ADOPT;
        self
    }

    pub fn non_ip(mut self, ethertypes: &[u16]) -> Policy {
        assert!(ethertypes.len() <= MAX_NON_IP);
        self.non_ip = ethertypes.to_vec();
        self
    }

    pub fn udp_idle_secs(mut self, secs: u32) -> Policy {
        self.udp_idle_secs = secs;
        self
    }

    pub fn monitor(mut self) -> Policy {
        self.mode = MODE_MONITOR;
        self
    }

    pub fn reset(mut self) -> Policy {
        self.on_deny = ON_DENY_RESET;
        self
    }

    fn zone_mut(&mut self, name: &str) -> &mut Zone {
        self.zones
            .iter_mut()
            .find(|z| z.name == name)
            .unwrap_or_else(|| panic!("no zone {name}"))
    }

    /// Zone and host ids of `zone` or `zone/host`.
    fn endpoint(&self, spec: &str) -> ZoneMatch {
        let (zone, host) = match spec.split_once('/') {
            Some((z, h)) => (z, Some(h)),
            None => (spec, None),
        };
        let zone_index = self
            .zones
            .iter()
            .position(|z| z.name == zone)
            .unwrap_or_else(|| panic!("{spec}: no zone {zone}"));
        let host_id = match host {
            None => 0,
            Some(h) => {
                let before: usize = self.zones[..zone_index].iter().map(|z| z.hosts.len()).sum();
                let within = self.zones[zone_index]
                    .hosts
                    .iter()
                    .position(|(n, _)| n == h)
                    .unwrap_or_else(|| panic!("{spec}: no host {h} in zone {zone}"));
                before + within + 1
            }
        };
        ZoneMatch {
            zone: zone_index as u16 + 1,
            host: host_id as u16,
        }
    }

    pub fn compile(&self) -> CompiledPolicy {
        let config = Config {
            epoch: 0,
            flags: self.flags,
            udp_idle_secs: self.udp_idle_secs,
            tcp_idle_secs: self.tcp_idle_secs,
            non_ip: {
                let mut a = [0u16; MAX_NON_IP];
                a[..self.non_ip.len()].copy_from_slice(&self.non_ip);
                a
            },
            non_ip_count: self.non_ip.len() as u32,
            _pad: 0,
        };
        let mut prefixes_v4 = Vec::new();
        let mut prefixes_v6 = Vec::new();
        let mut add_prefix = |addr: IpAddr, len: u32, target: ZoneMatch| match addr {
            IpAddr::V4(a) => prefixes_v4.push(Prefix {
                addr: masked(a.octets(), len),
                prefix_len: len,
                target,
            }),
            IpAddr::V6(a) => prefixes_v6.push(Prefix {
                addr: masked(a.octets(), len),
                prefix_len: len,
                target,
            }),
        };
        let mut names = Names {
            zones: vec!["(none)".into()],
            hosts: vec![String::new()],
            conduits: PSEUDO_CONDUIT_NAMES.iter().map(|n| n.to_string()).collect(),
            ..Names::default()
        };
        let mut zone_info = Vec::new();
        let mut zone_ports = Vec::new();
        for (i, zone) in self.zones.iter().enumerate() {
            let id = i as u16 + 1;
            for &(addr, len) in &zone.networks {
                add_prefix(addr, len, ZoneMatch { zone: id, host: 0 });
            }
            for (name, addr) in &zone.hosts {
                names.hosts.push(name.clone());
                let host = names.hosts.len() as u16 - 1;
                let len = if addr.is_ipv4() { 32 } else { 128 };
                add_prefix(*addr, len, ZoneMatch { zone: id, host });
            }
            let flags = if zone.ports.is_empty() {
                0
            } else {
                ZONE_FLAG_PORTS
            };
            zone_info.push((
                id,
                ZoneInfo {
                    flags,
                    charge: zone_charge(&zone.name),
                    max_flows: self.max_flows.unwrap_or(flow_share(self.zones.len())),
                    _pad: 0,
                },
            ));
            zone_ports.extend(zone.ports.iter().map(|p| (id, p.clone())));
            names.zones.push(zone.name.clone());
        }
        let defaults = ConduitInfo {
            mode: self.mode,
            on_deny: self.on_deny,
            _pad: [0; 2],
        };
        let mut conduits: Vec<(u16, ConduitInfo)> =
            (0..FIRST_CONDUIT).map(|id| (id, defaults)).collect();
        let mut rules: Vec<(RuleKey, RuleSet)> = Vec::new();
        for (i, c) in self.conduits.iter().enumerate() {
            let id = FIRST_CONDUIT + i as u16;
            names.conduits.push(c.name.clone());
            conduits.push((
                id,
                ConduitInfo {
                    mode: c.mode.unwrap_or(self.mode),
                    on_deny: c.on_deny.unwrap_or(self.on_deny),
                    _pad: [0; 2],
                },
            ));
            let (from, to) = (self.endpoint(&c.from), self.endpoint(&c.to));
            for &(proto, lo, hi) in &c.rules {
                let key = RuleKey {
                    proto,
                    from_zone: from.zone,
                    from_host: from.host,
                    to_zone: to.zone,
                    to_host: to.host,
                };
                let set = match rules.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, set)) => set,
                    None => {
                        rules.push((key, RuleSet::default()));
                        &mut rules.last_mut().expect("just pushed").1
                    }
                };
                assert!(
                    (set.count as usize) < MAX_RULES,
                    "too many rules for one key"
                );
                set.rules[set.count as usize] = PortRule {
                    lo,
                    hi,
                    conduit: id,
                    ..PortRule::default()
                };
                set.count += 1;
            }
        }
        CompiledPolicy {
            config,
            attachment: Attachment::Bridge("br-test".into()),
            prefixes_v4,
            prefixes_v6,
            zone_info,
            unzoned_info: ZoneInfo {
                flags: 0,
                charge: UNZONED_CHARGE,
                max_flows: self.max_flows.unwrap_or(flow_share(self.zones.len())),
                _pad: 0,
            },
            zone_ports,
            rules,
            conduits,
            names,
            modbus_rules: Vec::new(),
            modbus_maps: Vec::new(),
            enip_rules: Vec::new(),
            enip_maps: Vec::new(),
        }
    }
}

/// Two zones, `it` opening to `ot`: Modbus, SNMP and ping.
pub fn it_ot() -> Policy {
    it_ot_with(&[])
}

/// `it_ot` with one more conduit declared first: every conduit id moves up by one.
pub fn it_ot_shifted() -> Policy {
    it_ot_with(&[Conduit::new("ssh", "it", "ot").tcp(22)])
}

fn it_ot_with(first: &[Conduit]) -> Policy {
    let mut p = Policy::new()
        .zone("it", &["10.0.2.0/24", "2001:db8:2::/64"])
        .zone("ot", &["10.0.1.0/24", "2001:db8:1::/64"]);
    for c in first {
        p = p.conduit(c.clone());
    }
    p.conduit(Conduit::new("modbus", "it", "ot").tcp(502))
        .conduit(Conduit::new("snmp", "it", "ot").udp(161))
        .conduit(Conduit::new("ping", "it", "ot").icmp(8).icmpv6(128))
}
