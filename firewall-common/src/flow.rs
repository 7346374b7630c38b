//! Tracked flows: the tables that let replies through, and what bounds them.
//!
//! Two tables, so that a flood of flows nobody answers cannot push out the ones that work:
//! a new flow waits in `EMBRYOS` (LRU) until its responder answers, and only then moves to
//! `FLOWS`, where each zone may hold at most its share (`ZoneInfo::max_flows`) of the entries,
//! charged to the initiator's zone. The shares add up to no more than the table, so `FLOWS`
//! never fills and its LRU never evicts: a zone that opens connections as fast as it can
//! exhausts its own share, never another zone's flows.

use crate::mem::copy_words;

/// Entries of `FLOWS`: established flows (answered, or adopted mid-stream).
pub const MAX_FLOWS: u32 = 262144;
/// Entries of `EMBRYOS`: flows waiting for their first answer (a TCP SYN, a UDP datagram or
/// an echo request nobody answered yet). LRU: under a SYN flood the oldest go first, and a
/// handshake completes in far less time than the flood needs to cycle the table.
pub const MAX_EMBRYOS: u32 = 65536;
/// Idle time after which a TCP flow that saw a FIN is forgotten, however long
/// `timeouts.tcp` is: a closed connection must not hold its zone's share for hours.
pub const TCP_CLOSING_IDLE_SECS: u32 = 60;

/// A flow's 5-tuple. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`). Ports are in host
/// order; for ICMP echo both ports carry the identifier so that the reversed key of a reply
/// matches.
///
/// Map `FLOWS` is keyed by the canonical form (`canonical`): the same key for both directions,
/// so a packet of a tracked flow costs one lookup whichever way it travels. The inspectors'
/// maps and events use the key in the initiator's direction.
///
/// 8-aligned, so that the addresses (offsets 0 and 16) move as two 64-bit words each: as byte
/// arrays of alignment 1 they would be sixteen byte loads and stores each, on every copy of
/// every key of every packet. The alignment adds no padding (40 bytes either way).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Offset of `FlowKey`'s tail word: the ports, the protocol and the padding (`set_tail`).
const TAIL_OFFSET: usize = 32;
const _: () = {
    assert!(core::mem::offset_of!(FlowKey, sport) == TAIL_OFFSET);
    assert!(core::mem::offset_of!(FlowKey, dport) == TAIL_OFFSET + 2);
    assert!(core::mem::offset_of!(FlowKey, proto) == TAIL_OFFSET + 4);
    assert!(core::mem::offset_of!(FlowKey, _pad) == TAIL_OFFSET + 5);
    assert!(core::mem::size_of::<FlowKey>() == TAIL_OFFSET + 8);
};

impl FlowKey {
    #[inline(always)]
    pub fn reversed(&self) -> FlowKey {
        let mut out = FlowKey::default();
        self.reversed_into(&mut out);
        out
    }

    /// A copy of the key written into `out` (map memory to map memory: a plain assignment is a
    /// `memmove`, see `crate::mem`).
    #[inline(always)]
    pub fn copy_into(&self, out: &mut FlowKey) {
        // SAFETY: both pairs of addresses are a `FlowKey`'s, 8-aligned.
        unsafe { out.set_addrs(&self.src, &self.dst) };
        out.set_tail(self.sport, self.dport, self.proto, self._pad);
    }

    /// `reversed`, written into `out` (in map memory, as `canonical_into`).
    #[inline(always)]
    pub fn reversed_into(&self, out: &mut FlowKey) {
        // SAFETY: as in `copy_into`.
        unsafe { out.set_addrs(&self.dst, &self.src) };
        out.set_tail(self.dport, self.sport, self.proto, [0; 3]);
    }

