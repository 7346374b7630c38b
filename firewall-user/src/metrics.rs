//! Prometheus metrics of `otfw run`, served on `/metrics` (`--metrics ADDR`, default
//! `127.0.0.1:9725`).
//!
//! Every scrape reads the datapath's per-CPU counters afresh (lookups copy the values out; the
//! datapath is never paused or reset). Datapath counters count since the program was loaded,
//! except conduit counters, which live in a generation slot and restart from zero when the slot
//! is reused (every second reload): `ConduitTotals` keeps them monotonic per conduit name.
//! Labels are bounded by the policy (conduit and zone names, protocols, reason codes, verdicts,
//! ports); no addresses, except in the asset series of `--inventory` (`inventory::exporter`),
//! which have a fixed cap.

mod http;
mod totals;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use firewall_common::{
    counters::{
        Traffic, FLOW_ADOPTED, FLOW_CLOSED, FLOW_CREATED, FLOW_EXPIRED, FLOW_INSERT_FAILED,
        FLOW_REVOKED, FLOW_STAT_NAMES, PATH_STAT_NAMES, VERDICT_NAMES, VERDICT_PASS,
    },
    event::{EVENTS_RATE_LIMITED, EVENTS_RING_FULL},
    flow::MAX_FLOWS,
    observed::OBSERVED_STAT_NAMES,
    reason::Reason,
};
use prometheus::{
    core::Collector, Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use http::{bind, serve, ScrapeRequest, DEFAULT_ADDR};
pub use totals::{ConduitKey, ConduitTotals};

use crate::{
    datapath::{Datapath, EnipTraffic, ModbusTraffic},
    policy::git::PolicyCommit,
};

/// How long a flow-table entry count (a walk over the table's keys) is reused.
const FLOW_COUNT_TTL: Duration = Duration::from_secs(5);

/// The metric families of `otfw run`.
pub struct Metrics {
    registry: Registry,
    families: Vec<String>,
    conduit_packets: IntCounterVec,
    conduit_bytes: IntCounterVec,
    requests: IntCounterVec,
    denied: IntCounterVec,
    parse_errors: IntCounterVec,
    flow_entries: IntGauge,
    zone_flows: IntGaugeVec,
    zone_flow_share: IntGaugeVec,
    flows_swept: IntCounter,
    flow_events: IntCounterVec,
    flow_insert_failures: IntCounter,
    flow_evictions: IntCounter,
    datapath_paths: IntCounterVec,
    policy_epoch: IntGauge,
    policy_commit: IntGaugeVec,
    policy_load_time: Gauge,
    policy_loads: IntCounterVec,
    port_attached: IntGaugeVec,
    fast_path: IntGauge,
    lockdown: IntGaugeVec,
    events: IntCounterVec,
    events_lost: IntCounterVec,
    observed_frames: IntCounterVec,
    observed_uses: IntCounterVec,
    /// Conduit traffic of retired generations, folded per conduit name.
    pub totals: ConduitTotals,
    /// The inventory's assets (`otfw run --inventory`).
    pub assets: crate::inventory::exporter::AssetMetrics,
    /// Inspector requests of generations no longer in force.
    requests_retired: RequestCounts,
    flow_count: Option<(Instant, usize)>,
}

/// Flow table events exported under `otfw_flow_events_total{event}`; insert failures have their
/// own family.
const FLOW_EVENTS: [u32; 7] = [
    FLOW_CREATED,
    FLOW_ADOPTED,
    FLOW_EXPIRED,
    FLOW_REVOKED,
    firewall_common::counters::FLOW_REVALIDATED,
    FLOW_CLOSED,
    firewall_common::counters::FLOW_PROMOTED,
];

/// The protocol a parse or sanity error belongs to, if `reason` is one.
pub fn parse_error_protocol(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "eth_truncated" | "vlan_malformed" => "ethernet",
        "ip_truncated" | "ip_bad_version" | "ip_bad_ihl" | "ip_bad_length" => "ip",
        "ipv6_ext_header" => "ipv6",
        "l4_truncated" => "l4",
        "tcp_bad_data_offset" | "tcp_bad_flags" => "tcp",
        "nd_bad_hop_limit" => "icmpv6",
        r if r.starts_with("modbus_") && is_malformed(r) => "modbus",
        r if (r.starts_with("enip_") || r.starts_with("cip_")) && is_malformed(r) => "enip",
        _ => return None,
    })
}

