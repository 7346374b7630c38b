//! The otfw XDP program: one object, attached to every member port of the gateway bridge.
//!
//! Reading order (see docs/ARCHITECTURE.md): `eth` -> `ip` -> `l4` -> `zone` -> `flow` (with
//! `conduit` for admission) -> verdict, accounted in `stats`, answered by `reset` where a conduit
//! says `on_deny: reset`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsic lowers to the BPF atomic add
// (shared counters of `ZONE_FLOWS`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
// One instruction LLVM will not emit for BPF: a 64-bit load or store at any byte offset
// (`packet::copy_word`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod bpf {
    pub mod clock;
    pub mod conduit;
    pub mod delivery;
    pub mod enip;
    pub mod eth;
    pub mod events;
    pub mod flow;
    pub mod flow_memo;
    pub mod forward;
    pub mod ip;
    pub mod l4;
    pub mod maps;
    pub mod modbus;
    pub mod observe;
    pub mod packet;
    pub mod reset;
    pub mod stats;
    pub mod stream;
    pub mod verdict;
    pub mod zone;
}

#[cfg(target_arch = "bpf")]
mod entry {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

    use firewall_common::conduit::{INSPECT_ENIP, INSPECT_ENIP_IO, INSPECT_MODBUS, INSPECT_NONE};

    use crate::bpf::{enip, flow, forward, maps::INSPECTORS, modbus, reset, stats, verdict};

    #[xdp]
    // Inlined into the program's entry: a call and its return are a measurable share of a
    // packet's cost (a return goes through the kernel's return thunk where the CPU needs one).
    #[inline(always)]
    pub fn otfw(ctx: XdpContext) -> u32 {
        let mut decision = verdict::decide(&ctx);
        if decision.inspect != INSPECT_NONE {
            // The inspector makes and accounts the final decision; the tail call only returns
            // if the inspector is not in `INSPECTORS`. One call site per slot: with a constant
            // index the kernel patches in a direct jump, where a variable one is an indirect
            // jump (through a retpoline where the CPU needs one).
            // SAFETY: tail calls from the main program, with the context it was given.
            unsafe {
                match decision.inspect {
                    INSPECT_MODBUS => tail_call::<{ INSPECT_MODBUS as u32 }>(&ctx),
                    INSPECT_ENIP => tail_call::<{ INSPECT_ENIP as u32 }>(&ctx),
                    INSPECT_ENIP_IO => tail_call::<{ INSPECT_ENIP_IO as u32 }>(&ctx),
                    _ => {}
                }
            };
            verdict::inspector_missing(&mut decision);
        }
        // A quiet drop is counted and reports nothing (`flow::Counted::Quiet`).
        if decision.counted != flow::Counted::Quiet {
            stats::account(&ctx, &decision);
        }
        match decision.action {
            verdict::Action::Pass => forward::pass(&ctx),
            verdict::Action::Drop => xdp_action::XDP_DROP,
            verdict::Action::Reset => reset::answer(&ctx),
        }
    }

    /// Tail calls inspector `SLOT`. The assembly after the call, distinct per slot, keeps LLVM
    /// from merging the call sites into one with a variable index.
    ///
    /// # Safety
    /// As `ProgramArray::tail_call`: from a program's top-level function, with its context.
    #[inline(always)]
    unsafe fn tail_call<const SLOT: u32>(ctx: &XdpContext) {
        // SAFETY: the caller's promise.
        unsafe {
            INSPECTORS.tail_call(ctx, SLOT);
            // One instruction, not an empty statement: an empty one shares its line record's
            // address with the next instruction, which the kernel refuses as a duplicate.
            core::arch::asm!(
                "r0 = {0}",
                const SLOT,
                out("r0") _,
                options(nomem, nostack, preserves_flags)
            );
        }
    }

    /// Modbus/TCP inspection, tail called from `otfw` (slot `INSPECT_MODBUS` of `INSPECTORS`).
    #[xdp]
    // Inlined into the program's entry: the inspector's deepest call chain needs all of the
    // verifier's eight frames.
    #[inline(always)]
    pub fn otfw_modbus(ctx: XdpContext) -> u32 {
        // What an inspector passes takes the fast path like any other allowed frame (a
        // request neutralised in place included: the redirect sends the frame as it is now).
        forward::after_inspection(&ctx, modbus::inspect(&ctx))
    }

    /// EtherNet/IP and CIP inspection (TCP and UDP 44818), slot `INSPECT_ENIP`.
    #[xdp]
    // Inlined into the program's entry: the inspector's deepest call chain needs all of the
    // verifier's eight frames.
    #[inline(always)]
    pub fn otfw_enip(ctx: XdpContext) -> u32 {
        forward::after_inspection(&ctx, enip::inspect(&ctx))
    }

    /// Implicit I/O (UDP 2222) pinholes, slot `INSPECT_ENIP_IO`.
    #[xdp]
    pub fn otfw_enip_io(ctx: XdpContext) -> u32 {
        forward::after_inspection(&ctx, enip::inspect_io(&ctx))
    }

    /// The fast path for frames an inspector passed (slot `FORWARD_SLOT` of `INSPECTORS`).
    #[xdp]
    pub fn otfw_forward(ctx: XdpContext) -> u32 {
        forward::pass(&ctx)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // The verifier rejects any reachable panic, so this is never called.
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("firewall-ebpf is an eBPF object; firewall-user's build script builds it for bpf");
}
