//! Installing a policy generation without a packet ever seeing parts of two: fill the inactive
//! slot completely, then publish it with one write of the epoch.

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use aya::maps::{lpm_trie::Key, PerCpuValues};
use firewall_common::{
    conduit::{conduit_index, ConduitInfo, ConduitKey, MAX_PROTOCOL_RULES},
    config::{Config, ACTIVE_INDEX, FLAG_HOST_TABLE},
    counters::{conduit_stats_index, Traffic, VERDICT_COUNT},
    enip::{EnipClassKey, EnipRule, EnipStatKey, EnipTagKey},
    modbus::{ModbusRule, ModbusStatKey},
    slot_of,
    zone::{zone_index, HostKey, ZoneInfo, ZoneKeyV4, ZoneKeyV6, ZonePortKey},
};

use super::{attach::ifindex, maps::Maps, Datapath};
use crate::policy::compiled::{CompiledPolicy, Names};

/// The prefix length of an LPM key counts the 32 slot bits in front of the address.
const SLOT_BITS: u32 = 32;

/// A policy as installed in one slot.
#[derive(Clone, Debug)]
pub struct Generation {
    pub epoch: u32,
    pub names: Names,
    pub installed_at: SystemTime,
    /// Ids in use, so that the next generation in this slot can reset what it does not use.
    zones: u16,
    conduits: u16,
    protocol_rules: u16,
}

impl Generation {
    pub fn slot(&self) -> u32 {
        slot_of(self.epoch)
    }
}

impl Datapath {
    /// Installs `policy` as a new generation and makes it the one in force. On error the
    /// policy in force is untouched (only the inactive slot was written).
    pub fn install(&mut self, policy: &CompiledPolicy) -> Result<&Generation> {
        let current = self.maps.active_epoch()?;
        let epoch = current.wrapping_add(1).max(1);
        let slot = slot_of(epoch);
        let previous = self.slots[slot as usize].take();
        let (old_zones, old_conduits, old_rules) = previous
            .as_ref()
            .map_or((0, 0, 0), |g| (g.zones, g.conduits, g.protocol_rules));

        // The slot holds no generation from here until its new `CONFIG` is written: the flow
        // memos' passes of the generation leaving it are not added to the counters reset below
        // (`stats::settle_passes` in the datapath). No packet reads this slot's config: `ACTIVE`
        // names the other one.
        self.maps
            .config
            .set(slot, Config::default(), 0)
            .context("writing CONFIG")?;
        purge_slot(&mut self.maps, slot, old_zones, old_conduits, old_rules)?;
        let (zones, conduits, hosts) = fill_slot(&mut self.maps, slot, policy)?;
        let protocol_rules = fill_modbus(&mut self.maps, slot, policy)?;
        let protocol_rules = protocol_rules.max(fill_enip(&mut self.maps, slot, policy)?);

        let mut config = policy.config;
        config.epoch = epoch;
        if hosts > 0 {
            config.flags |= FLAG_HOST_TABLE;
        }
        self.maps
            .config
            .set(slot, config, 0)
            .context("writing CONFIG")?;
        // The flip: from here on every packet reads the new slot.
        self.maps
            .active
            .set(ACTIVE_INDEX, epoch, 0)
            .context("publishing the new policy epoch")?;
        Ok(self.slots[slot as usize].insert(Generation {
            epoch,
            names: policy.names.clone(),
            installed_at: SystemTime::now(),
            zones,
            conduits,
            protocol_rules,
        }))
    }

    /// Sets or clears extra config flags (e.g. tracing for replay) on the generation in force.
    pub fn set_config_flags(&mut self, set: u32, clear: u32) -> Result<()> {
        let epoch = self.maps.active_epoch()?;
        let slot = slot_of(epoch);
        let mut config = self.maps.config.get(&slot, 0).context("reading CONFIG")?;
        config.flags = (config.flags | set) & !clear;
        self.maps
            .config
            .set(slot, config, 0)
            .context("writing CONFIG")?;
        Ok(())
    }
}

