//! Whether the receiver's TCP stack will deliver a segment of an inspected flow byte for byte as
//! the inspector frames it, judged from the segment alone. A segment it would discard (a bad
//! checksum) or alter (urgent data taken out of the stream; data on a SYN, which stacks treat
//! differently) must not be framed: the firewall and the server would disagree about where the
//! next request starts. The inspectors ask before anything else (`stream::undeliverable`, which
//! adds what the connection did before: TTL, data after FIN or RST).

use aya_ebpf::{bindings::xdp_md, helpers::bpf_csum_diff, programs::XdpContext};

use firewall_common::{
    modbus::{InspectContext, CHECKSUM_BAD, CHECKSUM_GOOD},
    reason::Reason,
};

use super::{
    l4::{IPPROTO_TCP, TCP_SYN},
    maps::INSPECT_CTX,
    packet::{load_half, load_word, ptr_at},
};

const TCP_URG: u8 = 0x20;
/// The most bytes `bpf_csum_diff` sums in one call.
const CHUNK: usize = 512;
/// Segments up to 18 chunks (9,216 bytes: a jumbo frame) are verified. Longer ones only exist
/// where the kernel merged segments before generic XDP saw them (GRO), and then the checksum
/// field is not the wire's either: they count as bad (docs/ARCHITECTURE.md says to switch GRO
/// off on ports in generic mode).
const MAX_CHUNKS: usize = 18;

/// Whether the receiver would deliver the segment `ic` describes as it stands
/// (`Reason::None`), judged from the segment alone.
#[inline(always)]
pub fn check(ctx: &XdpContext, ic: &InspectContext) -> Reason {
    // The urgent pointer can also announce a byte still to come, so the flag alone refuses.
    if ic.tcp_flags & TCP_URG != 0 {
        return Reason::TcpUrgent;
    }
    if ic.tcp_flags & TCP_SYN != 0 && ic.payload_len != 0 {
        return Reason::TcpDataOnSyn;
    }
    // A short segment was summed at the inspector's start (`sum_short_segment`).
    let good = if ic.checksum != 0 {
        ic.checksum == CHECKSUM_GOOD
    } else {
        otfw_tcp_checksum(ctx.ctx) != 0
    };
    if !good {
        return Reason::TcpBadChecksum;
    }
    Reason::None
}

/// Sums the checksum of a short segment (a poll's request or answer) inline and notes the
/// result in `ic.checksum` for `check` (0 for a longer one, left to `otfw_tcp_checksum`).
/// Called first thing by each TCP inspector: where `check` runs, the inspectors' stack has no
/// room for the inline sum, at their start little else is live, and the global function's
/// call and return cost more than the sum's word loads.
#[inline(always)]
pub fn sum_short_segment(ctx: &XdpContext, ic: &mut InspectContext) {
    let len = ic.header_len as usize + ic.payload_len as usize;
    ic.checksum = if len >= INLINE_BELOW {
        0
    } else if short_segment_sums(ctx, ic, len) {
        CHECKSUM_GOOD
    } else {
        CHECKSUM_BAD
    };
}

/// Segments (TCP header and payload) shorter than this are summed inline by word loads alone.
const INLINE_BELOW: usize = 128;

/// Whether the checksum of a segment of `len` bytes (below `INLINE_BELOW`) described by `ic`
/// folds to 0xffff.
#[inline(always)]
fn short_segment_sums(ctx: &XdpContext, ic: &InspectContext, len: usize) -> bool {
    let l4 = (ic.payload as usize).wrapping_sub(ic.header_len as usize) & 0x3fff;
    let sum = pseudo_header(ic, len as u32);
    match sum_words(ctx, l4, len & (INLINE_BELOW - 1), sum) {
        Some(wide) => fold(wide) == 0xffff,
        None => false,
    }
}

/// Whether the TCP checksum of the segment described by `INSPECT_CTX` (pseudo-header, header
/// and payload) folds to 0xffff: 1 if it does. For segments of `INLINE_BELOW` bytes and more.
/// A global function: the verifier checks its loop once, not once per path of the inspector.
/// Sums are kept in the byte order `bpf_csum_diff` uses (the CPU's): a ones' complement sum is
/// the same whichever order the bytes of every word are read in, as long as it is one order
/// throughout.
#[no_mangle]
#[inline(never)]
pub extern "C" fn otfw_tcp_checksum(ctx: *mut xdp_md) -> u64 {
    let Some(ic) = INSPECT_CTX.get_ptr(0) else {
        return 0;
    };
    if ctx.is_null() {
        return 0;
    }
    // SAFETY: per-CPU context written by the main program for this packet.
    let ic = unsafe { &*ic };
    let header = ic.header_len as usize;
    let l4 = (ic.payload as usize).wrapping_sub(header) & 0x3fff;
    let len = header + ic.payload_len as usize;
    if len > CHUNK * MAX_CHUNKS {
        return 0;
    }
    let mut sum = pseudo_header(ic, len as u32);
    // SAFETY: the context the program was given, passed down unchanged.
    let ctx = XdpContext::new(ctx);
    let mut off = l4;
    let full = len / CHUNK;
    for i in 0..MAX_CHUNKS {
        if i >= full {
            break;
        }
        let Some(s) = csum_block::<CHUNK>(&ctx, off, fold(sum) as u32) else {
            return 0;
        };
        sum = s as u64;
        off += CHUNK;
    }
    let rest = len % CHUNK;
    // The remainder below one chunk, in power-of-two blocks: constant sizes for the verifier.
    // The helper only where it sums more than its call costs (a segment shorter than
    // `INLINE_BELOW`, summed inline by `sum_short_segment`, never comes here).
    macro_rules! helper_block {
        ($n:literal) => {
            if rest & $n != 0 {
                let Some(s) = csum_block::<$n>(&ctx, off, fold(sum) as u32) else {
                    return 0;
                };
                sum = s as u64;
                off += $n;
            }
        };
    }
    helper_block!(256);
    helper_block!(128);
    match sum_words(&ctx, off, rest & 127, sum) {
        Some(wide) => (fold(wide) == 0xffff) as u64,
        None => 0,
    }
}

