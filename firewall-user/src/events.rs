//! Operator-facing events as JSON lines on stdout (journald and SIEM friendly) and optionally
//! a file; human logs go to stderr. Every line carries `timestamp` and `event`; the other fields
//! depend on the event. docs/EVENTS.md is the schema.

mod datapath;
mod sink;

use std::time::SystemTime;

pub use datapath::{DatapathEvents, PacketEvent};
pub use sink::{open_file, written, Written};

use firewall_common::{
    counters::{FLOW_STAT_NAMES, VERDICT_NAMES},
    reason::Reason,
};
use indexmap::IndexMap;
use serde::Serialize;

use crate::{
    datapath::{ConduitTraffic, Counters},
    metrics::RequestCounts,
    policy::git::PolicyCommit,
};

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A policy generation is in force.
    PolicyLoaded {
        file: &'a str,
        epoch: u32,
        zones: usize,
        conduits: usize,
        /// The commit of the git work tree holding the file, if it is in one.
        git: Option<&'a PolicyCommit>,
    },
    /// A policy file was refused; the generation in force (if any) stays.
    PolicyRejected {
        file: &'a str,
        errors: &'a [String],
        /// The epoch still in force, if any.
        kept_epoch: Option<u32>,
    },
    /// The program is attached to a bridge port.
    Attached {
        port: &'a str,
        ifindex: u32,
        mode: String,
        /// The link is pinned: enforcement outlives the controller.
        pinned: bool,
        /// The port was already enforced through a pinned link, which now runs this
        /// controller's program.
        taken_over: bool,
    },
    /// A version with another map layout replaced the pinned maps (`--replace-incompatible-maps`):
    /// every port runs its program on fresh maps; flows and counters started afresh.
    MapsReplaced { differences: &'a [String] },
    /// Enforcement is running on every port.
    Ready { ports: usize },
    /// The program was detached from a port (shutdown).
    Detached { port: &'a str },
    /// `otfw apply` put a policy in force that rolls back unless confirmed by `confirm_by`
    /// (seconds since the Unix epoch).
    PolicyApplied { file: &'a str, confirm_by: u64 },
    /// `otfw confirm`: the applied policy stays.
    PolicyConfirmed { file: &'a str },
    /// The applied policy was not confirmed by `deadline`: the policy before it is back.
    PolicyRolledBack { file: &'a str, deadline: u64 },
    /// The fast path started, changed its ports, or stopped (with the reason).
    FastPath {
        enabled: bool,
        /// The ports it forwards between, when enabled.
        ports: &'a [String],
        /// Why it is off, when disabled.
        reason: Option<&'a str>,
    },
    /// A lockdown (`otfw lockdown`) is in force from generation `epoch` on; also when a
    /// controller starts under a kept order.
    Lockdown {
        /// `read-only` or `isolate`.
        mode: &'static str,
        /// The isolated zone (`isolate`).
        zone: Option<&'a str>,
        /// When it was ordered (RFC 3339).
        since: &'a str,
        epoch: u32,
    },
    /// The lockdown was released: generation `epoch` is the policy in force in full.
    LockdownReleased {
        mode: &'static str,
        zone: Option<&'a str>,
        epoch: u32,
    },
    /// A lockdown order could not be applied (`mode` null: a release); the one in force stays.
    LockdownRefused {
        mode: Option<&'static str>,
        zone: Option<&'a str>,
        error: &'a str,
    },
    /// A packet was denied (dropped, reset, or passed in monitor mode); rate-limited at the
    /// source.
    Denied(PacketEvent),
    /// A TCP flow already running when tracking began was adopted; rate-limited at the source.
    FlowAdopted(PacketEvent),
    /// Datapath counters since the program was loaded (on SIGUSR1). Only non-zero entries.
    Stats {
        /// The policy generation whose conduits `conduits` counts.
        epoch: Option<u32>,
        /// Packets by reason (`none` = passed) and verdict, e.g. `{"no_conduit": {"drop": 2}}`.
        reasons: IndexMap<&'static str, IndexMap<&'static str, u64>>,
        /// Traffic by conduit (pseudo conduits such as `(none)` included) and verdict.
        conduits: IndexMap<String, IndexMap<&'static str, PacketsBytes>>,
        /// Flow table events, e.g. `{"created": 3}`.
        flows: IndexMap<&'static str, u64>,
        /// Inspected requests of the generation in force by protocol, conduit, function (Modbus
        /// function, CIP service) and verdict, e.g.
        /// `{"enip": {"hmi": {"write_tag": {"drop": 1}}}}`.
        requests: RequestsByProtocol,
        /// Shortcuts the datapath took (`otfw_datapath_paths_total`), e.g.
        /// `{"flow_hit": 9, "redirected": 7}`.
        #[serde(skip_serializing_if = "IndexMap::is_empty")]
        paths: IndexMap<&'static str, u64>,
    },
    /// A Modbus request was refused (or, in monitor mode, would have been): the flow, the
    /// request and the reason.
    ModbusDenied(crate::datapath::ModbusDenied),
    /// Denied-request events the ring buffer had no room for, since the controller started.
    ModbusEventsLost { total: u64 },
    /// An EtherNet/IP request was refused (or, in monitor mode, would have been): the flow,
    /// the command, the CIP service with its class, instance and tag, and the reason.
    EnipDenied(crate::datapath::EnipDenied),
    /// Denied-request events the EtherNet/IP ring buffer had no room for, since the controller
    /// started.
    EnipEventsLost { total: u64 },
}

/// `{protocol: {conduit: {function: {verdict: requests}}}}`.
pub type RequestsByProtocol =
    IndexMap<String, IndexMap<String, IndexMap<String, IndexMap<String, u64>>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PacketsBytes {
    pub packets: u64,
    pub bytes: u64,
}

impl Event<'_> {
    /// A `stats` event from counters read off the datapath, keeping only non-zero entries, in
    /// reason-code, conduit-id and verdict order.
    pub fn stats(
        epoch: Option<u32>,
        counters: &Counters,
        conduits: &[ConduitTraffic],
        requests: &RequestCounts,
    ) -> Event<'static> {
        let mut reasons = IndexMap::new();
        for (code, row) in counters.reasons.iter().enumerate() {
            let by_verdict: IndexMap<_, _> = VERDICT_NAMES
                .iter()
                .zip(row)
                .filter(|(_, &n)| n != 0)
                .map(|(&verdict, &n)| (verdict, n))
                .collect();
            if !by_verdict.is_empty() {
                let name = Reason::NAMES.get(code).copied().unwrap_or("unknown");
                reasons.insert(name, by_verdict);
            }
        }
        let mut by_conduit = IndexMap::new();
        for conduit in conduits {
            let by_verdict: IndexMap<_, _> = VERDICT_NAMES
                .iter()
                .zip(&conduit.by_verdict)
                .filter(|(_, traffic)| traffic.packets != 0 || traffic.bytes != 0)
                .map(|(&verdict, traffic)| {
                    let counts = PacketsBytes {
                        packets: traffic.packets,
                        bytes: traffic.bytes,
                    };
                    (verdict, counts)
                })
                .collect();
            if !by_verdict.is_empty() {
                by_conduit.insert(conduit.conduit.clone(), by_verdict);
            }
        }
        let flows = FLOW_STAT_NAMES
            .iter()
            .zip(&counters.flows)
            .filter(|(_, &n)| n != 0)
            .map(|(&name, &n)| (name, n))
            .collect();
        let mut by_protocol = RequestsByProtocol::new();
        for ([conduit, protocol, function, verdict], &n) in requests {
            if n == 0 {
                continue;
            }
            by_protocol
                .entry(protocol.clone())
                .or_default()
                .entry(conduit.clone())
                .or_default()
                .entry(function.clone())
                .or_default()
                .insert(verdict.clone(), n);
        }
        Event::Stats {
            epoch,
            reasons,
            conduits: by_conduit,
            flows,
            requests: by_protocol,
            paths: IndexMap::new(),
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

pub fn emit(event: &Event) {
    let Ok(mut line) = to_line(event) else {
        return;
    };
    line.push('\n');
    // Events must not take the controller down: a closed stdout only loses (and counts) the line.
    sink::write(event.name(), &line);
}

impl Event<'_> {
    /// The `event` field of the line.
    pub fn name(&self) -> &'static str {
        match self {
            Event::PolicyLoaded { .. } => "policy_loaded",
            Event::PolicyRejected { .. } => "policy_rejected",
            Event::Attached { .. } => "attached",
            Event::MapsReplaced { .. } => "maps_replaced",
            Event::Ready { .. } => "ready",
            Event::Detached { .. } => "detached",
            Event::FastPath { .. } => "fast_path",
            Event::PolicyApplied { .. } => "policy_applied",
            Event::PolicyConfirmed { .. } => "policy_confirmed",
            Event::PolicyRolledBack { .. } => "policy_rolled_back",
            Event::Lockdown { .. } => "lockdown",
            Event::LockdownReleased { .. } => "lockdown_released",
            Event::LockdownRefused { .. } => "lockdown_refused",
            Event::Denied(_) => "denied",
            Event::FlowAdopted(_) => "flow_adopted",
            Event::Stats { .. } => "stats",
            Event::ModbusDenied(_) => "modbus_denied",
            Event::ModbusEventsLost { .. } => "modbus_events_lost",
            Event::EnipDenied(_) => "enip_denied",
            Event::EnipEventsLost { .. } => "enip_events_lost",
        }
    }
}

/// One event as the JSON line `emit` prints (without the newline).
pub fn to_line(event: &Event) -> serde_json::Result<String> {
    serde_json::to_string(&Line {
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        event,
    })
}

#[cfg(test)]
mod tests {
    use firewall_common::{
        counters::{
            Traffic, FLOW_CREATED, FLOW_STATS_LEN, VERDICT_COUNT, VERDICT_DROP, VERDICT_PASS,
        },
        reason::REASON_COUNT,
    };
    use serde_json::json;

    use super::*;

    #[test]
    fn stats_lists_only_non_zero_counters_by_name() {
        let mut counters = Counters {
            reasons: vec![[0; VERDICT_COUNT as usize]; REASON_COUNT as usize],
            flows: [0; FLOW_STATS_LEN as usize],
        };
        counters.reasons[Reason::None as usize][VERDICT_PASS as usize] = 12;
        counters.reasons[Reason::NoConduit as usize][VERDICT_DROP as usize] = 2;
        counters.flows[FLOW_CREATED as usize] = 1;
        let mut reads = ConduitTraffic {
            conduit: "historian-reads".into(),
            ..ConduitTraffic::default()
        };
        reads.by_verdict[VERDICT_PASS as usize] = Traffic {
            packets: 10,
            bytes: 700,
        };
        let idle = ConduitTraffic {
            conduit: "remote-desktop".into(),
            ..ConduitTraffic::default()
        };

        let mut requests = RequestCounts::new();
        let key = |conduit: &str, protocol: &str, function: &str, verdict: &str| {
            [conduit, protocol, function, verdict].map(str::to_owned)
        };
        requests.insert(key("hmi", "enip", "write_tag", "drop"), 1);
        requests.insert(key("hmi", "enip", "read_tag", "pass"), 4);
        requests.insert(key("hmi", "enip", "list_identity", "pass"), 0);
        requests.insert(key("historian-reads", "modbus", "read_coils", "pass"), 2);
        let line = to_line(&Event::stats(Some(3), &counters, &[reads, idle], &requests)).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(value["timestamp"].is_string(), "{line}");
        value.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            value,
            json!({
                "event": "stats",
                "epoch": 3,
                "reasons": {"none": {"pass": 12}, "no_conduit": {"drop": 2}},
                "conduits": {"historian-reads": {"pass": {"packets": 10, "bytes": 700}}},
                "flows": {"created": 1},
                "requests": {
                    "modbus": {"historian-reads": {"read_coils": {"pass": 2}}},
                    "enip": {"hmi": {"read_tag": {"pass": 4}, "write_tag": {"drop": 1}}},
                },
            })
        );
    }

    #[test]
    fn stats_of_an_idle_datapath_are_empty_maps() {
        let counters = Counters {
            reasons: vec![[0; VERDICT_COUNT as usize]; REASON_COUNT as usize],
            flows: [0; FLOW_STATS_LEN as usize],
        };
        let line = to_line(&Event::stats(None, &counters, &[], &RequestCounts::new())).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "stats");
        assert_eq!(value["epoch"], serde_json::Value::Null);
        for key in ["reasons", "conduits", "flows", "requests"] {
            assert_eq!(value[key], json!({}), "{key} in {line}");
        }
    }

    /// The documented schema of packet events (docs/EVENTS.md): field names, types, and that
    /// unknown values are left out rather than null.
    #[test]
    fn denied_and_adopted_events_follow_the_schema() {
        let packet = PacketEvent {
            epoch: 2,
            port: Some("eth1".into()),
            conduit: "(none)".into(),
            src_zone: Some("office".into()),
            dst_zone: Some("plant".into()),
            src: Some("198.51.100.1".parse().unwrap()),
            dst: Some("2001:db8::2".parse().unwrap()),
            protocol: Some("tcp".into()),
            src_port: Some(40000),
            dst_port: Some(502),
            function: None,
            reason: "no_conduit",
            verdict: "drop",
        };
        let line = to_line(&Event::Denied(packet.clone())).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let timestamp = value.as_object_mut().unwrap().remove("timestamp").unwrap();
        assert!(timestamp.as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(
            value,
            json!({
                "event": "denied", "epoch": 2, "port": "eth1", "conduit": "(none)",
                "src_zone": "office", "dst_zone": "plant",
                "src": "198.51.100.1", "dst": "2001:db8::2", "protocol": "tcp",
                "src_port": 40000, "dst_port": 502, "reason": "no_conduit", "verdict": "drop",
            })
        );
        let bare = PacketEvent {
            port: None,
            src_zone: None,
            dst_zone: None,
            src: None,
            dst: None,
            protocol: None,
            src_port: None,
            dst_port: None,
            reason: "none",
            verdict: "pass",
            ..packet
        };
        let line = to_line(&Event::FlowAdopted(bare)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "conduit",
                "epoch",
                "event",
                "reason",
                "timestamp",
                "verdict"
            ],
            "{line}"
        );
        assert_eq!(value["event"], "flow_adopted");
    }
}
