//! `otfw diff`: what changing one validated policy into another does to what is allowed.
//!
//! Both policies are compared in their resolved form (presets expanded, defaults filled in,
//! lists read as sets), never as text, so that reordering, reformatting or spelling the same
//! grant another way is no change at all. Zones and conduits are matched by name.
//!
//! Each [`Change`] is one line of the review: `+` something newly allowed or added, `-`
//! something no longer allowed or removed, `~` a value that changed. Where it can be told from
//! the two policies alone, its [`Effect`] says whether the policy now lets more or less
//! through. Effects are judged one conduit at a time: rules of other conduits with the same
//! ends, which the datapath may try first, are not taken into account.

mod enip;
mod modbus;
pub mod ranges;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use indexmap::IndexMap;
use ipnet::IpNet;
use serde::Serialize;

use super::validated::*;
use ranges::Ranges;

/// Whether a line adds (`+`), removes (`-`) or changes (`~`) something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Added,
    Removed,
    Changed,
}

impl Kind {
    pub fn sign(self) -> char {
        match self {
            Kind::Added => '+',
            Kind::Removed => '-',
            Kind::Changed => '~',
        }
    }
}

/// What a change does to the traffic the policy lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    AllowsMore,
    AllowsLess,
    /// The policy lets the same traffic through (security levels, `on_deny`, a conduit that
    /// `defaults.intra_zone: allow` makes moot, ...).
    Neutral,
}

impl Effect {
    fn opposite(self) -> Effect {
        match self {
            Effect::AllowsMore => Effect::AllowsLess,
            Effect::AllowsLess => Effect::AllowsMore,
            Effect::Neutral => Effect::Neutral,
        }
    }
}

/// The value of a change's `before` or `after`: one value, or the items of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    List(Vec<String>),
}

/// One difference between two policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: Kind,
    /// Where in the policy, by names: `["conduits", "historian-reads", "allow", "modbus:502",
    /// "functions"]`, `["zones", "cell-1", "networks"]`, `["defaults", "action"]`.
    pub path: Vec<String>,
    /// What is no longer there (removed) or the old value (changed).
    pub before: Option<Value>,
    /// What is new (added) or the new value (changed).
    pub after: Option<Value>,
    /// `None` when the two policies alone do not tell (a zone's networks changed: traffic
    /// between its addresses now follows other conduits or defaults).
    pub effect: Option<Effect>,
    /// The line a reviewer reads, e.g. `~ conduit historian-reads: modbus rule on port 502:
    /// + functions write_single_register (6)`.
    pub text: String,
}

/// Every difference between `old` and `new`, grouped by gateway, defaults, zone and conduit,
/// each group in file order (old file order first, then what only `new` has).
pub fn diff(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut report = Report::default();
    gateway(&mut report, &old.gateway, &new.gateway);
    defaults(&mut report, &old.defaults, &new.defaults);
    zones(&mut report, old, new);
    conduits(&mut report, old, new);
    report.changes
}

/// The part of the policy changes are recorded under, and how their lines begin.
#[derive(Clone, Debug)]
struct Scope {
    path: Vec<String>,
    /// `~ conduit x: `, `+ zone y: `, `~ conduit x: modbus rule on port 502: `.
    lead: String,
    /// The scope exists in both policies, so each line inside says whether it adds or
    /// removes; a scope added or removed whole says it once, in its lead.
    changed: bool,
}

impl Scope {
    fn top(kind: Kind, label: &str, path: &[&str]) -> Scope {
        Scope {
            path: path.iter().map(|s| s.to_string()).collect(),
            lead: format!("{} {label}: ", kind.sign()),
            changed: kind == Kind::Changed,
        }
    }

    fn within(&self, label: &str, path: &[&str]) -> Scope {
        Scope {
            path: self.path_to(path),
            lead: format!("{}{label}: ", self.lead),
            changed: self.changed,
        }
    }

    fn path_to(&self, key: &[&str]) -> Vec<String> {
        let mut path = self.path.clone();
        path.extend(key.iter().map(|s| s.to_string()));
        path
    }

    fn field<'a>(&'a self, key: &'a [&'a str], what: &'a str) -> Field<'a> {
        Field {
            scope: self,
            key,
            what,
        }
    }

    fn line(&self, kind: Kind, detail: &str) -> String {
        if self.changed && kind != Kind::Changed {
            format!("{}{} {detail}", self.lead, kind.sign())
        } else {
            format!("{}{detail}", self.lead)
        }
    }
}