    /// Sets the ports, the protocol and the padding with one 64-bit store. The kernel hashes a
    /// key (and the datapath compares one) in whole words: a word loaded over several narrower
    /// stores still in flight cannot be forwarded from them, and waits until they have reached
    /// the cache (store-to-load forwarding works for a load inside one store). Built field by
    /// field, the tail of every key cost that wait twice per lookup.
    #[inline(always)]
    pub fn set_tail(&mut self, sport: u16, dport: u16, proto: u8, pad: [u8; 3]) {
        let (s, d) = (sport.to_ne_bytes(), dport.to_ne_bytes());
        let tail = u64::from_ne_bytes([s[0], s[1], d[0], d[1], proto, pad[0], pad[1], pad[2]]);
        // SAFETY: the tail (`sport` to the end of `_pad`) is the key's last 8 bytes, at offset
        // 32 of an 8-aligned struct (`TAIL_OFFSET`); the pointer is derived from the whole key.
        unsafe {
            let p = (self as *mut FlowKey as *mut u8).add(TAIL_OFFSET) as *mut u64;
            core::ptr::write_volatile(p, tail);
        }
    }

    /// Sets both addresses, word by word.
    ///
    /// # Safety
    /// `src` and `dst` must be 8-aligned: a `FlowKey`'s own, or held at 8-aligned offsets of a
    /// `repr(C, align(8))` struct.
    #[inline(always)]
    pub unsafe fn set_addrs(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        // SAFETY: the caller's promise for `src` and `dst`; `self`'s addresses are at offsets
        // 0 and 16 of an 8-aligned struct.
        unsafe {
            copy_words(&mut self.src, src);
            copy_words(&mut self.dst, dst);
        }
    }

    /// The direction-independent form of this key: the lower endpoint (address, then port)
    /// first. Returns it with the side this key's source occupies in it (`SIDE_LOW` or
    /// `SIDE_HIGH`).
    #[inline(always)]
    pub fn canonical(&self) -> (FlowKey, u8) {
        let mut out = FlowKey::default();
        let side = self.canonical_into(&mut out);
        (out, side)
    }

    /// `canonical`, written into `out` (in map memory: the key is too big to copy around on
    /// the datapath's stack).
    #[inline(always)]
    pub fn canonical_into(&self, out: &mut FlowKey) -> u8 {
        let low = endpoint_le(&self.src, self.sport, &self.dst, self.dport);
        if low {
            // SAFETY: as in `copy_into`.
            unsafe { out.set_addrs(&self.src, &self.dst) };
            out.set_tail(self.sport, self.dport, self.proto, [0; 3]);
        } else {
            // Zeroes the padding itself.
            self.reversed_into(out);
        }
        if low {
            SIDE_LOW
        } else {
            SIDE_HIGH
        }
    }

    /// Marks a canonical key as an ICMP echo flow's, with the side of its initiator: an echo
    /// flow is directional (a request opens it, only replies answer it), so a request
    /// travelling the other way is another flow, under another key.
    #[inline(always)]
    pub fn mark_echo(&mut self, initiator: u8) {
        // The whole tail rewritten (`set_tail`): the ports and protocol were just stored.
        self.set_tail(
            self.sport,
            self.dport,
            self.proto,
            [ECHO_MARK | initiator, 0, 0],
        );
    }
}

/// The endpoint occupying the first half of a canonical key.
pub const SIDE_LOW: u8 = 0;
pub const SIDE_HIGH: u8 = 1;
/// `FlowKey::_pad[0]` of a canonical echo key: `ECHO_MARK | initiator side`.
pub const ECHO_MARK: u8 = 2;

/// Whether endpoint `(a, ap)` sorts before or equal to `(b, bp)`: addresses compared as two
/// big-endian 64-bit words (any total order will do, as long as both directions agree; this one
/// is kept because keys already in a pinned `FLOWS` were made by it), then ports. `a` and `b`
/// are a `FlowKey`'s.
#[inline(always)]
fn endpoint_le(a: &[u8; 16], ap: u16, b: &[u8; 16], bp: u16) -> bool {
    // SAFETY: a `FlowKey`'s addresses, 8-aligned.
    let (a, b) = unsafe { (load_words(a), load_words(b)) };
    let (a0, a1) = (u64::from_be(a[0]), u64::from_be(a[1]));
    let (b0, b1) = (u64::from_be(b[0]), u64::from_be(b[1]));
    if a0 != b0 {
        return a0 < b0;
    }
    if a1 != b1 {
        return a1 < b1;
    }
    ap <= bp
}

