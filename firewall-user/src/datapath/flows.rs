//! The controller's side of the flow tables: expired flows are removed here, and what each
//! zone uses of its share of `FLOWS` is read here (`firewall_common::flow`).
//!
//! The datapath forgets a flow when one of its packets finds it expired; a flow that simply
//! stops sending would stay in `FLOWS` and keep its zone's share in use for ever. The sweep
//! removes those, counting them in `ZONE_SWEPT` (which only the controller writes; the
//! datapath's own counters are never overwritten), and their inspector state with them.

use anyhow::{Context as _, Result};
use firewall_common::{
    conduit::{INSPECT_ENIP, INSPECT_MODBUS, INSPECT_NONE},
    flow::{
        FlowKey, FlowState, ZoneFlows, FLOW_CHARGED, FLOW_INSPECTED, SIDE_HIGH, TCP_CLOSING,
        TCP_CLOSING_IDLE_SECS,
    },
    slot_of,
    zone::{zone_charge, UNZONED_CHARGE},
};

use super::{fastpath::monotonic_ns, maps::next_generation, Datapath};

const NS_PER_SEC: u64 = 1_000_000_000;
const IPPROTO_TCP: u8 = 6;

/// What one sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Entries of `FLOWS` (established) and `EMBRYOS` (not answered yet) after the sweep.
    pub established: u64,
    pub embryonic: u64,
    /// Flows removed as expired by this sweep.
    pub swept: u64,
}

/// One zone's use of its share of `FLOWS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneShare {
    /// The zone's name, `(unzoned)` for hosts in no zone.
    pub zone: String,
    pub flows: u64,
    pub max_flows: u32,
}

impl Datapath {
    /// Removes the flows of `FLOWS` idle for longer than the policy in force allows (60 s for
    /// a TCP flow that saw a FIN), with their inspector state, and gives their zones' shares
    /// back. A flow the datapath removes at the same moment is counted by whichever removal
    /// succeeds, never twice.
    pub fn sweep_flows(&mut self) -> Result<Sweep> {
        let epoch = self.maps.active_epoch()?;
        let cfg = self
            .maps
            .config
            .get(&slot_of(epoch), 0)
            .context("reading CONFIG")?;
        let now = monotonic_ns();
        let mut sweep = Sweep::default();
        let entries: Vec<(FlowKey, FlowState)> =
            self.maps.flows.iter().filter_map(Result::ok).collect();
        for (key, flow) in entries {
            let idle = if key.proto != IPPROTO_TCP {
                cfg.udp_idle_secs
            } else if flow.tcp_state == TCP_CLOSING {
                cfg.tcp_idle_secs.min(TCP_CLOSING_IDLE_SECS)
            } else {
                cfg.tcp_idle_secs
            };
            // `last_seen_ns` is the kernel's coarse monotonic clock (at most a tick behind
            // ours, which only errs towards keeping a flow); a packet may renew the entry
            // after this read, so it is read again just before the removal.
            let expired =
                |f: &FlowState| now.saturating_sub(f.last_seen_ns) > idle as u64 * NS_PER_SEC;
            if !expired(&flow) {
                sweep.established += 1;
                continue;
            }
            match self.maps.flows.get(&key, 0) {
                Ok(again) if expired(&again) => {}
                _ => {
                    sweep.established += 1;
                    continue;
                }
            }
            if self.maps.flows.remove(&key).is_err() {
                continue;
            }
            sweep.swept += 1;
            if flow.flags & FLOW_CHARGED != 0 {
                let swept = self.maps.zone_swept.get(&flow.charge, 0).unwrap_or(0);
                self.maps
                    .zone_swept
                    .insert(flow.charge, swept + 1, 0)
                    .context("writing ZONE_SWEPT")?;
            }
            if flow.flags & FLOW_INSPECTED != 0 && flow.inspect != INSPECT_NONE {
                // The inspectors key their state in the initiator's direction.
                let initiator_key = if flow.initiator() == SIDE_HIGH {
                    key.reversed()
                } else {
                    key
                };
                let _ = match flow.inspect {
                    INSPECT_MODBUS => self.maps.modbus_flows.remove(&initiator_key),
                    INSPECT_ENIP => self.maps.enip_flows.remove(&initiator_key),
                    _ => Ok(()),
                };
            }
        }
        if sweep.swept > 0 {
            self.next_flow_generation()?;
        }
        sweep.embryonic = self.maps.embryos.keys().filter(Result::is_ok).count() as u64;
        Ok(sweep)
    }

    /// Tells the datapath that flows left `FLOWS` (the controller removed them), so that no
    /// CPU's memo of a flow (`BUSY_FLOWS`) answers for one of them. The controller is this
    /// entry's only writer; the datapath counts its own removals in another.
    pub fn next_flow_generation(&mut self) -> Result<()> {
        next_generation(&mut self.maps.flow_generation, "FLOW_GENERATION")
    }

    /// Each zone of the policy in force (and hosts in no zone) with the flows it holds in
    /// `FLOWS` and its share.
    pub fn zone_shares(&self) -> Result<Vec<ZoneShare>> {
        let Some(generation) = self.active() else {
            return Ok(Vec::new());
        };
        let slot = slot_of(generation.epoch);
        let names = &generation.names.zones;
        let mut out = Vec::with_capacity(names.len());
        for (zone, name) in names.iter().enumerate() {
            let (label, charge) = if zone == 0 {
                ("(unzoned)".to_string(), UNZONED_CHARGE)
            } else {
                (name.clone(), zone_charge(name))
            };
            let info = self
                .maps
                .zone_info
                .get(&firewall_common::zone::zone_index(slot, zone as u16), 0)
                .context("reading ZONE_INFO")?;
            let counts: ZoneFlows = self.maps.zone_flows.get(&charge, 0).unwrap_or_default();
            let swept = self.maps.zone_swept.get(&charge, 0).unwrap_or(0);
            out.push(ZoneShare {
                zone: label,
                flows: counts.live(swept),
                max_flows: info.max_flows,
            });
        }
        Ok(out)
    }
}
