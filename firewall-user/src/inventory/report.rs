//! `otfw inventory`: the assets by zone, with what they are (identity, vendor names from the
//! ODVA and IEEE tables) and when they were seen, as a table, JSON or CSV.

use std::{io::Write, net::IpAddr};

use anyhow::Result;
use serde::Serialize;

use super::{
    identity::modbus::DeviceId,
    learn::{command_name, function_name, in_code_order},
    vendors::{self, MacVendors},
    zones::Zones,
    Application, Asset, Conversation, Inventory,
};

/// One asset as `otfw inventory` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AssetRecord {
    /// The zone it belongs to; `None` when the policy's zones do not hold it.
    pub zone: Option<String>,
    /// Its host name in the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub ip: IpAddr,
    pub macs: Vec<String>,
    /// The organisations the MAC addresses were assigned to (IEEE registries).
    pub mac_vendors: Vec<String>,
    /// The gateway's bridge ports its frames arrived on (the live inventory; not captures).
    pub ports: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub packets: u64,
    /// `tcp/502`, ... it answered on.
    pub serves: Vec<String>,
    /// `tcp/502`, ... of other assets it opened conversations to.
    pub uses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enip: Option<EnipIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modbus: Option<DeviceId>,
}

/// An EtherNet/IP ListIdentity reply, with vendor and device type names, and numbers written
/// as the ODVA specification (and Wireshark) writes them.
#[derive(Clone, Debug, Serialize)]
pub struct EnipIdentity {
    pub vendor_id: u16,
    pub vendor: Option<&'static str>,
    pub device_type: u16,
    pub device_type_name: Option<&'static str>,
    pub product_code: u16,
    /// `major.minor`, the minor revision in two digits (`4.03`).
    pub revision: String,
    /// Hexadecimal, eight digits (`0x00524d8e`).
    pub serial_number: String,
    pub product_name: String,
    /// Hexadecimal (`0x03`).
    pub state: String,
    /// Hexadecimal (`0x0030`).
    pub status: String,
}

impl EnipIdentity {
    fn new(id: &super::identity::enip::Identity) -> EnipIdentity {
        EnipIdentity {
            vendor_id: id.vendor_id,
            vendor: vendors::cip_vendor(id.vendor_id),
            device_type: id.device_type,
            device_type_name: vendors::cip_device_type(id.device_type),
            product_code: id.product_code,
            revision: format!("{}.{:02}", id.revision_major, id.revision_minor),
            serial_number: format!("0x{:08x}", id.serial_number),
            product_name: id.product_name.clone(),
            state: format!("0x{:02x}", id.state),
            status: format!("0x{:04x}", id.status),
        }
    }
}

/// The assets of `inventory`, ordered by zone (in the zones' order, unzoned last), then
/// address.
pub fn records(inventory: &Inventory, zones: &Zones, macs: &MacVendors) -> Vec<AssetRecord> {
    let mut out: Vec<(usize, AssetRecord)> = inventory
        .assets
        .values()
        .map(|a| {
            let zone = zones.zone_of(a.ip);
            (
                zone.unwrap_or(usize::MAX),
                record(a, zone.map(|z| zones.zones[z].name.clone()), zones, macs),
            )
        })
        .collect();
    out.sort_by_key(|(z, r)| (*z, r.ip));
    out.into_iter().map(|(_, r)| r).collect()
}

