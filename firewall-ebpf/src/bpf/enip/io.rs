//! Class 1 implicit I/O (UDP 2222, program `otfw_enip_io`): each datagram must name a live
//! connection opened with `io` on its conduit between the same endpoints.

use core::{mem::MaybeUninit, ptr::write_volatile};

use aya_ebpf::{
    bindings::xdp_action, cty::c_void, helpers::bpf_xdp_load_bytes, programs::XdpContext,
};

use firewall_common::{
    conduit::MODE_MONITOR,
    counters::{VERDICT_DROP, VERDICT_MONITOR},
    enip::*,
    modbus::InspectContext,
    reason::Reason,
};

use super::{
    connection::{bound, clock, connection_key, live},
    trace::{count_single_record, otfw_enip_event},
    R_NONE,
};
use crate::bpf::{
    maps::{ENIP_CONNS, ENIP_TRACE, INSPECT_CTX},
    packet::ptr_at,
    stats,
};

/// Implicit I/O (UDP 2222): a sequenced address item naming a live connection opened with
/// `io` on this conduit, then a connected data item filling the datagram.
pub fn inspect_io(ctx: &XdpContext) -> u32 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the per-CPU context was written by the main program for this very packet; it
    // is only read, by reference (a copy was ten loads and stores of every datagram).
    let ic = unsafe { &*ic };
    let (info, mut acc) = stats::inspected(ic);
    // Looked up once: the record is written below, the count reset here in case no record is.
    let trace = ENIP_TRACE.get_ptr_mut(0);
    if let Some(t) = trace {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { (*t).count = 0 };
    }
    // Not zeroed first: the helper fills it (a zeroing would be an out-of-line `memset` on BPF,
    // `firewall_common::mem`), and it is read only if the helper succeeded.
    let mut head = MaybeUninit::<[u8; 18]>::uninit();
    let mut reason = Reason::EnipIoMalformed as u8;
    let mut id = 0u32;
    if ic.payload_len >= 18 && ic.payload_len <= 1500 {
        // Read in place where the datagram is in the packet's linear data (always, short of a
        // multi-buffer frame): the helper's call and copy cost more than the checks below.
        // (The mask gives the verifier a bound; the check keeps it from moving the offset.)
        let direct = if ic.payload <= 0x3f00 {
            ptr_at::<[u8; 18]>(ctx, (ic.payload & 0x3fff) as usize)
        } else {
            Err(())
        };
        // SAFETY: 18 bytes into an 18-byte stack buffer; the helper checks the packet side.
        let ok = direct.is_ok()
            || unsafe {
                bpf_xdp_load_bytes(ctx.ctx, ic.payload, head.as_mut_ptr() as *mut c_void, 18) == 0
            };
        if ok {
            let head = match direct {
                // SAFETY: `ptr_at` checked that the 18 bytes lie inside the packet.
                Ok(p) => unsafe { &*p },
                // SAFETY: the helper wrote all 18 bytes.
                Err(()) => unsafe { head.assume_init_ref() },
            };
            let w = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
            if w(0) == 2
                && w(2) == ITEM_SEQUENCED_ADDRESS
                && w(4) == 8
                && w(14) == ITEM_CONNECTED_DATA
                && 18 + w(16) as u32 == ic.payload_len
            {
                id = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
                reason = io_check(ic, id);
            }
        }
    }
    if let Some(t) = trace {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe {
            // Field by field: a whole record written from a default is a `memset`.
            let r = &mut (*t).records[0];
            write_volatile(&mut r.command, 0);
            write_volatile(&mut r.class, 0);
            write_volatile(&mut r.instance, id);
            write_volatile(&mut r.kind, REC_IO);
            write_volatile(&mut r.service, 0);
            write_volatile(&mut r.depth, 0);
            write_volatile(&mut r.reason, reason);
            write_volatile(&mut r.flags, 0);
            write_volatile(&mut r.tag_len, 0);
            (*t).count = 1;
        }
        acc.records = 1;
    }
    let mut action = xdp_action::XDP_PASS;
    if reason != R_NONE {
        acc.reason = reason;
        if info.mode == MODE_MONITOR {
            acc.verdict = VERDICT_MONITOR;
        } else {
            acc.verdict = VERDICT_DROP;
            action = xdp_action::XDP_DROP;
        }
        otfw_enip_event((reason as u64) << 32 | acc.verdict as u64 | 1 << 40);
    }
    count_single_record(&acc);
    stats::record(ctx, &acc);
    action
}

/// Whether connection `id` is a live implicit I/O pinhole between the flow's endpoints: the
/// reason to deny the datagram if not, `R_NONE` if so. Inline: the program is small enough for
/// the verifier to walk it whole, and a call and its return were about 8 ns of a datagram.
#[inline(always)]
fn io_check(ic: &InspectContext, id: u32) -> u8 {
    let key = connection_key(ic, id);
    let now = clock();
    if let Some(c) = ENIP_CONNS.get_ptr_mut(&key) {
        // SAFETY: LRU value, valid for this run.
        let c = unsafe { &mut *c };
        if live(c, now) && bound(c, ic) && c.flags & CONN_IO != 0 {
            c.last_ns = now;
            return R_NONE;
        }
        if !live(c, now) {
            let _ = ENIP_CONNS.remove(&key);
        }
    }
    Reason::EnipIoNoConnection as u8
}
