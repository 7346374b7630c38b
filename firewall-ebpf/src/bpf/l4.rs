//! TCP, UDP, ICMP and ICMPv6 headers, bounded by the IP payload length.

use aya_ebpf::programs::XdpContext;

use firewall_common::reason::Reason;

use super::{
    ip::Ip,
    packet::{be16_in_word, be32_in_word, load_word, ptr_at},
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

pub struct L4 {
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type (0 otherwise).
    pub icmp_type: u8,
    pub seq: u32,
    pub ack: u32,
    /// Offset and length of the payload after the L4 header.
    pub payload: usize,
    pub payload_len: usize,
    /// The TCP header's length (0 for other protocols), and the IP TTL / hop limit: what the
    /// inspectors need of the headers (`delivery`, `stream::TcpGuard`).
    pub header_len: u8,
    pub hop_limit: u8,
}

/// The eight-byte header (UDP, ICMP) at `at` as one unaligned word load (why: `Ip::parse_v4`);
/// its fields are read out of the word by `be16_in_word`.
#[inline(always)]
fn header(ctx: &XdpContext, at: usize) -> Result<u64, Reason> {
    let h = ptr_at::<[u8; 8]>(ctx, at).map_err(|_| Reason::L4Truncated)? as *const u8;
    // SAFETY: the eight bytes at `h` lie inside the packet.
    Ok(unsafe { load_word(h) })
}

impl L4 {
    #[inline(always)]
    pub fn parse(ctx: &XdpContext, ip: &Ip) -> Result<L4, Reason> {
        let at = ip.l4;
        match ip.proto {
            IPPROTO_TCP => {
                if ip.l4_len < 20 {
                    return Err(Reason::L4Truncated);
                }
                // Bytes 0..8 (ports, sequence number) and 8..16 (acknowledgment number, data
                // offset, flags) as two unaligned word loads, for the reason `Ip::parse_v4`
                // gives; the bounds check covers the whole fixed header.
                let h = ptr_at::<[u8; 20]>(ctx, at).map_err(|_| Reason::L4Truncated)? as *const u8;
                // SAFETY: the twenty bytes at `h` lie inside the packet; the loads read 0..16.
                let (ports_seq, ack_flags) = unsafe { (load_word(h), load_word(h.add(8))) };
                let doff = (((ack_flags >> 32) as u8 >> 4) as usize) * 4;
                if doff < 20 || doff > ip.l4_len {
                    return Err(Reason::TcpBadDataOffset);
                }
                let flags = (ack_flags >> 40) as u8;
                let syn = flags & TCP_SYN != 0;
                // No stack sends these; scanners and evasion tools do. After the SYN every
                // segment carries ACK (RFC 9293), so FIN/PSH/URG without ACK is a probe.
                if (syn && flags & (TCP_FIN | TCP_RST) != 0)
                    || (!syn && flags & (TCP_ACK | TCP_RST) == 0)
                {
                    return Err(Reason::TcpBadFlags);
                }
                Ok(L4 {
                    sport: be16_in_word(ports_seq, 0),
                    dport: be16_in_word(ports_seq, 2),
                    tcp_flags: flags,
                    icmp_type: 0,
                    seq: be32_in_word(ports_seq, 4),
                    ack: be32_in_word(ack_flags, 0),
                    payload: at + doff,
                    payload_len: ip.l4_len - doff,
                    header_len: doff as u8,
                    hop_limit: ip.hop_limit,
                })
            }
            IPPROTO_UDP => {
                if ip.l4_len < 8 {
                    return Err(Reason::L4Truncated);
                }
                let hdr = header(ctx, at)?;
                let len = be16_in_word(hdr, 4) as usize;
                if len < 8 || len > ip.l4_len {
                    return Err(Reason::L4Truncated);
                }
                Ok(L4 {
                    sport: be16_in_word(hdr, 0),
                    dport: be16_in_word(hdr, 2),
                    tcp_flags: 0,
                    icmp_type: 0,
                    seq: 0,
                    ack: 0,
                    payload: at + 8,
                    payload_len: len - 8,
                    header_len: 0,
                    hop_limit: ip.hop_limit,
                })
            }
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                if ip.l4_len < 8 {
                    return Err(Reason::L4Truncated);
                }
                let hdr = header(ctx, at)?;
                let icmp_type = hdr as u8;
                // Echo request and reply share the identifier: it stands in for both ports so
                // that a reply's reversed flow key matches its request's.
                let id = be16_in_word(hdr, 4);
                let echo = matches!(
                    (ip.proto, icmp_type),
                    (IPPROTO_ICMP, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY)
                        | (IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY)
                );
                let port = if echo { id } else { 0 };
                Ok(L4 {
                    sport: port,
                    dport: port,
                    tcp_flags: 0,
                    icmp_type,
                    seq: 0,
                    ack: 0,
                    payload: at + 8,
                    payload_len: ip.l4_len - 8,
                    header_len: 0,
                    hop_limit: ip.hop_limit,
                })
            }
            _ => Ok(L4 {
                sport: 0,
                dport: 0,
                tcp_flags: 0,
                icmp_type: 0,
                seq: 0,
                ack: 0,
                payload: at,
                payload_len: ip.l4_len,
                header_len: 0,
                hop_limit: ip.hop_limit,
            }),
        }
    }

    #[inline(always)]
    pub fn is_echo_request(&self, proto: u8) -> bool {
        (proto == IPPROTO_ICMP && self.icmp_type == ICMP_ECHO_REQUEST)
            || (proto == IPPROTO_ICMPV6 && self.icmp_type == ICMPV6_ECHO_REQUEST)
    }

    #[inline(always)]
    pub fn is_echo_reply(&self, proto: u8) -> bool {
        (proto == IPPROTO_ICMP && self.icmp_type == ICMP_ECHO_REPLY)
            || (proto == IPPROTO_ICMPV6 && self.icmp_type == ICMPV6_ECHO_REPLY)
    }

    /// The value a conduit's port rules are matched against: the destination port, or the
    /// ICMP type.
    #[inline(always)]
    pub fn service(&self, proto: u8) -> u16 {
        if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
            self.icmp_type as u16
        } else {
            self.dport
        }
    }
}
