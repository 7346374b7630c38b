//! `cargo xtask fuzz`: runs the libFuzzer targets of `fuzz/` (cargo-fuzz, nightly) against the
//! parsers of untrusted input in user space, one target after the other, each for a fixed
//! time, and reports per target the inputs run and the corpus size. A crash (a panic, a broken
//! invariant) fails the command with the input that caused it, kept under
//! `fuzz/artifacts/TARGET/`.
//!
//! Corpora: `fuzz/seeds/TARGET/` holds the checked-in seeds and is only read;
//! `fuzz/corpus/TARGET/` (not checked in) keeps what runs found, so the next run starts there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{cmd, setup};

/// The fuzz targets (`fuzz/fuzz_targets/NAME.rs`), in the order they run.
pub const TARGETS: &[&str] = &[
    "policy",
    "capture",
    "inventory",
    "datapath_records",
    "modbus",
    "enip",
];

/// Seconds per target of `cargo xtask fuzz`.
const DEFAULT_SECONDS: u64 = 300;
/// Seconds per target of the run inside `cargo xtask test`.
pub const TEST_SECONDS: u64 = 25;

#[derive(Args)]
pub struct FuzzArgs {
    /// Run only this target (policy, capture, inventory, datapath_records, modbus, enip).
    #[arg(long)]
    target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// Skip `cargo xtask setup` (when the prerequisites are known to be there).
    #[arg(long)]
    no_setup: bool,
}

pub fn run(repo: &Path, args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(name) => match TARGETS.iter().find(|t| **t == name.as_str()) {
            Some(target) => vec![*target],
            None => bail!(
                "no fuzz target `{name}`; the targets are {}",
                TARGETS.join(", ")
            ),
        },
        None => TARGETS.to_vec(),
    };
    if !args.no_setup {
        setup::run(repo)?;
    }
    fuzz(repo, &targets, args.seconds)
}

/// Builds the targets, then runs each for `seconds`; fails on the first crash.
pub fn fuzz(repo: &Path, targets: &[&str], seconds: u64) -> Result<()> {
    let fuzz_dir = repo.join("fuzz");
    let mut build = cargo_fuzz(&fuzz_dir)?;
    build.arg("build").args(SANITIZER);
    // `cargo fuzz build` takes one target, or none for all of them.
    if let [target] = targets {
        build.arg(target);
    }
    println!("fuzz: building the targets: {}", cmd::display(&build));
    cmd::run(&mut build).context("building the fuzz targets failed")?;
    let logs = repo.join("target").join("fuzz");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    for target in targets {
        run_target(&fuzz_dir, &logs, target, seconds)?;
    }
    Ok(())
}

/// No sanitizer: the parsers are safe Rust, so a bounds error is a panic libFuzzer sees
/// anyway, and the run gets about twice the inputs. Overflow checks and debug assertions stay
/// on (cargo-fuzz's default).
const SANITIZER: [&str; 2] = ["--sanitizer", "none"];

/// `cargo fuzz` on the nightly toolchain, in `fuzz/`, with cargo's bin directory first on PATH
/// (firewall-user's build script links the eBPF object with setup's bpf-linker).
fn cargo_fuzz(fuzz_dir: &Path) -> Result<Command> {
    let mut command = Command::new(cmd::cargo_home()?.join("bin").join("cargo"));
    command
        .current_dir(fuzz_dir)
        .arg("fuzz")
        // Run from `cargo xtask`, these name the stable toolchain that runs it.
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env("PATH", cmd::path_with(&[cmd::cargo_home()?.join("bin")])?);
    Ok(command)
}

fn run_target(fuzz_dir: &Path, logs: &Path, target: &str, seconds: u64) -> Result<()> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = cargo_fuzz(fuzz_dir)?;
    command
        .arg("run")
        .args(SANITIZER)
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1");
    println!("fuzz: {target}: {seconds} s ({})", cmd::display(&command));
    let status = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("could not start `{}`", cmd::display(&command)))?;
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    let run_log = RunLog::parse(&output);
    let corpus_files = count_files(&corpus) + count_files(&seeds);
    if !status.success() {
        for line in &run_log.panic {
            eprintln!("  {line}");
        }
        let input = run_log
            .crash_input
            .as_deref()
            .unwrap_or("fuzz/artifacts/TARGET/crash-...");
        bail!(
            "fuzz target {target} crashed after {} inputs ({status}); the input is {input} \
             and the whole log {}; reproduce it in {} with \
             `cargo +nightly fuzz run -s none {target} {input}`",
            run_log.inputs_text(),
            log_path.display(),
            fuzz_dir.display(),
        );
    }
    println!(
        "fuzz: {target}: {} inputs run in {seconds} s, corpus {corpus_files} inputs{}; log {}",
        run_log.inputs_text(),
        run_log
            .done
            .as_deref()
            .map(|line| format!(" (libFuzzer: {line})"))
            .unwrap_or_default(),
        log_path.display(),
    );
    Ok(())
}

