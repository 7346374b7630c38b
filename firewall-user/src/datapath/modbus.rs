//! The Modbus inspector seen from user space: per-function counters, denied-request events.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use firewall_common::{
    counters::VERDICT_NAMES,
    flow::FlowKey,
    modbus::{ModbusEvent, ModbusStatKey, COUNT_EVENTS_LOST, COUNT_RESPONSES_UNFRAMED, KIND_NAMES},
    reason::Reason,
};
use serde::Serialize;

use super::{counters::inspector_counts, Datapath};
use crate::policy::compiled::Names;

/// ADUs of one conduit, function and verdict (requests) or response kind, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModbusTraffic {
    pub conduit: String,
    pub function: u8,
    /// `pass`, `drop`, `monitor`, `reset` (requests) or `response`, `exception`, `unsolicited`.
    pub kind: &'static str,
    /// The exception code of `exception` entries.
    pub detail: u8,
    pub adus: u64,
}

/// A denied Modbus request, as the controller reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModbusDenied {
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
    pub conduit: String,
    pub epoch: u32,
    pub unit: u8,
    pub function: u8,
    pub sub_function: u16,
    pub address: u16,
    pub quantity: u16,
    pub reason: &'static str,
    pub verdict: &'static str,
}

impl ModbusDenied {
    /// Decodes one ring-buffer record; `None` if it is not a whole `ModbusEvent`.
    pub fn decode(bytes: &[u8], names: Option<&Names>) -> Option<ModbusDenied> {
        let e: ModbusEvent = super::read_record(bytes)?;
        let conduit = names.map_or_else(|| e.conduit.to_string(), |n| n.conduit_label(e.conduit));
        Some(ModbusDenied {
            src: address(&e.key.src),
            dst: address(&e.key.dst),
            sport: e.key.sport,
            dport: e.key.dport,
            conduit,
            epoch: e.epoch,
            unit: e.unit,
            function: e.function,
            sub_function: e.sub,
            address: e.address,
            quantity: e.quantity,
            reason: Reason::from_u8(e.reason).map_or("unknown", Reason::name),
            verdict: VERDICT_NAMES
                .get(e.verdict as usize)
                .copied()
                .unwrap_or("unknown"),
        })
    }
}

/// An address of a flow key: IPv4-mapped addresses print as IPv4.
pub fn address(bytes: &[u8; 16]) -> String {
    let ip = std::net::Ipv6Addr::from(*bytes);
    match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4).to_string(),
        None => IpAddr::V6(ip).to_string(),
    }
}

impl Datapath {
    /// Modbus ADU counters of the generation in force.
    pub fn modbus_traffic(&self) -> Result<Vec<ModbusTraffic>> {
        let Some(generation) = self.active() else {
            return Ok(Vec::new());
        };
        let slot = generation.slot() as u8;
        let counts = inspector_counts(
            (&self.maps.modbus_stats, "MODBUS_STATS"),
            (&self.maps.modbus_count_memo, "MODBUS_COUNT_MEMO"),
            generation.epoch,
            |key| ModbusStatKey::unpacked(key[0]),
        )?;
        let mut out: Vec<ModbusTraffic> = counts
            .into_iter()
            .filter(|(key, _)| key.slot == slot)
            .map(|(key, adus)| ModbusTraffic {
                conduit: generation.names.conduit_label(key.conduit),
                function: key.function,
                kind: KIND_NAMES
                    .get(key.kind as usize)
                    .copied()
                    .unwrap_or("unknown"),
                detail: key.detail,
                adus,
            })
            .collect();
        out.sort_by(|a, b| (&a.conduit, a.function, a.kind).cmp(&(&b.conduit, b.function, b.kind)));
        Ok(out)
    }

    /// Denied-request events that did not fit in the ring buffer.
    pub fn modbus_events_lost(&self) -> Result<u64> {
        self.modbus_count(COUNT_EVENTS_LOST)
    }

    /// Response segments whose framing was lost (passed unframed; the stream resynchronises).
    pub fn modbus_responses_unframed(&self) -> Result<u64> {
        self.modbus_count(COUNT_RESPONSES_UNFRAMED)
    }

    fn modbus_count(&self, index: u32) -> Result<u64> {
        let per_cpu = self
            .maps
            .modbus_counts
            .get(&index, 0)
            .context("reading MODBUS_COUNTS")?;
        Ok(per_cpu.iter().sum())
    }

    /// The ring buffer of denied-request events, for the one reader that consumes it.
    pub fn take_modbus_events(&mut self) -> Option<RingBuf<MapData>> {
        self.maps.modbus_events.take()
    }

    /// Forgets the framing state of every Modbus connection (tests).
    pub fn clear_modbus_flows(&mut self) -> Result<()> {
        let keys: Vec<FlowKey> = self
            .maps
            .modbus_flows
            .keys()
            .filter_map(Result::ok)
            .collect();
        for key in keys {
            let _ = self.maps.modbus_flows.remove(&key);
        }
        Ok(())
    }
}
