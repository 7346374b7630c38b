//! Running frames through the loaded program with BPF_PROG_TEST_RUN: the real verifier-checked
//! code and the real maps, so flow state carries from one frame to the next.

use anyhow::{Context as _, Result};
use std::time::Duration;

use aya::{
    maps::{MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunOptions, Xdp},
};
use firewall_common::{
    config::FLAG_TRACE,
    counters::{
        conduit_stats_index, reason_index, Trace, PATH_DENIAL_CACHED, VERDICT_DROP, VERDICT_NAMES,
    },
    enip::{EnipTrace, REC_CIP, REC_COMMAND, REC_IO, REC_SYMBOLIC},
    flow::{DenialMemo, FlowKey, DENIAL_MEMO_SLOTS},
    modbus::{AduTrace, ADU_REQUEST, KIND_NAMES},
    reason::Reason,
    slot_of,
};
use serde::Serialize;

use super::Datapath;
use crate::policy::enip::SYMBOL_CLASS;

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
    /// The Modbus ADUs whose header the inspector decided in this frame.
    pub adus: Vec<Adu>,
    /// The EtherNet/IP requests the inspector saw in this frame (encapsulation commands, CIP
    /// requests including embedded ones, implicit I/O datagrams).
    pub cip: Vec<CipRequest>,
}

/// One EtherNet/IP request seen in a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CipRequest {
    /// `command` (an encapsulation message), `cip` (a CIP request) or `io` (implicit I/O).
    pub kind: &'static str,
    pub command: String,
    /// The service name resolved against the class or tag path (empty for `command`).
    pub service: String,
    #[serde(skip)]
    pub code: u8,
    pub class: u16,
    pub instance: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// 0 for the top-level request, 1 inside MSP / Unconnected Send, ...
    pub depth: u8,
    /// As for `Adu::verdict`.
    pub verdict: &'static str,
    pub reason: &'static str,
}

/// One Modbus ADU seen in a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Adu {
    /// `request`, `response`, `exception` or `unsolicited`.
    pub direction: &'static str,
    pub unit: u8,
    pub function: u8,
    pub address: u16,
    pub quantity: u16,
    /// Diagnostics sub-function, MEI type, or exception code.
    pub sub: u16,
    /// What happened to the ADU: the frame's verdict (`pass`, `drop`, `reset`), except that
    /// in monitor mode an allowed ADU is `pass` and a refused one `monitor`, and in a frame
    /// whose refused requests were neutralised (`refuse`) the allowed ones are `pass`.
    pub verdict: &'static str,
    /// Why a request was refused (`none` when allowed).
    pub reason: &'static str,
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

/// `Trace::verdict` of the sentinel written before each run: no real verdict has this value.
const UNTRACED: u8 = u8::MAX;

/// The name of a frame's verdict as the trace holds it (`unknown` for a value no verdict has).
fn verdict_name(verdict: u8) -> &'static str {
    VERDICT_NAMES
        .get(verdict as usize)
        .copied()
        .unwrap_or("unknown")
}

/// The Modbus ADUs the program recorded for the frame `trace` describes: the first
/// `trace.adus` entries of `recorded` (at most as many as it holds), with the frame's verdict.
pub fn traced_adus(trace: &Trace, recorded: &AduTrace) -> Vec<Adu> {
    let frame_verdict = verdict_name(trace.verdict);
    recorded
        .adus
        .iter()
        .take(trace.adus as usize)
        .map(|a| {
            let request = a.kind == ADU_REQUEST;
            Adu {
                direction: if request {
                    "request"
                } else {
                    KIND_NAMES
                        .get(a.kind as usize)
                        .copied()
                        .unwrap_or("unknown")
                },
                unit: a.unit,
                function: a.function,
                address: a.address,
                quantity: a.quantity,
                sub: a.sub,
                verdict: if matches!(frame_verdict, "monitor" | "refuse") && a.reason == 0 {
                    "pass"
                } else {
                    frame_verdict
                },
                reason: Reason::from_u8(a.reason).map_or("unknown", Reason::name),
            }
        })
        .collect()
}

