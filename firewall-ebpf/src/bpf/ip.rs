//! IPv4 (with options) and IPv6 (with the common extension headers). Addresses are kept as 16
//! bytes, IPv4 as IPv4-mapped, so flows of both families share one table.

use aya_ebpf::programs::XdpContext;

use firewall_common::reason::Reason;

use super::packet::{be16_in_word, frame_len, load, load_half, load_word, ptr_at};

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers skipped before giving up: more than this in one packet is refused.
const MAX_EXT_HEADERS: usize = 4;

/// `repr(C, align(8))` with the addresses first: they are 8-aligned, so a flow key takes them
/// word by word (`FlowKey::set_addrs`).
#[repr(C, align(8))]
pub struct Ip {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub v6: bool,
    /// The upper-layer protocol after any extension headers.
    pub proto: u8,
    pub hop_limit: u8,
    /// Offset of the upper-layer header.
    pub l4: usize,
    /// Bytes from `l4` to the end of the IP payload (by the IP length fields, not the frame,
    /// which may carry Ethernet padding).
    pub l4_len: usize,
}

/// The IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) whose last four bytes are the low four
/// bytes of `v4` as loaded from the packet (native order: the datapath is little-endian BPF).
/// Built as two words: an array literal's run of zeros is a `memset`, which on BPF is an
/// out-of-line byte loop (`firewall_common::mem`).
#[inline(always)]
fn mapped(v4: u64) -> [u8; 16] {
    let high = (v4 & 0xffff_ffff) << 32 | 0xffff_0000;
    // SAFETY: two u64 are sixteen bytes, any bit pattern of either is valid.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([0, high]) }
}

impl Ip {
    #[inline(always)]
    pub fn v4_addr(a: &[u8; 16]) -> [u8; 4] {
        [a[12], a[13], a[14], a[15]]
    }

    #[inline(always)]
    pub fn parse_v4(ctx: &XdpContext, l3: usize) -> Result<Ip, Reason> {
        // One bounds check of the fixed header (separate small checks at one base let LLVM
        // merge them in ways the verifier cannot follow), then three unaligned word loads
        // (`packet::load_word`): read as bytes, the header was twenty byte loads and the
        // shifts putting the fields and addresses back together.
        let h = ptr_at::<[u8; 20]>(ctx, l3).map_err(|_| Reason::IpTruncated)? as *const u8;
        // SAFETY: the twenty bytes at `h` lie inside the packet; the loads read bytes 0..8,
        // 8..12 and 12..20.
        let (head, ttl_proto, addrs) =
            unsafe { (load_word(h), load_half(h.add(8)), load_word(h.add(12))) };
        let version_ihl = head as u8;
        if version_ihl >> 4 != 4 {
            return Err(Reason::IpBadVersion);
        }
        let ihl = ((version_ihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return Err(Reason::IpBadIhl);
        }
        let total = be16_in_word(head, 2) as usize;
        if total < ihl {
            return Err(Reason::IpBadLength);
        }
        if l3 + total > frame_len(ctx) {
            return Err(Reason::IpTruncated);
        }
        // A fragment other than the first has no ports to match, and reassembling is beyond a
        // line-rate bridge; the OT protocols we guard never need fragmentation. Refuse all.
        let frag = be16_in_word(head, 6);
        if frag & 0x3fff != 0 {
            return Err(Reason::Fragment);
        }
        Ok(Ip {
            v6: false,
            src: mapped(addrs),
            dst: mapped(addrs >> 32),
            proto: (ttl_proto >> 8) as u8,
            hop_limit: ttl_proto as u8,
            l4: l3 + ihl,
            l4_len: total - ihl,
        })
    }

    #[inline(always)]
    pub fn parse_v6(ctx: &XdpContext, l3: usize) -> Result<Ip, Reason> {
        let h: [u8; 40] = load(ctx, l3, Reason::IpTruncated)?;
        if h[0] >> 4 != 6 {
            return Err(Reason::IpBadVersion);
        }
        let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut next = h[6];
        let hop_limit = h[7];
        let mut src = [0u8; 16];
        src.copy_from_slice(&h[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&h[24..40]);
        // Jumbograms (payload length 0) only exist on links with huge MTUs; refuse them.
        if payload == 0 {
            return Err(Reason::IpBadLength);
        }
        let end = l3 + 40 + payload;
        if end > frame_len(ctx) {
            return Err(Reason::IpTruncated);
        }
        let mut off = l3 + 40;
        for _ in 0..MAX_EXT_HEADERS {
            match next {
                IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING => {
                    let hdr: [u8; 4] = load(ctx, off, Reason::Ipv6ExtHeader)?;
                    // Type 0 routing headers are deprecated (RFC 5095): an amplification and
                    // filter-evasion vector.
                    if next == IPPROTO_ROUTING && hdr[2] == 0 {
                        return Err(Reason::Ipv6ExtHeader);
                    }
                    next = hdr[0];
                    off += (hdr[1] as usize + 1) * 8;
                }
                _ => break,
            }
        }
        match next {
            IPPROTO_FRAGMENT => return Err(Reason::Fragment),
            // Still an extension header after the limit, or one we do not skip (ESP, AH,
            // mobility, HIP, shim6, "no next header"): nothing behind it can be inspected.
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING | 50 | 51 | 59 | 135 | 139
            | 140 => return Err(Reason::Ipv6ExtHeader),
            _ => {}
        }
        if off > end {
            return Err(Reason::IpBadLength);
        }
        Ok(Ip {
            v6: true,
            src,
            dst,
            proto: next,
            hop_limit,
            l4: off,
            l4_len: end - off,
        })
    }
}
