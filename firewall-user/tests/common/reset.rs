//! Checks a TCP reset the program sent back (XDP_TX) against the segment it answers: parsed with
//! etherparse, checksums recomputed here rather than trusted to either side.

use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

/// The 16-bit one's complement sum of `bytes` (odd length padded with a zero byte).
fn sum16(mut sum: u32, bytes: &[u8]) -> u32 {
    for chunk in bytes.chunks(2) {
        let hi = u32::from(chunk[0]) << 8;
        sum += hi | chunk.get(1).copied().map_or(0, u32::from);
    }
    sum
}

/// True when `sum` (over data that includes its own checksum field) folds to 0xffff.
fn checksum_ok(mut sum: u32) -> bool {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Tcp<'a> {
    slice: etherparse::TcpSlice<'a>,
    /// Source and destination address bytes (4 or 16 each).
    src: Vec<u8>,
    dst: Vec<u8>,
}

fn tcp_of<'a>(p: &SlicedPacket<'a>) -> Result<Tcp<'a>, String> {
    let (src, dst) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
        ),
        _ => return Err("no IP header".into()),
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => Ok(Tcp {
            slice: t.clone(),
            src,
            dst,
        }),
        _ => Err("no TCP header".into()),
    }
}

/// `input` is the frame given to the program, `output` the frame it transmitted.
pub fn check_reset(input: &[u8], output: &[u8]) -> Result<(), String> {
    let sent = SlicedPacket::from_ethernet(input).map_err(|e| format!("input: {e}"))?;
    let rst =
        SlicedPacket::from_ethernet(output).map_err(|e| format!("output does not parse: {e}"))?;

    // Ethernet: addresses swapped, VLAN tags kept as they were.
    let (Some(LinkSlice::Ethernet2(a)), Some(LinkSlice::Ethernet2(b))) = (&sent.link, &rst.link)
    else {
        return Err("no Ethernet header".into());
    };
    ensure!(
        b.source() == a.destination() && b.destination() == a.source(),
        "MAC addresses not swapped"
    );
    let tags = sent.link_exts.len() * 4;
    ensure!(
        output[12..14 + tags] == input[12..14 + tags],
        "VLAN tags or ethertype changed"
    );

    // IP: addresses swapped, fresh TTL, lengths for a bare 20-byte TCP header, valid checksum.
    let (a, b) = (tcp_of(&sent)?, tcp_of(&rst)?);
    ensure!(b.src == a.dst && b.dst == a.src, "IP addresses not swapped");
    let l3 = 14 + tags;
    let ip_header_len = match (&sent.net, &rst.net) {
        (Some(NetSlice::Ipv4(a)), Some(NetSlice::Ipv4(b))) => {
            let (a, b) = (a.header(), b.header());
            ensure!(b.ttl() == 64, "TTL {}", b.ttl());
            ensure!(
                b.ihl() == a.ihl(),
                "IHL changed from {} to {}",
                a.ihl(),
                b.ihl()
            );
            let len = usize::from(b.ihl()) * 4;
            ensure!(
                usize::from(b.total_len()) == len + 20,
                "IPv4 total length {}",
                b.total_len()
            );
            ensure!(
                checksum_ok(sum16(0, &output[l3..l3 + len])),
                "bad IPv4 header checksum"
            );
            len
        }
        (Some(NetSlice::Ipv6(a)), Some(NetSlice::Ipv6(b))) => {
            let exts = a.extensions().slice().len();
            let b = b.header();
            ensure!(b.hop_limit() == 64, "hop limit {}", b.hop_limit());
            ensure!(
                usize::from(b.payload_length()) == exts + 20,
                "IPv6 payload length {}",
                b.payload_length()
            );
            ensure!(
                output[l3 + 40..l3 + 40 + exts] == input[l3 + 40..l3 + 40 + exts],
                "extension headers changed"
            );
            40 + exts
        }
        _ => return Err("IP version changed or missing".into()),
    };
    ensure!(
        output.len() == l3 + ip_header_len + 20,
        "frame length {}: expected a bare TCP header",
        output.len()
    );

    // TCP: ports swapped, RST, sequence numbers per RFC 9293 3.10.7.1, valid checksum.
    let (s, r) = (&a.slice, &b.slice);
    ensure!(
        r.source_port() == s.destination_port() && r.destination_port() == s.source_port(),
        "ports not swapped"
    );
    ensure!(
        r.rst() && !r.syn() && !r.fin() && !r.psh() && !r.urg(),
        "flags are not a reset"
    );
    ensure!(
        r.data_offset() == 5 && r.payload().is_empty(),
        "reset carries options or data"
    );
    if s.ack() {
        ensure!(!r.ack(), "a reset answering an ACK must not carry ACK");
        ensure!(
            r.sequence_number() == s.acknowledgment_number(),
            "seq {} != SEG.ACK {}",
            r.sequence_number(),
            s.acknowledgment_number()
        );
    } else {
        let seg_len = s.payload().len() as u32 + u32::from(s.syn()) + u32::from(s.fin());
        let want = s.sequence_number().wrapping_add(seg_len);
        ensure!(
            r.ack() && r.sequence_number() == 0,
            "expected <SEQ=0><CTL=RST,ACK>"
        );
        ensure!(
            r.acknowledgment_number() == want,
            "ack {} != SEG.SEQ + SEG.LEN {want}",
            r.acknowledgment_number()
        );
    }
    let tcp_bytes = r.slice();
    let mut pseudo = sum16(0, &b.src);
    pseudo = sum16(pseudo, &b.dst);
    pseudo += 6 + tcp_bytes.len() as u32;
    ensure!(checksum_ok(sum16(pseudo, tcp_bytes)), "bad TCP checksum");
    Ok(())
}
