//! `cargo xtask compare [--base REV]`: the per-packet cost of this tree against another
//! revision (by default the last commit), measured the way a datapath change should be judged:
//! both builds in the same session, alternating, so that what the machine does meanwhile
//! (frequency, other load, the host of a virtual machine) falls on both alike.
//!
//! The revision is checked out into a temporary git worktree and built into a target directory
//! of its own, kept between comparisons (`target/compare/target`: only the first builds the
//! dependencies). Not this tree's: Cargo names a workspace member's artifacts by its path
//! relative to the workspace, so both trees' crates would share files, and the base's build,
//! newer than this tree's unchanged sources, would be taken as up to date for this tree's next
//! build. Each round runs both builds' quick
//! test-run benchmark (`otfw bench-datapath --quick`), in the order base, this, then this,
//! base, and so on. Per case, the medians of all samples of each build and their 25th-75th
//! percentile ranges; a change whose ranges overlap is reported as within noise. Differences of
//! a few nanoseconds between two builds can be code layout rather than the change: a claim
//! wants the same difference in more than one session.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::bench::{self, Raw, Summary};
use crate::cmd;

#[derive(Args)]
pub struct CompareArgs {
    /// The revision to compare this tree (committed or not) against: anything git takes, e.g.
    /// HEAD~1, main, a commit id.
    #[arg(long, default_value = "HEAD")]
    base: String,
    /// Rounds; each runs both builds once, two timings of every case each.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Runs of a frame per timing.
    #[arg(long, default_value_t = 300_000)]
    repeat: u32,
    /// Only these cases (ids of `otfw bench-datapath`; repeatable). Default: all.
    #[arg(long = "case", value_name = "ID")]
    cases: Vec<String>,
    /// Where the report goes (default: target/bench/compare.md).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(repo: &Path, args: &CompareArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the comparison loads XDP programs (BPF_PROG_TEST_RUN): run it as root");
    }
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let commit = cmd::stdout_of(
        "git",
        [
            "-C",
            &repo.to_string_lossy(),
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{}^{{commit}}", args.base),
        ],
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
    .with_context(|| format!("`{}` is not a revision of {}", args.base, repo.display()))?;
    let short = &commit[..12.min(commit.len())];
    let target = bench::target_dir(repo);
    let dir = target.join("compare");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let this = dir.join("otfw-this");
    copy(&bench::build_otfw(repo, false)?, &this)?;
    let base = dir.join(format!("otfw-{short}"));
    {
        let worktree = Worktree::add(repo, &dir.join(format!("src-{short}")), &commit)?;
        let built = bench::build_otfw_in(&worktree.path, &dir.join("target"), false)
            .with_context(|| format!("building otfw at {short}"))?;
        copy(&built, &base)?;
    }

    let mut runs: BTreeMap<&str, Vec<Raw>> = BTreeMap::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [("base", &base), ("this", &this)]
        } else {
            [("this", &this), ("base", &base)]
        };
        for (label, binary) in order {
            eprintln!("compare: round {} of {}, {label}", round + 1, args.rounds);
            runs.entry(label)
                .or_default()
                .push(bench_once(binary, args, label)?);
        }
    }
    let report = render(&args.base, short, &runs["base"], &runs["this"]);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target.join("bench").join("compare.md"));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    print!("{report}");
    eprintln!("compare: report in {}", out.display());
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// A detached git worktree of one commit, removed when dropped (also when the build fails).
struct Worktree {
    repo: PathBuf,
    path: PathBuf,
}

