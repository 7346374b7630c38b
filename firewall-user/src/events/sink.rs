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

/// Appends every later event line to `path` too (created if missing).
pub fn open_file(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the events file {}", path.display()))?;
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    sink.get_or_insert_with(Sink::default).file = Some(file);
    Ok(())
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
