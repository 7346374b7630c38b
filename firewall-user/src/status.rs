//! What a running `otfw run` leaves for `otfw status`: its maps pinned under
//! `/sys/fs/bpf/otfw/<instance>/` and a state file `/run/otfw/<instance>.json` (bpffs holds
//! only BPF objects) naming what the maps' ids mean. Both stay when the controller exits (the
//! pinned program goes on enforcing): the next `otfw run` of the instance takes them over, and
//! `otfw stop` removes them.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use firewall_common::{
    counters::{FLOW_STAT_NAMES, VERDICT_COUNT, VERDICT_NAMES, VERDICT_PASS, VERDICT_REFUSE},
    event::EVENT_STAT_NAMES,
    flow::MAX_FLOWS,
    reason::Reason,
};
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{pin_dir, PinnedMaps},
    private,
};

/// Where state files live.
pub const STATE_DIR: &str = "/run/otfw";

pub fn state_path(instance: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{instance}.json"))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    pub name: String,
    pub ifindex: u32,
    pub mode: String,
    /// otfw switched GRO off on the port (generic mode); `otfw stop` switches it on again.
    #[serde(default)]
    pub gro_switched_off: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationState {
    pub epoch: u32,
    /// RFC 3339.
    pub loaded_at: String,
    /// Conduit names by id (pseudo conduits first).
    pub conduits: Vec<String>,
}

/// The state file of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub instance: String,
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub policy_file: String,
    /// The git commit of the policy in force, when its file is in a git work tree.
    #[serde(default)]
    pub policy_git: Option<crate::policy::git::PolicyCommit>,
    pub metrics: Option<String>,
    pub events_file: Option<String>,
    pub pin_dir: String,
    pub ports: Vec<PortState>,
    /// The fast path's state as last reported (`on (...)` or `off: why`).
    #[serde(default)]
    pub fast_path: Option<String>,
    /// The lockdown in force (`otfw lockdown`), if any.
    #[serde(default)]
    pub lockdown: Option<crate::lockdown::InForce>,
    /// Why the controller refused the last lockdown order, if it did.
    #[serde(default)]
    pub lockdown_refused: Option<String>,
    /// The generations in the two slots, oldest first.
    pub generations: Vec<GenerationState>,
}

impl State {
    /// Writes the state file atomically (temporary file, then rename).
    pub fn save(&self) -> Result<()> {
        private::dir(Path::new(STATE_DIR))?;
        private::write(
            &state_path(&self.instance),
            &serde_json::to_vec_pretty(self)?,
        )
    }

    pub fn remove(instance: &str) {
        let _ = std::fs::remove_file(state_path(instance));
    }

    /// Records a new generation, keeping the two that occupy the slots.
    pub fn generation(&mut self, epoch: u32, conduits: &[String]) {
        self.generations.push(GenerationState {
            epoch,
            loaded_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            conduits: conduits.to_vec(),
        });
        let keep = self.generations.len().saturating_sub(2);
        self.generations.drain(..keep);
    }
}

