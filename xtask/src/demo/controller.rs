//! `otfw run` under the demo's care: started in the lab, waited for until `ready`, asked for
//! its counters with SIGUSR1, stopped with SIGTERM.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use otfw_tests::{Lab, LabProcess};
use serde_json::Value;

use super::POLICY;

/// How long `otfw run` may take to load, verify and attach.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `otfw run` may take to answer SIGUSR1.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// Counters are read until two snapshots this far apart agree (the last segments of a
/// closing TCP connection may still be on their way when the client returns), at most
/// `SETTLE_MAX`.
const SETTLE_POLL: Duration = Duration::from_millis(100);
const SETTLE_MAX: Duration = Duration::from_secs(3);

/// `otfw run` under the lab's care, and what it reports.
pub struct Controller {
    process: LabProcess,
    /// The last `stats` line it printed.
    pub last_stats: String,
    /// Where it serves Prometheus metrics.
    pub metrics: std::net::SocketAddr,
    /// `modbus_denied` events printed since the last [`Controller::take_denied`].
    denied: Vec<Value>,
}

impl Controller {
    pub fn start(lab: &Lab, repo: &Path, otfw: &Path) -> Result<Self> {
        // A free port rather than the default 9725, which an otfw run of the machine may hold.
        let metrics = otfw_tests::free_loopback_addr()?;
        let mut command = Command::new(otfw);
        command
            .current_dir(repo)
            // Unpinned: the demo's enforcement ends with its controller.
            .args(["run", "--policy", POLICY, "--no-pin"])
            .args(["--metrics", &metrics.to_string()])
            // The example policy is the checkout's, owned by whoever cloned the repository (not
            // root, who runs the demo); on a lab that is no gateway, that is accepted.
            .arg("--allow-insecure-policy-permissions")
            .env("RUST_LOG", "info");
        // SAFETY: the closure runs between fork and exec and only makes the prctl system
        // call, which is async-signal-safe.
        unsafe {
            // Should the demo be killed outright (SIGKILL, no cleanup), the controller goes
            // with it instead of holding the XDP links; the next demo removes the rest.
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        println!("demo: starting otfw run --policy {POLICY}");
        let mut process = lab.spawn_command(command)?;
        let mut seen = Vec::new();
        process
            .wait_for_line(
                |line| {
                    let event = parse_event(line);
                    let ready = event_name(&event) == Some("ready");
                    seen.push(event);
                    ready
                },
                READY_TIMEOUT,
            )
            .context("otfw run did not get ready")?;
        for event in &seen {
            match event_name(event) {
                Some("policy_loaded") => println!(
                    "  policy {} in force: epoch {}, {} zones, {} conduits",
                    event["file"].as_str().unwrap_or("?"),
                    event["epoch"],
                    event["zones"],
                    event["conduits"]
                ),
                Some("attached") => println!(
                    "  attached to {} ({} XDP)",
                    event["port"].as_str().unwrap_or("?"),
                    event["mode"].as_str().unwrap_or("?")
                ),
                Some("ready") => println!("  ready: enforcing on {} ports", event["ports"]),
                _ => {}
            }
        }
        let mut attached: Vec<&str> = seen
            .iter()
            .filter(|event| event_name(event) == Some("attached"))
            .filter_map(|event| event["port"].as_str())
            .collect();
        attached.sort_unstable();
        let mut ports = lab.ports();
        ports.sort_unstable();
        if attached != ports {
            bail!("otfw run attached to {attached:?}, but the lab's ports are {ports:?}");
        }
        println!("  metrics: http://{metrics}/metrics");
        Ok(Self {
            process,
            last_stats: String::new(),
            metrics,
            denied: Vec::new(),
        })
    }

    /// The counters now: SIGUSR1, then the `stats` line it prints.
    pub fn stats(&mut self) -> Result<Stats> {
        let pid = libc::pid_t::try_from(self.process.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; `pid` is our child, not yet
        // reaped (the lab process owns it), so it names that process.
        if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
            bail!(
                "could not signal otfw run ({pid}): {}",
                std::io::Error::last_os_error()
            );
        }
        let denied = &mut self.denied;
        let line = self
            .process
            .wait_for_line(
                |line| {
                    let event = parse_event(line);
                    match event_name(&event) {
                        Some("stats") => return true,
                        Some("modbus_denied") => denied.push(event),
                        _ => {}
                    }
                    false
                },
                STATS_TIMEOUT,
            )
            .context("otfw run did not answer SIGUSR1 with a stats event")?;
        let stats = Stats::parse(&parse_event(&line));
        self.last_stats = line;
        Ok(stats)
    }

    /// The `modbus_denied` events (one per refused Modbus request) printed since the last
    /// call, in order.
    pub fn take_denied(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.denied)
    }