/// Adds the `rest` bytes at `off` (below 128) to `sum`, by word loads: power-of-two blocks of
/// constant size for the verifier, the last one to three bytes padded with zeros to a word as
/// the checksum defines. Not folded.
#[inline(always)]
fn sum_words(ctx: &XdpContext, mut off: usize, rest: usize, mut sum: u64) -> Option<u64> {
    macro_rules! word_block {
        ($n:literal) => {
            if rest & $n != 0 {
                let p = ptr_at::<[u8; $n]>(ctx, off).ok()? as *const u8;
                for w in 0..$n / 8 {
                    // SAFETY: `ptr_at` checked the block's $n bytes; word `w` lies inside them.
                    sum += halves(unsafe { load_word(p.add(w * 8)) });
                }
                off += $n;
            }
        };
    }
    word_block!(64);
    word_block!(32);
    word_block!(16);
    word_block!(8);
    if rest & 4 != 0 {
        let p = ptr_at::<[u8; 4]>(ctx, off).ok()?;
        // SAFETY: `ptr_at` checked the four bytes.
        sum += unsafe { load_half(p as *const u8) } as u64;
        off += 4;
    }
    let tail = rest & 3;
    if tail != 0 {
        // The last one to three bytes, padded with zeros to a word as the checksum defines:
        // read as the four bytes ending where they end (the TCP header's twenty come before
        // them), shifted down to the `tail` last. One load, where reading them byte by byte
        // was three loads and a pointer check the verifier could not follow when inlined.
        let p = ptr_at::<[u8; 4]>(ctx, (off + tail).wrapping_sub(4) & 0x3fff).ok()?;
        // SAFETY: `ptr_at` checked the four bytes.
        let last = unsafe { load_half(p as *const u8) } >> (8 * (4 - tail));
        sum += (last & 0xffff) as u64 + (last >> 16) as u64;
    }
    Some(sum)
}

/// Sums `N` packet bytes at `off` onto `seed`.
#[inline(always)]
fn csum_block<const N: usize>(ctx: &XdpContext, off: usize, seed: u32) -> Option<u32> {
    let p = ptr_at::<[u8; N]>(ctx, off).ok()?;
    // SAFETY: `ptr_at` checked that the N bytes lie inside the packet; the helper only reads
    // them (`from` is empty).
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, seed) };
    if r < 0 {
        return None;
    }
    Some(r as u32)
}

/// The pseudo-header's sum: addresses, protocol and TCP length (RFC 9293 3.1, RFC 8200 8.1).
/// The flow key holds the addresses in the initiator's order, which a sum does not mind, and
/// IPv4 addresses IPv4-mapped: their extra words are 0 and 0xffff, which add nothing to a ones'
/// complement sum, so both families sum all 16 bytes. The addresses are read as the key's four
/// aligned words (a 16-bit sum from their 32-bit halves: 2^16 is 1 modulo 0xffff), not as the
/// 32 byte pairs the definition names.
#[inline(always)]
fn pseudo_header(ic: &InspectContext, len: u32) -> u64 {
    let key = &ic.key;
    // SAFETY: a `FlowKey`'s addresses, 8-aligned, each two whole words.
    let (src, dst) = unsafe {
        let s = key.src.as_ptr() as *const u64;
        let d = key.dst.as_ptr() as *const u64;
        ([s.read(), s.add(1).read()], [d.read(), d.add(1).read()])
    };
    let len = len.to_be_bytes();
    halves(src[0])
        + halves(src[1])
        + halves(dst[0])
        + halves(dst[1])
        + u16::from_ne_bytes([0, IPPROTO_TCP]) as u64
        + u16::from_ne_bytes([len[0], len[1]]) as u64
        + u16::from_ne_bytes([len[2], len[3]]) as u64
}

/// A word's two 32-bit halves added: its share of a ones' complement sum, to be folded.
#[inline(always)]
fn halves(w: u64) -> u64 {
    (w & 0xffff_ffff) + (w >> 32)
}

#[inline(always)]
fn fold(mut sum: u64) -> u64 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (sum & 0xffff) + (sum >> 16)
}