/// Reason names of inspectors that say "could not be parsed" rather than "not allowed".
fn is_malformed(reason: &str) -> bool {
    [
        "_bad_",
        "truncated",
        "malformed",
        "unframed",
        "trailing",
        "too_many",
        "too_long",
        "too_deep",
    ]
    .iter()
    .any(|w| reason.contains(w))
}

impl Metrics {
    pub fn new() -> Result<Metrics> {
        let registry = Registry::new();
        let mut families = Vec::new();
        let mut register = |c: Box<dyn Collector>| -> Result<()> {
            families.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(c)?;
            Ok(())
        };
        macro_rules! family {
            ($ty:ident, $name:literal, $help:literal) => {{
                let m = $ty::with_opts(Opts::new($name, $help))?;
                register(Box::new(m.clone()))?;
                m
            }};
            ($ty:ident, $name:literal, $help:literal, [$($label:literal),*]) => {{
                let m = $ty::new(Opts::new($name, $help), &[$($label),*])?;
                register(Box::new(m.clone()))?;
                m
            }};
        }
        let conduit = ["conduit", "from_zone", "to_zone", "protocol", "verdict"];
        let conduit_packets = IntCounterVec::new(
            Opts::new(
                "otfw_conduit_packets_total",
                "Packets decided per conduit (pseudo conduits in parentheses), zone pair, \
                 protocol and verdict.",
            ),
            &conduit,
        )?;
        register(Box::new(conduit_packets.clone()))?;
        let conduit_bytes = IntCounterVec::new(
            Opts::new(
                "otfw_conduit_bytes_total",
                "Bytes (whole frames) decided per conduit, zone pair, protocol and verdict.",
            ),
            &conduit,
        )?;
        register(Box::new(conduit_bytes.clone()))?;
        let requests = family!(
            IntCounterVec,
            "otfw_requests_total",
            "Inspected protocol requests per conduit, protocol, function or service and verdict.",
            ["conduit", "protocol", "function", "verdict"]
        );
        let denied = family!(
            IntCounterVec,
            "otfw_denied_packets_total",
            "Packets denied per reason and verdict (drop, reset, or monitor: passed but would \
             have been denied).",
            ["reason", "verdict"]
        );
        let parse_errors = family!(
            IntCounterVec,
            "otfw_parse_errors_total",
            "Malformed or insane packets per protocol and reason (a subset of the denied).",
            ["protocol", "reason"]
        );
        let flow_entries = family!(
            IntGauge,
            "otfw_flow_table_entries",
            "Tracked flows in the flow table (counted at most every 5 seconds)."
        );
        let zone_flows = family!(
            IntGaugeVec,
            "otfw_zone_flows",
            "Established flows each zone's hosts opened, against the zone's share of the flow \
             table (otfw_zone_flow_share); a zone at its share opens no more (flow_quota). \
             Counted at most every 5 seconds.",
            ["zone"]
        );
        let zone_flow_share = family!(
            IntGaugeVec,
            "otfw_zone_flow_share",
            "How many established flows each zone's hosts may hold at once: an equal share of \
             the flow table, hosts in no zone counting as one more zone.",
            ["zone"]
        );
        let flows_swept = family!(
            IntCounter,
            "otfw_flows_swept_total",
            "Idle flows the controller removed from the flow table (their timeout passed \
             without a packet to find them expired)."
        );
        let flow_capacity = family!(
            IntGauge,
            "otfw_flow_table_capacity",
            "Size of the table of established flows (shared among the zones: \
             otfw_zone_flow_share)."
        );
        flow_capacity.set(MAX_FLOWS as i64);
        let flow_events = family!(
            IntCounterVec,
            "otfw_flow_events_total",
            "Flow table events: created (waiting for an answer), promoted (answered: \
             established), adopted (mid-stream), expired, revoked (by a new policy), \
             revalidated, closed (reset, or now decided by a default).",
            ["event"]
        );
        let flow_insert_failures = family!(
            IntCounter,
            "otfw_flow_insert_failures_total",
            "Flows that could not be inserted into the flow table (refused as flow_table_full)."
        );
        let flow_evictions = family!(
            IntCounter,
            "otfw_flow_evictions_total",
            "Estimated LRU evictions: flows inserted minus flows removed minus entries (BPF \
             cannot observe evictions; exact when the table is quiet)."
        );
        let datapath_paths = family!(
            IntCounterVec,
            "otfw_datapath_paths_total",
            "Shortcuts the datapath took: flow_hit (a tracked flow's packet decided from its \
             flow entry alone), denial_cached (an untracked packet denied from the decision \
             cache), denial_stored (a denial remembered in it), redirected (an allowed frame \
             forwarded port to port by the fast path), bridge_learns (an allowed frame left to \
             the bridge because it has not learnt its source on that port).",
            ["path"]
        );
        for name in PATH_STAT_NAMES {
            datapath_paths.with_label_values(&[name]);
        }
        let policy_epoch = family!(
            IntGauge,
            "otfw_policy_epoch",
            "The policy generation in force (0: none)."
        );
        let policy_commit = family!(
            IntGaugeVec,
            "otfw_policy_commit_info",
            "Always 1; the git commit of the policy in force and whether its work tree was dirty \
             (no series when the policy file is not in a git work tree).",
            ["commit", "dirty"]
        );
        let policy_load_time = family!(
            Gauge,
            "otfw_policy_last_load_timestamp_seconds",
            "When the policy in force was installed (Unix time)."
        );
        let policy_loads = family!(
            IntCounterVec,
            "otfw_policy_loads_total",
            "Policy load attempts by result (loaded, rejected).",
            ["result"]
        );
        let port_attached = family!(
            IntGaugeVec,
            "otfw_port_attached",
            "1 while the XDP program is attached to the bridge port, in the labelled XDP mode.",
            ["port", "mode"]
        );
        let fast_path = family!(
            IntGauge,
            "otfw_fast_path_enabled",
            "1 while the fast path forwards allowed frames port to port (XDP_REDIRECT); \
             frames it takes are counted in otfw_datapath_paths_total{path=\"redirected\"}."
        );
        let lockdown = family!(
            IntGaugeVec,
            "otfw_lockdown",
            "1 while a lockdown (otfw lockdown) restricts the policy in force: mode read-only \
             or isolate, zone the isolated zone (empty for read-only). No series: no lockdown.",
            ["mode", "zone"]
        );
        let events = family!(
            IntCounterVec,
            "otfw_events_total",
            "Event lines written, by event type.",
            ["event"]
        );
        let events_lost = family!(
            IntCounterVec,
            "otfw_events_lost_total",
            "Events lost: rate_limited (datapath token bucket; repeats of one dropped denial \
             within a timer tick offer one event), ring_full, modbus_ring_full and \
             enip_ring_full (controller too slow), write_error (stdout or events file failed).",
            ["cause"]
        );
        let observed_frames = family!(
            IntCounterVec,
            "otfw_observed_frames_total",
            "Frames the datapath copied for the live inventory (flow answers, Modbus 43/14 and \
             ListIdentity replies), by result: sent, rate_limited (its token bucket), ring_full \
             (controller too slow).",
            ["result"]
        );
        for result in OBSERVED_STAT_NAMES {
            observed_frames.with_label_values(&[result]);
        }
        let observed_uses = family!(
            IntCounterVec,
            "otfw_observed_uses_total",
            "Request segments the inspectors copied for the live inventory because a request \
             was its connection's first use of a Modbus function or unit, an EtherNet/IP \
             command or a CIP service at a class, by result: sent, rate_limited (its token \
             bucket), ring_full (controller too slow).",
            ["result"]
        );
        for result in OBSERVED_STAT_NAMES {
            observed_uses.with_label_values(&[result]);
        }
        let build_info = family!(
            IntGaugeVec,
            "otfw_build_info",
            "Always 1; the controller's version.",
            ["version"]
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let start_time = family!(
            Gauge,
            "otfw_start_time_seconds",
            "When the controller started (Unix time)."
        );
        start_time.set(unix_seconds(SystemTime::now()));
        for cause in [
            "rate_limited",
            "ring_full",
            "modbus_ring_full",
            "enip_ring_full",
            "write_error",
        ] {
            events_lost.with_label_values(&[cause]);
        }
        for result in ["loaded", "rejected"] {
            policy_loads.with_label_values(&[result]);
        }
        let assets = crate::inventory::exporter::AssetMetrics::new(&mut register)?;
        Ok(Metrics {
            registry,
            families,
            conduit_packets,
            conduit_bytes,
            requests,
            denied,
            parse_errors,
            flow_entries,
            zone_flows,
            zone_flow_share,
            flows_swept,
            flow_events,
            flow_insert_failures,
            flow_evictions,
            datapath_paths,
            policy_epoch,
            policy_commit,
            policy_load_time,
            policy_loads,
            port_attached,
            fast_path,
            lockdown,
            events,
            events_lost,
            observed_frames,
            observed_uses,
            totals: ConduitTotals::default(),
            assets,
            requests_retired: RequestCounts::new(),
            flow_count: None,
        })
    }

    /// Every metric family name the exporter serves (some only once they have a sample).
    pub fn family_names(&self) -> &[String] {
        &self.families
    }

    pub fn policy_loaded(&self, epoch: u32, at: SystemTime, git: Option<&PolicyCommit>) {
        self.policy_loads.with_label_values(&["loaded"]).inc();
        self.policy_epoch.set(epoch as i64);
        self.policy_commit.reset();
        if let Some(git) = git {
            let dirty = if git.dirty { "true" } else { "false" };
            self.policy_commit
                .with_label_values(&[git.commit.as_str(), dirty])
                .set(1);
        }
        self.policy_load_time.set(unix_seconds(at));
    }

    pub fn policy_rejected(&self) {
        self.policy_loads.with_label_values(&["rejected"]).inc();
    }

    pub fn port(&self, port: &str, mode: &str, attached: bool) {
        self.port_attached
            .with_label_values(&[port, mode])
            .set(attached as i64);
    }

    pub fn policy_epoch(&self, epoch: u32) {
        self.policy_epoch.set(epoch as i64);
    }

    pub fn lockdown(&self, lockdown: Option<&crate::lockdown::Lockdown>) {
        self.lockdown.reset();
        if let Some(lockdown) = lockdown {
            self.lockdown
                .with_label_values(&[lockdown.mode(), lockdown.zone().unwrap_or("")])
                .set(1);
        }
    }

    pub fn fast_path(&self, enabled: bool) {
        self.fast_path.set(enabled as i64);
    }

    /// Folds the counts of the generation the next install replaces (call before `install`).
    /// Inspector (Modbus, EtherNet/IP) counters are read for the generation in force only, so
    /// its counts are folded as it stops being in force.
    pub fn before_install(&mut self, datapath: &Datapath) {
        match inspector_requests(datapath) {
            Ok(requests) => fold(&mut self.requests_retired, requests),
            Err(e) => log::warn!("metrics: reading the inspector counters failed: {e:#}"),
        }
        if let Some(generation) = datapath.retiring() {
            match datapath.generation_traffic(generation) {
                Ok(traffic) => self.totals.retire(&generation.names, &traffic),
                Err(e) => log::warn!("metrics: reading the retiring generation failed: {e:#}"),
            }
        }
    }

    /// Reads the datapath and returns the text exposition of every family.
    /// Flows the controller's sweep removed (`Datapath::sweep_flows`).
    pub fn flows_swept(&self, n: u64) {
        self.flows_swept.inc_by(n);
    }

    pub fn scrape(&mut self, datapath: &Datapath) -> Result<String> {
        self.refresh(datapath)?;
        let mut body = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut body)?;
        Ok(String::from_utf8(body)?)
    }

