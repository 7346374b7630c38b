//! Copies and zeroing that stay plain loads and stores on BPF.
//!
//! bpf-linker has LLVM expand memory intrinsics "in order", which keeps `memcpy` inline but
//! leaves every `memset` and `memmove` to a call of an out-of-line byte loop: a struct's
//! padding zeroed, an address array or a table copied between two pointers into map memory
//! (which LLVM cannot prove apart) costs a call and several instructions per byte, on every
//! packet, and the verifier walks the loop at every call site. These helpers store element by
//! element with volatile stores, which LLVM neither merges into a `memset` nor turns back into
//! a `memmove`. Meant for destinations in map memory: a volatile store pins a stack value to
//! the stack.

/// `*dst = *src`, element by element.
#[inline(always)]
pub fn copy_each<T: Copy, const N: usize>(dst: &mut [T; N], src: &[T; N]) {
    for i in 0..N {
        // SAFETY: both indexes are in bounds; volatile only to keep the stores apart.
        unsafe { core::ptr::write_volatile(&mut dst[i], src[i]) };
    }
}

/// Zeroes `dst` byte by byte.
#[inline(always)]
pub fn zero_bytes<const N: usize>(dst: &mut [u8; N]) {
    for b in dst.iter_mut() {
        // SAFETY: a byte of `dst`.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
}
