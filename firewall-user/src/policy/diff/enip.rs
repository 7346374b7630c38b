//! EtherNet/IP rules compared by what they let through: encapsulation commands, CIP services
//! on the classes they may address, tags and implicit I/O.

use std::collections::BTreeSet;

use super::{Effect, Fallback, Inspected, Kind, Report, Scope};
use crate::policy::enip::{
    CipTarget, EnipRules, COMMANDS, DEFAULT_COMMANDS, IO_PORT, SERVICES, SYMBOL_CLASS,
};
use crate::policy::validated::Allow;

/// One CIP service allowed on one class, or on every class. Services named in `services` and
/// those listed under `objects` end up in the same per-class sets of the datapath, where a tag
/// service is a service of the Symbol class: so `forward_open` and
/// `{ class: 0x06, services: [0x54] }` are the same grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Grant {
    AnyClass(u8),
    Class(u16, u8),
}

/// The CIP requests a rule admits.
#[derive(Debug, PartialEq, Eq)]
struct Services {
    /// `services: [all]`
    all: bool,
    /// Without class grants that a grant on every class already covers.
    grants: BTreeSet<Grant>,
}

impl Services {
    fn of(rules: &EnipRules) -> Services {
        let mut grants: BTreeSet<Grant> = rules
            .services
            .iter()
            .map(|s| match s.target {
                CipTarget::AnyClass => Grant::AnyClass(s.code),
                CipTarget::Class(class) => Grant::Class(class, s.code),
                CipTarget::Symbolic => Grant::Class(SYMBOL_CLASS, s.code),
            })
            .collect();
        for (&class, codes) in &rules.objects {
            grants.extend(codes.iter().map(|&code| Grant::Class(class, code)));
        }
        let everywhere: BTreeSet<u8> = grants
            .iter()
            .filter_map(|g| match g {
                Grant::AnyClass(code) => Some(*code),
                Grant::Class(..) => None,
            })
            .collect();
        grants.retain(|g| !matches!(g, Grant::Class(_, code) if everywhere.contains(code)));
        Services {
            all: rules.all_services,
            grants,
        }
    }

    fn allows(&self, grant: Grant) -> bool {
        self.all
            || self.grants.contains(&grant)
            || matches!(grant, Grant::Class(_, code) if self.grants.contains(&Grant::AnyClass(code)))
    }

    /// The grants of `self` that `other` does not allow.
    fn minus(&self, other: &Services) -> Vec<Grant> {
        self.grants
            .iter()
            .copied()
            .filter(|&g| !other.allows(g))
            .collect()
    }
}

fn hex(code: u8) -> String {
    format!("0x{code:02X}")
}

/// The grants as a policy names them: `services` items (`get_attribute_single (0x0E)`,
/// `forward_open (0x54)`) and `objects` items for the rest (`class 0x01: 0x4B`).
fn grant_items(grants: &[Grant]) -> (Vec<String>, Vec<String>) {
    let mut services = Vec::new();
    let mut objects: Vec<(u16, Vec<String>)> = Vec::new();
    for &grant in grants {
        match grant {
            Grant::AnyClass(code) => {
                let name = SERVICES
                    .iter()
                    .find(|(_, s)| s.code == code && s.target == CipTarget::AnyClass);
                services.push(match name {
                    Some((name, _)) => format!("{name} ({})", hex(code)),
                    None => hex(code),
                });
            }
            Grant::Class(class, code) => {
                let name = SERVICES
                    .iter()
                    .find(|(_, s)| s.code == code && s.target.matches_class(class));
                match name {
                    // A service that exists only on this class: `services` names it.
                    Some((name, s)) if s.target != CipTarget::AnyClass => {
                        services.push(format!("{name} ({})", hex(code)))
                    }
                    _ => {
                        let item = match name {
                            Some((name, _)) => format!("{name} ({})", hex(code)),
                            None => hex(code),
                        };
                        match objects.last_mut() {
                            Some((c, items)) if *c == class => items.push(item),
                            _ => objects.push((class, vec![item])),
                        }
                    }
                }
            }
        }
    }
    let objects = objects
        .into_iter()
        .map(|(class, items)| format!("class 0x{class:02X}: {}", items.join(", ")))
        .collect();
    (services, objects)
}

