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