#[derive(Debug, Default)]
struct Report {
    changes: Vec<Change>,
}

impl Report {
    /// Something added or removed whole (a zone, a conduit, a rule), described in one line.
    fn whole(
        &mut self,
        scope: &Scope,
        key: &[&str],
        kind: Kind,
        description: String,
        effect: Option<Effect>,
    ) {
        let text = scope.line(kind, &description);
        let value = Some(Value::Text(description));
        let (before, after) = match kind {
            Kind::Removed => (value, None),
            _ => (None, value),
        };
        self.changes.push(Change {
            kind,
            path: scope.path_to(key),
            before,
            after,
            effect,
            text,
        });
    }

    /// Members the field gained (`Added`) or lost (`Removed`); nothing if `items` is empty.
    fn items(&mut self, field: Field, kind: Kind, items: Vec<String>, effect: Option<Effect>) {
        if items.is_empty() {
            return;
        }
        let text = field
            .scope
            .line(kind, &format!("{} {}", field.what, items.join(", ")));
        let value = Some(Value::List(items));
        let (before, after) = match kind {
            Kind::Removed => (value, None),
            _ => (None, value),
        };
        self.changes.push(Change {
            kind,
            path: field.scope.path_to(field.key),
            before,
            after,
            effect,
            text,
        });
    }

    /// The field went from `before` to `after`; nothing if they are equal.
    fn value(&mut self, field: Field, before: String, after: String, effect: Option<Effect>) {
        if before == after {
            return;
        }
        let detail = format!("{} {before} -> {after}", field.what);
        self.changes.push(Change {
            kind: Kind::Changed,
            path: field.scope.path_to(field.key),
            text: field.scope.line(Kind::Changed, &detail),
            before: Some(Value::Text(before)),
            after: Some(Value::Text(after)),
            effect,
        });
    }

    /// The members a set gained and lost; `gained` is the effect of a member gained.
    fn set<T: Ord>(
        &mut self,
        field: Field,
        old: &BTreeSet<T>,
        new: &BTreeSet<T>,
        show: impl Fn(&T) -> String,
        gained: Option<Effect>,
    ) {
        let lost = gained.map(Effect::opposite);
        let added = new.difference(old).map(&show).collect();
        let removed = old.difference(new).map(&show).collect();
        self.items(field, Kind::Added, added, gained);
        self.items(field, Kind::Removed, removed, lost);
    }

    /// The numbers gained and lost between `old` and `new`. With `any` (the whole domain,
    /// which the policy writes by leaving the list out) a side that covers it reads `any` and
    /// the change is one `before -> after` line.
    fn ranges(
        &mut self,
        field: Field,
        old: &Ranges,
        new: &Ranges,
        any: Option<(u32, u32)>,
        show: impl Fn(u32) -> String,
        gained: Option<Effect>,
    ) {
        let added = new.minus(old);
        let removed = old.minus(new);
        let lost = gained.map(Effect::opposite);
        if let Some((lo, hi)) = any {
            let whole = Ranges::full(lo, hi);
            if (*old == whole || *new == whole) && old != new {
                let text = |r: &Ranges| match r {
                    r if *r == whole => "any".to_string(),
                    r if r.is_empty() => "none".to_string(),
                    r => r.items(&show).join(", "),
                };
                let effect = if removed.is_empty() { gained } else { lost };
                self.value(field, text(old), text(new), effect);
                return;
            }
        }
        self.items(field, Kind::Added, added.items(&show), gained);
        self.items(field, Kind::Removed, removed.items(&show), lost);
    }
}

/// One key of a scope and the words its lines use for it (`functions`, `timeouts.udp`).
#[derive(Clone, Copy)]
struct Field<'a> {
    scope: &'a Scope,
    key: &'a [&'a str],
    what: &'a str,
}

/// The name a policy file uses for a keyword value (`deny`, `monitor`, `reset`).
fn keyword<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_string(),
    }
}

