//! CIP paths: request paths (one logical class, instance and further segments, or symbolic
//! segments naming a tag), route paths (port segments only), and the tag name checked against
//! the rule's names and prefixes.

use firewall_common::{enip::*, reason::Reason, slot_of};

use super::{b16, b32, b8, scratch, MASK, R_NONE};
use crate::bpf::maps::{ENIP_TAGS, ENIP_TRACE};
use crate::bpf::packet::copy_word;
use firewall_common::mem::copy_words;

/// Parses a request path (`off | len << 16`). Returns reason | flags << 8 | class << 16 |
/// instance << 32; the tag name (symbolic segments joined with `.`) goes to `name`. The first
/// segment is parsed inline, the others by `otfw_enip_segment` (verified once). Inlined into
/// `otfw_enip_request`, its one caller (a global function, verified once): a call per request
/// and its return cost more than the loop. The scratch is looked up here, not taken as a
/// reference: the segments are parsed into it by a global function behind the compiler's back.
#[inline(always)]
pub(super) fn request_path(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return Reason::CipBadPath as u64;
    };
    let start = arg as u16 as u32 & 0x7ff;
    let len = (arg >> 16) as u16 as u32 & 0x7ff;
    let end = start + len;
    s.name_len = 0;
    s.path_flags = 0;
    s.path_class = 0;
    s.path_instance = 0;
    let mut p = start;
    let mut reason = R_NONE;
    for round in 0..MAX_SEGMENTS {
        if p >= end {
            break;
        }
        let arg = p as u64 | (end as u64) << 16;
        // The first segment inline (a Read Tag's whole path is one): a call and a lookup of
        // the scratch fewer per request; the others by the global function, verified once.
        let r = if round == 0 {
            segment(s, arg)
        } else {
            otfw_enip_segment(arg)
        };
        reason = (r >> 32) as u8;
        if reason != R_NONE {
            break;
        }
        p = r as u32 & 0xffff;
    }
    if reason == R_NONE && p != end {
        // More segments than parsed, or a segment running past the path.
        reason = Reason::CipBadPath as u8;
    }
    let Some(s) = scratch() else {
        return Reason::CipBadPath as u64;
    };
    reason as u64
        | (s.path_flags as u64) << 8
        | (s.path_class as u64 & 0xffff) << 16
        | (s.path_instance as u64) << 32
}

/// Parses the path segment at `p` (bits 0..16), the path ending at `end` (bits 16..32).
/// Returns the next segment's offset, or a reason << 32.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_segment(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return (Reason::CipBadPath as u64) << 32;
    };
    segment(s, arg)
}

/// The work of `otfw_enip_segment`, inline for a path's first segment.
#[inline(always)]
fn segment(s: &mut EnipScratch, arg: u64) -> u64 {
    let p = arg as u16 as u32 & 0x7ff;
    let end = (arg >> 16) as u16 as u32 & 0xfff;
    let bad = (Reason::CipBadPath as u64) << 32;
    let seg = b8(s, p);
    if seg == 0x91 {
        if p + 2 > end {
            return bad;
        }
        let n = b8(s, p + 1);
        let size = 2 + n + (n & 1);
        if p + size > end || n == 0 || s.path_flags & REC_CLASS != 0 {
            // A class and a tag name: which one is addressed would be a guess.
            return bad;
        }
        s.path_flags |= REC_SYMBOLIC;
        let sep = if s.name_len > 0 { 1 } else { 0 };
        if s.name_len + sep + n > TAG_MAX {
            return (Reason::CipTagTooLong as u64) << 32;
        }
        if sep == 1 {
            let at = (s.name_len & 127) as usize;
            s.name[at] = b'.';
            s.name_len += 1;
        }
        append_name(s, p + 2, n);
        return (p + size) as u64;
    }
    if seg & 0xE0 != 0x20 {
        // Port, network, data and other segment types do not belong in a request path.
        return bad;
    }
    let (size, value) = match seg & 0x03 {
        0 => (2, b8(s, p + 1)),
        1 => (4, b16(s, p + 2)),
        2 => (6, b32(s, p + 2)),
        _ => return bad,
    };
    if p + size > end {
        return bad;
    }
    match seg & 0x1C {
        0x00 => {
            if s.path_flags & (REC_CLASS | REC_SYMBOLIC) != 0 || value > 0xFFFF {
                return bad;
            }
            s.path_class = value;
            s.path_flags |= REC_CLASS;
        }
        0x04 => {
            if s.path_flags & REC_INSTANCE == 0 {
                s.path_instance = value;
                s.path_flags |= REC_INSTANCE;
            }
        }
        // Member (also array elements after a tag name), connection point, attribute.
        0x08 | 0x0C | 0x10 => {}
        _ => return bad,
    }
    (p + size) as u64
}