fn record(a: &Asset, zone: Option<String>, zones: &Zones, macs: &MacVendors) -> AssetRecord {
    let mut mac_vendors: Vec<String> = a
        .macs
        .iter()
        .filter_map(|m| parse_mac(m).and_then(|m| macs.lookup(m)).map(str::to_owned))
        .collect();
    mac_vendors.dedup();
    AssetRecord {
        zone,
        host: zones.host_name(a.ip).map(str::to_owned),
        ip: a.ip,
        macs: a.macs.iter().cloned().collect(),
        ports: a.ports.iter().cloned().collect(),
        mac_vendors,
        first_seen: a.seen.first.to_string(),
        last_seen: a.seen.last.to_string(),
        packets: a.seen.count,
        serves: a.serves.iter().map(ToString::to_string).collect(),
        uses: a.uses.iter().map(ToString::to_string).collect(),
        enip: a.identity.enip.as_ref().map(EnipIdentity::new),
        modbus: a.identity.modbus.clone(),
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// What an asset is, in a few words: vendor and product from its identity, else the MAC
/// vendor.
pub fn describe(r: &AssetRecord) -> String {
    if let Some(e) = &r.enip {
        let vendor = e
            .vendor
            .map_or_else(|| format!("vendor {}", e.vendor_id), str::to_owned);
        return format!(
            "{vendor} {} rev {} serial {}",
            e.product_name, e.revision, e.serial_number
        );
    }
    if let Some(m) = &r.modbus {
        let parts: Vec<&str> = [&m.vendor_name, &m.product_code, &m.revision]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !parts.is_empty() {
            return parts.join(" ");
        }
    }
    r.mac_vendors.join(", ")
}

/// Traffic from a client to one port of a server, as `otfw inventory` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ConversationRecord {
    pub client: IpAddr,
    pub client_zone: Option<String>,
    pub server: IpAddr,
    pub server_zone: Option<String>,
    /// `tcp/502`.
    pub service: String,
    pub application: Application,
    pub packets: u64,
    pub flows: u64,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modbus: Option<ModbusRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enip: Option<EnipRecord>,
    /// Client messages otfw could not decode, and the first problem.
    pub undecoded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModbusRecord {
    pub units: Vec<u8>,
    /// `read_holding_registers (3)`, `diagnostics (8/4)`.
    pub functions: Vec<String>,
    /// Per table, the address ranges requested (`"0-9"`).
    pub addresses: std::collections::BTreeMap<&'static str, Vec<String>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EnipRecord {
    pub commands: Vec<String>,
    /// `0x0e@0x01` (service at class) or `0x4c@tag` (on a symbolic path).
    pub services: Vec<String>,
    pub tags: Vec<String>,
}

/// The conversations of `inventory`, by client zone, then server zone, then addresses.
pub fn conversations(inventory: &Inventory, zones: &Zones) -> Vec<ConversationRecord> {
    let zone = |ip: IpAddr| zones.zone_of(ip).map(|z| zones.zones[z].name.clone());
    let mut out: Vec<ConversationRecord> = inventory
        .conversations
        .values()
        .map(|c| conversation(c, &zone))
        .collect();
    out.sort_by(|a, b| {
        (&a.client_zone, &a.server_zone, a.client, a.server).cmp(&(
            &b.client_zone,
            &b.server_zone,
            b.client,
            b.server,
        ))
    });
    out
}

fn conversation(c: &Conversation, zone: &dyn Fn(IpAddr) -> Option<String>) -> ConversationRecord {
    let range = |&(lo, hi): &(u16, u16)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    ConversationRecord {
        client: c.client,
        client_zone: zone(c.client),
        server: c.server,
        server_zone: zone(c.server),
        service: format!("{}/{}", c.transport, c.port),
        application: c.application,
        packets: c.packets.count,
        flows: c.flows,
        first_seen: c.packets.first.to_string(),
        last_seen: c.packets.last.to_string(),
        modbus: c.modbus.as_ref().map(|m| ModbusRecord {
            units: m.units.keys().copied().collect(),
            functions: in_code_order(&m.functions)
                .into_iter()
                .map(|(f, _)| function_name(f))
                .collect(),
            addresses: m
                .addresses
                .iter()
                .map(|(t, r)| (t.key(), r.iter().map(range).collect()))
                .collect(),
        }),
        enip: c.enip.as_ref().map(|e| EnipRecord {
            commands: e.commands.keys().map(|c| command_name(*c)).collect(),
            services: e.services.keys().cloned().collect(),
            tags: e.tags.keys().cloned().collect(),
        }),
        undecoded: c.undecoded,
        decode_error: c.decode_error.clone(),
    }
}

/// The JSON document: `{"assets": [...], "conversations": [...]}`.
pub fn write_json(
    records: &[AssetRecord],
    conversations: &[ConversationRecord],
    out: &mut impl Write,
) -> Result<()> {
    #[derive(Serialize)]
    struct Document<'a> {
        assets: &'a [AssetRecord],
        conversations: &'a [ConversationRecord],
    }
    serde_json::to_writer_pretty(
        &mut *out,
        &Document {
            assets: records,
            conversations,
        },
    )?;
    writeln!(out)?;
    Ok(())
}

const CSV_HEADER: [&str; 21] = [
    "zone",
    "host",
    "ip",
    "macs",
    "mac_vendors",
    "first_seen",
    "last_seen",
    "packets",
    "serves",
    "uses",
    "enip_vendor_id",
    "enip_vendor",
    "enip_device_type",
    "enip_product_code",
    "enip_revision",
    "enip_serial_number",
    "enip_product_name",
    "modbus_vendor_name",
    "modbus_product_code",
    "modbus_revision",
    "ports",
];

/// One row per asset; lists are joined with spaces.
pub fn write_csv(records: &[AssetRecord], out: &mut impl Write) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER)?;
    for r in records {
        let e = r.enip.as_ref();
        let m = r.modbus.as_ref();
        let opt = |s: Option<&String>| s.cloned().unwrap_or_default();
        w.write_record([
            r.zone.clone().unwrap_or_default(),
            r.host.clone().unwrap_or_default(),
            r.ip.to_string(),
            r.macs.join(" "),
            r.mac_vendors.join("; "),
            r.first_seen.clone(),
            r.last_seen.clone(),
            r.packets.to_string(),
            r.serves.join(" "),
            r.uses.join(" "),
            e.map(|e| e.vendor_id.to_string()).unwrap_or_default(),
            e.and_then(|e| e.vendor).unwrap_or_default().to_owned(),
            e.map(|e| e.device_type.to_string()).unwrap_or_default(),
            e.map(|e| e.product_code.to_string()).unwrap_or_default(),
            e.map(|e| e.revision.clone()).unwrap_or_default(),
            e.map(|e| e.serial_number.clone()).unwrap_or_default(),
            e.map(|e| e.product_name.clone()).unwrap_or_default(),
            opt(m.and_then(|m| m.vendor_name.as_ref())),
            opt(m.and_then(|m| m.product_code.as_ref())),
            opt(m.and_then(|m| m.revision.as_ref())),
            r.ports.join(" "),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// A table per zone for people, then the conversations.
pub fn write_text(
    records: &[AssetRecord],
    conversations: &[ConversationRecord],
    out: &mut impl Write,
) -> Result<()> {
    let mut zone: Option<Option<&str>> = None;
    for r in records {
        if zone != Some(r.zone.as_deref()) {
            zone = Some(r.zone.as_deref());
            writeln!(out, "zone {}", r.zone.as_deref().unwrap_or("(no zone)"))?;
        }
        let name = r
            .host
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}{name}  {}{}  last seen {}  serves [{}]  uses [{}]  {}",
            r.ip,
            r.macs.first().map_or("-", String::as_str),
            if r.ports.is_empty() {
                String::new()
            } else {
                format!(" on {}", r.ports.join(" "))
            },
            r.last_seen,
            r.serves.join(" "),
            r.uses.join(" "),
            describe(r)
        )?;
    }
    if !conversations.is_empty() {
        writeln!(out, "conversations")?;
    }
    for c in conversations {
        let mut what = Vec::new();
        if let Some(m) = &c.modbus {
            let units: Vec<String> = m.units.iter().map(u8::to_string).collect();
            what.push(format!("units [{}]", units.join(" ")));
            what.push(format!("functions [{}]", m.functions.join(", ")));
            for (table, ranges) in &m.addresses {
                what.push(format!("{table} [{}]", ranges.join(" ")));
            }
        }
        if let Some(e) = &c.enip {
            what.push(format!("commands [{}]", e.commands.join(" ")));
            if !e.services.is_empty() {
                what.push(format!("services [{}]", e.services.join(" ")));
            }
            if !e.tags.is_empty() {
                what.push(format!("tags [{}]", e.tags.join(" ")));
            }
        }
        if let Some(e) = &c.decode_error {
            what.push(format!("{} undecoded ({e})", c.undecoded));
        }
        writeln!(
            out,
            "  {} -> {} {}  {} packets, last {}  {}",
            c.client,
            c.server,
            c.service,
            c.packets,
            c.last_seen,
            what.join("  ")
        )?;
    }
    Ok(())
}