    fn refresh(&mut self, datapath: &Datapath) -> Result<()> {
        let mut live = Vec::new();
        for generation in datapath.generations() {
            live.push((&generation.names, datapath.generation_traffic(generation)?));
        }
        let conduits = self.totals.current(&live);
        for (key, by_verdict) in &conduits {
            for (verdict, traffic) in VERDICT_NAMES.iter().zip(by_verdict) {
                let labels = [
                    key.conduit.as_str(),
                    key.labels.from_zone.as_str(),
                    key.labels.to_zone.as_str(),
                    key.labels.protocol.as_str(),
                    verdict,
                ];
                raise(
                    &self.conduit_packets.with_label_values(&labels),
                    traffic.packets,
                );
                raise(
                    &self.conduit_bytes.with_label_values(&labels),
                    traffic.bytes,
                );
            }
        }

        let counters = datapath.counters()?;
        for (code, row) in counters.reasons.iter().enumerate() {
            let reason = Reason::NAMES.get(code).copied().unwrap_or("unknown");
            for (verdict, &n) in row.iter().enumerate() {
                if verdict == VERDICT_PASS as usize || n == 0 {
                    continue;
                }
                let verdict = VERDICT_NAMES[verdict];
                raise(&self.denied.with_label_values(&[reason, verdict]), n);
            }
            if let Some(protocol) = parse_error_protocol(reason) {
                let n: u64 = row.iter().sum();
                if n != 0 {
                    raise(&self.parse_errors.with_label_values(&[protocol, reason]), n);
                }
            }
        }
        for index in FLOW_EVENTS {
            let event = FLOW_STAT_NAMES[index as usize];
            let n = counters.flows[index as usize];
            raise(&self.flow_events.with_label_values(&[event]), n);
        }
        raise(
            &self.flow_insert_failures,
            counters.flows[FLOW_INSERT_FAILED as usize],
        );
        for (name, n) in PATH_STAT_NAMES.iter().zip(datapath.path_stats()?) {
            raise(&self.datapath_paths.with_label_values(&[name]), n);
        }
        let fresh = self
            .flow_count
            .is_none_or(|(at, _)| at.elapsed() >= FLOW_COUNT_TTL);
        if fresh {
            let entries = datapath.flow_count();
            self.flow_count = Some((Instant::now(), entries));
            self.flow_entries.set(entries as i64);
            let f = &counters.flows;
            let inserted = f[FLOW_CREATED as usize] + f[FLOW_ADOPTED as usize];
            let removed = f[FLOW_EXPIRED as usize]
                + f[FLOW_REVOKED as usize]
                + f[FLOW_CLOSED as usize]
                + self.flows_swept.get();
            self.zone_flows.reset();
            self.zone_flow_share.reset();
            for share in datapath.zone_shares()? {
                let labels = [share.zone.as_str()];
                self.zone_flows
                    .with_label_values(&labels)
                    .set(share.flows as i64);
                self.zone_flow_share
                    .with_label_values(&labels)
                    .set(share.max_flows as i64);
            }
            raise(
                &self.flow_evictions,
                inserted.saturating_sub(removed + entries as u64),
            );
        }

        let mut requests = self.requests_retired.clone();
        fold(&mut requests, inspector_requests(datapath)?);
        for ([conduit, protocol, function, verdict], n) in &requests {
            self.requests([conduit, protocol, function, verdict], *n);
        }
        raise(
            &self.events_lost.with_label_values(&["modbus_ring_full"]),
            datapath.modbus_events_lost()?,
        );
        raise(
            &self.events_lost.with_label_values(&["enip_ring_full"]),
            datapath.enip_counts()?.0,
        );

        let lost = datapath.event_stats()?;
        raise(
            &self.events_lost.with_label_values(&["rate_limited"]),
            lost[EVENTS_RATE_LIMITED as usize],
        );
        raise(
            &self.events_lost.with_label_values(&["ring_full"]),
            lost[EVENTS_RING_FULL as usize],
        );
        for (result, n) in OBSERVED_STAT_NAMES.iter().zip(datapath.observed_stats()?) {
            raise(&self.observed_frames.with_label_values(&[result]), n);
        }
        for (result, n) in OBSERVED_STAT_NAMES.iter().zip(datapath.uses_stats()?) {
            raise(&self.observed_uses.with_label_values(&[result]), n);
        }
        let written = crate::events::written();
        for (event, n) in &written.by_event {
            raise(&self.events.with_label_values(&[event]), *n);
        }
        raise(
            &self.events_lost.with_label_values(&["write_error"]),
            written.failed,
        );
        Ok(())
    }

