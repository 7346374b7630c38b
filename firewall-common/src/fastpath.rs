//! The fast path: allowed frames between two bridge ports forwarded by `XDP_REDIRECT` instead
//! of the bridge, from a mirror of the bridge's own forwarding state that the controller keeps.
//! The bridge stays the source of truth: whatever the mirror does not answer goes to it.

/// Entries of the forwarding database mirror (`FDB`).
pub const MAX_FDB: u32 = 65536;
/// Bridge ports the fast path may forward between (`FAST_TX`).
pub const MAX_FAST_PORTS: u32 = 256;

/// Key of map `FDB`: a unicast MAC address. 8-aligned, so that the datapath writes it as one
/// word (`set`); the alignment adds no padding.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    /// Sets the address (padding zeroed) with one 64-bit store (`crate::mem::store_words`).
    #[inline(always)]
    pub fn set(&mut self, m: [u8; 6]) {
        let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]);
        // SAFETY: a struct of integer arrays.
        unsafe { crate::mem::store_words(self, [word]) };
    }
}

const _: () = assert!(core::mem::size_of::<MacKey>() == 8);

/// Value of map `FDB`: where the bridge has learnt (or was told) the address is. The mirror
/// holds learnt addresses only of ports the fast path may use (forwarding, not isolated or
/// locked, otfw attached), and each entry carries what the datapath needs of its port, so a
/// frame costs two lookups (its source and its destination), not four.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbEntry {
    pub ifindex: u32,
    /// `FDB_*` flags.
    pub flags: u32,
    /// The largest frame the port transmits: its MTU plus the Ethernet header.
    pub max_frame: u32,
    pub _pad: u32,
}

/// The address is the bridge's own (or one of its ports'): frames to it are for the gateway.
pub const FDB_LOCAL: u32 = 1 << 0;

/// Map `FAST_PATH` (array, one entry): the mirror is trusted until `valid_until_ns`
/// (`bpf_ktime_get_ns`, CLOCK_MONOTONIC). The controller renews it on every synchronisation;
/// if it stops (exits, hangs), the fast path turns itself off and every frame goes to the
/// bridge, still filtered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastPathState {
    pub valid_until_ns: u64,
}
