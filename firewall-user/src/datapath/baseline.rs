//! The trivial XDP program the benchmark compares `otfw` with (firewall-ebpf's `baseline` bin:
//! Ethernet/IPv4/TCP parsing and one per-CPU counter). Loaded on its own, never attached.

use anyhow::{Context as _, Result};
use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};

use super::test_run::{time_program, TimedRun};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));

const PROGRAM: &str = "baseline";

pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    pub fn load() -> Result<Baseline> {
        super::raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("loading the baseline XDP object (needs root and BPF)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("the baseline program is missing from its object")?
            .try_into()
            .context("the baseline program is not an XDP program")?;
        program
            .load()
            .context("the kernel verifier rejected the baseline program")?;
        Ok(Baseline { ebpf })
    }

    /// Attaches the program to `iface` (for the bridge measurement: the XDP mode's own cost
    /// without otfw's work). Detached when the `Baseline` is dropped or the process exits.
    pub fn attach(&mut self, iface: &str, native: bool) -> Result<()> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("the baseline program was checked at load");
        let mode = if native {
            XdpMode::Driver
        } else {
            XdpMode::Skb
        };
        program
            .attach(iface, mode)
            .with_context(|| format!("attaching the baseline program to {iface}"))?;
        Ok(())
    }

    /// Runs `frame` through the program `repeat` times in the kernel; see
    /// [`super::Datapath::time_frame`].
    pub fn time_frame(&self, frame: &[u8], repeat: u32) -> Result<TimedRun> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("the baseline program was checked at load");
        time_program(program, frame, repeat)
    }
}

impl TimedRun {
    /// Nanoseconds per run (the kernel reports whole nanoseconds).
    pub fn nanos(&self) -> f64 {
        self.per_run.as_nanos() as f64
    }
}