/// What a run's log says: the inputs run, the last status line, and for a crash the panic
/// and the input that caused it.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunLog {
    /// `stat::number_of_executed_units`, or the count of the last status line.
    inputs: Option<u64>,
    /// The last status line (`#N DONE cov: ... corp: ...`), without the count.
    done: Option<String>,
    /// The panic message (`thread ... panicked at FILE:LINE:COL:` and the message lines).
    panic: Vec<String>,
    /// Where libFuzzer wrote the crashing input (`Test unit written to PATH`).
    crash_input: Option<String>,
}

impl RunLog {
    fn parse(output: &str) -> RunLog {
        let mut log = RunLog::default();
        let mut lines = output.lines();
        while let Some(line) = lines.next() {
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                log.inputs = n.trim().parse().ok();
            } else if let Some((count, status)) = line
                .strip_prefix('#')
                .and_then(|rest| rest.split_once(char::is_whitespace))
            {
                // `#1234\tDONE   cov: 56 ft: 78 corp: 9/1Kb ...` (also INITED, NEW, pulse)
                if let Ok(count) = count.parse::<u64>() {
                    log.inputs = log.inputs.max(Some(count));
                    log.done = Some(status.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            } else if line.contains(" panicked at ") && log.panic.is_empty() {
                log.panic.push(line.to_string());
                // The message ends where the backtrace, its note or libFuzzer's report begins.
                let message = lines.by_ref().take_while(|l| {
                    !["stack backtrace:", "note:", "=="]
                        .iter()
                        .any(|start| l.starts_with(start))
                });
                log.panic.extend(message.map(str::to_string));
            } else if let Some((_, path)) = line.split_once("Test unit written to ") {
                log.crash_input = Some(path.trim().to_string());
            }
        }
        log
    }

    fn inputs_text(&self) -> String {
        self.inputs
            .map_or_else(|| "an unknown number of".to_string(), |n| n.to_string())
    }
}

fn count_files(dir: &PathBuf) -> usize {
    fs::read_dir(dir).map_or(0, |entries| entries.flatten().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_inputs_run_and_the_last_status_line() {
        let output = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 3/100b exec/s: 0 rss: 40Mb\n\
                      #4096\tpulse  cov: 12 ft: 13 corp: 4/120b exec/s: 2048 rss: 41Mb\n\
                      #5000\tDONE   cov: 12 ft: 13 corp: 4/120b lim: 4 exec/s: 2500 rss: 41Mb\n\
                      Done 5000 runs in 2 second(s)\nstat::number_of_executed_units: 5003\n";
        let log = RunLog::parse(output);
        assert_eq!(log.inputs, Some(5003));
        assert!(log.panic.is_empty() && log.crash_input.is_none());
        assert_eq!(
            log.done.as_deref(),
            Some("DONE cov: 12 ft: 13 corp: 4/120b lim: 4 exec/s: 2500 rss: 41Mb")
        );
    }

    #[test]
    fn reads_the_panic_and_the_input_of_a_crash() {
        let output = "#8701\tNEW    cov: 5013 corp: 463/521Kb\n\n\
                      thread '<unnamed>' (18623) panicked at fuzz_targets/policy.rs:23:9:\n\
                      diagnostic outside the file\nstack backtrace:\n   0: x\n\
                      ==18623== ERROR: libFuzzer: deadly signal\n\
                      artifact_prefix='/r/fuzz/artifacts/policy/'; Test unit written to \
                      /r/fuzz/artifacts/policy/crash-fe14\n";
        let log = RunLog::parse(output);
        assert_eq!(log.inputs, Some(8701));
        assert_eq!(
            log.panic,
            [
                "thread '<unnamed>' (18623) panicked at fuzz_targets/policy.rs:23:9:",
                "diagnostic outside the file"
            ]
        );
        assert_eq!(
            log.crash_input.as_deref(),
            Some("/r/fuzz/artifacts/policy/crash-fe14")
        );
    }

    #[test]
    fn a_crash_still_counts_the_inputs_of_the_status_lines() {
        let output = "#2\tINITED cov: 10 corp: 3/100b\n#777\tNEW    cov: 11 corp: 4/1b\n\
                      thread '<unnamed>' panicked at src/x.rs:1:1:\n==1== ERROR: libFuzzer: deadly signal\n";
        let log = RunLog::parse(output);
        assert_eq!(log.inputs, Some(777));
        assert_eq!(log.inputs_text(), "777");
        assert_eq!(log.panic, ["thread '<unnamed>' panicked at src/x.rs:1:1:"]);
    }
}
