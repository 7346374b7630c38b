//! `dashboards/`: the Grafana dashboard is valid JSON with a datasource variable, and it and the
//! alerting rules use only metric families the exporter serves; promtool accepts the rules.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use otfw::metrics::Metrics;
use serde_json::Value;

fn dashboards() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dashboards")
}

/// Every `otfw_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("otfw_") {
                names.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

fn served() -> BTreeSet<String> {
    Metrics::new()
        .unwrap()
        .family_names()
        .iter()
        .cloned()
        .collect()
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_uses_only_served_metrics_and_a_datasource_variable() {
    let path = dashboards().join("otfw.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("dashboards/otfw.json is not JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
        "no datasource variable"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} does not use the datasource variable",
            panel["title"]
        );
    }
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    let served = served();
    let mut used = BTreeSet::new();
    for expr in &all {
        for name in metric_names(expr) {
            assert!(served.contains(&name), "{name} (in {expr}) is not served");
            used.insert(name);
        }
    }
    for wanted in [
        "otfw_conduit_bytes_total",
        "otfw_conduit_packets_total",
        "otfw_requests_total",
        "otfw_denied_packets_total",
        "otfw_parse_errors_total",
        "otfw_flow_table_entries",
        "otfw_policy_loads_total",
    ] {
        assert!(used.contains(wanted), "the dashboard shows no {wanted}");
    }
    // Requests refused in-band (`on_deny: refuse`) are forwarded: shown apart from drops.
    for family in ["otfw_requests_total", "otfw_conduit_packets_total"] {
        assert!(
            all.iter()
                .any(|e| e.contains(family) && e.contains("verdict=\"refuse\"")),
            "the dashboard shows no {family} with verdict refuse"
        );
    }
}

#[test]
fn alert_rules_use_only_served_metrics() {
    let text = std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let served = served();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            alerts += 1;
            let expr = rule["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(served.contains(&name), "{name} (in {expr}) is not served");
            }
            let annotations = &rule["annotations"];
            for key in ["summary", "runbook"] {
                assert!(annotations[key].as_str().is_some(), "{key} in {rule:?}");
            }
        }
    }
    assert!(alerts >= 6);
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let path = dashboards().join("alerts.yml");
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool is missing: run `cargo xtask setup` (Debian package prometheus)");
    assert!(
        output.status.success(),
        "promtool check rules {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The function label regex of the write/program alert, as Prometheus applies it (anchored).
fn write_alert_regex() -> regex::Regex {
    let text = std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let rule = rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "OtfwDeniedWriteOrProgramAttempt")
        .expect("no OtfwDeniedWriteOrProgramAttempt alert");
    let expr = rule["expr"].as_str().unwrap();
    let start = expr.find("function=~\"").expect("no function matcher") + "function=~\"".len();
    let pattern = &expr[start..start + expr[start..].find('"').unwrap()];
    regex::Regex::new(&format!("^(?:{pattern})$")).unwrap()
}

/// The alert covers the CIP services that change a device (by the names the exporter puts in
/// `function`, the policy's service names) and the Modbus writes, and not the reads.
#[test]
fn write_alert_covers_cip_write_and_admin_services() {
    let re = write_alert_regex();
    let services: BTreeSet<&str> = otfw::policy::enip::SERVICES
        .iter()
        .map(|(name, _)| *name)
        .collect();
    for name in [
        "set_attributes_all",
        "set_attribute_list",
        "set_attribute_single",
        "reset",
        "start",
        "stop",
        "create",
        "delete",
        "apply_attributes",
        "restore",
        "save",
        "execute_pccc",
        "write_tag",
        "read_modify_write_tag",
        "write_tag_fragmented",
    ] {
        assert!(services.contains(name), "{name} is not a CIP service name");
        assert!(re.is_match(name), "the write alert misses {name}");
    }
    for name in [
        "write_single_coil",
        "write_multiple_registers",
        "mask_write_register",
    ] {
        assert!(re.is_match(name), "the write alert misses {name}");
    }
    for name in [
        "get_attributes_all",
        "get_attribute_single",
        "get_attribute_list",
        "read_tag",
        "read_tag_fragmented",
        "multiple_service_packet",
        "forward_open",
        "forward_close",
        "list_identity",
        "register_session",
        "read_holding_registers",
    ] {
        assert!(!re.is_match(name), "the write alert fires on {name}");
    }
}