/// The 16 bytes at `a` as two words in memory order (native-endian values).
///
/// # Safety
/// `a` must be 8-aligned.
#[inline(always)]
unsafe fn load_words(a: &[u8; 16]) -> [u64; 2] {
    let p = a.as_ptr() as *const u64;
    // SAFETY: the caller's promise; both words lie inside `a`.
    unsafe { [p.read(), p.add(1).read()] }
}

/// Per-CPU scratch space for the keys of the packet in hand (map `FLOW_KEYS`): they would take
/// 80 of the program's 512 stack bytes. `forward` is in the packet's direction, `canonical`
/// the key of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKeys {
    pub forward: FlowKey,
    pub canonical: FlowKey,
    /// The decision cache's key for this packet (`DenyKey`).
    pub deny: DenyKey,
    /// The side of `canonical` the packet's source occupies (`SIDE_LOW`, `SIDE_HIGH`).
    pub side: u32,
    /// The key of the host table lookup in progress (`ZONE_HOSTS`).
    pub host: crate::zone::HostKey,
    /// The entry of a flow being opened, built here to be inserted.
    pub fresh: FlowState,
    /// The table the packet's flow was found in (`TABLE_*`), and its flags (`FlowState::flags`)
    /// for the inspector.
    pub table: u32,
    pub flow_flags: u32,
    /// The fast path's keys: destination and source MAC address (`FDB`).
    pub macs: [crate::fastpath::MacKey; 2],
}

/// TCP flow states as far as a middlebox needs them.
pub const TCP_SYN_SENT: u8 = 1;
pub const TCP_ESTABLISHED: u8 = 2;
pub const TCP_CLOSING: u8 = 3;

/// The flow was adopted mid-stream (no SYN seen).
pub const FLOW_ADOPTED: u8 = 1 << 0;
/// The initiator is the canonical key's high side (`SIDE_HIGH`).
pub const FLOW_INITIATOR_HIGH: u8 = 1 << 1;
/// `FlowState::ports[SIDE_LOW]` (this bit) and `ports[SIDE_HIGH]` (the next) hold a checked
/// port under the flow's epoch.
pub const FLOW_PORT_CHECKED: u8 = 1 << 2;

/// The flow counts against its zone's share of `FLOWS` (`FlowState::charge`).
pub const FLOW_CHARGED: u8 = 1 << 4;
/// The flow's inspector keeps state for it: an inspector that finds no state for such a flow
/// lost it (evicted), and must not start afresh in the middle of the stream.
pub const FLOW_INSPECTED: u8 = 1 << 5;

/// `FlowKeys::table`: where the packet's flow entry is.
pub const TABLE_FLOWS: u32 = 0;
pub const TABLE_EMBRYOS: u32 = 1;

/// Value of maps `FLOWS` and `EMBRYOS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub last_seen_ns: u64,
    /// Epoch of the policy the flow was last admitted under; when it differs from the active
    /// epoch, the datapath re-checks the flow against the policy now in force.
    pub epoch: u32,
    pub conduit: u16,
    pub tcp_state: u8,
    pub flags: u8,
    /// `INSPECT_*` and protocol rule id of the admitting port rule.
    pub inspect: u8,
    pub _pad: u8,
    pub rule: u16,
    /// The bridge port each side of the canonical key (`SIDE_LOW`, `SIDE_HIGH`) was last seen
    /// arriving on, with its zone and the zone's port binding checked, under `epoch` (valid
    /// where `FLOW_PORT_CHECKED << side` is set). A packet from the same side on the same port under the same epoch needs no zone
    /// lookup: its addresses, the zones and their ports cannot have changed without a swap.
    pub ports: [u32; 2],
    /// The initiator's zone as `ZoneInfo::charge`: whose share of `FLOWS` the flow uses
    /// (valid with `FLOW_CHARGED`). A stable id, not the zone's index, which a policy swap
    /// may give to another zone.
    pub charge: u32,
    /// The zone's share (`ZoneInfo::max_flows`) under the policy that admitted the flow,
    /// checked again when it is promoted to `FLOWS`.
    pub max_flows: u32,
    pub _pad2: u32,
}