/// The EtherNet/IP requests the program recorded for the frame `trace` describes: the first
/// `trace.records` entries of `recorded` (at most as many as it holds), with names resolved.
pub fn traced_cip_requests(trace: &Trace, recorded: &EnipTrace) -> Vec<CipRequest> {
    let frame_verdict = verdict_name(trace.verdict);
    recorded
        .records
        .iter()
        .take(trace.records as usize)
        .map(|r| {
            let symbolic = r.flags & REC_SYMBOLIC != 0;
            CipRequest {
                kind: match r.kind {
                    REC_COMMAND => "command",
                    REC_CIP => "cip",
                    _ => "io",
                },
                command: if r.kind == REC_IO {
                    String::new()
                } else {
                    super::enip::command_name(r.command)
                },
                service: if r.kind == REC_CIP {
                    super::enip::service_name(r.service, r.class, symbolic)
                } else {
                    String::new()
                },
                code: r.service,
                class: if symbolic { SYMBOL_CLASS } else { r.class },
                instance: r.instance,
                tag: super::enip::tag(r),
                depth: r.depth,
                verdict: if matches!(frame_verdict, "monitor" | "refuse") && r.reason == 0 {
                    "pass"
                } else {
                    frame_verdict
                },
                reason: Reason::from_u8(r.reason).map_or("unknown", Reason::name),
            }
        })
        .collect()
}

impl Datapath {
    /// Turns per-decision tracing on: needed by `run_frame`. Off on a live gateway.
    pub fn enable_trace(&mut self) -> Result<()> {
        self.set_config_flags(FLAG_TRACE, 0)
    }

    /// Runs one frame through the program and returns its decision. The calling thread is
    /// pinned to one CPU so that the per-CPU trace entry read back is the one just written.
    pub fn run_frame(&mut self, frame: &[u8]) -> Result<Decision> {
        self.run_frame_on(frame, None)
    }

