//! `otfw diff OLD NEW`: what a policy change does to what is allowed, for review and CI.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::policy::diff::{self, Change, Effect};
use crate::policy::{self, Diagnostic};

/// Shown by `otfw diff --help`.
pub const EXIT_STATUS: &str = "\
Exit status: 0 when the policies allow the same (no effective change), 1 when they differ, \
2 when either file has errors (printed as file:line:col like `otfw check`).";

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The policy before the change.
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The policy after the change.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// Print one JSON document on stdout: `{old, new, errors, changes}`, each change with
    /// `kind`, `path`, `before`, `after`, `effect` and `text` (see policies/README.md).
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints, in this order of keys.
#[derive(Serialize)]
struct Document<'a> {
    old: String,
    new: String,
    /// As `otfw check --json` prints them; `changes` is empty when there is any.
    errors: Vec<serde_json::Value>,
    changes: &'a [Change],
}

/// Loads both policies as `otfw check` does and prints their differences; see [`EXIT_STATUS`].
pub fn run(args: &DiffArgs) -> anyhow::Result<u8> {
    let (old, new) = (policy::load(&args.old), policy::load(&args.new));
    let errors: Vec<Diagnostic> = [&old, &new]
        .into_iter()
        .filter_map(|loaded| loaded.as_ref().err())
        .flatten()
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    let changes = match (old, new) {
        (Ok(old), Ok(new)) => diff::diff(&old.policy, &new.policy),
        _ => Vec::new(),
    };
    if args.json {
        let document = Document {
            old: args.old.display().to_string(),
            new: args.new.display().to_string(),
            errors: errors.iter().map(super::check::to_json).collect(),
            changes: &changes,
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &document).context("writing the diff to stdout")?;
        writeln!(out).context("writing the diff to stdout")?;
    } else if errors.is_empty() {
        let mut out = std::io::stdout().lock();
        for change in &changes {
            writeln!(out, "{}", change.text).context("writing the diff to stdout")?;
        }
        writeln!(std::io::stderr(), "{}", summary(&changes)).context("writing to stderr")?;
    } else {
        let mut err = std::io::stderr().lock();
        for d in &errors {
            writeln!(err, "{d}").context("writing diagnostics to stderr")?;
        }
    }
    Ok(match (errors.is_empty(), changes.is_empty()) {
        (false, _) => 2,
        (true, true) => 0,
        (true, false) => 1,
    })
}

/// `3 changes: 2 allowing more, 1 allowing less` / `no effective change`.
fn summary(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no effective change".to_string();
    }
    let count = |effect: Option<Effect>| changes.iter().filter(|c| c.effect == effect).count();
    let parts: Vec<String> = [
        (Some(Effect::AllowsMore), "allowing more"),
        (Some(Effect::AllowsLess), "allowing less"),
        (Some(Effect::Neutral), "neutral"),
        (None, "undecided"),
    ]
    .into_iter()
    .filter(|(effect, _)| count(*effect) > 0)
    .map(|(effect, what)| format!("{} {what}", count(effect)))
    .collect();
    let n = changes.len();
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} change{plural}: {}", parts.join(", "))
}