/// Map `ZONE_FLOWS`, by `ZoneInfo::charge`: the flows the datapath put into and took out of
/// `FLOWS` for the zone (atomic adds). The flows in `FLOWS` charged to the zone are
/// `opened - closed - ZONE_SWEPT[charge]`, the last being those the controller removed as
/// expired: each counter has one kind of writer, so none is ever overwritten.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneFlows {
    pub opened: u64,
    pub closed: u64,
}

impl ZoneFlows {
    /// The flows charged to the zone now, given the controller's sweep count.
    #[inline(always)]
    pub fn live(&self, swept: u64) -> u64 {
        self.opened
            .saturating_sub(self.closed)
            .saturating_sub(swept)
    }
}

impl FlowState {
    /// The canonical side of the initiator.
    #[inline(always)]
    pub fn initiator(&self) -> u8 {
        if self.flags & FLOW_INITIATOR_HIGH != 0 {
            SIDE_HIGH
        } else {
            SIDE_LOW
        }
    }
}

/// Entries of the decision cache (map `DENIALS`): denied packets of flows that are not tracked
/// repeat their tuple in a flood; their decision is remembered so the next one costs one lookup
/// instead of zone and conduit resolution.
pub const MAX_DENIALS: u32 = 65536;

/// Key of map `DENIALS`: everything a denial of an untracked packet depends on. The policy is
/// named by its epoch, so an entry can never outlive a swap: the next policy's packets look up
/// other keys, and the old entries age out of the LRU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DenyKey {
    /// The packet's tuple in its own direction; `_pad[0]` holds `class`; the source port is 0
    /// except for mid-stream TCP segments (`DENY_TCP_OTHER`), the only untracked packets whose
    /// decision depends on it.
    pub tuple: FlowKey,
    pub epoch: u32,
    /// The bridge port it arrived on (the zones' port bindings depend on it).
    pub ifindex: u32,
}

impl DenyKey {
    /// Sets `epoch` and `ifindex` with one 64-bit store (why: `FlowKey::set_tail`).
    #[inline(always)]
    pub fn set_scope(&mut self, epoch: u32, ifindex: u32) {
        let (e, i) = (epoch.to_ne_bytes(), ifindex.to_ne_bytes());
        let scope = u64::from_ne_bytes([e[0], e[1], e[2], e[3], i[0], i[1], i[2], i[3]]);
        // SAFETY: `epoch` and `ifindex` are the key's last 8 bytes, at offset 40 of an
        // 8-aligned struct (checked below); the pointer is derived from the whole key.
        unsafe {
            let p = (self as *mut DenyKey as *mut u8).add(SCOPE_OFFSET) as *mut u64;
            core::ptr::write_volatile(p, scope);
        }
    }
}

/// Offset of `DenyKey`'s scope word: the epoch and the port (`set_scope`).
const SCOPE_OFFSET: usize = 40;
const _: () = {
    assert!(core::mem::offset_of!(DenyKey, epoch) == SCOPE_OFFSET);
    assert!(core::mem::offset_of!(DenyKey, ifindex) == SCOPE_OFFSET + 4);
    assert!(core::mem::size_of::<DenyKey>() == SCOPE_OFFSET + 8);
    assert!(core::mem::align_of::<DenyKey>() == 8);
};

/// `DenyKey::tuple._pad[0]` for TCP: what kind of segment it is (the admission of an untracked
/// segment depends on SYN, RST and neither). ICMP uses the message type, UDP 0.
pub const DENY_TCP_SYN: u8 = 1;
pub const DENY_TCP_RST: u8 = 2;
pub const DENY_TCP_OTHER: u8 = 3;