    /// `run_frame` with the frame arriving on the port with `ingress_ifindex` (anti-spoofing
    /// looks at it); `None` leaves the choice to the kernel, which uses the loopback device.
    /// Fails if the program recorded no decision (tracing off) rather than returning the
    /// previous frame's.
    pub fn run_frame_on(&mut self, frame: &[u8], ingress_ifindex: Option<u32>) -> Result<Decision> {
        let cpu = pin_to_current_cpu()?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting CPUs")?;
        let sentinel = Trace {
            verdict: UNTRACED,
            ..Trace::default()
        };
        self.maps
            .trace
            .set(0, PerCpuValues::try_from(vec![sentinel; cpus])?, 0)
            .context("clearing TRACE")?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (offsets into the frame for the first three).
        let xdp_md: Vec<u8> = [0, frame.len() as u32, 0, ingress_ifindex.unwrap_or(0), 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        if ingress_ifindex.is_some() {
            opts.ctx_in = Some(&xdp_md);
        }
        let result = self.program().test_run(opts).context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        let per_cpu = self.maps.trace.get(&0, 0).context("reading TRACE")?;
        let trace: Trace = per_cpu.get(cpu).copied().unwrap_or_default();
        anyhow::ensure!(
            trace.verdict != UNTRACED,
            "the program recorded no decision: call enable_trace() after installing a policy"
        );
        let adus = if trace.adus == 0 {
            Vec::new()
        } else {
            let recorded = self
                .maps
                .modbus_adus
                .get(&0, 0)
                .context("reading MODBUS_ADUS")?
                .get(cpu)
                .copied()
                .unwrap_or_default();
            traced_adus(&trace, &recorded)
        };
        let cip = if trace.records == 0 {
            Vec::new()
        } else {
            let recorded = self
                .maps
                .enip_trace
                .get(&0, 0)
                .context("reading ENIP_TRACE")?
                .get(cpu)
                .copied()
                .unwrap_or_default();
            traced_cip_requests(&trace, &recorded)
        };
        Ok(Decision {
            cip,
            action: result.return_value,
            adus,
            reason: Reason::from_u8(trace.reason).unwrap_or(Reason::None),
            verdict: trace.verdict,
            conduit_id: trace.conduit,
            epoch: trace.epoch,
            frame_out: out,
        })
    }

    /// Forgets the Modbus framing state of the flow with `key` (initiator's direction), as an
    /// eviction from its table would: tests of what the inspector does with state it lost.
    pub fn evict_modbus_state(&mut self, key: &FlowKey) -> Result<()> {
        self.maps
            .modbus_flows
            .remove(key)
            .context("removing from MODBUS_FLOWS")
    }

    /// Entries of the inspectors' state tables: (Modbus, EtherNet/IP).
    pub fn inspector_states(&self) -> (usize, usize) {
        (
            self.maps.modbus_flows.keys().filter(Result::is_ok).count(),
            self.maps.enip_flows.keys().filter(Result::is_ok).count(),
        )
    }

    /// Forgets every tracked flow, so that test cases sharing one loaded program start alike.
    pub fn clear_flows(&mut self) -> Result<()> {
        clear(&mut self.maps.flows);
        clear(&mut self.maps.embryos);
        // With the flows gone, so is every zone's use of its share.
        clear(&mut self.maps.zone_flows);
        clear(&mut self.maps.zone_swept);
        // And each CPU's memo of them.
        self.next_flow_generation()
    }

    /// Forgets every connection the program knows: tracked flows, the inspectors' stream state
    /// (a blocked or reset Modbus or EtherNet/IP flow, framing, sessions, CIP connections) and
    /// cached denials, so that a conversation replayed on the same ports is decided exactly as
    /// it was the first time.
    pub fn forget_connections(&mut self) -> Result<()> {
        self.clear_flows()?;
        clear(&mut self.maps.modbus_flows);
        clear(&mut self.maps.enip_flows);
        clear(&mut self.maps.enip_conns);
        clear(&mut self.maps.denials);
        // And each CPU's memo of them, or a replayed denial would be answered from it.
        self.clear_recent_denials()
    }

    /// Empties each CPU's memo of recent denials, moving the drops it holds back into the
    /// counter maps as the datapath does when it takes a slot: the counters stay true. Only
    /// while nothing runs the program but test runs from this thread (the datapath's own
    /// additions would race with these).
    fn clear_recent_denials(&mut self) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting CPUs")?;
        for index in 0..DENIAL_MEMO_SLOTS {
            let held = self
                .maps
                .recent_denials
                .get(&index, 0)
                .context("reading RECENT_DENIALS")?;
            for m in held.iter().filter(|m| m.packets != 0) {
                let packets = m.packets;
                add_to(&mut self.maps.path_stats, PATH_DENIAL_CACHED, |n| {
                    *n += packets
                })?;
                let reason = reason_index(m.denial.reason, VERDICT_DROP);
                add_to(&mut self.maps.reason_stats, reason, |n| *n += packets)?;
                // The conduit's counters only while its generation still holds its slot.
                if self.installed(m.key.epoch).is_some() {
                    let slot = slot_of(m.key.epoch);
                    let index = conduit_stats_index(slot, m.denial.conduit, VERDICT_DROP);
                    add_to(&mut self.maps.conduit_stats, index, |t| {
                        t.packets += packets;
                        t.bytes += m.bytes;
                    })?;
                }
            }
            self.maps
                .recent_denials
                .set(
                    index,
                    PerCpuValues::try_from(vec![DenialMemo::default(); cpus])?,
                    0,
                )
                .context("clearing RECENT_DENIALS")?;
        }
        Ok(())
    }
}

/// Changes the first CPU's value of entry `index` of a per-CPU array with `change` (the readers
/// sum over CPUs).
fn add_to<T: aya::Pod>(
    map: &mut PerCpuArray<MapData, T>,
    index: u32,
    change: impl FnOnce(&mut T),
) -> Result<()> {
    let mut values: Vec<T> = map.get(&index, 0).context("reading a counter")?.to_vec();
    if let Some(first) = values.first_mut() {
        change(first);
    }
    map.set(index, PerCpuValues::try_from(values)?, 0)
        .context("writing a counter")
}

fn clear<K: aya::Pod, V: aya::Pod>(map: &mut aya::maps::HashMap<aya::maps::MapData, K, V>) {
    let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
    for key in keys {
        // An entry may have been evicted in the meantime; that is fine.
        let _ = map.remove(&key);
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