fn gateway(report: &mut Report, old: &Attachment, new: &Attachment) {
    let scope = Scope::top(Kind::Changed, "gateway", &["gateway"]);
    // Where the firewall attaches changes what it sees, not what a conduit allows.
    match (old, new) {
        (Attachment::Bridge(a), Attachment::Bridge(b)) => report.value(
            scope.field(&["bridge"], "bridge"),
            a.clone(),
            b.clone(),
            None,
        ),
        (Attachment::Interfaces(a), Attachment::Interfaces(b)) => report.set(
            scope.field(&["interfaces"], "interfaces"),
            &a.iter().collect(),
            &b.iter().collect(),
            |s| s.to_string(),
            None,
        ),
        _ => {
            let show = |a: &Attachment| match a {
                Attachment::Bridge(b) => format!("bridge {b}"),
                Attachment::Interfaces(i) => format!("interfaces {}", i.join(", ")),
            };
            report.value(scope.field(&[], "attachment"), show(old), show(new), None);
        }
    }
}

/// More for allow, less for deny.
fn action_effect(new: Action) -> Option<Effect> {
    Some(match new {
        Action::Allow => Effect::AllowsMore,
        Action::Deny => Effect::AllowsLess,
    })
}

/// Monitor passes what enforce would drop.
fn mode_effect(new: Mode) -> Option<Effect> {
    Some(match new {
        Mode::Monitor => Effect::AllowsMore,
        Mode::Enforce => Effect::AllowsLess,
    })
}

fn defaults(report: &mut Report, old: &Defaults, new: &Defaults) {
    let scope = Scope::top(Kind::Changed, "defaults", &["defaults"]);
    // Destructured so that a new default cannot be left out of the comparison unnoticed.
    let Defaults {
        action,
        intra_zone,
        unzoned,
        non_ip,
        midstream,
        mode,
        on_deny,
        udp_idle_secs,
        tcp_idle_secs,
    } = new;
    for (key, before, after) in [
        ("action", old.action, *action),
        ("intra_zone", old.intra_zone, *intra_zone),
        ("unzoned", old.unzoned, *unzoned),
    ] {
        let (b, a) = (keyword(&before), keyword(&after));
        report.value(scope.field(&[key], key), b, a, action_effect(after));
    }
    report.set(
        scope.field(&["non_ip"], "non_ip"),
        &old.non_ip.iter().copied().collect(),
        &non_ip.iter().copied().collect(),
        |&t| ethertype_name(t),
        Some(Effect::AllowsMore),
    );
    let midstream_effect = match midstream {
        Midstream::Adopt => Effect::AllowsMore,
        Midstream::Deny => Effect::AllowsLess,
    };
    report.value(
        scope.field(&["midstream"], "midstream"),
        keyword(&old.midstream),
        keyword(midstream),
        Some(midstream_effect),
    );
    report.value(
        scope.field(&["mode"], "mode"),
        keyword(&old.mode),
        keyword(mode),
        mode_effect(*mode),
    );
    // Drop, reset or refuse: the same traffic is refused, only the answer differs.
    report.value(
        scope.field(&["on_deny"], "on_deny"),
        keyword(&old.on_deny),
        keyword(on_deny),
        Some(Effect::Neutral),
    );
    // A longer idle timeout keeps a quiet flow open: its later packets pass without a new
    // admission.
    for (key, before, after) in [
        ("udp", old.udp_idle_secs, *udp_idle_secs),
        ("tcp", old.tcp_idle_secs, *tcp_idle_secs),
    ] {
        let effect = if after > before {
            Effect::AllowsMore
        } else {
            Effect::AllowsLess
        };
        report.value(
            scope.field(&["timeouts", key], &format!("timeouts.{key}")),
            format!("{before} s"),
            format!("{after} s"),
            Some(effect),
        );
    }
}

fn ethertype_name(ethertype: u16) -> String {
    match ethertype {
        ETHERTYPE_ARP => "arp".to_string(),
        ETHERTYPE_LLDP => "lldp".to_string(),
        NON_IP_STP => "stp".to_string(),
        other => format!("0x{other:04x}"),
    }
}

/// Pairs the items of two lists by name: `(name, old, new)`, in `old`'s order, then the
/// names only `new` has in its order.
fn by_name<'a, T>(
    old: &'a [T],
    new: &'a [T],
    name: fn(&T) -> &str,
) -> Vec<(&'a str, Option<&'a T>, Option<&'a T>)> {
    let mut pairs: IndexMap<&str, (Option<&T>, Option<&T>)> = IndexMap::new();
    for item in old {
        pairs.entry(name(item)).or_default().0 = Some(item);
    }
    for item in new {
        pairs.entry(name(item)).or_default().1 = Some(item);
    }
    pairs
        .into_iter()
        .map(|(name, (old, new))| (name, old, new))
        .collect()
}