/// Value of map `DENIALS`: the denial to repeat.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denial {
    pub conduit: u16,
    pub reason: u8,
    /// `DENIAL_*` flags.
    pub flags: u8,
}

/// Entries of each CPU's memo of recent denials (map `RECENT_DENIALS`), asked before `DENIALS`:
/// a flood repeating a few denied tuples is answered by an array slot and a key compare instead
/// of a hash lookup.
pub const DENIAL_MEMO_SLOTS: u32 = 8;

/// Value of map `RECENT_DENIALS`: a denial `DENIALS` holds (or just got) under `key`. Exact for
/// the same reason the cache is: the key names the epoch, and a remembered decision never
/// changes while its epoch is in force. An entry of zeros matches nothing (epoch 0 is never
/// active).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenialMemo {
    pub key: DenyKey,
    pub denial: Denial,
    pub _pad: [u8; 4],
    /// Drops this entry answered (and their bytes) not yet in the counters: a hit on a denial
    /// whose final verdict is a drop (`DENIAL_DROP`) is counted here instead of in
    /// `PATH_STATS` (`denial_cached`), `REASON_STATS` (the reason, dropped) and `CONDUIT_STATS`
    /// (the conduit's drops under `key.epoch`), three lookups saved per packet, and the
    /// conduit's settings not read. They are added there when the entry is taken for another
    /// denial; until then readers add them.
    pub packets: u64,
    pub bytes: u64,
    /// The timer tick (jiffies) of the last event offered for this denial: the packets
    /// counted here offer one per tick.
    pub offered_tick: u64,
}

const _: () = assert!(core::mem::size_of::<DenialMemo>() == 80);

impl DenyKey {
    /// The memo slot of this key: a mix of the words that vary between flooding sources.
    #[inline(always)]
    pub fn memo_index(&self) -> u32 {
        let t = &self.tuple;
        let mix = u32::from_ne_bytes([t.src[12], t.src[13], t.src[14], t.src[15]])
            ^ u32::from_ne_bytes([t.dst[12], t.dst[13], t.dst[14], t.dst[15]])
            ^ (t.dport as u32) << 16
            ^ t.sport as u32
            ^ self.ifindex;
        (mix ^ mix >> 11 ^ mix >> 22) % DENIAL_MEMO_SLOTS
    }
}

/// Entries of each CPU's memo of the flows it passed packets of in the current timer tick (map
/// `BUSY_FLOWS`, direct-mapped by `FlowMemo::slot`). A busy flow sends many packets per tick:
/// after the first has been decided through `FLOWS` (and wrote the clock into the entry's
/// `last_seen_ns`), the others of the same tick are answered by an array slot and a key
/// compare instead of the hash lookup.
pub const FLOW_MEMO_SLOTS: u32 = 256;

