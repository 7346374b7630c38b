//! What the inspector reports of a frame: one record per command and CIP request (map
//! `ENIP_TRACE`), an event per denied request, and counters by conduit, command, service,
//! class and verdict.

use core::ptr::{read_volatile, write_volatile};

use firewall_common::{
    counters::{VERDICT_DROP, VERDICT_MONITOR, VERDICT_PASS, VERDICT_REFUSE},
    enip::*,
};

use super::{masked, scratch, R_NONE};
use crate::bpf::{
    maps::{ENIP_COUNTS, ENIP_COUNT_MEMO, ENIP_EVENTS, ENIP_STATS, ENIP_TRACE, INSPECT_CTX},
    stats::{self, Accounted},
};

/// `otfw_enip_use` argument: an encapsulation command rather than a (service, class) pair.
pub(super) const USE_COMMAND: u64 = 1 << 32;

/// Marks a use of the request message being decided: an encapsulation command (`code`'s low
/// 16 bits with `USE_COMMAND`) or a (service, class) pair (an `EnipUses` entry). New to the
/// flow's sets, it marks the segment for an inventory copy (`otfw_enip_news`) from the
/// message's payload offset, if the message lies whole in this segment (one carried from an
/// earlier segment ends before `total` payload bytes) of a TCP connection. A global function:
/// verified once, whatever calls it (`mark_use` is the same, inlined where a request is decided).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_use(code: u64) -> u64 {
    mark_use(code);
    0
}

/// The work of `otfw_enip_use`, inlined into `otfw_enip_request` (verified once): its call and
/// return per request cost more than the table's walk.
#[inline(always)]
pub(super) fn mark_use(code: u64) {
    let Some(s) = scratch() else {
        return;
    };
    if s.udp != 0 || s.pos < s.total {
        return;
    }
    let new = if code & USE_COMMAND != 0 {
        code & 0xffff <= 0xff && s.commands.insert(code as u8)
    } else {
        insert_pair(&mut s.services, code as u32)
    };
    if new && s.news == 0 {
        s.news = 1;
        s.news_at = (s.pos - s.total) as u16;
    }
}

/// Adds `pair` to the flow's table; true if it was not there and a free entry took it.
#[inline(always)]
fn insert_pair(uses: &mut EnipUses, pair: u32) -> bool {
    for entry in uses.pairs.iter_mut() {
        if *entry == pair {
            return false;
        }
        if *entry == 0 {
            *entry = pair;
            return true;
        }
    }
    false
}

/// Records a refusal: the first reason of the segment, the record's reason, an event.
#[inline(always)]
pub(super) fn refuse(s: &mut EnipScratch, reason: u8, idx: u32) {
    if s.reason == R_NONE {
        s.reason = reason;
    }
    s.denied = 1;
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        if idx < MAX_RECORDS as u32 {
            // SAFETY: per-CPU slot, this CPU only; idx < MAX_RECORDS.
            unsafe { (*t).records[idx as usize].reason = reason };
        }
    }
    otfw_enip_event(idx as u64 | (reason as u64) << 32);
}

/// Records a request refused in-band (`on_deny: refuse`): the record's reason; its event
/// (verdict `refuse`) is sent by `otfw_enip_refused_events` once the segment passes.
#[inline(always)]
pub(super) fn refused(s: &mut EnipScratch, reason: u8, idx: u32) {
    if s.refused_reason == R_NONE {
        s.refused_reason = reason;
    }
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        if idx < MAX_RECORDS as u32 {
            // SAFETY: per-CPU slot, this CPU only; idx < MAX_RECORDS.
            unsafe { (*t).records[idx as usize].reason = reason };
        }
    }
    let n = s.refused as usize;
    if n < ENIP_REFUSED_EVENTS_MAX {
        s.refused_records[n] = idx as u8;
    }
    s.refused = s.refused.saturating_add(1);
}