    /// Sets the request counter of one (conduit, protocol, function, verdict) to `total`, a
    /// count that only grows (an inspector's per-function counters).
    pub fn requests(&self, labels: [&str; 4], total: u64) {
        raise(&self.requests.with_label_values(&labels), total);
    }
}

/// Inspected requests by `[conduit, protocol, function, verdict]`.
pub type RequestCounts = BTreeMap<[String; 4], u64>;

/// Adds `more` into `into` (counts of a retiring generation into the totals).
pub fn fold(into: &mut RequestCounts, more: RequestCounts) {
    for (key, n) in more {
        *into.entry(key).or_default() += n;
    }
}

/// Modbus and EtherNet/IP requests of the generation in force.
pub fn inspector_requests(datapath: &Datapath) -> Result<RequestCounts> {
    let mut out = modbus_requests(&datapath.modbus_traffic()?);
    fold(&mut out, enip_requests(&datapath.enip_traffic()?));
    Ok(out)
}

/// Modbus requests (not responses), by conduit, function name and verdict.
pub fn modbus_requests(traffic: &[ModbusTraffic]) -> RequestCounts {
    let mut out = RequestCounts::new();
    for t in traffic {
        if !VERDICT_NAMES.contains(&t.kind) {
            continue;
        }
        let key = [
            t.conduit.clone(),
            "modbus".to_owned(),
            modbus_function_name(t.function),
            t.kind.to_string(),
        ];
        *out.entry(key).or_default() += t.adus;
    }
    out
}