/// Value of map `BUSY_FLOWS` (the flow memo): what a packet from `side` of the flow `key`, arriving on
/// `ifindex`, was decided under `epoch` in the timer tick `tick` (the kernel's jiffies), with
/// `FLOW_GENERATION`'s sum at `generation`. Only the middle of a flow is memoised (TCP
/// segments without SYN, FIN or RST, UDP datagrams) and only once the flow's entry cannot
/// change but by a removal: in `FLOWS`, its side's port checked under `epoch`, a TCP
/// inspector's state marked. Exact because every condition a hit skips is pinned: the policy
/// by `epoch`, the zones and port bindings by `ifindex` and `side`, expiry by `tick`
/// (`last_seen_ns` was written in that tick, so no idle timeout can have passed), a removal by
/// the generation (every removal from `FLOWS` counts in it). An entry of zeros matches nothing
/// (epoch 0 is never active). An entry whose epoch is 0 but whose key is set is a lookup in
/// progress: the tick and the generation read before it.
///
/// A UDP flow nobody answers (implicit I/O whose other direction is multicast, syslog, traps)
/// stays in `EMBRYOS` for as long as it lives; its initiator's datagrams are memoised too
/// (`MEMO_EMBRYO`). Such an entry changes in two ways the generation does not count, neither of
/// which a hit can get wrong: the answer that promotes it to `FLOWS` keeps its conduit,
/// inspector and rule (and is the other side's packet, another slot), and an eviction by the
/// LRU is a matter of table space, not a decision: the flow's next packets would be admitted
/// again under the same epoch, zones and port, so the memo only defers the entry's re-creation
/// to the next tick's first packet. (After the promotion, a hit still names `EMBRYOS` as the
/// flow's table for the rest of the tick: only the TCP inspectors read the table, and this is
/// UDP.)
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMemo {
    /// The canonical key (`FLOWS`'s).
    pub key: FlowKey,
    pub tick: u64,
    pub generation: u64,
    pub epoch: u32,
    pub ifindex: u32,
    pub conduit: u16,
    pub rule: u16,
    pub inspect: u8,
    /// `FlowState::flags` of the entry.
    pub flow_flags: u8,
    /// The packet's side of `key` (`SIDE_LOW`, `SIDE_HIGH`).
    pub side: u8,
    /// `MEMO_TO_SERVER`, `MEMO_EMBRYO`.
    pub marks: u8,
    /// Packets this entry answered (and their bytes) not yet in the counters: a hit on a flow
    /// without an inspector is counted here instead of in `PATH_STATS` (`flow_hit`),
    /// `REASON_STATS` (a pass) and `CONDUIT_STATS` (the conduit's passes under `epoch`),
    /// three lookups saved per packet. They are added there when the entry is taken for
    /// another lookup; until then readers add them (`epoch` says whose conduit counters).
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<FlowMemo>() == 88);

/// `FlowMemo::marks`: the packet travels from the flow's initiator.
pub const MEMO_TO_SERVER: u8 = 1;
/// `FlowMemo::marks`: the flow's entry is in `EMBRYOS` (a hit sets `FlowKeys::table` to
/// `TABLE_EMBRYOS`, as the lookup would have).
pub const MEMO_EMBRYO: u8 = 2;

impl FlowMemo {
    /// The memo slot of a packet: a mix of the canonical key's words that differ between
    /// flows (the addresses' last four bytes, the ports), its side and its port. Both
    /// directions of a flow handled by one CPU take different slots.
    #[inline(always)]
    pub fn slot(key: &FlowKey, side: u8, ifindex: u32) -> u32 {
        let mix = u32::from_ne_bytes([key.src[12], key.src[13], key.src[14], key.src[15]])
            ^ u32::from_ne_bytes([key.dst[12], key.dst[13], key.dst[14], key.dst[15]])
            ^ ((key.sport as u32) << 16 | key.dport as u32)
            ^ ifindex
            ^ side as u32;
        (mix ^ mix >> 8 ^ mix >> 16 ^ mix >> 24) & (FLOW_MEMO_SLOTS - 1)
    }
}

/// Map `FLOW_GENERATION` (array of u64, `GENERATION_ENTRIES`): removals from `FLOWS`, counted
/// by the controller (entry `GENERATION_CONTROLLER`: a sweep that removed flows, a test that
/// cleared the table) and by the datapath (`GENERATION_DATAPATH`, atomic adds: a flow closed,
/// expired, revoked). One writer per entry, both only grow, so their sum changes with every
/// removal and a `FlowMemo` made under one sum is stale under any other.
pub const FLOW_GENERATION_ENTRIES: u32 = crate::fastpath::GENERATION_ENTRIES;

