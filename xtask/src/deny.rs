//! `cargo deny check` for `cargo xtask test`: the licenses, duplicate versions and sources of
//! every dependency (rules and reasons in `deny.toml`), and RustSec's security advisories.
//!
//! The advisory database is a git repository that cargo deny fetches from GitHub. Where that
//! cannot be reached (a machine that reaches only package registries), the advisories are
//! checked against the copy an earlier fetch left, if any, and otherwise skipped, saying so
//! loudly: the other checks need no network and always run.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd;

pub fn check(repo: &Path) -> Result<()> {
    // The duplicate versions are known and explained in deny.toml: one line each, not their
    // whole inclusion graphs.
    run(
        repo,
        &[
            "deny",
            "check",
            "--hide-inclusion-graph",
            "bans",
            "licenses",
            "sources",
        ],
    )?;
    let mut fetch = cmd::cargo(repo, &["deny", "fetch", "db"], &[])?;
    let fetched = cmd::capture(&mut fetch)?;
    if fetched.status.success() {
        return run(repo, &["deny", "check", "advisories", "--disable-fetch"]);
    }
    let why = String::from_utf8_lossy(&fetched.stderr);
    let why = why
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no reason given");
    if earlier_copy()? {
        println!(
            "test: cargo deny: the advisory database cannot be fetched ({why}); checking against \
             the copy of an earlier fetch, which may miss the newest advisories"
        );
        return run(repo, &["deny", "check", "advisories", "--disable-fetch"]);
    }
    println!(
        "test: cargo deny: ADVISORIES NOT CHECKED: the RustSec advisory database cannot be \
         fetched ({why}) and no earlier copy is here. Licenses, duplicate versions and sources \
         were checked; run `cargo deny check advisories` where GitHub is reachable"
    );
    Ok(())
}

/// Whether an earlier `cargo deny fetch` left a database (cargo deny keeps it in
/// `$CARGO_HOME/advisory-dbs/<name>-<hash>/`, advisories under `crates/`).
fn earlier_copy() -> Result<bool> {
    let dbs = cmd::cargo_home()?.join("advisory-dbs");
    let Ok(entries) = std::fs::read_dir(&dbs) else {
        return Ok(false);
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .any(|e| e.path().join("crates").is_dir()))
}

fn run(repo: &Path, args: &[&str]) -> Result<()> {
    let mut command = cmd::cargo(repo, args, &[])?;
    println!("test: running {}", cmd::display(&command));
    cmd::run(&mut command).context("cargo deny found a problem (rules and reasons: deny.toml)")
}
