//! Which zone an asset belongs to: the zones of a policy (longest prefix, as the datapath
//! resolves addresses), or, without one, zones proposed from the subnets seen: one per IPv4
//! /24 and IPv6 /64 holding an asset.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use anyhow::{bail, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::observe::is_unicast;
use crate::policy::{self, validated::Zone};

/// The prefix length of a proposed IPv4 zone.
pub const PROPOSED_V4_PREFIX: u8 = 24;
/// The prefix length of a proposed IPv6 zone.
pub const PROPOSED_V6_PREFIX: u8 = 64;

/// Zones to sort assets into.
#[derive(Clone, Debug)]
pub struct Zones {
    pub zones: Vec<Zone>,
    /// The zones were proposed from subnets, not read from a policy.
    pub proposed: bool,
}

impl Zones {
    /// The zones of the policy at `path`, which must pass `otfw check`.
    pub fn from_policy(path: &Path) -> Result<(Zones, policy::LoadedPolicy)> {
        match policy::load(path) {
            Ok(loaded) => Ok((
                Zones {
                    zones: loaded.policy.zones.clone(),
                    proposed: false,
                },
                loaded,
            )),
            Err(diagnostics) => {
                for d in &diagnostics {
                    eprintln!("{d}");
                }
                bail!("policy {} has errors", path.display())
            }
        }
    }

    /// One zone per subnet holding one of `addresses` (broadcast and multicast ones aside),
    /// named after it (`net-10.1.1.0-24`).
    pub fn propose(addresses: impl IntoIterator<Item = IpAddr>) -> Zones {
        let subnets: BTreeSet<IpNet> = addresses
            .into_iter()
            .filter(|ip| is_unicast(*ip))
            .map(subnet)
            .collect();
        Zones {
            zones: subnets
                .into_iter()
                .map(|net| Zone {
                    name: subnet_name(&net),
                    networks: vec![net],
                    ports: Vec::new(),
                    security_level: None,
                    description: None,
                    hosts: Vec::new(),
                })
                .collect(),
            proposed: true,
        }
    }

    /// The index of the zone holding `ip`: the longest matching network wins.
    pub fn zone_of(&self, ip: IpAddr) -> Option<usize> {
        self.zones
            .iter()
            .enumerate()
            .flat_map(|(i, z)| {
                let host = z.hosts.iter().any(|h| h.addr == ip);
                let best = z
                    .networks
                    .iter()
                    .filter(|n| n.contains(&ip))
                    .map(|n| n.prefix_len())
                    .max();
                // A named host belongs to its zone even outside its networks.
                let len = if host { Some(128) } else { best };
                len.map(|l| (l, i))
            })
            .max_by_key(|(l, i)| (*l, std::cmp::Reverse(*i)))
            .map(|(_, i)| i)
    }

    /// The name a policy gives `ip` (`zone`, host) if it is a named host.
    pub fn host_name(&self, ip: IpAddr) -> Option<&str> {
        let zone = &self.zones[self.zone_of(ip)?];
        zone.hosts
            .iter()
            .find(|h| h.addr == ip)
            .map(|h| h.name.as_str())
    }
}

/// The proposed subnet of `ip`.
pub fn subnet(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::V4(
            Ipv4Net::new(v4, PROPOSED_V4_PREFIX)
                .expect("valid prefix")
                .trunc(),
        ),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, PROPOSED_V6_PREFIX)
                .expect("valid prefix")
                .trunc(),
        ),
    }
}

/// A zone name for `net`: `net-10.1.1.0-24`, `net-2001:db8::-64`.
pub fn subnet_name(net: &IpNet) -> String {
    format!("net-{}-{}", net.addr(), net.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validated::Host;

    #[test]
    fn longest_prefix_and_named_hosts_decide() {
        let zone = |name: &str, nets: &[&str], hosts: &[(&str, &str)]| Zone {
            name: name.into(),
            networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ports: vec![],
            security_level: None,
            description: None,
            hosts: hosts
                .iter()
                .map(|(n, a)| Host {
                    name: (*n).into(),
                    addr: a.parse().unwrap(),
                })
                .collect(),
        };
        let zones = Zones {
            zones: vec![
                zone("wide", &["10.0.0.0/8"], &[]),
                zone("cell", &["10.1.0.0/16"], &[("plc", "10.1.0.5")]),
            ],
            proposed: false,
        };
        assert_eq!(zones.zone_of("10.2.0.1".parse().unwrap()), Some(0));
        assert_eq!(zones.zone_of("10.1.9.1".parse().unwrap()), Some(1));
        assert_eq!(zones.zone_of("192.168.0.1".parse().unwrap()), None);
        assert_eq!(zones.host_name("10.1.0.5".parse().unwrap()), Some("plc"));
        assert_eq!(
            subnet_name(&subnet("10.1.2.3".parse().unwrap())),
            "net-10.1.2.0-24"
        );
        assert_eq!(
            subnet_name(&subnet("2001:db8::7".parse().unwrap())),
            "net-2001:db8::-64"
        );
    }
}
