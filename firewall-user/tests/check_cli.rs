//! `otfw check` as operators run it: output on stderr and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn otfw_check(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otfw"))
        .arg("check")
        .args(args)
        .output()
        .expect("run otfw")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/example.yaml")
}

fn write_policy(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("write policy");
    path
}

/// An unknown key, a bad CIDR and an unknown zone (also used by tests/policy.rs).
const BAD: &str = include_str!("data/three-errors.yaml");

#[test]
fn reports_every_error_with_its_position_and_exits_1() {
    let path = write_policy("bad.yaml", BAD);
    let out = otfw_check(&[&path]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = path.display();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        vec![
            format!("{file}:6:29: error: `10.0.300.0/24` is not a network in CIDR notation (e.g. 10.0.0.0/24)"),
            format!("{file}:7:5: error: unknown key `colour` in zone; expected one of: networks, ports, security_level, description, hosts"),
            format!("{file}:11:9: error: unknown zone `plant` in `to`; zones are: office"),
            "failed: 1 file checked, 3 errors, 0 warnings".to_string(),
        ]
    );
}

#[test]
fn example_policy_passes_with_its_intended_warning() {
    let out = otfw_check(&[&example()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains(": warning: conduit `engineering-to-cell` grants modbus write"));
    assert_eq!(lines[1], "ok: 1 file checked, 0 errors, 1 warning");
}

#[test]
fn checks_every_file_and_fails_if_any_fails() {
    let bad = write_policy("bad-too.yaml", BAD);
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-policy.yaml");
    let out = otfw_check(&[&example(), &bad, &missing]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!(
        "{}:1:1: error: cannot read the policy file",
        missing.display()
    )));
    assert!(
        stderr.ends_with("failed: 3 files checked, 4 errors, 1 warning\n"),
        "{stderr}"
    );
}

#[test]
fn json_output() {
    let path = write_policy("bad-json.yaml", BAD);
    let out = Command::new(env!("CARGO_BIN_EXE_otfw"))
        .args(["check", "--json"])
        .arg(&path)
        .output()
        .expect("run otfw");
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let list = value.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[1]["line"], 7);
    assert_eq!(list[1]["column"], 5);
    assert_eq!(list[1]["severity"], "error");
}

/// A policy file other users can write draws a warning naming the fix, not an error: CI checks
/// checkouts; `otfw run` is the one that refuses it.
#[test]
fn a_policy_file_others_can_write_is_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let path = write_policy(
        "writable.yaml",
        &std::fs::read_to_string(example()).unwrap(),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = otfw_check(&[&path]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = path.display();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{file}:1:1: warning: mode 0664 lets its group write it: whoever can change a policy \
             file decides what this gateway lets through. Fix it with `chmod go-w {file}`; otfw \
             run and otfw apply refuse this file\n"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("ok: 1 file checked, 0 errors"), "{stderr}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = otfw_check(&[&path]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("chmod"), "{stderr}");
}
