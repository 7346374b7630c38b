//! Running external commands with errors that say what failed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// A command line as the operator would type it, for messages.
pub fn display(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `command` with stdin closed and its output passed through; fails unless it exits 0.
pub fn run(command: &mut Command) -> Result<()> {
    let line = display(command);
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` with stdin closed and captures its output, whatever its exit status.
pub fn capture(command: &mut Command) -> Result<Output> {
    let line = display(command);
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))
}

/// Standard output of `program args...` if it could be started and exited 0.
pub fn stdout_of<I, S>(program: impl AsRef<OsStr>, args: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Cargo's home (`$CARGO_HOME`, else `~/.cargo`): where `cargo install` puts binaries.
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// `PATH` with `dirs` in front (each only once), for child processes.
pub fn path_with(dirs: &[PathBuf]) -> Result<std::ffi::OsString> {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let rest = std::env::split_paths(&current).filter(|dir| !dirs.contains(dir));
    std::env::join_paths(dirs.iter().cloned().chain(rest)).context("PATH contains a ':'")
}

/// A cargo command on the workspace's default members (`cargo_args`, then `-- passthrough`
/// if any) with cargo's bin directory first on PATH: firewall-user's build script links the
/// eBPF object with the bpf-linker that setup installs there.
pub fn cargo(repo: &Path, cargo_args: &[&str], passthrough: &[String]) -> Result<Command> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(repo).args(cargo_args);
    if !passthrough.is_empty() {
        command.arg("--").args(passthrough);
    }
    command.env("PATH", path_with(&[cargo_home()?.join("bin")])?);
    Ok(command)
}
