use std::collections::BTreeSet;

use firewall_common::{
    counters::{Traffic, VERDICT_DROP, VERDICT_PASS},
    reason::Reason,
};
use prometheus::{Encoder as _, TextEncoder};

use super::*;
use crate::{
    datapath::ConduitTraffic,
    policy::compiled::{ConduitLabels, Names},
};

fn text(metrics: &Metrics) -> String {
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&metrics.registry.gather(), &mut body)
        .unwrap();
    String::from_utf8(body).unwrap()
}

#[test]
fn families_follow_prometheus_conventions() {
    let metrics = Metrics::new().unwrap();
    let names: BTreeSet<&str> = metrics.family_names().iter().map(String::as_str).collect();
    for required in [
        "otfw_conduit_packets_total",
        "otfw_conduit_bytes_total",
        "otfw_requests_total",
        "otfw_denied_packets_total",
        "otfw_parse_errors_total",
        "otfw_flow_table_entries",
        "otfw_flow_table_capacity",
        "otfw_flow_insert_failures_total",
        "otfw_flow_evictions_total",
        "otfw_policy_epoch",
        "otfw_policy_commit_info",
        "otfw_policy_last_load_timestamp_seconds",
        "otfw_policy_loads_total",
        "otfw_port_attached",
        "otfw_events_lost_total",
        "otfw_observed_frames_total",
        "otfw_observed_uses_total",
        "otfw_build_info",
    ] {
        assert!(
            names.contains(required),
            "{required} missing from {names:?}"
        );
    }
    let body = text(&metrics);
    for name in &names {
        assert!(name.starts_with("otfw_"), "{name}");
        if let Some(kind) = body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
        {
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name}: {kind}"
            );
        }
    }
}

#[test]
fn a_fresh_exporter_serves_build_info_and_zeroed_counters() {
    let metrics = Metrics::new().unwrap();
    metrics.policy_loaded(
        3,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        None,
    );
    metrics.policy_rejected();
    metrics.port("eth1", "native", true);
    let body = text(&metrics);
    for line in [
        format!(
            "otfw_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "otfw_policy_epoch 3".to_string(),
        "otfw_policy_last_load_timestamp_seconds 1700000000".to_string(),
        "otfw_policy_loads_total{result=\"loaded\"} 1".to_string(),
        "otfw_policy_loads_total{result=\"rejected\"} 1".to_string(),
        "otfw_port_attached{mode=\"native\",port=\"eth1\"} 1".to_string(),
        "otfw_events_lost_total{cause=\"ring_full\"} 0".to_string(),
        "otfw_flow_table_capacity 262144".to_string(),
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
    }
}

#[test]
fn the_commit_info_names_only_the_policy_in_force() {
    let metrics = Metrics::new().unwrap();
    let at = SystemTime::UNIX_EPOCH;
    let first = PolicyCommit {
        commit: "1111111111111111111111111111111111111111".into(),
        dirty: false,
    };
    metrics.policy_loaded(1, at, Some(&first));
    let body = text(&metrics);
    let line = format!(
        "otfw_policy_commit_info{{commit=\"{}\",dirty=\"false\"}} 1",
        first.commit
    );
    assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
    let second = PolicyCommit {
        commit: "2222222222222222222222222222222222222222".into(),
        dirty: true,
    };
    metrics.policy_loaded(2, at, Some(&second));
    let body = text(&metrics);
    assert!(!body.contains(&first.commit), "{body}");
    let line = format!(
        "otfw_policy_commit_info{{commit=\"{}\",dirty=\"true\"}} 1",
        second.commit
    );
    assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
    metrics.policy_loaded(3, at, None);
    assert!(!text(&metrics).contains("otfw_policy_commit_info{"));
}

#[test]
fn raise_never_lowers_a_counter() {
    let c = IntCounter::new("c_total", "c").unwrap();
    raise(&c, 5);
    raise(&c, 3);
    assert_eq!(c.get(), 5);
    raise(&c, 9);
    assert_eq!(c.get(), 9);
}

#[test]
fn parse_errors_are_grouped_by_protocol() {
    assert_eq!(parse_error_protocol("vlan_malformed"), Some("ethernet"));
    assert_eq!(parse_error_protocol("ip_bad_ihl"), Some("ip"));
    assert_eq!(parse_error_protocol("tcp_bad_flags"), Some("tcp"));
    assert_eq!(parse_error_protocol("modbus_bad_length"), Some("modbus"));
    assert_eq!(parse_error_protocol("modbus_function_denied"), None);
    assert_eq!(parse_error_protocol("no_conduit"), None);
    for reason in [
        "enip_bad_header",
        "enip_too_long",
        "enip_bad_session",
        "enip_bad_cpf",
        "enip_unframed",
        "enip_too_many_messages",
        "enip_trailing_bytes",
        "cip_bad_path",
        "cip_malformed",
        "cip_bad_msp",
        "cip_too_deep",
        "cip_tag_too_long",
        "enip_io_malformed",
    ] {
        assert!(Reason::NAMES.contains(&reason), "{reason}");
        assert_eq!(parse_error_protocol(reason), Some("enip"), "{reason}");
    }
    for reason in [
        "enip_command_denied",
        "enip_out_of_order",
        "enip_retransmission",
        "enip_blocked",
        "enip_unknown_connection",
        "cip_service_denied",
        "cip_tag_denied",
        "enip_io_no_connection",
        "modbus_out_of_order",
    ] {
        assert!(Reason::NAMES.contains(&reason), "{reason}");
        assert_eq!(parse_error_protocol(reason), None, "{reason}");
    }
    for name in firewall_common::reason::Reason::NAMES {
        if let Some(p) = parse_error_protocol(name) {
            assert!(!p.is_empty());
        }
    }
}

fn names(conduits: &[&str]) -> Names {
    Names {
        conduits: conduits.iter().map(|c| c.to_string()).collect(),
        conduit_labels: conduits
            .iter()
            .map(|_| ConduitLabels {
                from_zone: "office".into(),
                to_zone: "plant".into(),
                protocol: "tcp".into(),
            })
            .collect(),
        ..Names::default()
    }
}

fn traffic(conduit: &str, passed: u64, dropped: u64) -> ConduitTraffic {
    let mut t = ConduitTraffic {
        conduit: conduit.into(),
        ..ConduitTraffic::default()
    };
    t.by_verdict[VERDICT_PASS as usize] = Traffic {
        packets: passed,
        bytes: passed * 100,
    };
    t.by_verdict[VERDICT_DROP as usize] = Traffic {
        packets: dropped,
        bytes: dropped * 60,
    };
    t
}

fn packets(counts: &ConduitCounts, conduit: &str, verdict: u32) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| k.conduit == conduit)
        .map(|(_, v)| v[verdict as usize].packets)
        .sum()
}

