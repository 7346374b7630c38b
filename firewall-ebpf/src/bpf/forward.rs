//! The fast path: an allowed frame whose destination the bridge has learnt on another
//! otfw port is sent there directly (`XDP_REDIRECT` through `FAST_TX`), skipping the bridge.
//! Only what the mirror of the bridge's state answers exactly takes it; everything else
//! (broadcast, multicast, unknown or local destinations, a source the bridge has not learnt on
//! this port, a port not forwarding, a frame too big for the egress port, a stale mirror) is
//! passed to the bridge, which stays the slow path and the source of truth. A pair of hosts
//! just forwarded is answered from this CPU's memo of the mirror's answer (`FORWARD_MEMO`),
//! valid while the mirror's generation has not moved.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use firewall_common::{
    conduit::FORWARD_SLOT,
    counters::{PATH_BRIDGE_LEARNS, PATH_FDB_MOVED, PATH_REDIRECTED},
    fastpath::{ForwardMemo, FDB_LOCAL, GENERATION_CONTROLLER, GENERATION_DATAPATH},
};

use super::{
    clock,
    eth::{ETH_P_8021AD, ETH_P_8021Q},
    maps::{FAST_PATH, FAST_TX, FDB, FDB_GENERATION, FLOW_KEYS, FORWARD_MEMO, INSPECTORS},
    packet::{be16_in_word, frame_len, load_word, ptr_at},
    stats,
};

/// The action for a frame the policy passes: a redirect when the fast path can take it,
/// `XDP_PASS` (to the bridge) otherwise.
#[inline(always)]
pub fn pass(ctx: &XdpContext) -> u32 {
    redirect(ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// An inspector's action; a pass goes on to the fast path's forwarder (`otfw_forward`) by tail
/// call, or to the bridge if the forwarder is not installed.
#[inline(always)]
pub fn after_inspection(ctx: &XdpContext, action: u32) -> u32 {
    if action == xdp_action::XDP_PASS {
        // SAFETY: a tail call from the program's top-level function, with its own context.
        unsafe { INSPECTORS.tail_call(ctx, FORWARD_SLOT) };
    }
    action
}

#[inline(always)]
fn redirect(ctx: &XdpContext) -> Option<u32> {
    let valid_until = FAST_PATH.get(0)?.valid_until_ns;
    // Switched off (0): no clock read for the frames of a gateway without the fast path.
    if valid_until == 0 {
        return None;
    }
    // The coarse monotonic clock (the last tick's time, a load instead of a hardware clock
    // read per frame; this CPU's reading of it per tick, instead of a helper call per frame):
    // the mirror is valid for a second, a tick is a few milliseconds.
    if clock::coarse_ns() > valid_until {
        return None;
    }
    // The Ethernet header as two unaligned word loads, bytes 0..8 and 6..14 (read as bytes, it
    // was fourteen byte loads and the shifts putting the addresses together): the low six
    // bytes of each are an address as `mac_word` makes it (native order, little-endian BPF),
    // the top two of the second the ethertype.
    let h = ptr_at::<[u8; 14]>(ctx, 0).ok()? as *const u8;
    // SAFETY: the fourteen bytes at `h` lie inside the frame.
    let (first, second) = unsafe { (load_word(h), load_word(h.add(6))) };
    const ADDRESS: u64 = 0xffff_ffff_ffff;
    let (dst, src) = (first & ADDRESS, second & ADDRESS);
    // Group addresses (broadcast, multicast, STP, LLDP) are the bridge's to flood or consume.
    if dst & 1 != 0 {
        return None;
    }
    // VLAN-tagged frames stay on the bridge: where a driver strips the tag into metadata, a
    // redirect would not carry it.
    let ethertype = be16_in_word(second, 6);
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return None;
    }
    // SAFETY: reading the ingress ifindex from the xdp_md context is always allowed.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    // Read before the mirror is: a change made after this read gives a memo made from it a
    // generation that is already past.
    let generation = generation()?;
    let memo = FORWARD_MEMO.get_ptr_mut(ForwardMemo::slot(dst, src, ingress))?;
    // SAFETY: a per-CPU slot is only used by this CPU for the duration of this program run.
    let memo = unsafe { &mut *memo };
    let (egress, max_frame) = if memo.answers(generation, dst, src, ingress) {
        (memo.egress, memo.max_frame)
    } else {
        let (egress, max_frame) = look_up(dst, src, ingress)?;
        *memo = ForwardMemo {
            generation,
            dst,
            src,
            ingress,
            egress,
            max_frame,
            _pad: 0,
        };
        (egress, max_frame)
    };
    if frame_len(ctx) > max_frame as usize {
        return None;
    }
    match FAST_TX.redirect(egress, xdp_action::XDP_PASS as u64) {
        Ok(action) => {
            stats::path_event(PATH_REDIRECTED);
            Some(action)
        }
        Err(_) => None,
    }
}

/// The mirror's generation: the sum of the controller's and the datapath's counts of changes.
#[inline(always)]
fn generation() -> Option<u64> {
    Some(*FDB_GENERATION.get(GENERATION_CONTROLLER)? + *FDB_GENERATION.get(GENERATION_DATAPATH)?)
}

/// What the mirror says of a frame from `src` to `dst` arriving on `ingress`: the port to send
/// it to and the largest frame that port transmits, or `None` if the bridge must see it.
#[inline(always)]
fn look_up(dst: u64, src: u64, ingress: u32) -> Option<(u32, u32)> {
    // The keys live in the per-CPU scratch entry: map keys must be in memory.
    let keys = FLOW_KEYS.get_ptr_mut(0)?;
    // SAFETY: a per-CPU slot is only used by this CPU for the duration of this program run.
    let [dst_key, src_key] = unsafe { &mut (*keys).macs };
    dst_key.set_word(dst);
    src_key.set_word(src);
    // The bridge learns from what it sees: a source it has not learnt on this port (new, or
    // moved here) must go through it. A moved address's old entry is dropped from the mirror
    // at once, so frames to it stop going to the port it left. The mirror holds learnt
    // addresses only of the ports the fast path may use, so a source found on the ingress
    // port also says that this port is one (forwarding, not isolated or locked); a local
    // address as the source is the bridge's to judge.
    // SAFETY: values are copied out at once, never held across a map update.
    match unsafe { FDB.get(&*src_key) } {
        Some(e) if e.ifindex == ingress && e.flags & FDB_LOCAL == 0 => {}
        Some(e) if e.ifindex == ingress => return None,
        Some(_) => {
            let _ = FDB.remove(&*src_key);
            // The mirror changed: every memo made before is stale (the ones forwarding to
            // the address's old port among them).
            if let Some(count) = FDB_GENERATION.get_ptr_mut(GENERATION_DATAPATH) {
                // SAFETY: an array value stays valid for the program's run; the add is atomic
                // against other CPUs doing the same.
                unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, 1) };
            }
            stats::path_event(PATH_FDB_MOVED);
            stats::path_event(PATH_BRIDGE_LEARNS);
            return None;
        }
        None => {
            stats::path_event(PATH_BRIDGE_LEARNS);
            return None;
        }
    }
    // A learnt destination is on a port the fast path may use (an egress port that is
    // blocking, learning or disabled has no entries in the mirror), with that port's MTU.
    // SAFETY: as above.
    let (egress, flags, max_frame) =
        unsafe { FDB.get(&*dst_key) }.map(|e| (e.ifindex, e.flags, e.max_frame))?;
    // For the gateway itself, or back out of the port it came in on: the bridge decides.
    if flags & FDB_LOCAL != 0 || egress == ingress {
        return None;
    }
    Some((egress, max_frame))
}
