//! Root-only files and directories: what the controller keeps in `/run/otfw` (state file,
//! instance lock), `/var/lib/otfw` (lockdown orders, pending applies, the previous policy, the
//! inventory) and its bpffs directory (`/sys/fs/bpf/otfw/<instance>`) decides what a gateway
//! enforces (or maps the plant), so only the user running otfw (root) may read or change it.
//!
//! Modes are given when the file or directory is created (`open(2)`/`mkdir(2)` with 0600/0700),
//! never by a `chmod` afterwards, so there is no moment in which another user could open it.
//! The process umask can only remove bits from these modes, never add any.

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

/// The mode of every directory otfw keeps state in.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file otfw keeps state in.
pub const FILE_MODE: u32 = 0o600;

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Makes `dir` a root-only directory: created with mode 0700 (with any missing parents, also
/// 0700), or, if it exists, checked.
///
/// An existing directory with more than 0700 is tightened to 0700 (and a warning says so)
/// rather than refused: systemd's `RuntimeDirectory=`/`StateDirectory=` create `/run/otfw` and
/// `/var/lib/otfw` 0755 unless the unit says otherwise, and earlier versions of otfw created
/// theirs 0755 too, so refusing would stop an upgraded gateway, whose enforcement then runs
/// without a controller, over a directory only root could write anyway. The files inside are
/// 0600 each. A directory owned by another user is refused instead: that user could put files
/// into it or replace it whatever its mode, so nothing otfw does to it makes it trustworthy.
pub fn dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                bail!(
                    "{} is not a directory; otfw keeps root-only state there: remove it and \
                     start again",
                    dir.display()
                );
            }
            let uid = meta.uid();
            if uid != 0 && uid != euid() {
                bail!(
                    "{} belongs to uid {uid}, not to root: that user could change what otfw \
                     keeps there. Remove it (otfw creates it again, root-only) or give it to \
                     root: `chown root: {}`",
                    dir.display(),
                    dir.display()
                );
            }
            let mode = meta.mode() & 0o7777;
            if mode & !DIR_MODE != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                    .with_context(|| {
                        format!(
                            "tightening {} from mode {mode:04o} to {DIR_MODE:04o}",
                            dir.display()
                        )
                    })?;
                log::warn!(
                    "{} had mode {mode:04o}; tightened to {DIR_MODE:04o} (root only)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .with_context(|| format!("creating {} (needs root)", dir.display())),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Writes `bytes` to `path` whole or not at all: into a new file beside it, created 0600,
/// then renamed over `path`. The directory must exist.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover of a crash may have any mode: `create_new` below makes a fresh file, whose
    // mode is the one given here.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {} (needs root)", tmp.display()))
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .with_context(|| format!("writing {} (needs root)", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Opens `path` for writing without truncating it, creating it 0600 if missing (lock files).
/// One an older version left with a looser mode is tightened: it holds nothing to protect, only
/// its mode is wrong.
pub fn open(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(path)?;
    if file.metadata()?.mode() & 0o7777 != FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("otfw-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn directories_and_their_missing_parents_are_created_0700() {
        let root = scratch("create");
        let leaf = root.join("otfw").join("instance");
        dir(&leaf).unwrap();
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&root.join("otfw")), DIR_MODE);
        assert_eq!(mode(&leaf), DIR_MODE);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_looser_directory_is_tightened_and_a_foreign_one_refused() {
        let root = scratch("loose");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        dir(&root).unwrap();
        assert_eq!(mode(&root), DIR_MODE);
        // Only root can give a directory away; the unit tests run as any user.
        if euid() == 0 {
            std::os::unix::fs::chown(&root, Some(65534), None).unwrap();
            let err = format!("{:#}", dir(&root).unwrap_err());
            assert!(err.contains("belongs to uid 65534, not to root"), "{err}");
            assert!(err.contains("chown root:"), "{err}");
        }
        let file = root.join("file");
        std::fs::write(&file, "").unwrap();
        let err = format!("{:#}", dir(&file).unwrap_err());
        assert!(err.contains("is not a directory"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn files_are_written_0600_whatever_a_leftover_had() {
        let root = scratch("write");
        dir(&root).unwrap();
        let path = root.join("state.json");
        let leftover = root.join("state.json.tmp");
        std::fs::write(&leftover, "half").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o666)).unwrap();
        write(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert_eq!(mode(&path), FILE_MODE);
        assert!(!leftover.exists());
        let lock = root.join("x.lock");
        drop(open(&lock).unwrap());
        assert_eq!(mode(&lock), FILE_MODE);
        let old_lock = root.join("old.lock");
        std::fs::write(&old_lock, "").unwrap();
        std::fs::set_permissions(&old_lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open(&old_lock).unwrap());
        assert_eq!(mode(&old_lock), FILE_MODE);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