/// Appends `n` name bytes at `off` to the tag name, a word at a time: the last word may carry
/// bytes past the name into `name`, beyond `name_len`, where nothing reads them (the hash and
/// the records stop at `name_len`). Inlined into the segment parser (`segment`): a call and its
/// return per symbolic segment cost more than the copy.
#[inline(always)]
fn append_name(s: &mut EnipScratch, off: u32, n: u32) {
    let len = s.name_len;
    for k in 0..(TAG_MAX / 8) {
        let j = 8 * k;
        if j >= n {
            break;
        }
        // Bounds the verifier can see: the message buffer is twice `MSG_MAX` long (a masked
        // offset plus a word stays inside), and the name is at most `TAG_MAX` of 128 bytes.
        let from = ((off + j) & MASK) as usize;
        let to = ((len + j) & (TAG_MAX - 1)) as usize;
        // SAFETY: both words in bounds (above), in the per-CPU scratch value.
        unsafe { copy_word(s.msg.as_ptr().add(from), s.name.as_mut_ptr().add(to)) };
    }
    s.name_len = len + n;
}

/// Checks a route path (`off | len << 16`): port segments only. Returns 0 when valid.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_route(arg: u64) -> u64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let start = arg as u16 as u32 & 0x7ff;
    let end = start + ((arg >> 16) as u16 as u32 & 0x7ff);
    let mut p = start;
    for _ in 0..8 {
        if p >= end {
            break;
        }
        let seg = b8(s, p);
        if seg & 0xE0 != 0 {
            return 1;
        }
        let extended_port = seg & 0x0F == 0x0F;
        let mut size = 1;
        let link = if seg & 0x10 != 0 {
            size += 1;
            b8(s, p + 1)
        } else {
            1
        };
        if extended_port {
            size += 2;
        }
        size += link;
        size += size & 1;
        p += size;
    }
    (p != end) as u64
}

/// Whether the tag name in `name` is allowed by the rule (exact names and `prefix*` patterns
/// as hashes in `ENIP_TAGS`). `prefix_lengths`: the rule's prefix lengths bitmap.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_enip_tag(prefix_lengths: u64) -> u64 {
    let Some(s) = scratch() else {
        return 0;
    };
    let n = s.name_len;
    let slot = slot_of(s.epoch) as u8;
    let rule = s.rule;
    // Written whole before each lookup (`EnipTagKey::set`): the key is hashed word by word.
    let mut key = EnipTagKey::default();
    let mut h = FNV_OFFSET;
    for i in 0..TAG_MAX as usize {
        if i as u32 >= n {
            break;
        }
        h = tag_hash_step(h, s.name[i]);
        let k = i + 1;
        if k < 64 && prefix_lengths >> k & 1 != 0 {
            key.set(h, slot, k as u8, rule);
            // SAFETY: a hash map value, only tested for presence.
            if unsafe { ENIP_TAGS.get(&key) }.is_some() {
                return 1;
            }
        }
    }
    key.set(h, slot, 0, rule);
    // SAFETY: as above.
    unsafe { ENIP_TAGS.get(&key) }.is_some() as u64
}

/// Copies the start of the tag name into record `idx`.
#[inline(always)]
pub(super) fn copy_tag(s: &EnipScratch, idx: u32) {
    if idx >= MAX_RECORDS as u32 {
        return;
    }
    if let Some(t) = ENIP_TRACE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, this CPU only; idx < MAX_RECORDS.
        unsafe {
            let r = &mut (*t).records[idx as usize];
            // In words: both arrays are 8-aligned (asserted where `EnipRecord` is defined).
            let start = &*(s.name.as_ptr() as *const [u8; TAG_KEEP]);
            copy_words(&mut r.tag, start);
            r.tag_len = if s.name_len > TAG_KEEP as u32 {
                TAG_KEEP as u8
            } else {
                s.name_len as u8
            };
        }
    }
}