/// Removes everything a generation before the previous one left in `slot`. No packet reads the
/// slot any more: the active epoch points at the other one.
fn purge_slot(
    maps: &mut Maps,
    slot: u32,
    zones: u16,
    conduits: u16,
    protocol_rules: u16,
) -> Result<()> {
    for rule in 0..=protocol_rules {
        maps.modbus_rules
            .set(
                slot * MAX_PROTOCOL_RULES + rule as u32,
                ModbusRule::default(),
                0,
            )
            .context("resetting MODBUS_RULES")?;
    }
    for rule in 0..=protocol_rules {
        maps.enip_rules
            .set(
                slot * MAX_PROTOCOL_RULES + rule as u32,
                EnipRule::default(),
                0,
            )
            .context("resetting ENIP_RULES")?;
    }
    let stale: Vec<EnipClassKey> = maps
        .enip_classes
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot as u32 == slot)
        .collect();
    for key in stale {
        maps.enip_classes
            .remove(&key)
            .context("purging ENIP_CLASSES")?;
    }
    let stale: Vec<EnipTagKey> = maps
        .enip_tags
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot as u32 == slot)
        .collect();
    for key in stale {
        maps.enip_tags.remove(&key).context("purging ENIP_TAGS")?;
    }
    let stale: Vec<EnipStatKey> = maps
        .enip_stats
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot as u32 == slot)
        .collect();
    for key in stale {
        maps.enip_stats.remove(&key).context("purging ENIP_STATS")?;
    }
    let stale_stats: Vec<ModbusStatKey> = maps
        .modbus_stats
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot as u32 == slot)
        .collect();
    for key in stale_stats {
        maps.modbus_stats
            .remove(&key)
            .context("purging MODBUS_STATS")?;
    }
    let slot_be = slot.to_be_bytes();
    let stale_v4: Vec<Key<ZoneKeyV4>> = maps
        .zones_v4
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.data().slot == slot_be)
        .collect();
    for key in stale_v4 {
        maps.zones_v4.remove(&key).context("purging ZONES_V4")?;
    }
    let stale_v6: Vec<Key<ZoneKeyV6>> = maps
        .zones_v6
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.data().slot == slot_be)
        .collect();
    for key in stale_v6 {
        maps.zones_v6.remove(&key).context("purging ZONES_V6")?;
    }
    let stale_hosts: Vec<HostKey> = maps
        .zone_hosts
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot == slot)
        .collect();
    for key in stale_hosts {
        maps.zone_hosts.remove(&key).context("purging ZONE_HOSTS")?;
    }
    let stale_ports: Vec<ZonePortKey> = maps
        .zone_ports
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot == slot)
        .collect();
    for key in stale_ports {
        maps.zone_ports.remove(&key).context("purging ZONE_PORTS")?;
    }
    let stale_rules: Vec<ConduitKey> = maps
        .conduit_rules
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot as u32 == slot)
        .collect();
    for key in stale_rules {
        maps.conduit_rules
            .remove(&key)
            .context("purging CONDUIT_RULES")?;
    }
    for zone in 0..=zones {
        maps.zone_info
            .set(zone_index(slot, zone), ZoneInfo::default(), 0)
            .context("resetting ZONE_INFO")?;
    }
    let cpus = aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .context("counting CPUs")?;
    for conduit in 0..=conduits {
        maps.conduits
            .set(conduit_index(slot, conduit), ConduitInfo::default(), 0)
            .context("resetting CONDUITS")?;
        // Counters of the slot restart from zero for the new generation's conduits.
        for verdict in 0..VERDICT_COUNT {
            maps.conduit_stats
                .set(
                    conduit_stats_index(slot, conduit, verdict),
                    PerCpuValues::try_from(vec![Traffic::default(); cpus])?,
                    0,
                )
                .context("resetting CONDUIT_STATS")?;
        }
    }
    Ok(())
}

/// Writes the compiled `modbus:` rules into `slot`; returns the highest rule id used.
fn fill_modbus(maps: &mut Maps, slot: u32, policy: &CompiledPolicy) -> Result<u16> {
    let mut highest = 0;
    for (id, rule) in &policy.modbus_maps {
        maps.modbus_rules
            .set(slot * MAX_PROTOCOL_RULES + *id as u32, rule, 0)
            .context("writing MODBUS_RULES")?;
        highest = highest.max(*id);
    }
    Ok(highest)
}