impl Worktree {
    fn add(repo: &Path, path: &Path, commit: &str) -> Result<Worktree> {
        // A leftover of an interrupted run.
        if path.exists() {
            remove_worktree(repo, path);
        }
        cmd::run(Command::new("git").current_dir(repo).args([
            "worktree",
            "add",
            "--detach",
            "--quiet",
            &path.to_string_lossy(),
            commit,
        ]))
        .context("checking the base revision out into a worktree")?;
        Ok(Worktree {
            repo: repo.to_path_buf(),
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        remove_worktree(&self.repo, &self.path);
    }
}

fn remove_worktree(repo: &Path, path: &Path) {
    let removed = Command::new("git")
        .current_dir(repo)
        .args(["worktree", "remove", "--force", &path.to_string_lossy()])
        .stdin(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !removed {
        let _ = std::fs::remove_dir_all(path);
        let _ = Command::new("git")
            .current_dir(repo)
            .args(["worktree", "prune"])
            .status();
    }
}

/// One quick test-run benchmark of `binary`.
fn bench_once(binary: &Path, args: &CompareArgs, label: &str) -> Result<Raw> {
    let mut command = Command::new(binary);
    command.args([
        "bench-datapath",
        "--quick",
        "--rounds",
        "2",
        "--repeat",
        &args.repeat.to_string(),
    ]);
    for case in &args.cases {
        command.args(["--case", case]);
    }
    let output = cmd::capture(&mut command)?;
    if !output.status.success() {
        bail!(
            "the {label} build's benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the {label} build's benchmark output"))
}

/// One case's timings (nanoseconds) over all runs of one build: the smallest policy's
/// samples, the yardstick's too.
fn timings(runs: &[Raw], id: &str) -> (Vec<f64>, Vec<f64>) {
    let mut otfw = Vec::new();
    let mut baseline = Vec::new();
    for raw in runs {
        let Some(case) = raw.cases.iter().position(|c| c.id == id) else {
            continue;
        };
        for s in raw.samples.iter().filter(|s| s.case == case && s.size == 0) {
            otfw.push(s.otfw_ns);
            baseline.push(s.baseline_ns);
        }
    }
    (otfw, baseline)
}

fn render(base_rev: &str, short: &str, base: &[Raw], this: &[Raw]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# This tree against {base_rev} ({short})\n");
    let _ = writeln!(
        out,
        "Per-packet cost in BPF_PROG_TEST_RUN (`otfw bench-datapath --quick`, the smallest \
         policy), both builds alternating in {} rounds of two timings each; medians with the \
         25th-75th percentile range. *Within noise*: the ranges overlap. The trivial program's \
         time is the machine's yardstick: if it moved between the builds, so did the machine.\n",
        base.len()
    );
    let _ = writeln!(
        out,
        "| case | base ns | this ns | change | trivial program, base / this |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let ids: Vec<(String, String)> = this
        .first()
        .map(|r| {
            r.cases
                .iter()
                .map(|c| (c.id.clone(), c.title.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (id, title) in ids {
        let (b, b_yard) = timings(base, &id);
        let (t, t_yard) = timings(this, &id);
        let (b, t) = (Summary::of(b), Summary::of(t));
        let (b_yard, t_yard) = (Summary::of(b_yard), Summary::of(t_yard));
        if b.n == 0 {
            let _ = writeln!(out, "| {title} | (no such case) | {} | - | - |", range(&t));
            continue;
        }
        let delta = t.median - b.median;
        let verdict = if t.p75 < b.p25 || t.p25 > b.p75 {
            format!("**{delta:+.1} ns ({:+.1}%)**", delta / b.median * 100.0)
        } else {
            format!("{delta:+.1} ns, within noise")
        };
        let _ = writeln!(
            out,
            "| {title} | {} | {} | {verdict} | {:.1} / {:.1} |",
            range(&b),
            range(&t),
            b_yard.median,
            t_yard.median
        );
    }
    out
}

fn range(s: &Summary) -> String {
    format!("{:.1} ({:.1}-{:.1})", s.median, s.p25, s.p75)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(samples: &[(usize, f64)]) -> Raw {
        let json = format!(
            r#"{{"repeat":1,"rounds":1,"cpus":1,"kernel":"k","verified_instructions":null,
            "cases":[{{"id":"a","title":"case a","inspected":true,"note":"","frame_len":60}}],
            "sizes":[],"samples":[{}],
            "control":{{"conduits":0,"prefixes":0,"yaml_bytes":0,"compile_ms":[],"swap_ms":[],
            "phases_ms":[],"map_bytes":[]}}}}"#,
            samples
                .iter()
                .map(|(size, ns)| format!(
                    r#"{{"round":0,"size":{size},"case":0,"otfw_ns":{ns},"baseline_ns":7.0}}"#
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        serde_json::from_str(&json).expect("test input")
    }

    #[test]
    fn a_change_is_claimed_only_where_the_ranges_part() {
        let base = [raw(&[(0, 100.0), (0, 101.0), (0, 102.0), (1, 500.0)])];
        let faster = [raw(&[(0, 90.0), (0, 91.0), (0, 92.0)])];
        let report = render("HEAD", "abc", &base, &faster);
        assert!(report.contains("**-10.0 ns (-9.9%)**"), "{report}");
        // The larger policy's samples are not mixed in.
        assert!(
            report.contains("| case a | 101.0 (100.5-101.5) |"),
            "{report}"
        );
        let same = [raw(&[(0, 100.5), (0, 101.5), (0, 99.5)])];
        let report = render("HEAD", "abc", &base, &same);
        assert!(report.contains("within noise"), "{report}");
    }

    #[test]
    fn a_case_the_base_lacks_is_named() {
        let base = [raw(&[])];
        let this = [raw(&[(0, 50.0)])];
        let report = render("HEAD~3", "abc", &base, &this);
        assert!(report.contains("(no such case)"), "{report}");
    }
}