fn zones(report: &mut Report, old: &Policy, new: &Policy) {
    for (name, before, after) in by_name(&old.zones, &new.zones, |z| &z.name) {
        let label = format!("zone {name}");
        let path = ["zones", name];
        // Which addresses a zone holds decides which conduits and defaults apply to them;
        // whether that lets more through depends on traffic the policy does not describe.
        match (before, after) {
            (Some(zone), None) => {
                let scope = Scope::top(Kind::Removed, &label, &path);
                report.whole(&scope, &[], Kind::Removed, zone_summary(zone), None);
            }
            (None, Some(zone)) => {
                let scope = Scope::top(Kind::Added, &label, &path);
                report.whole(&scope, &[], Kind::Added, zone_summary(zone), None);
            }
            (Some(before), Some(after)) => {
                let scope = Scope::top(Kind::Changed, &label, &path);
                zone_changes(report, &scope, before, after);
            }
            (None, None) => {}
        }
    }
}

fn host_text(host: &Host) -> String {
    format!("{} ({})", host.name, host.addr)
}

fn zone_summary(zone: &Zone) -> String {
    let mut parts = Vec::new();
    let networks: Vec<String> = zone.networks.iter().map(IpNet::to_string).collect();
    parts.push(if networks.is_empty() {
        "no networks".to_string()
    } else {
        format!("networks {}", networks.join(", "))
    });
    if !zone.hosts.is_empty() {
        let hosts: Vec<String> = zone.hosts.iter().map(host_text).collect();
        parts.push(format!("hosts {}", hosts.join(", ")));
    }
    if !zone.ports.is_empty() {
        parts.push(format!("ports {}", zone.ports.join(", ")));
    }
    if let Some(level) = zone.security_level {
        parts.push(format!("security_level {level}"));
    }
    parts.join("; ")
}

fn zone_changes(report: &mut Report, scope: &Scope, old: &Zone, new: &Zone) {
    // Destructured so that a new zone key cannot be left out of the comparison unnoticed.
    // Descriptions are free text: they change nothing.
    let Zone {
        name: _,
        networks,
        ports,
        security_level,
        description: _,
        hosts,
    } = new;
    report.set(
        scope.field(&["networks"], "networks"),
        &old.networks.iter().collect(),
        &networks.iter().collect(),
        |n| n.to_string(),
        None,
    );
    let field = scope.field(&["hosts"], "hosts");
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for (name, before, after) in by_name(&old.hosts, hosts, |h| &h.name) {
        match (before, after) {
            (Some(before), Some(after)) => report.value(
                scope.field(&["hosts", name], &format!("host {name}")),
                before.addr.to_string(),
                after.addr.to_string(),
                None,
            ),
            (None, Some(host)) => added.push(host_text(host)),
            (Some(host), None) => removed.push(host_text(host)),
            (None, None) => {}
        }
    }
    report.items(field, Kind::Added, added, None);
    report.items(field, Kind::Removed, removed, None);
    // Anti-spoofing: an empty list lets the zone's addresses arrive on any port.
    let (before, after): (BTreeSet<&String>, BTreeSet<&String>) =
        (old.ports.iter().collect(), ports.iter().collect());
    if before.is_empty() || after.is_empty() {
        let show = |set: &BTreeSet<&String>| match set.is_empty() {
            true => "any".to_string(),
            false => set
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let effect = match after.is_empty() {
            true => Effect::AllowsMore,
            false => Effect::AllowsLess,
        };
        report.value(
            scope.field(&["ports"], "ports"),
            show(&before),
            show(&after),
            Some(effect),
        );
    } else {
        report.set(
            scope.field(&["ports"], "ports"),
            &before,
            &after,
            |s| s.to_string(),
            Some(Effect::AllowsMore),
        );
    }
    let level = |l: &Option<u8>| l.map_or_else(|| "none".to_string(), |l| l.to_string());
    // Security levels only steer lints.
    report.value(
        scope.field(&["security_level"], "security_level"),
        level(&old.security_level),
        level(security_level),
        Some(Effect::Neutral),
    );
}

/// What becomes of traffic between a conduit's ends that none of its rules matches; it
/// decides whether a rule granting more lets more through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fallback {
    /// `defaults.action: deny` (or `intra_zone: deny` inside a zone): the conduit's rules
    /// are all that passes.
    Denied,
    /// `defaults.action: allow`: everything passes anyway; rules only add inspection, so a
    /// Modbus or EtherNet/IP rule narrows what passes on its port.
    Allowed,
    /// Both ends in one zone under `intra_zone: allow`: the datapath never asks the conduit.
    Bypassed,
}

