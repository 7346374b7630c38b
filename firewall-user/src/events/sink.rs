//! Where event lines go: stdout always, and a file when `--events-file` names one. Lines
//! written and failed writes are counted for the metrics.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write as _,
    path::Path,
    sync::Mutex,
};

use anyhow::{Context as _, Result};

#[derive(Default)]
struct Sink {
    file: Option<File>,
    counts: Written,
}

/// Event lines written so far, by event type, and writes that failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub by_event: BTreeMap<String, u64>,
    pub failed: u64,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Appends every later event line to `path` too. A missing file is created 0600 whatever the
/// umask (the events record what the gateway denied, and from where); an existing file keeps
/// its mode, so that an operator can let a log shipper's group read it, but one that users
/// other than its owner can write is refused: the record of what was denied must not be
/// forgeable.
pub fn open_file(path: &Path) -> Result<()> {
    let file = open_for_append(path)?;
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    sink.get_or_insert_with(Sink::default).file = Some(file);
    Ok(())
}

fn open_for_append(path: &Path) -> Result<File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::private::FILE_MODE)
        .open(path)
        .with_context(|| format!("opening the events file {}", path.display()))?;
    let mode = file
        .metadata()
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .mode();
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "the events file {} can be written by users other than its owner (mode {:o}): \
             anyone could add or forge event lines; `chmod go-w {}` and start again",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    Ok(file)
}

/// Writes one line (with its newline) to stdout and the events file.
pub(super) fn write(event: &str, line: &str) {
    let mut guard = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let sink = guard.get_or_insert_with(Sink::default);
    let mut ok = {
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
    };
    if let Some(file) = sink.file.as_mut() {
        ok &= file.write_all(line.as_bytes()).is_ok();
    }
    *sink.counts.by_event.entry(event.to_string()).or_default() += 1;
    if !ok {
        sink.counts.failed += 1;
    }
}

pub fn written() -> Written {
    SINK.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|s| s.counts.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_new_events_file_is_owner_only_and_a_writable_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("otfw-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        drop(open_for_append(&path).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600, "created with the umask's mode");

        // An operator's choice to let a group read it stands.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        drop(open_for_append(&path).unwrap());
        assert_eq!(mode(&path), 0o640);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let error = open_for_append(&path).unwrap_err().to_string();
        assert!(error.contains("chmod go-w"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
