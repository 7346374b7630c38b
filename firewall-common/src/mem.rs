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

/// `*dst = *src` in 64-bit words, with volatile stores as `copy_each`: for byte arrays, which
/// LLVM copies byte by byte (their alignment is 1) even where they are known to be aligned.
///
/// # Safety
/// `dst` and `src` must be 8-aligned (held at 8-aligned offsets of `repr(C, align(8))`
/// structs), and `N` a multiple of 8.
#[inline(always)]
pub unsafe fn copy_words<const N: usize>(dst: &mut [u8; N], src: &[u8; N]) {
    let (d, s) = (dst.as_mut_ptr() as *mut u64, src.as_ptr() as *const u64);
    for i in 0..N / 8 {
        // SAFETY: the caller's promise of alignment; word `i` lies inside both arrays.
        unsafe { core::ptr::write_volatile(d.add(i), s.add(i).read()) };
    }
}

/// Writes all of `*dst` as `N` whole words (`words` in memory order, each built with
/// `from_ne_bytes` of the fields' bytes), with volatile stores as `copy_each`. For map keys:
/// the kernel hashes a key in 32-bit words, and a word loaded over several narrower stores
/// still in flight is not forwarded from them but waits until they reach the cache; field by
/// field, a key of bytes and half-words cost that wait at every lookup.
///
/// # Safety
/// Every bit pattern must be a valid `T` (a struct of integers and integer arrays).
#[inline(always)]
pub unsafe fn store_words<T, W: Copy, const N: usize>(dst: &mut T, words: [W; N]) {
    const {
        assert!(core::mem::size_of::<T>() == N * core::mem::size_of::<W>());
        assert!(core::mem::align_of::<T>() >= core::mem::align_of::<W>());
    }
    let p = dst as *mut T as *mut W;
    // Indexed, not iterated: an array iterator would be a stack object of its own.
    #[allow(clippy::needless_range_loop)]
    for i in 0..N {
        // SAFETY: `dst` is aligned for `W` and holds exactly `N` of them (checked above); the
        // caller's promise makes any bits a valid `T`.
        unsafe { core::ptr::write_volatile(p.add(i), words[i]) };
    }
}
