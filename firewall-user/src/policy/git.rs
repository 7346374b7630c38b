//! Which reviewed commit a policy came from. When the policy file lives in a git work tree,
//! the controller records the commit checked out there, and whether the tree has uncommitted
//! changes, with every load: a dashboard then shows which commit is enforcing.
//!
//! `git` itself answers (it is what the pull workflow runs anyway). git refuses work trees owned
//! by another user (`safe.directory`); that is kept, since the controller runs as root, and such
//! a policy is simply recorded without a commit.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCommit {
    /// The full object name of `HEAD`.
    pub commit: String,
    /// The work tree differs from `HEAD` (changed, staged or untracked files): what is enforced
    /// may not be what was reviewed.
    pub dirty: bool,
}

/// Runs git in `dir`; its stdout, or `None` if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        // A repository's own configuration must not make the controller run programs.
        .args(["-c", "core.fsmonitor=false"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit of the work tree holding `policy`; `None` outside a work tree (or without git).
pub fn commit_of(policy: &Path) -> Option<PolicyCommit> {
    let dir = match policy.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let commit = git(dir, &["rev-parse", "--verify", "HEAD"])?;
    let status = git(dir, &["status", "--porcelain"])?;
    Some(PolicyCommit {
        commit: commit.trim().to_string(),
        dirty: !status.trim().is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// git in `dir` as a test author; fails the test if git fails.
    fn run(dir: &Path, args: &[&str]) {
        let mut command = Command::new("git");
        command.current_dir(dir).args(args);
        for var in ["GIT_AUTHOR", "GIT_COMMITTER"] {
            command
                .env(format!("{var}_NAME"), "otfw test")
                .env(format!("{var}_EMAIL"), "test@example.invalid");
        }
        let status = command
            .status()
            .expect("git must be installed for these tests (cargo xtask setup)");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn records_the_commit_and_whether_the_tree_is_dirty() {
        let dir = std::env::temp_dir().join(format!("otfw-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, "version: 1\n").unwrap();
        assert_eq!(commit_of(&policy), None, "not a work tree yet");

        run(&dir, &["init", "-q"]);
        assert_eq!(commit_of(&policy), None, "no commit yet");
        run(&dir, &["add", "policy.yaml"]);
        run(&dir, &["commit", "-q", "-m", "first"]);
        let head = git(&dir, &["rev-parse", "HEAD"]).unwrap();
        let clean = commit_of(&policy).unwrap();
        assert_eq!(clean.commit, head.trim());
        assert_eq!(clean.commit.len(), 40);
        assert!(!clean.dirty);

        std::fs::write(&policy, "version: 1\n# edited\n").unwrap();
        let dirty = commit_of(&policy).unwrap();
        assert_eq!(dirty.commit, clean.commit);
        assert!(dirty.dirty);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