impl Fallback {
    fn of(policy: &Policy, conduit: &Conduit) -> Fallback {
        let defaults = &policy.defaults;
        match (conduit.from.zone == conduit.to.zone, defaults.action) {
            (true, _) if defaults.intra_zone == Action::Allow => Fallback::Bypassed,
            (true, _) | (false, Action::Deny) => Fallback::Denied,
            (false, Action::Allow) => Fallback::Allowed,
        }
    }

    /// A rule (or a whole conduit) appearing; `inspects` for Modbus and EtherNet/IP rules,
    /// which refuse requests as well as admit connections.
    fn rule_added(self, inspects: bool) -> Effect {
        match self {
            Fallback::Denied => Effect::AllowsMore,
            Fallback::Allowed if inspects => Effect::AllowsLess,
            Fallback::Allowed | Fallback::Bypassed => Effect::Neutral,
        }
    }

    fn rule_removed(self, inspects: bool) -> Effect {
        self.rule_added(inspects).opposite()
    }

    /// More granted within a rule that stays.
    fn granted(self) -> Effect {
        match self {
            Fallback::Bypassed => Effect::Neutral,
            Fallback::Denied | Fallback::Allowed => Effect::AllowsMore,
        }
    }
}

/// How the rules of one inspected protocol pair up between two versions of a conduit.
#[derive(Debug)]
enum Pair<'a, T> {
    /// On the same port in both.
    Kept(&'a T, &'a T),
    /// The only unpaired rule on each side: the same rule moved to another port.
    Moved(&'a T, &'a T),
    Removed(&'a T),
    Added(&'a T),
}

/// Pairs inspected rules by port. The datapath tries a conduit's inspected rules in file order
/// and the first one on the port decides, so only the first rule per port counts.
fn pair_by_port<'a, T>(old: Vec<&'a T>, new: Vec<&'a T>, port: fn(&T) -> u16) -> Vec<Pair<'a, T>> {
    let first_per_port = |rules: Vec<&'a T>| {
        let mut seen = std::collections::BTreeMap::new();
        for rule in rules {
            seen.entry(port(rule)).or_insert(rule);
        }
        seen
    };
    let (mut old, mut new) = (first_per_port(old), first_per_port(new));
    let mut pairs = Vec::new();
    let ports: Vec<u16> = old
        .keys()
        .filter(|p| new.contains_key(p))
        .copied()
        .collect();
    for p in ports {
        pairs.push(Pair::Kept(old.remove(&p).unwrap(), new.remove(&p).unwrap()));
    }
    if old.len() == 1 && new.len() == 1 {
        let (o, n) = (old.pop_first().unwrap().1, new.pop_first().unwrap().1);
        pairs.push(Pair::Moved(o, n));
    }
    pairs.extend(old.into_values().map(Pair::Removed));
    pairs.extend(new.into_values().map(Pair::Added));
    pairs
}

/// One inspected protocol as the diff sees its rules: the `allow` entries it takes, their
/// port, a one-line summary, and the comparison of a rule that stayed.
struct Inspected<R> {
    protocol: &'static str,
    rules: fn(&Allow) -> Option<&R>,
    port: fn(&R) -> u16,
    summary: fn(&R) -> String,
    changes: fn(&mut Report, &Scope, &R, &R, Fallback),
}

