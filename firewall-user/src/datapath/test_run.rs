//! Running frames through the loaded program with BPF_PROG_TEST_RUN: the real verifier-checked
//! code and the real maps, so flow state carries from one frame to the next.

use anyhow::{Context as _, Result};
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use firewall_common::{config::FLAG_TRACE, counters::Trace, reason::Reason};

use super::Datapath;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The program's decision for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The XDP action: 1 drop, 2 pass, 3 tx (a reset sent back).
    pub action: u32,
    pub reason: Reason,
    pub verdict: u8,
    pub conduit_id: u16,
    pub epoch: u32,
    /// The frame as the program left it (a TCP reset for `XDP_TX`).
    pub frame_out: Vec<u8>,
}

impl Decision {
    pub fn passed(&self) -> bool {
        self.action == XDP_PASS
    }
    pub fn dropped(&self) -> bool {
        self.action == XDP_DROP
    }
    pub fn reset(&self) -> bool {
        self.action == XDP_TX
    }
}

impl Datapath {
    /// Turns per-decision tracing on: needed by `run_frame`. Off on a live gateway.
    pub fn enable_trace(&mut self) -> Result<()> {
        self.set_config_flags(FLAG_TRACE, 0)
    }

    /// Runs one frame through the program and returns its decision. The calling thread is
    /// pinned to one CPU so that the per-CPU trace entry read back is the one just written.
    pub fn run_frame(&mut self, frame: &[u8]) -> Result<Decision> {
        let cpu = pin_to_current_cpu()?;
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let result = self.program().test_run(opts).context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        let per_cpu = self.maps.trace.get(&0, 0).context("reading TRACE")?;
        let trace: Trace = per_cpu.get(cpu).copied().unwrap_or_default();
        Ok(Decision {
            action: result.return_value,
            reason: Reason::from_u8(trace.reason).unwrap_or(Reason::None),
            verdict: trace.verdict,
            conduit_id: trace.conduit,
            epoch: trace.epoch,
            frame_out: out,
        })
    }
}

/// What BPF_PROG_TEST_RUN measured for a frame run `repeat` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedRun {
    /// The XDP action of the (last) run.
    pub action: u32,
    /// The kernel's average time per run.
    pub per_run: Duration,
}

impl Datapath {
    /// Runs `frame` through the program `repeat` times inside the kernel (one syscall) and
    /// returns the average time per run. Maps are live: flows and counters change as for real
    /// traffic, so a frame of a tracked flow stays on the tracked-flow path. Turn tracing off
    /// first, or its extra map write is measured too.
    pub fn time_frame(&self, frame: &[u8], repeat: u32) -> Result<TimedRun> {
        time_program(self.program(), frame, repeat)
    }
}

pub(super) fn time_program(program: &Xdp, frame: &[u8], repeat: u32) -> Result<TimedRun> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat.max(1);
    let result = program
        .test_run(opts)
        .context("BPF_PROG_TEST_RUN with repeat")?;
    Ok(TimedRun {
        action: result.return_value,
        per_run: result.duration,
    })
}

/// Pins the calling thread to the CPU it runs on and returns that CPU.
fn pin_to_current_cpu() -> Result<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    anyhow::ensure!(cpu >= 0, "sched_getcpu failed");
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(cpu as usize)
}