/// Sends the events of the requests refused in-band in a segment that passed (the first
/// `ENIP_REFUSED_EVENTS_MAX`; the counters count them all).
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_refused_events() -> u64 {
    let (Some(s), Some(t)) = (scratch(), ENIP_TRACE.get_ptr(0)) else {
        return 0;
    };
    for i in 0..ENIP_REFUSED_EVENTS_MAX {
        if i as u32 >= s.refused as u32 {
            break;
        }
        let idx = s.refused_records[i] as u32;
        let reason = if idx < MAX_RECORDS as u32 {
            // SAFETY: per-CPU slot, this CPU only; masked below MAX_RECORDS.
            unsafe { (*t).records[masked(idx, MAX_RECORDS as u32 - 1)].reason }
        } else {
            s.refused_reason
        };
        otfw_enip_event(idx as u64 | (reason as u64) << 32 | EVENT_REFUSED);
    }
    0
}

/// `otfw_enip_event` argument bit: the request was refused in-band.
const EVENT_REFUSED: u64 = 1 << 41;

/// Appends a record; returns its index (MAX_RECORDS when the trace is full).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn note(
    s: &mut EnipScratch,
    command: u32,
    kind: u8,
    service: u32,
    class: u32,
    instance: u32,
    depth: u32,
    flags: u8,
) -> u32 {
    let n = s.records;
    if n >= MAX_RECORDS as u32 {
        return MAX_RECORDS as u32;
    }
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only; n < MAX_RECORDS.
        // Volatile stores: a record of constants (a message's) would otherwise be one `memset`,
        // an out-of-line byte loop on BPF (`firewall_common::mem`).
        unsafe {
            let r = &mut (*t).records[n as usize];
            write_volatile(&mut r.command, command as u16);
            write_volatile(&mut r.class, class as u16);
            write_volatile(&mut r.instance, instance);
            write_volatile(&mut r.kind, kind);
            write_volatile(&mut r.service, service as u8);
            write_volatile(&mut r.depth, depth as u8);
            write_volatile(&mut r.reason, 0);
            write_volatile(&mut r.flags, flags);
            write_volatile(&mut r.tag_len, 0);
            (*t).count = n + 1;
        }
    }
    s.records = n + 1;
    n
}

/// Sends one denied-request event. `a`: record index (bits 0..32) | reason << 32; with bit 40
/// set (implicit I/O), bits 0..8 are the verdict and the record is trace entry 0.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_event(a: u64) -> u64 {
    let (Some(ic), Some(t)) = (INSPECT_CTX.get_ptr(0), ENIP_TRACE.get_ptr(0)) else {
        return 0;
    };
    let io = a >> 40 & 1 != 0;
    let (idx, verdict) = if io {
        (0, a as u8)
    } else if a & EVENT_REFUSED != 0 {
        (a as u32, VERDICT_REFUSE as u8)
    } else {
        let v = scratch().map_or(VERDICT_DROP as u8, |s| s.event_verdict);
        (a as u32, v)
    };
    let reason = (a >> 32) as u8;
    match ENIP_EVENTS.reserve::<EnipEvent>(0) {
        Some(mut entry) => {
            // SAFETY: per-CPU context and trace of this packet.
            let (key, epoch, conduit) = unsafe { ((*ic).key, (*ic).epoch, (*ic).conduit) };
            let mut record = if idx < MAX_RECORDS as u32 {
                // SAFETY: idx < MAX_RECORDS.
                unsafe { (*t).records[idx as usize] }
            } else {
                EnipRecord::default()
            };
            record.reason = reason;
            entry.write(EnipEvent {
                key,
                epoch,
                conduit,
                verdict,
                _pad: 0,
                record,
            });
            entry.submit(0);
        }
        None => {
            if let Some(n) = ENIP_COUNTS.get_ptr_mut(ECOUNT_EVENTS_LOST) {
                // SAFETY: per-CPU slot, this CPU only.
                unsafe { *n += 1 };
            }
        }
    }
    0
}

/// Counts the frame's records by conduit, command, service, class and verdict, through
/// `otfw_enip_count_all`, whose loop is verified once. (Inline here, the one-record case's
/// count takes the request inspector's stack over the limit: see `count_single_record`.)
#[inline(always)]
pub(super) fn count_records(acc: &Accounted) {
    if acc.records != 0 {
        otfw_enip_count_all(packed(acc), acc.records as u64);
    }
}

/// `count_records` for a frame of one record, inline: the implicit I/O program's datagrams.
/// A call and its return cost about as much as the count itself.
#[inline(always)]
pub(super) fn count_single_record(acc: &Accounted) {
    if acc.records != 1 {
        return count_records(acc);
    }
    if let Some(t) = ENIP_TRACE.get_ptr(0) {
        // SAFETY: per-CPU slot, this CPU only.
        let (key, command) = record_counter(unsafe { &(*t).records[0] }, packed(acc));
        count(key, command as u64 | 1 << 16);
    }
}