/// EtherNet/IP requests, by conduit, function and verdict. The function is the CIP service's
/// policy name resolved against its class (`write_tag`, `set_attribute_single`, `0x4b` when
/// unnamed), or for encapsulation messages that carry no CIP request their command
/// (`list_identity`, `register_session`, ...). SendRRData and SendUnitData messages are counted
/// by the CIP requests they carry, and implicit I/O datagrams not at all (they are cyclic data,
/// not requests; their refusals are in `otfw_denied_packets_total`).
pub fn enip_requests(traffic: &[EnipTraffic]) -> RequestCounts {
    let mut out = RequestCounts::new();
    for t in traffic {
        let function = if !t.service.is_empty() {
            t.service.clone()
        } else if matches!(
            t.command.as_str(),
            "send_rr_data" | "send_unit_data" | "implicit_io"
        ) {
            continue;
        } else {
            t.command.clone()
        };
        let key = [
            t.conduit.clone(),
            "enip".to_owned(),
            function,
            t.verdict.to_string(),
        ];
        *out.entry(key).or_default() += t.requests;
    }
    out
}

/// The policy name of a Modbus function code (`read_coils`, ...), or its number.
pub fn modbus_function_name(code: u8) -> String {
    crate::policy::modbus::FUNCTIONS
        .iter()
        .find(|(_, c, sub)| *c == code && sub.is_none())
        .map_or_else(|| code.to_string(), |(name, _, _)| name.to_string())
}

/// Sets a counter to `value` if that is higher (the sources only grow; a counter never falls).
fn raise(counter: &IntCounter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Conduit traffic summed per conduit key (name and labels), by verdict.
pub type ConduitCounts =
    BTreeMap<ConduitKey, [Traffic; firewall_common::counters::VERDICT_COUNT as usize]>;

#[cfg(test)]
mod tests;
