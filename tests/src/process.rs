//! Processes started by the lab: each in its own process group, with its output read by
//! threads (so a chatty process never blocks on a full pipe), bounded waits, and a kill of
//! its group when it is dropped.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long to keep collecting output after the process exited (its children may still
/// hold the pipes).
const DRAIN: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(10);

/// Process groups of the lab's processes that are still running, so that the lab can kill
/// them before it deletes their namespaces.
#[derive(Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<HashSet<u32>>>);

impl Registry {
    fn add(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
    }

    fn remove(&self, pid: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    /// SIGKILLs every registered process group and waits until its leader has exited.
    /// Only groups whose leader is not yet reaped are registered, so no PID is recycled.
    pub(crate) fn kill_all(&self) {
        let pids: Vec<u32> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for &pid in &pids {
            signal_group(pid, libc::SIGKILL);
        }
        for pid in pids {
            wait_exited(pid, STOP_GRACE);
        }
    }
}

/// What a finished process printed and how it ended.
#[derive(Debug)]
pub struct ProcessOutput {
    pub status: ExitStatus,
    /// Standard output not yet consumed through [`LabProcess::next_line`].
    pub stdout: String,
    pub stderr: String,
}

impl ProcessOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A running process started by the lab.
pub struct LabProcess {
    child: Child,
    description: String,
    stdout_lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    registry: Registry,
    status: Option<ExitStatus>,
}

impl LabProcess {
    /// Starts `command` in a new process group with stdin closed and output captured.
    pub(crate) fn spawn(mut command: Command, registry: Registry) -> Result<Self> {
        let description = describe(&command);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{description}`"))?;
        registry.add(child.id());

        let (line_sender, stdout_lines) = mpsc::channel();
        let stdout = child.stdout.take().context("stdout was not piped")?;
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = child.stderr.take().context("stderr was not piped")?;
        let stderr_sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = stderr_pipe.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..read]);
                stderr_sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
        });

        Ok(Self {
            child,
            description,
            stdout_lines,
            stderr,
            registry,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line, for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the process wrote to stderr, once it contains `wanted` or `timeout` has passed:
    /// stderr is read by a thread of its own, so a line the process logged before a line on
    /// stdout may not have been collected yet when the test reads that stdout line.
    pub fn stderr_with(&self, wanted: &str, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let text = self.stderr();
            if text.contains(wanted) || std::time::Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The next line of standard output, or `None` if none came within `timeout` or the
    /// process closed its output.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.stdout_lines.recv_timeout(timeout).ok()
    }

    /// Reads standard output until a line satisfies `wanted` and returns it. Fails with the
    /// process's stderr if no such line comes within `timeout` or the output ends.
    pub fn wait_for_line(
        &mut self,
        mut wanted: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(RecvTimeoutError::Timeout) => bail!(
                    "`{}` printed no expected line within {timeout:?}; stdout: {seen:?}; \
                     stderr: {}",
                    self.description,
                    self.stderr().trim_end()
                ),
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "`{}` closed its output before printing the expected line; stdout: \
                     {seen:?}; stderr: {}",
                    self.description,
                    self.stderr().trim_end()
                ),
            }
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit by itself. On timeout it is killed and
    /// the error carries what it printed.
    pub fn wait(mut self, timeout: Duration) -> Result<ProcessOutput> {
        let deadline = Instant::now() + timeout;
        while self.poll_exit().is_none() {
            if Instant::now() >= deadline {
                let output = self.terminate();
                bail!(
                    "`{}` did not finish within {timeout:?} and was killed; stdout: {}; \
                     stderr: {}",
                    self.description,
                    output.stdout.trim_end(),
                    output.stderr.trim_end()
                );
            }
            thread::sleep(POLL);
        }
        Ok(self.collect())
    }

    /// Stops the process group: SIGTERM, then SIGKILL if it has not exited after a grace
    /// period. Returns what it printed.
    pub fn stop(mut self) -> ProcessOutput {
        self.terminate()
    }

    fn terminate(&mut self) -> ProcessOutput {
        if self.poll_exit().is_none() {
            signal_group(self.pid(), libc::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while self.poll_exit().is_none() && Instant::now() < deadline {
                thread::sleep(POLL);
            }
        }
        // Also reaches children that outlived the leader in its group.
        signal_group(self.pid(), libc::SIGKILL);
        if self.status.is_none() {
            self.status = Some(self.child.wait().unwrap_or(ExitStatus::from_raw(-1)));
            self.registry.remove(self.pid());
        }
        self.collect()
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                self.registry.remove(self.pid());
            }
        }
        self.status
    }

    fn collect(&mut self) -> ProcessOutput {
        let mut stdout = String::new();
        let deadline = Instant::now() + DRAIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
                Err(_) => break,
            }
        }
        ProcessOutput {
            status: self.status.unwrap_or(ExitStatus::from_raw(-1)),
            stdout,
            stderr: self.stderr(),
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.terminate();
        }
    }
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; a negative pid addresses the group
    // this lab created with process_group(0), whose leader is not reaped yet.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Waits until `pid` has exited (is a zombie or gone); it has then left its namespaces.
fn wait_exited(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            return;
        }
        thread::sleep(POLL);
    }
}

/// A command line as the operator would type it, for messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Kills processes that an earlier lab run left inside its namespaces.
pub(crate) fn kill_pids(pids: &[u32]) {
    for &pid in pids {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for &pid in pids {
        wait_exited(pid, STOP_GRACE);
    }
}
