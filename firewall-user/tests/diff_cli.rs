//! `otfw diff` as a reviewer or a CI job runs it: lines on stdout, exit codes 0/1/2, JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn otfw_diff(args: &[&str], old: &Path, new: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otfw"))
        .arg("diff")
        .args(args)
        .arg(old)
        .arg(new)
        .output()
        .expect("run otfw")
}

fn example_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/example.yaml");
    std::fs::read_to_string(path).expect("read the example policy")
}

fn write_policy(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("write policy");
    path
}

/// The example with `from` replaced by `to` (which must be there).
fn edited(from: &str, to: &str) -> String {
    let text = example_text();
    assert!(text.contains(from), "the example has no `{from}`");
    text.replace(from, to)
}

#[test]
fn a_rewritten_policy_is_no_change_and_exits_0() {
    let old = write_policy("diff-same-old.yaml", &example_text());
    // No comments, lists reordered, a preset spelled out, a default written out.
    let rewritten: String = example_text()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(" #").next().unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("units: [1, 255]", "units: [255, 1]")
        .replace(
            "functions: [read]\n",
            "functions: [1, 2, 3, 4, 20, 24, \"43/14\"]\n    mode: enforce\n",
        )
        .replace(
            "functions: [read, write, diagnostics]",
            "functions: [diagnostics, write, read]",
        );
    let new = write_policy("diff-same-new.yaml", &rewritten);
    let out = otfw_diff(&[], &old, &new);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    assert_eq!(stderr, "no effective change\n");
}

#[test]
fn a_change_is_explained_line_by_line_and_exits_1() {
    let old = write_policy("diff-change-old.yaml", &example_text());
    let text = edited(
        "functions: [read]\n",
        "functions: [read, write_single_register]\n",
    )
    .replace("- tcp: { ports: [22] }", "- tcp: { ports: [22, 2222] }")
    .replace(
        "      - tcp: { ports: [3389] }\n",
        "      - tcp: { ports: [3389] }\n    on_deny: reset\n",
    );
    let new = write_policy("diff-change-new.yaml", &text);
    let out = otfw_diff(&[], &old, &new);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            "~ conduit historian-reads: modbus rule on port 502: + functions write_single_register (6)",
            "~ conduit engineering-to-cell: + tcp ports 2222",
            "~ conduit remote-desktop: on_deny refuse -> reset",
        ]
    );
    assert_eq!(stderr, "3 changes: 2 allowing more, 1 neutral\n");
}

#[test]
fn a_policy_with_errors_exits_2_with_positions() {
    let old = write_policy("diff-errors-old.yaml", &example_text());
    let bad = write_policy(
        "diff-errors-bad.yaml",
        include_str!("data/three-errors.yaml"),
    );
    let out = otfw_diff(&[], &old, &bad);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    let file = bad.display();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        vec![
            format!("{file}:6:29: error: `10.0.300.0/24` is not a network in CIDR notation (e.g. 10.0.0.0/24)"),
            format!("{file}:7:5: error: unknown key `colour` in zone; expected one of: networks, ports, security_level, description, hosts"),
            format!("{file}:11:9: error: unknown zone `plant` in `to`; zones are: office"),
        ]
    );
    // Either side: a missing OLD is an error too.
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("diff-no-such-policy.yaml");
    let out = otfw_diff(&[], &missing, &old);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "{}:1:1: error: cannot read the policy file",
            missing.display()
        )),
        "{stderr}"
    );
}

#[test]
fn json_lists_changes_with_kind_path_values_and_effect() {
    let old = write_policy("diff-json-old.yaml", &example_text());
    let new = write_policy(
        "diff-json-new.yaml",
        &edited("units: [1, 255]", "units: [1]").replace("mode: enforce ", "mode: monitor "),
    );
    let out = otfw_diff(&["--json"], &old, &new);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["old"], old.display().to_string());
    assert_eq!(doc["errors"], serde_json::json!([]));
    let changes = doc["changes"].as_array().unwrap();
    assert_eq!(changes[0]["kind"], "changed");
    assert_eq!(changes[0]["path"], serde_json::json!(["defaults", "mode"]));
    assert_eq!(changes[0]["before"], "enforce");
    assert_eq!(changes[0]["after"], "monitor");
    assert_eq!(changes[0]["effect"], "allows_more");
    let units = changes
        .iter()
        .find(|c| c["path"][4] == "units")
        .expect("a units change");
    assert_eq!(
        units["path"],
        serde_json::json!([
            "conduits",
            "historian-reads",
            "allow",
            "modbus:502",
            "units"
        ])
    );
    assert_eq!(units["kind"], "removed");
    assert_eq!(units["before"], serde_json::json!(["255"]));
    assert_eq!(units["after"], serde_json::Value::Null);
    assert_eq!(units["effect"], "allows_less");
    assert_eq!(
        units["text"],
        "~ conduit historian-reads: modbus rule on port 502: - units 255"
    );

    let bad = write_policy("diff-json-bad.yaml", include_str!("data/three-errors.yaml"));
    let out = otfw_diff(&["--json"], &old, &bad);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["changes"], serde_json::json!([]));
    assert_eq!(doc["errors"].as_array().unwrap().len(), 3);
    assert_eq!(doc["errors"][1]["line"], 7);
    assert_eq!(doc["errors"][1]["severity"], "error");
}

#[test]
fn help_documents_the_exit_status() {
    let out = Command::new(env!("CARGO_BIN_EXE_otfw"))
        .args(["diff", "--help"])
        .output()
        .expect("run otfw");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("Exit status: 0 when the policies allow the same"),
        "{help}"
    );
    assert!(help.contains("2 when either file has errors"), "{help}");
}