fn command_name(code: &u16) -> String {
    match COMMANDS.iter().find(|(_, c)| c == code) {
        Some((name, _)) => format!("{name} (0x{code:02X})"),
        None => format!("0x{code:04X}"),
    }
}

fn default_commands() -> BTreeSet<u16> {
    COMMANDS
        .iter()
        .filter(|(name, _)| DEFAULT_COMMANDS.contains(name))
        .map(|(_, code)| *code)
        .collect()
}

/// The tag allowlist in the case the datapath compares names in (`None`: any tag, which a
/// `*` pattern also means).
fn tags(rules: &EnipRules) -> Option<Vec<String>> {
    let tags = rules.tags.as_ref()?;
    if tags.iter().any(|t| t == "*") {
        return None;
    }
    Some(tags.iter().map(|t| t.to_lowercase()).collect())
}

/// Whether every name `pattern` matches is matched by one of `patterns` (exact names, or a
/// trailing `*` for a prefix).
fn covered(pattern: &str, patterns: &[String]) -> bool {
    let text = pattern.strip_suffix('*');
    patterns.iter().any(|p| match p.strip_suffix('*') {
        None => p == pattern,
        Some(prefix) => text.unwrap_or(pattern).starts_with(prefix),
    })
}

/// One line for a rule added or removed whole.
fn summary(rules: &EnipRules) -> String {
    let mut parts = Vec::new();
    parts.push(if rules.commands == default_commands() {
        "commands default".to_string()
    } else {
        let names: Vec<String> = rules.commands.iter().map(command_name).collect();
        format!("commands {}", names.join(", "))
    });
    let services = Services::of(rules);
    let (names, objects) = grant_items(&services.grants.iter().copied().collect::<Vec<_>>());
    parts.push(match (services.all, names.is_empty()) {
        (true, _) => "services all".to_string(),
        (false, true) => "services none".to_string(),
        (false, false) => format!("services {}", names.join(", ")),
    });
    if !objects.is_empty() {
        parts.push(format!("objects {}", objects.join("; ")));
    }
    parts.push(match &rules.tags {
        Some(tags) if self::tags(rules).is_some() => format!("tags {}", tags.join(", ")),
        _ => "tags any".to_string(),
    });
    if rules.io {
        parts.push(format!("io (class 0/1 I/O on UDP {IO_PORT})"));
    }
    format!("enip rule on port {}: {}", rules.port, parts.join("; "))
}

/// The `enip` rules of a conduit, for `compare_inspected`.
pub(super) const INSPECTED: Inspected<EnipRules> = Inspected {
    protocol: "enip",
    rules: |allow| match allow {
        Allow::Enip(rules) => Some(rules),
        _ => None,
    },
    port: |rules| rules.port,
    summary,
    changes,
};

/// What changed inside a rule that stayed (its port is compared by `compare_inspected`).
fn changes(
    report: &mut Report,
    scope: &Scope,
    old: &EnipRules,
    new: &EnipRules,
    fallback: Fallback,
) {
    // Destructured so that a new rule field cannot be left out of the comparison unnoticed.
    let EnipRules {
        port: _,
        commands,
        all_services: _,
        services: _,
        tags: _,
        objects: _,
        io,
        refuse_service,
        refuse_status,
    } = new;
    // How `on_deny: refuse` answers changes what a client sees, not what passes.
    let neutral = Some(Effect::Neutral);
    report.value(
        scope.field(&["refuse", "service"], "refuse service"),
        format!("0x{:02X}", old.refuse_service),
        format!("0x{refuse_service:02X}"),
        neutral,
    );
    report.value(
        scope.field(&["refuse", "status"], "refuse status"),
        format!("0x{:02X}", old.refuse_status),
        format!("0x{refuse_status:02X}"),
        neutral,
    );
    let gained = Some(fallback.granted());
    let lost = gained.map(Effect::opposite);
    report.set(
        scope.field(&["commands"], "commands"),
        &old.commands,
        commands,
        command_name,
        gained,
    );
    services(
        report,
        scope,
        &Services::of(old),
        &Services::of(new),
        gained,
    );
    tag_changes(report, scope, old, new, gained);
    let io_text = |io: bool| if io { "true" } else { "false" }.to_string();
    let io_effect = if *io { gained } else { lost };
    report.value(
        scope.field(&["io"], "io"),
        io_text(old.io),
        io_text(*io),
        io_effect,
    );
}