impl State {
    /// The state file an earlier controller of `instance` left, if it can be read.
    pub fn previous(instance: &str) -> Option<State> {
        let text = std::fs::read_to_string(state_path(instance)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Held by the one controller of an instance for its whole life (an exclusive `flock` on
/// `/run/otfw/<instance>.lock`, released by the kernel however the process ends): a second
/// `otfw run` of the instance, or an `otfw stop` while it runs, is refused.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl InstanceLock {
    pub fn take(instance: &str) -> Result<InstanceLock> {
        const NEEDS: &str = "otfw run and otfw stop need root (CAP_BPF, CAP_NET_ADMIN, \
                             CAP_PERFMON, and write access to /run/otfw)";
        let path = Path::new(STATE_DIR).join(format!("{instance}.lock"));
        match try_lock(&path, NEEDS)? {
            Some(file) => Ok(InstanceLock { _file: file, path }),
            None => {
                let pid = State::previous(instance).map_or_else(
                    || "another process".to_string(),
                    |s| format!("process {}", s.pid),
                );
                bail!(
                    "otfw instance `{instance}` is already running ({pid} holds {}): one \
                     controller per instance and port",
                    path.display()
                );
            }
        }
    }

    /// Releases the lock and removes its file: the instance is gone (`otfw stop`, or a start
    /// that failed with nothing enforced).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An exclusive flock(2) on `path` (created root-only in /run/otfw), released by the kernel
/// when the process ends; `None` if another process holds it. `needs` says what opening it
/// takes.
pub fn try_lock(path: &Path, needs: &str) -> Result<Option<std::fs::File>> {
    private::dir(Path::new(STATE_DIR)).context(needs.to_owned())?;
    let file =
        private::open(path).with_context(|| format!("opening {}; {needs}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
    }
}

fn alive(pid: u32) -> bool {
    pid != 0 && Path::new("/proc").join(pid.to_string()).exists()
}

/// The state of `instance`, or of the only running instance.
pub fn find(instance: Option<&str>) -> Result<State> {
    let path = match instance {
        Some(name) => state_path(name),
        None => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(STATE_DIR)
                .map(|dir| {
                    dir.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "json"))
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            match found.len() {
                0 => bail!(
                    "no otfw instance is running (nothing in {STATE_DIR}); start one with \
                     `otfw run --policy FILE`"
                ),
                1 => found.remove(0),
                _ => bail!(
                    "several otfw instances are running ({}); name one with --instance",
                    found
                        .iter()
                        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no otfw instance {} is running ({} cannot be read)",
            instance.unwrap_or("?"),
            path.display()
        )
    })?;
    let state: State =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if !alive(state.pid) {
        let enforced = crate::datapath::enforced_ports(Path::new(&state.pin_dir));
        let pinned = if enforced.is_empty() {
            String::new()
        } else {
            format!(
                "; its pinned program still enforces the last policy on {} (`otfw stop \
                 --instance {}` removes it)",
                enforced.join(", "),
                state.instance
            )
        };
        bail!(
            "otfw instance {} is not running: process {} is gone{pinned}. The next `otfw run` \
             of the instance takes over ({})",
            state.instance,
            state.pid,
            path.display()
        );
    }
    Ok(state)
}

/// One conduit's traffic in the status report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConduitLine {
    pub conduit: String,
    pub packets: u64,
    pub bytes: u64,
    pub denied_packets: u64,
    /// Of the denied packets, those forwarded with their refused requests answered in-band
    /// (`on_deny: refuse`).
    pub refused_packets: u64,
}

/// The summary `otfw status` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub state: State,
    pub epoch: u32,
    pub passed_packets: u64,
    pub denied_packets: u64,
    /// Non-zero denials by verdict (`drop`, `monitor`, `reset`, `refuse`).
    pub denied_by_verdict: Vec<(String, u64)>,
    /// Of the denied packets, those forwarded with their refused requests answered in-band
    /// (verdict `refuse`).
    pub refused_packets: u64,
    /// Non-zero denials by reason.
    pub denied_by_reason: Vec<(String, u64)>,
    pub top_by_traffic: Vec<ConduitLine>,
    pub top_by_denied: Vec<ConduitLine>,
    pub flow_entries: usize,
    pub flow_capacity: u32,
    pub flow_events: Vec<(String, u64)>,
    pub events: Vec<(String, u64)>,
}

const TOP: usize = 5;

/// Reads the pinned maps of a running instance.
pub fn report(state: State) -> Result<Report> {
    let maps = PinnedMaps::open(&pin_dir(&state.instance)).with_context(|| {
        format!(
            "reading the pinned maps of instance {} (was it started with --no-pin?)",
            state.instance
        )
    })?;
    let epoch = maps.active_epoch()?;
    let counters = maps.counters()?;
    let packets = Packets::count(&counters.reasons);
    let names = state
        .generations
        .iter()
        .find(|g| g.epoch == epoch)
        .map(|g| g.conduits.clone())
        .unwrap_or_default();
    let lines: Vec<ConduitLine> = maps
        .conduit_traffic(epoch, &names)?
        .into_iter()
        .map(|t| {
            let mut line = ConduitLine {
                conduit: t.conduit,
                ..ConduitLine::default()
            };
            for (verdict, traffic) in t.by_verdict.iter().enumerate() {
                line.packets += traffic.packets;
                line.bytes += traffic.bytes;
                if verdict != VERDICT_PASS as usize {
                    line.denied_packets += traffic.packets;
                }
                if verdict == VERDICT_REFUSE as usize {
                    line.refused_packets += traffic.packets;
                }
            }
            line
        })
        .collect();
    let top = |key: fn(&ConduitLine) -> u64| {
        let mut sorted: Vec<ConduitLine> = lines.iter().filter(|l| key(l) != 0).cloned().collect();
        sorted.sort_by(|a, b| key(b).cmp(&key(a)).then(a.conduit.cmp(&b.conduit)));
        sorted.truncate(TOP);
        sorted
    };
    let named = |names: &[&str], values: &[u64]| -> Vec<(String, u64)> {
        names
            .iter()
            .zip(values)
            .map(|(n, v)| (n.to_string(), *v))
            .collect()
    };
    Ok(Report {
        epoch,
        passed_packets: packets.passed,
        denied_packets: packets.denied,
        refused_packets: packets.by_verdict[VERDICT_REFUSE as usize],
        denied_by_verdict: packets.denied_by_verdict(),
        denied_by_reason: packets.by_reason,
        top_by_traffic: top(|l| l.packets),
        top_by_denied: top(|l| l.denied_packets),
        flow_entries: maps.flow_count(),
        flow_capacity: MAX_FLOWS,
        flow_events: named(&FLOW_STAT_NAMES, &counters.flows),
        events: named(&EVENT_STAT_NAMES, &maps.event_stats()?),
        state,
    })
}

/// The packet counters of the datapath summed up.
struct Packets {
    passed: u64,
    denied: u64,
    by_verdict: [u64; VERDICT_COUNT as usize],
    /// Non-zero denials (any verdict but pass) by reason, most first.
    by_reason: Vec<(String, u64)>,
}

impl Packets {
    /// From the `[reason][verdict]` counters.
    fn count(reasons: &[[u64; VERDICT_COUNT as usize]]) -> Self {
        let mut by_verdict = [0; VERDICT_COUNT as usize];
        let mut by_reason = Vec::new();
        for (code, row) in reasons.iter().enumerate() {
            for (verdict, &n) in row.iter().enumerate() {
                by_verdict[verdict] += n;
            }
            let denied: u64 = row.iter().sum::<u64>() - row[VERDICT_PASS as usize];
            if denied != 0 {
                let name = Reason::NAMES.get(code).copied().unwrap_or("unknown");
                by_reason.push((name.to_string(), denied));
            }
        }
        by_reason.sort_by_key(|r| std::cmp::Reverse(r.1));
        let passed = by_verdict[VERDICT_PASS as usize];
        Self {
            passed,
            denied: by_verdict.iter().sum::<u64>() - passed,
            by_verdict,
            by_reason,
        }
    }

    fn denied_by_verdict(&self) -> Vec<(String, u64)> {
        VERDICT_NAMES
            .iter()
            .zip(self.by_verdict)
            .enumerate()
            .filter(|&(v, (_, n))| v != VERDICT_PASS as usize && n != 0)
            .map(|(_, (name, n))| (name.to_string(), n))
            .collect()
    }
}

impl Report {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        let s = &self.state;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "otfw instance {} (pid {}, version {}, running since {})",
            s.instance, s.pid, s.version, s.started_at
        );
        let loaded = s
            .generations
            .iter()
            .find(|g| g.epoch == self.epoch)
            .map_or("?", |g| g.loaded_at.as_str());
        let _ = writeln!(
            out,
            "policy:  {} (epoch {}, loaded {loaded})",
            s.policy_file, self.epoch
        );
        if let Some(git) = &s.policy_git {
            let _ = writeln!(
                out,
                "commit:  {}{}",
                git.commit,
                if git.dirty {
                    " (work tree dirty: uncommitted changes)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            out,
            "metrics: {}",
            s.metrics
                .as_deref()
                .map_or("off".to_string(), |a| format!("http://{a}/metrics"))
        );
        let _ = writeln!(out, "ports:");
        for p in &s.ports {
            let _ = writeln!(out, "  {:<16} {} XDP", p.name, p.mode);
        }
        if let Some(lockdown) = &s.lockdown {
            let _ = writeln!(
                out,
                "LOCKDOWN: {} since {} (epoch {}; `otfw lockdown release` ends it)",
                lockdown.order.lockdown, lockdown.order.since, lockdown.epoch
            );
        }
        if let Some(fast_path) = &s.fast_path {
            let _ = writeln!(out, "fast path: {fast_path}");
        }
        let verdicts: Vec<String> = self
            .denied_by_verdict
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "packets: {} passed, {} denied{}",
            self.passed_packets,
            self.denied_packets,
            if verdicts.is_empty() {
                String::new()
            } else {
                format!(" ({})", verdicts.join(", "))
            }
        );
        if self.refused_packets != 0 {
            let _ = writeln!(
                out,
                "  refuse: forwarded with the refused requests answered in-band (on_deny: refuse)"
            );
        }
        for (reason, n) in &self.denied_by_reason {
            let _ = writeln!(out, "  {reason:<24} {n}");
        }
        let table = |out: &mut String, title: &str, lines: &[ConduitLine]| {
            let _ = writeln!(out, "{title}:");
            if lines.is_empty() {
                let _ = writeln!(out, "  (none)");
            }
            for l in lines {
                let _ = writeln!(
                    out,
                    "  {:<28} {:>10} packets {:>12} bytes {:>8} denied {:>8} refused",
                    l.conduit, l.packets, l.bytes, l.denied_packets, l.refused_packets
                );
            }
        };
        table(
            &mut out,
            "top conduits by traffic (this generation)",
            &self.top_by_traffic,
        );
        table(&mut out, "top conduits by denied", &self.top_by_denied);
        let flows: Vec<String> = self
            .flow_events
            .iter()
            .filter(|(_, n)| *n != 0)
            .map(|(e, n)| format!("{e} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "flows:   {} of {} entries; {}",
            self.flow_entries,
            self.flow_capacity,
            if flows.is_empty() {
                "no events".to_string()
            } else {
                flows.join(", ")
            }
        );
        let events: Vec<String> = self
            .events
            .iter()
            .map(|(e, n)| format!("{e} {n}"))
            .collect();
        let _ = writeln!(out, "events:  {}", events.join(", "));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall_common::counters::{VERDICT_DROP, VERDICT_MONITOR};

    fn report(reasons: &[[u64; VERDICT_COUNT as usize]]) -> Report {
        let packets = Packets::count(reasons);
        Report {
            state: State::default(),
            epoch: 1,
            passed_packets: packets.passed,
            denied_packets: packets.denied,
            refused_packets: packets.by_verdict[VERDICT_REFUSE as usize],
            denied_by_verdict: packets.denied_by_verdict(),
            denied_by_reason: packets.by_reason,
            top_by_traffic: Vec::new(),
            top_by_denied: vec![ConduitLine {
                conduit: "hmi-plc".into(),
                packets: 30,
                bytes: 3000,
                denied_packets: 7,
                refused_packets: 5,
            }],
            flow_entries: 0,
            flow_capacity: MAX_FLOWS,
            flow_events: Vec::new(),
            events: Vec::new(),
        }
    }

    fn row(verdict: u32, n: u64) -> [u64; VERDICT_COUNT as usize] {
        let mut row = [0; VERDICT_COUNT as usize];
        row[verdict as usize] = n;
        row
    }

    #[test]
    fn refused_packets_are_counted_and_shown_apart() {
        let mut reasons = vec![[0; VERDICT_COUNT as usize]; Reason::NAMES.len()];
        reasons[Reason::None as usize] = row(VERDICT_PASS, 100);
        reasons[Reason::ModbusFunctionDenied as usize] = row(VERDICT_REFUSE, 5);
        reasons[Reason::ModbusFunctionDenied as usize][VERDICT_MONITOR as usize] = 1;
        reasons[Reason::NoConduit as usize] = row(VERDICT_DROP, 2);
        let r = report(&reasons);
        assert_eq!(
            (r.passed_packets, r.denied_packets, r.refused_packets),
            (100, 8, 5)
        );
        assert_eq!(
            r.denied_by_verdict,
            [
                ("drop".into(), 2),
                ("monitor".into(), 1),
                ("refuse".into(), 5)
            ]
        );
        assert_eq!(
            r.denied_by_reason,
            [
                ("modbus_function_denied".into(), 6),
                ("no_conduit".into(), 2)
            ]
        );
        let text = r.render();
        assert!(
            text.contains("packets: 100 passed, 8 denied (drop 2, monitor 1, refuse 5)"),
            "{text}"
        );
        assert!(text.contains("refuse: forwarded with the refused requests answered in-band"));
        assert!(text.contains("7 denied        5 refused"), "{text}");
    }

    #[test]
    fn without_denials_no_verdicts_are_listed() {
        let mut reasons = vec![[0; VERDICT_COUNT as usize]; Reason::NAMES.len()];
        reasons[Reason::None as usize] = row(VERDICT_PASS, 3);
        let text = report(&reasons).render();
        assert!(text.contains("packets: 3 passed, 0 denied\n"), "{text}");
        assert!(!text.contains("refuse:"));
    }

    use crate::policy::git::PolicyCommit;

    fn rendered(policy_git: Option<PolicyCommit>) -> String {
        Report {
            state: State {
                instance: "br0".into(),
                policy_file: "/etc/otfw/policy.yaml".into(),
                policy_git,
                ..State::default()
            },
            epoch: 1,
            passed_packets: 0,
            denied_packets: 0,
            refused_packets: 0,
            denied_by_verdict: Vec::new(),
            denied_by_reason: Vec::new(),
            top_by_traffic: Vec::new(),
            top_by_denied: Vec::new(),
            flow_entries: 0,
            flow_capacity: 1,
            flow_events: Vec::new(),
            events: Vec::new(),
        }
        .render()
    }

    #[test]
    fn the_report_names_the_policy_commit_and_a_dirty_tree() {
        let commit = "0123456789abcdef0123456789abcdef01234567".to_string();
        let clean = rendered(Some(PolicyCommit {
            commit: commit.clone(),
            dirty: false,
        }));
        assert!(
            clean.lines().any(|l| l == format!("commit:  {commit}")),
            "{clean}"
        );
        let dirty = rendered(Some(PolicyCommit {
            commit: commit.clone(),
            dirty: true,
        }));
        assert!(
            dirty
                .lines()
                .any(|l| l == format!("commit:  {commit} (work tree dirty: uncommitted changes)")),
            "{dirty}"
        );
        assert!(!rendered(None).contains("commit:"));
    }

    #[test]
    fn state_files_of_earlier_versions_still_read() {
        let old = r#"{"instance":"br0","pid":1,"version":"0.1.0","started_at":"","policy_file":"p",
            "metrics":null,"events_file":null,"pin_dir":"/sys/fs/bpf/otfw/br0",
            "ports":[{"name":"eth1","ifindex":2,"mode":"native"}],"generations":[]}"#;
        let state: State = serde_json::from_str(old).unwrap();
        assert_eq!(state.policy_git, None);
        assert!(!state.ports[0].gro_switched_off);
    }
}