/// Records the differences between one protocol's inspected rules in two versions of a
/// conduit: rules paired by port (`pair_by_port`), added and removed rules whole, a kept one's
/// port and contents.
fn compare_inspected<R>(
    report: &mut Report,
    scope: &Scope,
    old: &[Allow],
    new: &[Allow],
    fallback: Fallback,
    what: &Inspected<R>,
) {
    let old_rules: Vec<&R> = old.iter().filter_map(what.rules).collect();
    let new_rules: Vec<&R> = new.iter().filter_map(what.rules).collect();
    let key = |rules: &R| format!("{}:{}", what.protocol, (what.port)(rules));
    for pair in pair_by_port(old_rules, new_rules, what.port) {
        match pair {
            Pair::Added(rules) => report.whole(
                scope,
                &["allow", &key(rules)],
                Kind::Added,
                (what.summary)(rules),
                Some(fallback.rule_added(true)),
            ),
            Pair::Removed(rules) => report.whole(
                scope,
                &["allow", &key(rules)],
                Kind::Removed,
                (what.summary)(rules),
                Some(fallback.rule_removed(true)),
            ),
            Pair::Kept(old, new) | Pair::Moved(old, new) => {
                let label = format!("{} rule on port", what.protocol);
                report.value(
                    scope.field(&["allow", &key(old), "port"], &label),
                    (what.port)(old).to_string(),
                    (what.port)(new).to_string(),
                    None,
                );
                let label = format!("{} rule on port {}", what.protocol, (what.port)(new));
                let inner = scope.within(&label, &["allow", &key(new)]);
                (what.changes)(report, &inner, old, new, fallback);
            }
        }
    }
}

fn conduits(report: &mut Report, old: &Policy, new: &Policy) {
    for (name, before, after) in by_name(&old.conduits, &new.conduits, |c| &c.name) {
        let label = format!("conduit {name}");
        let path = ["conduits", name];
        match (before, after) {
            (Some(conduit), None) => {
                let scope = Scope::top(Kind::Removed, &label, &path);
                let fallback = Fallback::of(old, conduit);
                let effect = fallback.rule_removed(inspects(&conduit.allow));
                let summary = conduit_summary(old, conduit);
                report.whole(&scope, &[], Kind::Removed, summary, Some(effect));
                rules(report, &scope, &conduit.allow, &[], fallback);
            }
            (None, Some(conduit)) => {
                let scope = Scope::top(Kind::Added, &label, &path);
                let fallback = Fallback::of(new, conduit);
                let effect = fallback.rule_added(inspects(&conduit.allow));
                let summary = conduit_summary(new, conduit);
                report.whole(&scope, &[], Kind::Added, summary, Some(effect));
                rules(report, &scope, &[], &conduit.allow, fallback);
            }
            (Some(before), Some(after)) => {
                let scope = Scope::top(Kind::Changed, &label, &path);
                conduit_changes(report, &scope, (old, before), (new, after));
            }
            (None, None) => {}
        }
    }
}

fn inspects(allow: &[Allow]) -> bool {
    allow
        .iter()
        .any(|a| matches!(a, Allow::Modbus(_) | Allow::Enip(_)))
}

fn conduit_summary(policy: &Policy, conduit: &Conduit) -> String {
    format!(
        "from {} to {}; mode {}; on_deny {}",
        policy.endpoint_name(&conduit.from),
        policy.endpoint_name(&conduit.to),
        keyword(&conduit.mode),
        keyword(&conduit.on_deny),
    )
}

fn conduit_changes(
    report: &mut Report,
    scope: &Scope,
    (old_policy, old): (&Policy, &Conduit),
    (new_policy, new): (&Policy, &Conduit),
) {
    // Destructured so that a new conduit key cannot be left out of the comparison unnoticed.
    let Conduit {
        name: _,
        description: _,
        from,
        to,
        mode,
        on_deny,
        allow,
    } = new;
    for (key, before, after) in [("from", &old.from, from), ("to", &old.to, to)] {
        let (b, a) = (
            old_policy.endpoint_name(before),
            new_policy.endpoint_name(after),
        );
        report.value(
            scope.field(&[key], key),
            b.clone(),
            a.clone(),
            widening(&b, &a),
        );
    }
    report.value(
        scope.field(&["mode"], "mode"),
        keyword(&old.mode),
        keyword(mode),
        mode_effect(*mode),
    );
    report.value(
        scope.field(&["on_deny"], "on_deny"),
        keyword(&old.on_deny),
        keyword(on_deny),
        Some(Effect::Neutral),
    );
    rules(
        report,
        scope,
        &old.allow,
        allow,
        Fallback::of(new_policy, new),
    );
}

/// A conduit end going from one host of a zone to the whole zone covers more addresses, and
/// the other way round fewer; any other move is neither.
fn widening(before: &str, after: &str) -> Option<Effect> {
    let zone = |end: &str| end.split_once('/').map(|(zone, _)| zone.to_string());
    match (zone(before), zone(after)) {
        (Some(z), None) if z == after => Some(Effect::AllowsMore),
        (None, Some(z)) if z == before => Some(Effect::AllowsLess),
        _ => None,
    }
}

