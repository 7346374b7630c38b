//! Who may change a policy file. Whoever can write the file `otfw run` enforces decides what
//! crosses the gateway, so a file that users other than root (or the user running otfw) can
//! write is refused: group- or world-writable, or owned by another user (an owner can always
//! `chmod` their file back to writable), and likewise a file whose directory lets others
//! replace it (writable by others without the sticky bit, or owned by another user). `otfw run`, `otfw apply` and the reloads of the
//! running controller refuse it unless `--allow-insecure-policy-permissions` says otherwise;
//! `otfw check`, which CI runs on checkouts owned by whoever cloned them, only warns.

use std::{os::unix::fs::MetadataExt as _, path::Path};

/// The flag (and, with `_` for `-`, the configuration key) that accepts such a file anyway.
pub const OVERRIDE_FLAG: &str = "--allow-insecure-policy-permissions";

/// A policy file that users other than root (or otfw's user) can change: what is wrong and how
/// to fix it. Its `Display` adds the override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insecure(pub String);

impl std::fmt::Display for Insecure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, or pass {OVERRIDE_FLAG} to accept it", self.0)
    }
}

/// `Err` when users other than root or this process's user can change the policy file at
/// `path` (followed through symlinks: the file read is what counts). A file that cannot be
/// read is left to the loader, which reports it.
pub fn check(path: &Path) -> Result<(), Insecure> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let file = path.display();
    let mode = meta.mode() & 0o7777;
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        problems.push(format!("mode {mode:04o} lets {who} write it"));
        fixes.push(format!("`chmod go-w {file}`"));
    }
    let owner = meta.uid();
    if owner != 0 && owner != crate::private::euid() {
        problems.push(format!(
            "it belongs to uid {owner}, who can make it writable at will"
        ));
        fixes.push(format!("`chown root {file}`"));
    }
    // Whoever can write the directory can replace the file, unless the sticky bit reserves
    // that to the file's owner (as in /tmp).
    let dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|real| real.parent().map(Path::to_path_buf));
    if let Some((dir, dir_meta)) = dir.and_then(|d| std::fs::metadata(&d).ok().map(|m| (d, m))) {
        let dir_mode = dir_meta.mode() & 0o7777;
        let shown = dir.display();
        if dir_mode & 0o022 != 0 && dir_mode & 0o1000 == 0 {
            problems.push(format!(
                "its directory {shown} (mode {dir_mode:04o}) lets others replace it"
            ));
            fixes.push(format!("`chmod go-w {shown}`"));
        }
        let dir_owner = dir_meta.uid();
        if dir_owner != 0 && dir_owner != crate::private::euid() {
            problems.push(format!(
                "its directory {shown} belongs to uid {dir_owner}, who can replace it"
            ));
            fixes.push(format!("`chown root {shown}`"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Insecure(format!(
        "{file}: {}: whoever can change a policy file decides what this gateway lets through. \
         Fix it with {}",
        problems.join(", and "),
        fixes.join(" and ")
    )))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn policy_file(name: &str, mode: u32) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "otfw-permissions-{name}-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, "version: 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_its_owner_may_write_a_policy_file() {
        for mode in [0o600, 0o644, 0o444, 0o640] {
            let path = policy_file("private", mode);
            assert_eq!(check(&path), Ok(()), "mode {mode:o}");
            std::fs::remove_file(&path).unwrap();
        }
        for (mode, who) in [
            (0o666, "its group and every user"),
            (0o664, "its group"),
            (0o646, "every user"),
        ] {
            let path = policy_file("writable", mode);
            let err = check(&path).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "{}: mode {mode:04o} lets {who} write it",
                    path.display()
                )),
                "{err}"
            );
            assert!(
                err.contains(&format!("chmod go-w {}", path.display())),
                "{err}"
            );
            assert!(err.contains(OVERRIDE_FLAG), "{err}");
            std::fs::remove_file(&path).unwrap();
        }
        assert_eq!(check(Path::new("/nonexistent/otfw-policy.yaml")), Ok(()));
    }

    #[test]
    fn a_directory_others_can_write_exposes_its_policy_files() {
        let dir = std::env::temp_dir().join(format!("otfw-permissions-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.yaml");
        std::fs::write(&path, "version: 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check(&path).unwrap_err().to_string();
        let shown = std::fs::canonicalize(&dir).unwrap();
        assert!(
            err.contains(&format!(
                "its directory {} (mode 0777) lets others replace it",
                shown.display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("chmod go-w {}", shown.display())),
            "{err}"
        );
        // The sticky bit (as on /tmp) keeps others from replacing a file they do not own.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(check(&path), Ok(()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&path), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_policy_file_of_another_user_is_refused() {
        // Only root can give a file away; the unit tests run as any user.
        if crate::private::euid() != 0 {
            return;
        }
        let path = policy_file("foreign", 0o644);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = check(&path).unwrap_err().to_string();
        assert!(err.contains("it belongs to uid 65534"), "{err}");
        assert!(
            err.contains(&format!("chown root {}", path.display())),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