    /// The counters once they stopped moving.
    pub fn settled_stats(&mut self) -> Result<Stats> {
        let deadline = Instant::now() + SETTLE_MAX;
        let mut last = self.stats()?;
        loop {
            thread::sleep(SETTLE_POLL);
            let now = self.stats()?;
            if now == last || Instant::now() >= deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    /// SIGTERM (then SIGKILL after a grace period) and what it printed.
    pub fn stop(self) -> otfw_tests::ProcessOutput {
        self.process.stop()
    }
}

fn parse_event(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

fn event_name(event: &Value) -> Option<&str> {
    event.get("event").and_then(Value::as_str)
}

pub fn events<'a>(stdout: &'a str, name: &'a str) -> impl Iterator<Item = Value> + 'a {
    stdout
        .lines()
        .map(parse_event)
        .filter(move |event| event_name(event) == Some(name))
}

/// A `stats` event flattened: packets by (reason, verdict), by (conduit, verdict), and flow
/// events by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    reasons: BTreeMap<(String, String), u64>,
    conduits: BTreeMap<(String, String), u64>,
    pub flows: BTreeMap<String, u64>,
}

impl Stats {
    fn parse(event: &Value) -> Self {
        let nested = |key: &str, leaf: fn(&Value) -> Option<u64>| {
            let mut out = BTreeMap::new();
            if let Some(outer) = event[key].as_object() {
                for (name, by_verdict) in outer {
                    for (verdict, value) in by_verdict.as_object().into_iter().flatten() {
                        if let Some(n) = leaf(value) {
                            out.insert((name.clone(), verdict.clone()), n);
                        }
                    }
                }
            }
            out
        };
        let flows = event["flows"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, n)| Some((name.clone(), n.as_u64()?)))
            .collect();
        Self {
            reasons: nested("reasons", Value::as_u64),
            conduits: nested("conduits", |value| value["packets"].as_u64()),
            flows,
        }
    }

    /// What was counted since `before` (counters only grow).
    pub fn since(&self, before: &Stats) -> Stats {
        fn delta<K: Ord + Clone>(
            now: &BTreeMap<K, u64>,
            then: &BTreeMap<K, u64>,
        ) -> BTreeMap<K, u64> {
            now.iter()
                .map(|(key, n)| (key.clone(), n.saturating_sub(*then.get(key).unwrap_or(&0))))
                .filter(|(_, n)| *n != 0)
                .collect()
        }
        Stats {
            reasons: delta(&self.reasons, &before.reasons),
            conduits: delta(&self.conduits, &before.conduits),
            flows: delta(&self.flows, &before.flows),
        }
    }

    pub fn reason(&self, reason: &str, verdict: &str) -> u64 {
        self.reasons
            .get(&(reason.to_string(), verdict.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn conduit(&self, conduit: &str, verdict: &str) -> u64 {
        self.conduits
            .get(&(conduit.to_string(), verdict.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The firewall's side of a step in words: which conduits passed packets, which reasons
    /// dropped them, flow table events.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for ((conduit, verdict), packets) in &self.conduits {
            // Pseudo conduits: `(none)` passes are ARP (the only non-IP type the policy
            // passes; the lab has no IPv6), its drops are told by their reasons below.
            if !conduit.starts_with('(') {
                parts.push(format!(
                    "{conduit} {} {}",
                    verb(verdict),
                    packets_n(*packets)
                ));
            }
        }
        for ((reason, verdict), packets) in &self.reasons {
            if reason != "none" {
                parts.push(format!(
                    "{reason}: {} {}",
                    verb(verdict),
                    packets_n(*packets)
                ));
            }
        }
        for (event, n) in &self.flows {
            let flows = if *n == 1 { "flow" } else { "flows" };
            parts.push(format!("{n} {flows} {event}"));
        }
        let arp = self.conduit("(none)", "pass");
        if arp != 0 {
            parts.push(format!("{arp} ARP passed"));
        }
        if parts.is_empty() {
            "nothing counted".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// A verdict name (`firewall_common::counters::VERDICT_NAMES`) as a verb.
fn verb(verdict: &str) -> &str {
    match verdict {
        "pass" => "passed",
        "drop" => "dropped",
        "monitor" => "would have dropped (monitor mode)",
        "reset" => "reset",
        other => other,
    }
}

fn packets_n(n: u64) -> String {
    if n == 1 {
        "1 packet".to_string()
    } else {
        format!("{n} packets")
    }
}

/// Families the demo shows from a live scrape, and how many samples at most.
const SHOWN: [&str; 5] = [
    "otfw_conduit_packets_total",
    "otfw_denied_packets_total",
    "otfw_flow_events_total",
    "otfw_policy_epoch",
    "otfw_port_attached",
];

/// Non-zero samples of a few families of a scrape of `/metrics`.
pub fn live_counters(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| SHOWN.iter().any(|f| line.starts_with(f)))
        .filter(|line| !line.ends_with(" 0"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_deltas_keep_what_changed() {
        let before = Stats::parse(&serde_json::json!({
            "event": "stats",
            "reasons": {"none": {"pass": 4}},
            "conduits": {"(none)": {"pass": {"packets": 4, "bytes": 240}}},
            "flows": {},
        }));
        let after = Stats::parse(&serde_json::json!({
            "event": "stats",
            "reasons": {"none": {"pass": 4}, "no_conduit": {"drop": 2}},
            "conduits": {"(none)": {"pass": {"packets": 4, "bytes": 240},
                                    "drop": {"packets": 2, "bytes": 148}}},
            "flows": {"created": 1},
        }));
        let delta = after.since(&before);
        assert_eq!(delta.reason("no_conduit", "drop"), 2);
        assert_eq!(delta.reason("none", "pass"), 0);
        assert_eq!(delta.conduit("(none)", "drop"), 2);
        assert_eq!(delta.flows.get("created"), Some(&1));
        assert_eq!(
            delta.describe(),
            "no_conduit: dropped 2 packets, 1 flow created"
        );
    }
}