/// Generation 1 in slot 1, generation 2 in slot 0, generation 3 reuses slot 1: the counts of
/// generation 1 must survive in the totals, and no sum may ever fall.
#[test]
fn conduit_totals_stay_monotonic_when_a_slot_is_reused() {
    let mut totals = ConduitTotals::default();
    let g1 = names(&["(none)", "a"]);
    let g2 = names(&["(none)", "a", "b"]);
    let g3 = names(&["(none)", "b"]);

    let before = totals.current(&[(&g1, vec![traffic("(none)", 0, 2), traffic("a", 10, 0)])]);
    assert_eq!(packets(&before, "a", VERDICT_PASS), 10);

    let during = totals.current(&[
        (&g1, vec![traffic("(none)", 0, 2), traffic("a", 12, 0)]),
        (
            &g2,
            vec![
                traffic("(none)", 0, 1),
                traffic("a", 3, 0),
                traffic("b", 4, 0),
            ],
        ),
    ]);
    assert_eq!(packets(&during, "a", VERDICT_PASS), 15);
    assert_eq!(packets(&during, "(none)", VERDICT_DROP), 3);

    // Generation 3 is about to reuse generation 1's slot: its final counts are folded.
    totals.retire(&g1, &[traffic("(none)", 0, 2), traffic("a", 12, 0)]);
    let after = totals.current(&[
        (
            &g2,
            vec![
                traffic("(none)", 0, 1),
                traffic("a", 3, 0),
                traffic("b", 4, 0),
            ],
        ),
        (&g3, vec![traffic("(none)", 0, 0), traffic("b", 0, 0)]),
    ]);
    assert_eq!(packets(&after, "a", VERDICT_PASS), 15);
    assert_eq!(packets(&after, "b", VERDICT_PASS), 4);
    assert_eq!(packets(&after, "(none)", VERDICT_DROP), 3);
    for (key, by_verdict) in &during {
        for (v, t) in by_verdict.iter().enumerate() {
            assert!(after[key][v].packets >= t.packets, "{key:?} fell");
        }
    }
}

#[test]
fn modbus_functions_are_labelled_by_policy_name() {
    assert_eq!(modbus_function_name(3), "read_holding_registers");
    assert_eq!(modbus_function_name(5), "write_single_coil");
    assert_eq!(modbus_function_name(200), "200");
}

