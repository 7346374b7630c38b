//! Bounds-checked access to packet bytes. Every read goes through here so the verifier always
//! sees a check against `data_end` on the pointer that is dereferenced.

use aya_ebpf::programs::XdpContext;

use firewall_common::reason::Reason;

/// A pointer to `T` at `offset` bytes into the frame, if the whole `T` lies inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    Ok(ptr_at::<T>(ctx, offset)? as *mut T)
}

/// Reads `T` (unaligned) at `offset`, mapping "out of the frame" to `reason`.
#[inline(always)]
pub fn load<T: Copy>(ctx: &XdpContext, offset: usize, reason: Reason) -> Result<T, Reason> {
    let p = ptr_at::<T>(ctx, offset).map_err(|_| reason)?;
    // SAFETY: ptr_at checked that size_of::<T>() bytes at p lie inside the packet.
    Ok(unsafe { core::ptr::read_unaligned(p) })
}

/// A big-endian u16 at `offset`.
#[inline(always)]
pub fn be16(ctx: &XdpContext, offset: usize, reason: Reason) -> Result<u16, Reason> {
    Ok(u16::from_be_bytes(load::<[u8; 2]>(ctx, offset, reason)?))
}

/// The frame length, laundered through a volatile read: comparisons of header length fields
/// against it must not let LLVM drop the bounds checks of later loads (it could prove them
/// redundant, but the verifier cannot, and rejects the program).
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    let len = ctx.data_end() - ctx.data();
    // SAFETY: a volatile read of a local initialised just above.
    unsafe { core::ptr::read_volatile(&len) }
}

/// Copies the eight bytes at `from` to `to`, neither aligned: one 64-bit load and one store.
/// LLVM's BPF backend takes every access as needing its natural alignment and splits an
/// unaligned word into eight byte loads and eight byte stores (with spills: enough to push the
/// ENIP inspector's call chain past 512 bytes of stack); the kernel allows unaligned access to
/// map values and packet data on the architectures that do it efficiently (x86-64, arm64),
/// which is what the assembly relies on.
///
/// # Safety
/// Both ranges lie inside map values or the packet (the verifier checks them against the
/// bounds it knows).
#[inline(always)]
pub unsafe fn copy_word(from: *const u8, to: *mut u8) {
    // SAFETY: the caller's promise; the instructions touch only those sixteen bytes.
    unsafe {
        core::arch::asm!(
            "{w} = *(u64 *)({from} + 0)",
            "*(u64 *)({to} + 0) = {w}",
            from = in(reg) from,
            to = in(reg) to,
            w = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
}

/// The eight bytes at `p`, unaligned, as one 64-bit load (why assembly: `copy_word`).
///
/// # Safety
/// The eight bytes lie inside the packet, checked on `p`'s own range.
#[inline(always)]
pub unsafe fn load_word(p: *const u8) -> u64 {
    let w: u64;
    // SAFETY: the caller's promise; only those eight bytes are read.
    unsafe {
        core::arch::asm!(
            "{w} = *(u64 *)({p} + 0)",
            p = in(reg) p,
            w = out(reg) w,
            options(nostack, preserves_flags, readonly),
        );
    }
    w
}

/// The big-endian (network order) 16-bit field at byte `at` of a word read by `load_word`:
/// on little-endian BPF, the packet's byte `at` is the word's bits `8 * at` upwards.
#[inline(always)]
pub fn be16_in_word(word: u64, at: u32) -> u16 {
    ((word >> (8 * at)) as u16).swap_bytes()
}

/// The big-endian 32-bit field at byte `at` of a word read by `load_word` (as `be16_in_word`).
#[inline(always)]
pub fn be32_in_word(word: u64, at: u32) -> u32 {
    ((word >> (8 * at)) as u32).swap_bytes()
}

/// The four bytes at `p`, unaligned, as one 32-bit load (as `load_word`).
///
/// # Safety
/// As `load_word`, for four bytes.
#[inline(always)]
pub unsafe fn load_half(p: *const u8) -> u32 {
    let w: u64;
    // SAFETY: the caller's promise; only those four bytes are read.
    unsafe {
        core::arch::asm!(
            "{w} = *(u32 *)({p} + 0)",
            p = in(reg) p,
            w = out(reg) w,
            options(nostack, preserves_flags, readonly),
        );
    }
    w as u32
}

/// Copies `len` (8 to 24) packet bytes at frame offset `offset` to `dst` straight from the packet,
/// in words: one at the start, one ending at the end and, past 16 bytes, one at 8; the words
/// overlap where the range is shorter, so exactly `len` bytes are written. Returns false for a
/// shorter range, one ending past 0x3fff bytes into the frame, or where a word is not inside the
/// packet's linear data (having copied part of the range, perhaps): the caller then asks
/// `bpf_xdp_load_bytes`, whose call, bounds walk and `memcpy` cost about 5 ns more per copy.
///
/// Each word is checked against the packet's end on its own pointer, and copied before the next
/// is checked: the verifier forgets a checked range once a variable is added to a pointer, and
/// checked together, LLVM would let the last word's check stand for the first's. It marks a
/// range only where the offset's bound and the range stay within 0xffff: hence the bound on
/// the offset (far above any Ethernet frame).
///
/// # Safety
/// `len` is at most 24 (checked by the caller: checked here, it lets LLVM prove the masks below
/// idle and drop them, with the verifier's bounds); `dst` is valid for `len` bytes of writes,
/// and the verifier can see that for any `len` up to 39 (it checks the last word at
/// `dst + tail` with `tail` bounded by 31).
#[inline(always)]
pub unsafe fn copy_short(ctx: &XdpContext, offset: u32, dst: *mut u8, len: u32) -> bool {
    if len < 8 || offset > 0x3fff - len {
        return false;
    }
    // `len - 8`, in a form the verifier bounds on its own.
    let tail = (len - 8) & 31;
    let word = |from: u32| ptr_at::<[u8; 8]>(ctx, (from & 0x3fff) as usize);
    let Ok(head) = word(offset) else {
        return false;
    };
    // SAFETY: the source word was checked to be inside the packet; the caller's promise for
    // `dst`, which the words stay inside (`tail + 8` = `len`).
    unsafe { copy_word(head as *const u8, dst) };
    let Ok(last) = word(offset + tail) else {
        return false;
    };
    // SAFETY: as above.
    unsafe { copy_word(last as *const u8, dst.add(tail as usize)) };
    if len <= 16 {
        return true;
    }
    let Ok(middle) = word(offset + 8) else {
        return false;
    };
    // SAFETY: as above.
    unsafe { copy_word(middle as *const u8, dst.add(8)) };
    true
}
