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
        self.set_word(mac_word(m));
    }

    /// Sets the key from an address already made a word (`mac_word`).
    #[inline(always)]
    pub fn set_word(&mut self, word: u64) {
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

/// Map `FDB_GENERATION` (array of u64): entry `GENERATION_CONTROLLER` counts the controller's
/// changes to `FDB` and `FAST_TX` (it writes it after each synchronisation that changed them),
/// entry `GENERATION_DATAPATH` the datapath's own (an address dropped because it moved; atomic
/// adds). Two entries, one writer each: the controller's whole-value write could otherwise
/// overwrite a concurrent datapath increment and hand a number out twice. Both only grow, so
/// their sum (`generation`) changes whenever either does: a memo made under one sum is stale
/// under any other.
pub const GENERATION_CONTROLLER: u32 = 0;
pub const GENERATION_DATAPATH: u32 = 1;
pub const GENERATION_ENTRIES: u32 = 2;

/// Map `FORWARD_MEMO` (per-CPU array, `FORWARD_MEMO_SLOTS` entries, direct-mapped by
/// `ForwardMemo::slot`): the forwarder's recent decisions, so that a frame of a pair of hosts
/// it has just forwarded costs compares instead of its two `FDB` lookups. An entry holds only
/// what the mirror answered, under the generation it was read in; any change to the mirror
/// changes the generation, so an entry is never older than the mirror.
pub const FORWARD_MEMO_SLOTS: u32 = 256;

#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardMemo {
    /// `FDB_GENERATION`'s sum when the entry was made.
    pub generation: u64,
    /// Destination and source address as `MacKey` words (`mac_word`).
    pub dst: u64,
    pub src: u64,
    /// The port the frame arrived on (never 0: an all-zero entry matches no frame).
    pub ingress: u32,
    /// The port the destination was learnt on, and the largest frame it transmits.
    pub egress: u32,
    pub max_frame: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ForwardMemo>() == 40);

impl ForwardMemo {
    /// The memo entry for a pair of addresses arriving on a port: a few operations mixing the
    /// addresses' vendor-assigned low bytes (where hosts of one vendor differ) with the port.
    #[inline(always)]
    pub fn slot(dst: u64, src: u64, ingress: u32) -> u32 {
        // The words hold the address's first byte lowest: bytes 3-5 are the device's.
        let h = (dst >> 24) ^ (src >> 32) ^ ingress as u64;
        (h ^ (h >> 8) ^ (h >> 16)) as u32 & (FORWARD_MEMO_SLOTS - 1)
    }

    /// Whether this entry answers a frame from `src` to `dst` arriving on `ingress` under the
    /// mirror's `generation`.
    #[inline(always)]
    pub fn answers(&self, generation: u64, dst: u64, src: u64, ingress: u32) -> bool {
        self.generation == generation
            && self.dst == dst
            && self.src == src
            && self.ingress == ingress
    }
}

/// A MAC address as the word `MacKey::set` stores (padding zero).
#[inline(always)]
pub fn mac_word(m: [u8; 6]) -> u64 {
    u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_word_is_the_key_the_datapath_looks_up() {
        let m = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let mut key = MacKey::default();
        key.set_word(mac_word(m));
        assert_eq!(
            key,
            MacKey {
                mac: m,
                _pad: [0; 2]
            }
        );
    }

    #[test]
    fn memo_slots_spread_hosts_that_differ_in_their_device_bytes() {
        let host = |n: u8| mac_word([0x00, 0x1d, 0x9c, 0x10, 0x20, n]);
        let gateway = mac_word([0x02, 0, 0, 0, 0, 1]);
        let mut used = [false; FORWARD_MEMO_SLOTS as usize];
        for n in 0..=255 {
            used[ForwardMemo::slot(gateway, host(n), 7) as usize] = true;
        }
        assert!(used.iter().all(|&u| u), "256 hosts, 256 slots");
        assert!((0..=255).all(|n| ForwardMemo::slot(host(n), gateway, 7) < FORWARD_MEMO_SLOTS));
    }

    #[test]
    fn a_memo_answers_only_its_own_frame_under_its_own_generation() {
        let (dst, src) = (mac_word([2, 0, 0, 0, 0, 2]), mac_word([2, 0, 0, 0, 0, 1]));
        let memo = ForwardMemo {
            generation: 9,
            dst,
            src,
            ingress: 3,
            egress: 4,
            max_frame: 1514,
            _pad: 0,
        };
        assert!(memo.answers(9, dst, src, 3));
        assert!(!memo.answers(10, dst, src, 3));
        assert!(!memo.answers(9, src, dst, 3));
        assert!(!memo.answers(9, dst, src, 4));
        // An entry never written matches no frame: no port has ifindex 0.
        assert!(!ForwardMemo::default().answers(0, 0, 0, 3));
    }
}
