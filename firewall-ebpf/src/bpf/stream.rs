//! What the TCP inspectors (`modbus`, `enip`) share about a stream: remembering the peer's
//! acknowledgement, and refusing the segments of a flow already refused. Everything is
//! `#[inline(always)]` and generic over the inspector's stream state, so each inspector is
//! compiled (and verified) as before.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use firewall_common::counters::{VERDICT_DROP, VERDICT_MONITOR, VERDICT_RESET};

use super::{
    reset,
    stats::{self, Accounted},
};

/// The sequence position of one direction of an inspected stream. Both inspectors use the same
/// flag bits (`STREAM_SYNCED`/`ESTREAM_SYNCED`, `STREAM_ACKED`/`ESTREAM_ACKED`).
pub trait Position {
    /// The stream's start is known (`next_seq` is meaningful).
    const SYNCED: u8;
    /// `acked` holds an acknowledgement of the peer.
    const ACKED: u8;
    fn flags(&mut self) -> &mut u8;
    fn next_seq(&self) -> u32;
    fn acked(&mut self) -> &mut u32;
}

/// Remembers the highest acknowledgement of `stream`, never beyond what was passed.
#[inline(always)]
pub fn note_ack<S: Position>(stream: &mut S, ack: u32) {
    let flags = *stream.flags();
    if flags & S::SYNCED == 0 || (ack.wrapping_sub(stream.next_seq()) as i32) > 0 {
        return;
    }
    if flags & S::ACKED == 0 || (ack.wrapping_sub(*stream.acked()) as i32) > 0 {
        *stream.acked() = ack;
        *stream.flags() |= S::ACKED;
    }
}

/// A segment (not a RST) of a flow refused earlier: after a reset (`after_reset`) every
/// segment, either direction, is answered with a RST to its sender (passed in monitor mode);
/// after a drop (`blocked`) every client segment is dropped. Accounts it as `reason` and returns the
/// action, or `None` if the segment is not refused this way.
#[inline(always)]
pub fn refused(
    ctx: &XdpContext,
    acc: &mut Accounted,
    reason: u8,
    after_reset: bool,
    blocked: bool,
    to_server: bool,
    monitor: bool,
) -> Option<u32> {
    if after_reset {
        acc.reason = reason;
        acc.verdict = if monitor {
            VERDICT_MONITOR
        } else {
            VERDICT_RESET
        };
        stats::record(ctx, acc);
        return Some(if monitor {
            xdp_action::XDP_PASS
        } else {
            reset::answer(ctx)
        });
    }
    if to_server && blocked {
        acc.reason = reason;
        acc.verdict = VERDICT_DROP;
        stats::record(ctx, acc);
        return Some(xdp_action::XDP_DROP);
    }
    None
}