fn services(
    report: &mut Report,
    scope: &Scope,
    old: &Services,
    new: &Services,
    gained: Option<Effect>,
) {
    let lost = gained.map(Effect::opposite);
    const ALL: &str = "all (every service on every class)";
    match (old.all, new.all) {
        (true, true) => return,
        (false, true) => {
            let item = vec![ALL.to_string()];
            report.items(
                scope.field(&["services"], "services"),
                Kind::Added,
                item,
                gained,
            );
            return;
        }
        (true, false) => {
            let (names, objects) = grant_items(&new.grants.iter().copied().collect::<Vec<_>>());
            let left: Vec<String> = names.into_iter().chain(objects).collect();
            let left = match left.is_empty() {
                true => "none".to_string(),
                false => left.join(", "),
            };
            let item = vec![format!("{ALL}; still allowed: {left}")];
            report.items(
                scope.field(&["services"], "services"),
                Kind::Removed,
                item,
                lost,
            );
            return;
        }
        (false, false) => {}
    }
    for (kind, grants, effect) in [
        (Kind::Added, new.minus(old), gained),
        (Kind::Removed, old.minus(new), lost),
    ] {
        let (names, objects) = grant_items(&grants);
        report.items(scope.field(&["services"], "services"), kind, names, effect);
        report.items(scope.field(&["objects"], "objects"), kind, objects, effect);
    }
}

fn tag_changes(
    report: &mut Report,
    scope: &Scope,
    old: &EnipRules,
    new: &EnipRules,
    gained: Option<Effect>,
) {
    let lost = gained.map(Effect::opposite);
    let written = |rules: &EnipRules| rules.tags.clone().unwrap_or_default();
    match (tags(old), tags(new)) {
        (None, None) => {}
        (Some(_), None) => report.value(
            scope.field(&["tags"], "tags"),
            written(old).join(", "),
            "any".to_string(),
            gained,
        ),
        (None, Some(_)) => report.value(
            scope.field(&["tags"], "tags"),
            "any".to_string(),
            written(new).join(", "),
            lost,
        ),
        (Some(before), Some(after)) => {
            // Compared without case, as the datapath matches names; shown as written.
            let beyond = |rules: &EnipRules, patterns: &[String]| -> Vec<String> {
                let mut seen = BTreeSet::new();
                written(rules)
                    .into_iter()
                    .filter(|t| !covered(&t.to_lowercase(), patterns))
                    .filter(|t| seen.insert(t.to_lowercase()))
                    .collect()
            };
            let (added, removed) = (beyond(new, &before), beyond(old, &after));
            report.items(scope.field(&["tags"], "tags"), Kind::Added, added, gained);
            report.items(scope.field(&["tags"], "tags"), Kind::Removed, removed, lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_patterns_cover_names_and_narrower_prefixes() {
        let patterns = vec!["line1_*".to_string(), "recipe.setpoint".to_string()];
        assert!(covered("line1_speed", &patterns));
        assert!(covered("line1_a*", &patterns));
        assert!(covered("recipe.setpoint", &patterns));
        assert!(!covered("line*", &patterns));
        assert!(!covered("recipe.*", &patterns));
        assert!(!covered("recipe.setpoint2", &patterns));
    }
}
