//! Policies from git: with its file in a git work tree, every load records the commit checked
//! out and whether the tree is dirty, in `policy_loaded` and in `otfw_policy_commit_info`; the
//! file watch picks up what a `git pull` (here: a commit) changes.

use std::path::Path;
use std::process::Command;

use otfw_tests::{free_loopback_addr, scrape};
use serde_json::Value;

use crate::common::{self, Firewall, PolicyFile, START};

const POLICY: &str = "\
version: 1
gateway: { interfaces: [otfwt-a, otfwt-b] }
zones:
  left: { networks: [198.51.100.0/25] }
  right: { networks: [198.51.100.128/25] }
conduits:
  - { name: left-to-right, from: left, to: right, allow: [{ udp: { ports: [5353] } }] }
";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=otfw test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .output()
        .expect("git must be installed (cargo xtask setup)");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the work tree when the test ends.
struct WorkTree(std::path::PathBuf);

impl Drop for WorkTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn loaded(line: &str) -> Value {
    let event: Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["event"], "policy_loaded", "{line}");
    event
}

#[test]
fn every_load_records_the_commit_in_force() {
    let tree = WorkTree(std::env::temp_dir().join(format!("otfwt-git-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tree.0);
    std::fs::create_dir_all(&tree.0).unwrap();
    let file = tree.0.join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();
    git(&tree.0, &["init", "-q"]);
    git(&tree.0, &["add", "policy.yaml"]);
    git(&tree.0, &["commit", "-q", "-m", "reviewed policy"]);
    let first = git(&tree.0, &["rev-parse", "HEAD"]);

    let lab = common::lab(&common::left_right_hosts());
    let metrics = free_loopback_addr().unwrap();
    let mut fw = Firewall::start_file(
        &lab,
        PolicyFile(file.clone()),
        &["--metrics", &metrics.to_string()],
    );

    let body = scrape(metrics).unwrap();
    let series = format!("otfw_policy_commit_info{{commit=\"{first}\",dirty=\"false\"}} 1");
    assert!(body.lines().any(|l| l == series), "{series} not in\n{body}");

    // A pull brings a new reviewed commit, then SIGHUP (the documented workflow: the file watch
    // may catch the work tree halfway, between the new file and the new HEAD, and record that
    // as dirty; the reload after the pull names the commit).
    std::fs::write(&file, POLICY.replace("5353", "5354")).unwrap();
    git(&tree.0, &["commit", "-q", "-a", "-m", "port change"]);
    let second = git(&tree.0, &["rev-parse", "HEAD"]);
    // SAFETY: signalling the otfw process this test started, by its PID.
    assert_eq!(
        unsafe { libc::kill(fw.process.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    let event = loaded(
        &fw.process
            .wait_for_line(
                |l| {
                    l.contains("policy_loaded")
                        && l.contains(&second)
                        && l.contains(r#""dirty":false"#)
                },
                START,
            )
            .unwrap(),
    );
    println!("after the pull: {event}");
    assert_eq!(event["git"]["commit"], second.as_str(), "{event}");

    // An edit nobody committed is enforced, and flagged.
    std::fs::write(&file, POLICY.replace("5353", "5355")).unwrap();
    let event = loaded(
        &fw.process
            .wait_for_line(
                |l| l.contains("policy_loaded") && l.contains(r#""dirty":true"#),
                START,
            )
            .unwrap(),
    );
    println!("after an uncommitted edit: {event}");
    assert_eq!(event["git"]["commit"], second.as_str(), "{event}");
    let body = scrape(metrics).unwrap();
    let series = format!("otfw_policy_commit_info{{commit=\"{second}\",dirty=\"true\"}} 1");
    assert!(body.lines().any(|l| l == series), "{series} not in\n{body}");
    assert!(
        !body.contains(&first),
        "the old commit is still exported:\n{body}"
    );
}