/// Writes the compiled `enip:` rules into `slot`; returns the highest rule id used.
fn fill_enip(maps: &mut Maps, slot: u32, policy: &CompiledPolicy) -> Result<u16> {
    let mut highest = 0;
    for (id, m) in &policy.enip_maps {
        maps.enip_rules
            .set(slot * MAX_PROTOCOL_RULES + *id as u32, m.rule, 0)
            .context("writing ENIP_RULES")?;
        for (class, bits) in &m.classes {
            let key = EnipClassKey {
                slot: slot as u8,
                _pad: 0,
                rule: *id,
                class: *class,
                _pad2: 0,
            };
            maps.enip_classes
                .insert(key, bits, 0)
                .context("writing ENIP_CLASSES")?;
        }
        for (len, hash) in &m.tags {
            let key = EnipTagKey {
                hash: *hash,
                slot: slot as u8,
                len: *len,
                rule: *id,
                _pad: 0,
            };
            maps.enip_tags
                .insert(key, 1, 0)
                .context("writing ENIP_TAGS")?;
        }
        highest = highest.max(*id);
    }
    Ok(highest)
}

/// Writes every entry of `policy` into `slot`; returns the highest zone and conduit ids used
/// and the number of full-length prefixes (also written to the host table).
fn fill_slot(maps: &mut Maps, slot: u32, policy: &CompiledPolicy) -> Result<(u16, u16, usize)> {
    let slot_be = slot.to_be_bytes();
    let mut hosts = 0;
    for p in &policy.prefixes_v4 {
        if p.prefix_len == 32 {
            // IPv4-mapped, as the datapath holds IPv4 addresses.
            let mut addr = [0u8; 16];
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..].copy_from_slice(&p.addr);
            insert_host(maps, slot, false, addr, p.target)?;
            hosts += 1;
        }
        let key = Key::new(
            SLOT_BITS + p.prefix_len,
            ZoneKeyV4 {
                slot: slot_be,
                addr: p.addr,
            },
        );
        maps.zones_v4
            .insert(&key, p.target, 0)
            .context("writing ZONES_V4")?;
    }
    for p in &policy.prefixes_v6 {
        if p.prefix_len == 128 {
            insert_host(maps, slot, true, p.addr, p.target)?;
            hosts += 1;
        }
        let key = Key::new(
            SLOT_BITS + p.prefix_len,
            ZoneKeyV6 {
                slot: slot_be,
                addr: p.addr,
            },
        );
        maps.zones_v6
            .insert(&key, p.target, 0)
            .context("writing ZONES_V6")?;
    }
    maps.zone_info
        .set(zone_index(slot, 0), policy.unzoned_info, 0)
        .context("writing ZONE_INFO")?;
    let mut zones = 0;
    for (zone, info) in &policy.zone_info {
        maps.zone_info
            .set(zone_index(slot, *zone), *info, 0)
            .context("writing ZONE_INFO")?;
        zones = zones.max(*zone);
    }
    for (zone, port) in &policy.zone_ports {
        let key = ZonePortKey {
            slot,
            zone: *zone as u32,
            ifindex: ifindex(port).with_context(|| {
                format!(
                    "zone port {port}: no such interface on this host; fix `ports:` or create it"
                )
            })?,
        };
        maps.zone_ports
            .insert(key, 1, 0)
            .context("writing ZONE_PORTS")?;
    }
    for (key, rules) in &policy.rules {
        let key = ConduitKey {
            slot: slot as u8,
            proto: key.proto,
            _pad: [0; 2],
            from_zone: key.from_zone,
            from_host: key.from_host,
            to_zone: key.to_zone,
            to_host: key.to_host,
        };
        maps.conduit_rules
            .insert(key, rules, 0)
            .context("writing CONDUIT_RULES")?;
    }
    let mut conduits = 0;
    for (conduit, info) in &policy.conduits {
        maps.conduits
            .set(conduit_index(slot, *conduit), *info, 0)
            .context("writing CONDUITS")?;
        conduits = conduits.max(*conduit);
    }
    Ok((zones, conduits, hosts))
}

fn insert_host(
    maps: &mut Maps,
    slot: u32,
    v6: bool,
    addr: [u8; 16],
    target: firewall_common::zone::ZoneMatch,
) -> Result<()> {
    let key = HostKey {
        slot,
        v6: v6 as u32,
        addr,
    };
    maps.zone_hosts
        .insert(key, target, 0)
        .context("writing ZONE_HOSTS")
}