/// The denial was made before any conduit was consulted (a spoofed source): it is never
/// answered with a reset.
pub const DENIAL_NO_RESET: u8 = 1 << 0;
/// The denial's final verdict is a drop: its conduit enforces, and does not answer it with a
/// reset. (Fixed for the key's epoch: a generation's conduit settings never change while it is
/// in force.) Only these are counted in the memo (`DenialMemo::packets`); a denial made before
/// any conduit (`DENIAL_NO_RESET`) is never marked, as its packet is also kept from the
/// inventory, which a counted hit would not know.
pub const DENIAL_DROP: u8 = 1 << 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: u8, sport: u16, dst: u8, dport: u16) -> FlowKey {
        let mut k = FlowKey {
            sport,
            dport,
            proto: 6,
            ..Default::default()
        };
        k.src[15] = src;
        k.dst[15] = dst;
        k
    }

    #[test]
    fn both_directions_share_one_canonical_key() {
        let a = key(10, 40000, 20, 502);
        let (ca, sa) = a.canonical();
        let (cb, sb) = a.reversed().canonical();
        assert_eq!(ca, cb);
        assert_ne!(sa, sb);
        assert_eq!(sa, SIDE_LOW);
        // Ports decide when the addresses are equal.
        let same = key(10, 502, 10, 40000);
        assert_eq!(same.canonical().1, SIDE_LOW);
        assert_eq!(same.reversed().canonical().1, SIDE_HIGH);
    }

    #[test]
    fn canonical_order_is_the_addresses_big_endian() {
        // Keys pinned in `FLOWS` by an earlier version were made in this order: a change
        // would make every running flow miss after an upgrade. 9.0.0.3 sorts before 10.0.0.2
        // read as big-endian words (and after them read in memory order on little-endian).
        let mut a = key(0, 40000, 0, 502);
        a.src[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 2]);
        a.dst[10..].copy_from_slice(&[0xff, 0xff, 9, 0, 0, 3]);
        let (c, side) = a.canonical();
        assert_eq!(side, SIDE_HIGH);
        assert_eq!((c.src, c.sport), (a.dst, 502));
        assert_eq!((c.dst, c.dport), (a.src, 40000));
        assert_eq!(c.reversed().canonical().0, c);
    }

    #[test]
    fn echo_keys_carry_their_initiator() {
        let (mut by_low, _) = key(10, 7, 20, 7).canonical();
        let mut by_high = by_low;
        by_low.mark_echo(SIDE_LOW);
        by_high.mark_echo(SIDE_HIGH);
        assert_ne!(by_low, by_high);
        assert_eq!(by_high._pad, [ECHO_MARK | SIDE_HIGH, 0, 0]);
        assert_eq!((by_high.sport, by_high.dport, by_high.proto), (7, 7, 6));
    }

    #[test]
    fn whole_word_stores_write_the_fields_they_name() {
        // The tail and scope words are stored as one integer each: the fields must read back
        // as set, whatever the byte order, and a copy must keep the padding (the decision
        // cache's and the echo keys' class lives there).
        let mut k = key(1, 0, 2, 0);
        k.set_tail(0x1234, 0xabcd, 17, [3, 4, 5]);
        assert_eq!(
            (k.sport, k.dport, k.proto, k._pad),
            (0x1234, 0xabcd, 17, [3, 4, 5])
        );
        let mut copy = FlowKey::default();
        k.copy_into(&mut copy);
        assert_eq!(copy, k);
        let mut rev = FlowKey::default();
        k.reversed_into(&mut rev);
        assert_eq!((rev.src, rev.dst), (k.dst, k.src));
        assert_eq!(
            (rev.sport, rev.dport, rev.proto, rev._pad),
            (0xabcd, 0x1234, 17, [0; 3])
        );
        let (c, _) = k.canonical();
        assert_eq!(c._pad, [0; 3], "a canonical key carries no class");
        let mut d = DenyKey::default();
        d.set_scope(0xdead_beef, 7);
        assert_eq!((d.epoch, d.ifindex), (0xdead_beef, 7));
        let mut m = crate::fastpath::MacKey {
            _pad: [9, 9],
            ..Default::default()
        };
        m.set([1, 2, 3, 4, 5, 6]);
        assert_eq!((m.mac, m._pad), ([1, 2, 3, 4, 5, 6], [0, 0]));
    }
}
