//! `otfw run --config FILE --check-config`: the settings file as operators use it, flags over it,
//! errors at their position, and nothing attached.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn otfw_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otfw"))
        .arg("run")
        .args(args)
        .output()
        .expect("run otfw")
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-config");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

#[test]
fn check_config_prints_the_file_with_flags_applied() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/example.yaml");
    std::fs::copy(&example, write("policy.yaml", "")).expect("copy the example policy");
    let config = write(
        "otfw.yaml",
        "policy: policy.yaml\nbridge: br-file\nxdp_mode: generic\nmetrics: off\n",
    );
    let out = otfw_run(&[
        "--config",
        config.to_str().unwrap(),
        "--check-config",
        "--iface",
        "eth7",
        "--metrics",
        "127.0.0.1:9999",
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let policy = config.with_file_name("policy.yaml");
    for line in [
        format!("policy: {}", policy.display()),
        "- eth7".to_string(),
        "xdp_mode: generic".to_string(),
        "metrics: 127.0.0.1:9999".to_string(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("br-file"),
        "--iface replaces the file's bridge:\n{stdout}"
    );
    assert!(stdout.contains("compiles"), "{stdout}");
}

#[test]
fn a_bad_value_is_reported_at_its_position_and_exits_non_zero() {
    let config = write("bad.yaml", "policy: p.yaml\nxdp_mode: turbo\n");
    let out = otfw_run(&["--config", config.to_str().unwrap(), "--check-config"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let expected = format!("{}:2:11: error: xdp_mode must be one of", config.display());
    assert!(stderr.contains(&expected), "no `{expected}` in:\n{stderr}");
}