fn enip(conduit: &str, command: &str, service: &str, verdict: &'static str, n: u64) -> EnipTraffic {
    EnipTraffic {
        conduit: conduit.into(),
        command: command.into(),
        service: service.into(),
        class: 0,
        verdict,
        requests: n,
    }
}

fn key(conduit: &str, protocol: &str, function: &str, verdict: &str) -> [String; 4] {
    [conduit, protocol, function, verdict].map(str::to_owned)
}

/// CIP requests count by service name (classes of one service summed), messages without CIP by
/// command; SendRRData/SendUnitData and implicit I/O are not counted as requests themselves.
#[test]
fn enip_requests_are_labelled_by_cip_service_or_command() {
    let requests = enip_requests(&[
        enip("hmi", "send_rr_data", "", "pass", 7),
        enip("hmi", "send_rr_data", "read_tag", "pass", 5),
        enip("hmi", "send_unit_data", "read_tag", "pass", 2),
        enip("hmi", "send_rr_data", "write_tag", "drop", 1),
        enip("hmi", "send_rr_data", "get_attribute_single", "pass", 3),
        enip("hmi", "list_identity", "", "pass", 1),
        enip("hmi", "register_session", "", "pass", 2),
        enip("eng", "send_rr_data", "0x4b", "reset", 1),
        enip("eng", "implicit_io", "", "pass", 100),
    ]);
    let want = RequestCounts::from([
        (key("hmi", "enip", "read_tag", "pass"), 7),
        (key("hmi", "enip", "write_tag", "drop"), 1),
        (key("hmi", "enip", "get_attribute_single", "pass"), 3),
        (key("hmi", "enip", "list_identity", "pass"), 1),
        (key("hmi", "enip", "register_session", "pass"), 2),
        (key("eng", "enip", "0x4b", "reset"), 1),
    ]);
    assert_eq!(requests, want);
}

#[test]
fn modbus_requests_leave_out_responses() {
    let adus = |function, kind, adus| ModbusTraffic {
        conduit: "scada".into(),
        function,
        kind,
        detail: 0,
        adus,
    };
    let requests = modbus_requests(&[
        adus(3, "pass", 4),
        adus(3, "response", 4),
        adus(6, "drop", 1),
        adus(6, "exception", 1),
    ]);
    assert_eq!(
        requests,
        RequestCounts::from([
            (key("scada", "modbus", "read_holding_registers", "pass"), 4),
            (key("scada", "modbus", "write_single_register", "drop"), 1),
        ])
    );
}

/// The counts of a retired generation are folded into the totals and the live generation's
/// added on top, for both inspectors; the exported counter carries the protocol label.
#[test]
fn inspector_requests_fold_across_generations() {
    let mut retired = RequestCounts::new();
    fold(
        &mut retired,
        enip_requests(&[enip("hmi", "send_rr_data", "write_tag", "drop", 2)]),
    );
    fold(
        &mut retired,
        RequestCounts::from([(key("scada", "modbus", "read_coils", "pass"), 3)]),
    );
    let mut total = retired.clone();
    fold(
        &mut total,
        enip_requests(&[
            enip("hmi", "send_rr_data", "write_tag", "drop", 1),
            enip("hmi", "send_rr_data", "set_attribute_single", "reset", 1),
        ]),
    );
    assert_eq!(total[&key("hmi", "enip", "write_tag", "drop")], 3);
    assert_eq!(
        total[&key("hmi", "enip", "set_attribute_single", "reset")],
        1
    );
    assert_eq!(total[&key("scada", "modbus", "read_coils", "pass")], 3);

    let metrics = Metrics::new().unwrap();
    for ([conduit, protocol, function, verdict], n) in &total {
        metrics.requests([conduit, protocol, function, verdict], *n);
    }
    let body = text(&metrics);
    for line in [
        r#"otfw_requests_total{conduit="hmi",function="write_tag",protocol="enip",verdict="drop"} 3"#,
        r#"otfw_requests_total{conduit="hmi",function="set_attribute_single",protocol="enip",verdict="reset"} 1"#,
        r#"otfw_requests_total{conduit="scada",function="read_coils",protocol="modbus",verdict="pass"} 3"#,
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
    }
}

#[test]
fn enip_ring_losses_have_their_cause() {
    let body = text(&Metrics::new().unwrap());
    let line = r#"otfw_events_lost_total{cause="enip_ring_full"} 0"#;
    assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
}
