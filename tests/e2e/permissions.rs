//! The controller's files on a real gateway: what it pins and keeps (`/sys/fs/bpf/otfw`,
//! `/run/otfw`, `/var/lib/otfw`) is root-only (directories 0700, files 0600, a looser
//! directory tightened), and a policy file that other users can write is refused by
//! `otfw run`, by the reloads of a running controller (the policy in force stays) and by
//! `otfw apply`, unless `--allow-insecure-policy-permissions` says otherwise; `otfw check`
//! only warns.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use otfw_tests::{HostSpec, Lab, TcpOutcome};

use crate::common::{self, office_plant_policy, otfw_logged, v4, Firewall, PolicyFile};

/// The pinned instance of the first test (pins and kept files removed at the end).
const INSTANCE: &str = "otfwt-perm";
const CONNECT: Duration = Duration::from_millis(1500);
const EVENT: Duration = Duration::from_secs(10);
const BPF_ROOT: &str = "/sys/fs/bpf/otfw";
const RUN_DIR: &str = "/run/otfw";
const KEPT_DIR: &str = "/var/lib/otfw";

fn lab() -> Lab {
    common::lab(&[
        HostSpec::new("a", "198.51.100.10/24"),
        HostSpec::new("b", "198.51.100.200/24"),
    ])
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory as a careless earlier version (or systemd's default) would have left it.
fn loosened(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    chmod(path, 0o755);
}

/// A policy file in the temp directory with `mode`.
fn policy_file(name: &str, text: &str, mode: u32) -> PolicyFile {
    let path = std::env::temp_dir().join(format!("otfwt-perm-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    chmod(&path, mode);
    PolicyFile(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `otfw apply FILE` for the test's instance, to be confirmed within a minute.
fn apply(file: &str, extra: &[&str]) -> Output {
    let args = [
        &[
            "apply",
            file,
            "--confirm-within",
            "1m",
            "--instance",
            INSTANCE,
        ],
        extra,
    ]
    .concat();
    otfw_logged(&args)
}

/// Removes the instance's pins and kept files when the test ends, passed or failed.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::remove_inventory(INSTANCE);
        for file in ["apply", "previous.yaml", "lockdown"] {
            let _ = std::fs::remove_file(Path::new(KEPT_DIR).join(format!("{INSTANCE}.{file}")));
        }
        if Path::new(BPF_ROOT).join(INSTANCE).exists() {
            let _ = otfw_logged(&["stop", "--instance", INSTANCE]);
        }
    }
}

#[test]
fn pins_and_kept_files_are_root_only_and_looser_directories_are_tightened() {
    let _cleanup = Cleanup;
    let lab = lab();
    let pin_dir = Path::new(BPF_ROOT).join(INSTANCE);
    for dir in [
        Path::new(BPF_ROOT),
        &pin_dir,
        Path::new(RUN_DIR),
        Path::new(KEPT_DIR),
    ] {
        loosened(dir);
    }
    // The lock file an older version left, with its mode then.
    let lock = Path::new(RUN_DIR).join(format!("{INSTANCE}.lock"));
    std::fs::write(&lock, "").unwrap();
    chmod(&lock, 0o644);
    let mut fw = Firewall::start_with(&lab, &office_plant_policy(5020), &["--instance", INSTANCE]);
    let stderr = fw.process.stderr();
    assert!(
        stderr.contains(&format!("{RUN_DIR} had mode 0755; tightened to 0700")),
        "{stderr}"
    );

    let mut dirs = vec![PathBuf::from(BPF_ROOT), pin_dir.clone(), RUN_DIR.into()];
    let mut pins = Vec::new();
    for sub in ["maps", "programs", "links"] {
        let dir = pin_dir.join(sub);
        pins.extend(std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()));
        dirs.push(dir);
    }
    assert!(
        pins.iter().any(|p| p.ends_with("links/otfwt-a")),
        "{pins:?}"
    );
    let files = [
        Path::new(RUN_DIR).join(format!("{INSTANCE}.json")),
        Path::new(RUN_DIR).join(format!("{INSTANCE}.lock")),
    ];
    for dir in &dirs {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    for file in pins.iter().chain(&files) {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    println!(
        "0700: {} directories; 0600: {} pins and {} state files",
        dirs.len(),
        pins.len(),
        files.len()
    );

    // A lockdown order is kept root-only, and the loosened /var/lib/otfw tightened.
    assert!(
        otfw_logged(&["lockdown", "read-only", "--instance", INSTANCE])
            .status
            .success()
    );
    assert_eq!(mode(Path::new(KEPT_DIR)), 0o700);
    assert_eq!(
        mode(&Path::new(KEPT_DIR).join(format!("{INSTANCE}.lockdown"))),
        0o600
    );
    assert!(
        otfw_logged(&["lockdown", "release", "--instance", INSTANCE])
            .status
            .success()
    );
    let _b5021 = lab.tcp_echo_server("b", 5021).unwrap();
    let new = v4(&lab, "b", 5021);
    let echo = |to| lab.tcp_echo("a", to, "hi", CONNECT).unwrap();

    // `otfw apply` refuses a policy others can write, and changes nothing.
    let next = policy_file("apply", &office_plant_policy(5021), 0o666);
    let next_arg = next.0.to_str().unwrap();
    let refused = apply(next_arg, &[]);
    let message = text(&refused.stderr);
    assert!(!refused.status.success(), "{message}");
    assert!(
        message.contains(&format!(
            "{next_arg}: mode 0666 lets its group and every user write it"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("chmod go-w {next_arg}")),
        "{message}"
    );
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(!Path::new(KEPT_DIR)
        .join(format!("{INSTANCE}.apply"))
        .exists());
    assert_eq!(echo(new), TcpOutcome::TimedOut);

    // With the override it is applied; what apply keeps, and the policy file it wrote, are
    // root-only.
    let applied = apply(next_arg, &["--allow-insecure-policy-permissions"]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    fw.event("policy_applied", EVENT);
    assert_eq!(
        echo(new),
        TcpOutcome::Echoed,
        "the applied policy is in force"
    );
    for kept in ["apply", "previous.yaml"] {
        let file = Path::new(KEPT_DIR).join(format!("{INSTANCE}.{kept}"));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&fw.policy.0), 0o600);
    assert!(otfw_logged(&["confirm", "--instance", INSTANCE])
        .status
        .success());
}

#[test]
fn a_policy_file_others_can_write_is_refused_at_start_and_at_reload() {
    let lab = lab();
    let _b5020 = lab.tcp_echo_server("b", 5020).unwrap();
    let _b5021 = lab.tcp_echo_server("b", 5021).unwrap();
    let (old, new) = (v4(&lab, "b", 5020), v4(&lab, "b", 5021));
    let echo = |to| lab.tcp_echo("a", to, "hi", CONNECT).unwrap();

    // `otfw check`, run in CI on checkouts, warns and still checks.
    let writable = policy_file("start", &office_plant_policy(5020), 0o666);
    let file = writable.0.to_str().unwrap().to_string();
    let check = otfw_logged(&["check", &file]);
    let message = text(&check.stderr);
    assert!(check.status.success(), "{message}");
    assert!(
        message.contains(&format!("{file}:1:1: warning: mode 0666 lets")),
        "{message}"
    );
    assert!(message.contains(&format!("chmod go-w {file}")), "{message}");
    assert!(
        message.contains("ok: 1 file checked, 0 errors"),
        "{message}"
    );

    // `otfw run` refuses to start on it and attaches nothing.
    let refused = otfw_logged(&[
        "run",
        "--policy",
        &file,
        "--no-pin",
        "--metrics",
        "off",
        "--iface",
        "otfwt-a",
        "--iface",
        "otfwt-b",
    ]);
    let message = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "{file}: mode 0666 lets its group and every user write it"
        )),
        "{message}"
    );
    assert!(message.contains(&format!("chmod go-w {file}")), "{message}");
    assert!(
        message.contains("--allow-insecure-policy-permissions"),
        "{message}"
    );
    assert_eq!(echo(old), TcpOutcome::Echoed, "nothing attached");

    // `--check-config` predicts that; the configuration file's key overrides like the flag.
    let checked = otfw_logged(&["run", "--check-config", "--policy", &file]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        text(&checked.stderr).contains(&format!("chmod go-w {file}")),
        "{}",
        text(&checked.stderr)
    );
    let config = policy_file(
        "config",
        &format!("policy: {file}\nallow_insecure_policy_permissions: true\n"),
        0o644,
    );
    let config_arg = config.0.to_str().unwrap();
    let checked = otfw_logged(&["run", "--check-config", "--config", config_arg]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(text(&checked.stdout).contains("allow_insecure_policy_permissions: true"));
    assert!(text(&checked.stderr).contains("accepted: --allow-insecure-policy-permissions"));

    // With the override it starts, and says what it accepted.
    let fw = Firewall::start_file(
        &lab,
        writable,
        &["--metrics", "off", "--allow-insecure-policy-permissions"],
    );
    let stderr = fw.process.stderr();
    assert!(
        stderr.contains("accepted: --allow-insecure-policy-permissions"),
        "{stderr}"
    );
    assert_eq!(echo(old), TcpOutcome::Echoed);
    assert_eq!(echo(new), TcpOutcome::TimedOut);
    drop(fw);

    // A running controller: a policy file that becomes writable by others is refused at the
    // next reload, its new contents too, and the policy in force stays; `chmod go-w` alone
    // has it loaded.
    let mut fw = Firewall::start_file(
        &lab,
        policy_file("reload", &office_plant_policy(5020), 0o644),
        &["--metrics", "off"],
    );
    let file = fw.policy.0.to_str().unwrap().to_string();
    chmod(&fw.policy.0, 0o646);
    let rejected = fw.event("policy_rejected", EVENT);
    println!("made world-writable: {rejected}");
    let errors = rejected["errors"].to_string();
    assert!(
        errors.contains(&format!("{file}: mode 0646 lets every user write it")),
        "{rejected}"
    );
    assert!(errors.contains(&format!("chmod go-w {file}")), "{rejected}");
    assert_eq!(rejected["kept_epoch"], 1, "{rejected}");
    let verdict = fw.rewrite(&office_plant_policy(5021));
    assert!(
        verdict.contains(r#""event":"policy_rejected""#),
        "{verdict}"
    );
    assert!(verdict.contains("chmod go-w"), "{verdict}");
    assert_eq!(echo(old), TcpOutcome::Echoed, "the policy in force stays");
    assert_eq!(
        echo(new),
        TcpOutcome::TimedOut,
        "the refused policy is not in force"
    );

    chmod(&fw.policy.0, 0o644);
    let loaded = fw.event("policy_loaded", EVENT);
    assert_eq!(loaded["epoch"], 2, "{loaded}");
    assert_eq!(echo(new), TcpOutcome::Echoed);
    assert_eq!(echo(old), TcpOutcome::TimedOut);
}
