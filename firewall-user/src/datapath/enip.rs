//! The EtherNet/IP inspector seen from user space: request counters, denied-request events,
//! and the names used to print CIP requests.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use firewall_common::{
    counters::VERDICT_NAMES,
    enip::{
        EnipEvent, EnipRecord, EnipStatKey, ECOUNT_CONNECTIONS, ECOUNT_EVENTS_LOST,
        ECOUNT_RESPONSES_UNFRAMED, REC_CIP, REC_COMMAND, REC_SYMBOLIC,
    },
    flow::FlowKey,
    reason::Reason,
};
use serde::Serialize;

use super::{counters::inspector_counts, modbus::address, Datapath};
use crate::policy::{
    compiled::Names,
    enip::{CipTarget, COMMANDS, SERVICES, SYMBOL_CLASS},
};

/// Requests of one conduit, command, service and class by verdict, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnipTraffic {
    pub conduit: String,
    pub command: String,
    /// The CIP service name resolved against its class (empty for encapsulation records).
    pub service: String,
    pub class: u16,
    pub verdict: &'static str,
    pub requests: u64,
}

/// A denied EtherNet/IP request, as the controller reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnipDenied {
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
    pub conduit: String,
    pub epoch: u32,
    pub command: String,
    pub service: String,
    pub class: u16,
    pub instance: u32,
    pub tag: String,
    pub reason: &'static str,
    pub verdict: &'static str,
}

/// The encapsulation command's name, or its number.
pub fn command_name(code: u16) -> String {
    COMMANDS
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("0x{code:04x}"), |(n, _)| (*n).to_owned())
}

/// The CIP service's name on `class` (or a tag path), or its number.
pub fn service_name(code: u8, class: u16, symbolic: bool) -> String {
    let class = if symbolic { SYMBOL_CLASS } else { class };
    SERVICES
        .iter()
        .find(|(_, s)| {
            s.code == code && (s.target == CipTarget::AnyClass || s.target.matches_class(class))
        })
        .map_or_else(|| format!("0x{code:02x}"), |(n, _)| (*n).to_owned())
}

/// The tag name kept in a record.
pub fn tag(r: &EnipRecord) -> String {
    let n = (r.tag_len as usize).min(r.tag.len());
    String::from_utf8_lossy(&r.tag[..n]).into_owned()
}

impl EnipDenied {
    /// Decodes one ring-buffer record; `None` if it is not a whole `EnipEvent`.
    pub fn decode(bytes: &[u8], names: Option<&Names>) -> Option<EnipDenied> {
        let e: EnipEvent = super::read_record(bytes)?;
        let conduit = names.map_or_else(|| e.conduit.to_string(), |n| n.conduit_label(e.conduit));
        let r = e.record;
        Some(EnipDenied {
            src: address(&e.key.src),
            dst: address(&e.key.dst),
            sport: e.key.sport,
            dport: e.key.dport,
            conduit,
            epoch: e.epoch,
            command: command_name(r.command),
            service: if r.kind == REC_CIP {
                service_name(r.service, r.class, r.flags & REC_SYMBOLIC != 0)
            } else {
                String::new()
            },
            class: r.class,
            instance: r.instance,
            tag: tag(&r),
            reason: Reason::from_u8(r.reason).map_or("unknown", Reason::name),
            verdict: VERDICT_NAMES
                .get(e.verdict as usize)
                .copied()
                .unwrap_or("unknown"),
        })
    }
}

impl Datapath {
    /// EtherNet/IP request counters of the generation in force.
    pub fn enip_traffic(&self) -> Result<Vec<EnipTraffic>> {
        let Some(generation) = self.active() else {
            return Ok(Vec::new());
        };
        let slot = generation.slot() as u8;
        let counts = inspector_counts(
            (&self.maps.enip_stats, "ENIP_STATS"),
            (&self.maps.enip_count_memo, "ENIP_COUNT_MEMO"),
            generation.epoch,
            EnipStatKey::unpacked,
        )?;
        let mut out = Vec::new();
        for (key, requests) in counts {
            if key.slot != slot {
                continue;
            }
            out.push(EnipTraffic {
                conduit: generation.names.conduit_label(key.conduit),
                command: if key.kind == REC_COMMAND || key.kind == REC_CIP {
                    command_name(key.command)
                } else {
                    "implicit_io".to_owned()
                },
                service: if key.kind == REC_CIP {
                    service_name(key.service, key.class, false)
                } else {
                    String::new()
                },
                class: key.class,
                verdict: VERDICT_NAMES
                    .get(key.verdict as usize)
                    .copied()
                    .unwrap_or("unknown"),
                requests,
            });
        }
        out.sort_by(|a, b| {
            (&a.conduit, &a.command, &a.service, a.class, a.verdict)
                .cmp(&(&b.conduit, &b.command, &b.service, b.class, b.verdict))
        });
        Ok(out)
    }

    /// (events lost, response segments passed unframed, connections recorded).
    pub fn enip_counts(&self) -> Result<(u64, u64, u64)> {
        let get = |i: u32| -> Result<u64> {
            Ok(self
                .maps
                .enip_counts
                .get(&i, 0)
                .context("reading ENIP_COUNTS")?
                .iter()
                .sum())
        };
        Ok((
            get(ECOUNT_EVENTS_LOST)?,
            get(ECOUNT_RESPONSES_UNFRAMED)?,
            get(ECOUNT_CONNECTIONS)?,
        ))
    }

    /// The ring buffer of denied-request events, for the one reader that consumes it.
    pub fn take_enip_events(&mut self) -> Option<RingBuf<MapData>> {
        self.maps.enip_events.take()
    }

    /// Forgets the framing state of every EtherNet/IP connection and every recorded
    /// connection id (tests).
    pub fn clear_enip_state(&mut self) -> Result<()> {
        let keys: Vec<FlowKey> = self.maps.enip_flows.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = self.maps.enip_flows.remove(&key);
        }
        let keys: Vec<_> = self.maps.enip_conns.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = self.maps.enip_conns.remove(&key);
        }
        Ok(())
    }
}