/// Compares the `allow` lists of two versions of a conduit (one of them empty for a conduit
/// added or removed whole).
fn rules(report: &mut Report, scope: &Scope, old: &[Allow], new: &[Allow], fallback: Fallback) {
    let plain = (
        Some(fallback.rule_added(false)),
        Some(fallback.rule_removed(false)),
    );
    for (key, udp) in [("tcp", false), ("udp", true)] {
        let (added, removed) = (
            port_set(new, udp).minus(&port_set(old, udp)),
            port_set(old, udp).minus(&port_set(new, udp)),
        );
        let what = format!("{key} ports");
        let show = |r: &Ranges| r.items(|n| n.to_string());
        report.items(
            scope.field(&["allow", key], &what),
            Kind::Added,
            show(&added),
            plain.0,
        );
        report.items(
            scope.field(&["allow", key], &what),
            Kind::Removed,
            show(&removed),
            plain.1,
        );
    }
    let (old_v4, old_v6) = icmp_sets(old);
    let (new_v4, new_v6) = icmp_sets(new);
    let added = icmp_items(&new_v4.minus(&old_v4), &new_v6.minus(&old_v6));
    let removed = icmp_items(&old_v4.minus(&new_v4), &old_v6.minus(&new_v6));
    let key = ["allow", "icmp"];
    report.items(scope.field(&key, "icmp types"), Kind::Added, added, plain.0);
    report.items(
        scope.field(&key, "icmp types"),
        Kind::Removed,
        removed,
        plain.1,
    );
    compare_inspected(report, scope, old, new, fallback, &modbus::INSPECTED);
    compare_inspected(report, scope, old, new, fallback, &enip::INSPECTED);
}

/// Every destination port the plain TCP (or UDP) rules of `allow` admit.
fn port_set(allow: &[Allow], udp: bool) -> Ranges {
    Ranges::new(
        allow
            .iter()
            .filter_map(|a| match (a, udp) {
                (Allow::Tcp(ranges), false) | (Allow::Udp(ranges), true) => Some(ranges),
                _ => None,
            })
            .flatten()
            .map(|r| (u32::from(r.lo), u32::from(r.hi))),
    )
}

/// The ICMPv4 and ICMPv6 types the `icmp` rules of `allow` admit.
fn icmp_sets(allow: &[Allow]) -> (Ranges, Ranges) {
    let types = allow.iter().filter_map(|a| match a {
        Allow::Icmp(types) => Some(types),
        _ => None,
    });
    let v4 = Ranges::values(types.clone().flat_map(|t| &t.v4).map(|&t| u32::from(t)));
    let v6 = Ranges::values(types.flat_map(|t| &t.v6).map(|&t| u32::from(t)));
    (v4, v6)
}

/// ICMP types by the names a policy uses: a name whose types are all in the sets (both
/// families where it has both), then the types left over, by family.
fn icmp_items(v4: &Ranges, v6: &Ranges) -> Vec<String> {
    let mut items = Vec::new();
    let (mut left4, mut left6) = (v4.clone(), v6.clone());
    for &(name, t4, t6) in ICMP_TYPES {
        let has = |set: &Ranges, t: Option<u8>| t.is_none_or(|t| set.contains(u32::from(t)));
        if has(v4, t4) && has(v6, t6) {
            items.push(name.to_string());
            left4 = left4.minus(&Ranges::values(t4.map(u32::from)));
            left6 = left6.minus(&Ranges::values(t6.map(u32::from)));
        }
    }
    type Family = fn(&(&str, Option<u8>, Option<u8>)) -> Option<u8>;
    let families: [(&str, Ranges, Family); 2] =
        [("ICMPv4", left4, |e| e.1), ("ICMPv6", left6, |e| e.2)];
    for (family, left, type_of) in families {
        for &(lo, hi) in left.ranges() {
            for t in lo..=hi {
                let name = ICMP_TYPES
                    .iter()
                    .find(|e| type_of(e).map(u32::from) == Some(t));
                items.push(match name {
                    Some(e) => format!("{family} {t} ({})", e.0),
                    None => format!("{family} {t}"),
                });
            }
        }
    }
    items
}
