//! The coarse monotonic clock, read at most once per timer tick on each CPU. The coarse clock
//! (`bpf_ktime_get_coarse_ns`) is a helper call, whose return goes through the kernel's return
//! thunk where the CPU needs one: about a fifth of a repeated denial's cost, where the event
//! rate limiter asks it for every frame. Its value only moves on the timer tick, which the
//! kernel's jiffies counter counts, and reading jiffies the verifier inlines as one load: so
//! each CPU keeps the clock's reading of the current tick (`TICK_CLOCK`) and calls the helper
//! only when jiffies has moved on.
//!
//! A reading may be one tick behind: the tick updates jiffies a moment before the clock, so a
//! read in between keeps the previous tick's time for the rest of the tick. Its users measure
//! credit over milliseconds (per CPU, where readings never go back), deadlines of a second and
//! EtherNet/IP connection timeouts (with a tick of slack, a use stamped ahead of a reading
//! counting as a use just now), which a tick (at most 10 ms) cannot change materially. Flow
//! times keep reading the clock itself: every CPU writes and compares them with arithmetic
//! that assumes the clock never runs backwards between CPUs, and two CPUs' readings of one
//! tick may differ by a tick, in either order.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use super::maps::TICK_CLOCK;

/// Value of `TICK_CLOCK` (per CPU, one entry): the coarse clock as read in timer tick `tick`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TickClock {
    pub tick: u64,
    pub ns: u64,
}

/// The coarse monotonic clock in ns (possibly one tick behind, see above).
#[inline(always)]
pub fn coarse_ns() -> u64 {
    // SAFETY: reading the counter has no preconditions.
    let tick = unsafe { bpf_jiffies64() };
    let Some(clock) = TICK_CLOCK.get_ptr_mut(0) else {
        // SAFETY: reading the clock has no preconditions.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
    let clock = unsafe { &mut *clock };
    // An entry never written (time 0) stands for no tick, whatever jiffies reads.
    if clock.tick != tick || clock.ns == 0 {
        // SAFETY: as above.
        clock.ns = unsafe { bpf_ktime_get_coarse_ns() };
        clock.tick = tick;
    }
    clock.ns
}
