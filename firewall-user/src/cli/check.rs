//! `otfw check FILE...`: the policy linter operators run before committing a policy.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::policy::{self, permissions, Diagnostic, Severity};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the diagnostics as one JSON array on stdout instead of text on stderr.
    #[arg(long)]
    pub json: bool,
}

/// Checks every file; exit code 0 if none has an error (warnings allowed), 1 otherwise.
pub fn run(args: &CheckArgs) -> anyhow::Result<u8> {
    let diagnostics: Vec<Diagnostic> = args
        .files
        .iter()
        .flat_map(|path| {
            // Checkouts in CI belong to whoever cloned them: a warning, not an error, here;
            // `otfw run` and `otfw apply` refuse such a file.
            let permissions = permissions::check(path).err().map(|insecure| Diagnostic {
                file: path.display().to_string(),
                line: 1,
                col: 1,
                severity: Severity::Warning,
                message: format!(
                    "{}; otfw run and otfw apply refuse this file",
                    insecure
                        .0
                        .trim_start_matches(&format!("{}: ", path.display()))
                ),
            });
            let diagnostics = match policy::load(path) {
                Ok(loaded) => loaded.warnings,
                Err(diagnostics) => diagnostics,
            };
            permissions.into_iter().chain(diagnostics)
        })
        .collect();
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(
            &mut out,
            &diagnostics.iter().map(to_json).collect::<Vec<_>>(),
        )
        .context("writing diagnostics to stdout")?;
        writeln!(out).context("writing diagnostics to stdout")?;
    } else {
        let mut err = std::io::stderr().lock();
        for d in &diagnostics {
            writeln!(err, "{d}").context("writing diagnostics to stderr")?;
        }
        writeln!(
            err,
            "{}: {} file{} checked, {errors} error{}, {warnings} warning{}",
            if errors == 0 { "ok" } else { "failed" },
            args.files.len(),
            plural(args.files.len()),
            plural(errors),
            plural(warnings),
        )
        .context("writing summary to stderr")?;
    }
    Ok(if errors == 0 { 0 } else { 1 })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One diagnostic as `--json` prints it (also used by `otfw diff --json`).
pub(crate) fn to_json(d: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "file": d.file,
        "line": d.line,
        "column": d.col,
        "severity": d.severity.to_string(),
        "message": d.message,
    })
}