/// The accounting facts the counters of a frame's records share: slot, verdict and conduit.
#[inline(always)]
fn packed(acc: &Accounted) -> u64 {
    acc.slot as u64 | (acc.verdict as u64) << 8 | (acc.conduit as u64) << 16
}

/// The `ENIP_STATS` counter of record `r` of a frame whose slot, verdict and conduit are packed
/// as `packed` packs them: the key as `EnipStatKey::packed` packs it, and the command.
#[inline(always)]
fn record_counter(r: &EnipRecord, packed: u64) -> (u64, u32) {
    let slot = packed as u8;
    let verdict = (packed >> 8) as u8;
    let conduit = (packed >> 16) as u16;
    let lenient = verdict == VERDICT_MONITOR as u8 || verdict == VERDICT_REFUSE as u8;
    let v = if lenient && r.reason == R_NONE {
        VERDICT_PASS as u8
    } else {
        verdict
    };
    let class = if r.flags & REC_SYMBOLIC != 0 {
        CLASS_SYMBOL
    } else {
        r.class
    };
    let key = slot as u64
        | (r.service as u64) << 8
        | (v as u64) << 16
        | (r.kind as u64) << 24
        | (conduit as u64) << 32
        | (class as u64) << 48;
    (key, r.command as u32)
}

/// The loop of `count_records` as a global function: verified once.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_count_all(packed: u64, records: u64) -> u64 {
    let (Some(t), Some(s)) = (ENIP_TRACE.get_ptr(0), scratch()) else {
        return 0;
    };
    s.count_run = 0;
    for i in 0..MAX_RECORDS {
        if i as u64 >= records {
            break;
        }
        // SAFETY: per-CPU slot, this CPU only.
        let (key, command) = record_counter(unsafe { &(*t).records[i] }, packed);
        // Batched: a run of records with the same counter is one map update. The run lives in
        // the scratch and is read and written there (volatile), so that no register carries a
        // count from one iteration to the next: the verifier's walk of the loop then prunes.
        // SAFETY: fields of the per-CPU scratch, this CPU only.
        unsafe {
            let run = read_volatile(&s.count_run);
            let pending = read_volatile(&s.count_key[0]) as u64
                | (read_volatile(&s.count_key[1]) as u64) << 32;
            let pending_command = read_volatile(&s.count_command);
            if run != 0 && (key != pending || command != pending_command) {
                otfw_enip_count(pending, pending_command as u64 | (run as u64) << 16);
                write_volatile(&mut s.count_run, 0);
            }
            write_volatile(&mut s.count_key[0], key as u32);
            write_volatile(&mut s.count_key[1], (key >> 32) as u32);
            write_volatile(&mut s.count_command, command);
            let run = read_volatile(&s.count_run);
            write_volatile(&mut s.count_run, run + 1);
        }
    }
    // SAFETY: as above.
    unsafe {
        let run = read_volatile(&s.count_run);
        if run != 0 {
            let pending = read_volatile(&s.count_key[0]) as u64
                | (read_volatile(&s.count_key[1]) as u64) << 32;
            let command = read_volatile(&s.count_command);
            // Inline at this last update: a call and its return fewer per frame.
            count(pending, command as u64 | (run as u64) << 16);
        }
    }
    0
}

/// Adds `b >> 16` to one `ENIP_STATS` counter of the packet's generation (through this CPU's
/// memo, `stats::add_memoized`): `a` and `b`'s low 16 bits are the key as
/// `EnipStatKey::packed` packs it.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_count(a: u64, b: u64) -> u64 {
    count(a, b);
    0
}

/// The work of `otfw_enip_count`.
#[inline(always)]
fn count(a: u64, b: u64) {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return;
    };
    // SAFETY: the packet's per-CPU context, only read.
    let epoch = unsafe { (*ic).epoch };
    stats::add_memoized(
        (&ENIP_COUNT_MEMO, &ENIP_STATS),
        [a, b & 0xffff],
        epoch,
        b >> 16,
        EnipStatKey::unpacked,
    );
}
