//! TCP checksums in captures. A capture taken on an endpoint records the segments that host
//! sends before its NIC (or, on a veth, nobody) fills in the checksum: with checksum offload the
//! field holds only the pseudo-header's sum, or anything at all. On the wire, and at the
//! gateway, those segments carry correct checksums. The datapath drops TCP segments of
//! inspected flows whose checksum is wrong (`tcp_bad_checksum`: their receiver would discard
//! them), so replaying such a capture as recorded would judge traffic the gateway never sees.
//! Wireshark does not validate checksums by default for the same reason; `otfw replay` repairs
//! them by default and judges them as recorded with `--checksums verify` (for captures from a
//! mirror port, where a bad checksum is what the wire carried).

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// What to do with TCP checksums of captured frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Checksums {
    /// Recompute a wrong TCP checksum before judging the frame (captures from endpoints).
    #[default]
    Repair,
    /// Judge frames as captured (captures from a mirror port or tap).
    Verify,
}

/// Rewrites the TCP checksum of `frame` (Ethernet, VLAN tags, IPv4 or IPv6) if it is wrong;
/// returns whether it did. Frames that are not whole TCP segments are left alone.
pub fn repair_tcp_checksum(frame: &mut [u8]) -> bool {
    let Some((offset, checksum)) = correct_checksum(frame) else {
        return false;
    };
    let field = offset + 16;
    if frame.len() < field + 2 || frame[field..field + 2] == checksum.to_be_bytes() {
        return false;
    }
    frame[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
    true
}

/// Whether the TCP checksum of `frame` is right (`None`: not a whole TCP segment).
pub fn tcp_checksum_ok(frame: &[u8]) -> Option<bool> {
    let (offset, checksum) = correct_checksum(frame)?;
    Some(frame.get(offset + 16..offset + 18)? == checksum.to_be_bytes())
}

/// Sets the TCP checksum of `frame` after its segment was rewritten: the right one if `ok`,
/// else a wrong one, so that a segment captured with a bad checksum stays bad.
pub fn set_tcp_checksum(frame: &mut [u8], ok: bool) {
    let Some((offset, checksum)) = correct_checksum(frame) else {
        return;
    };
    // One bit off is never an equivalent one's-complement form of the right sum.
    let checksum = if ok { checksum } else { checksum ^ 1 };
    if let Some(field) = frame.get_mut(offset + 16..offset + 18) {
        field.copy_from_slice(&checksum.to_be_bytes());
    }
}

/// The TCP header's offset in `frame` and the checksum it should carry.
fn correct_checksum(frame: &[u8]) -> Option<(usize, u16)> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        return None;
    };
    let header = tcp.to_header();
    let payload = tcp.payload();
    let checksum = match packet.net.as_ref()? {
        NetSlice::Ipv4(ip) => {
            if ip.header().is_fragmenting_payload() {
                return None;
            }
            let h = ip.header();
            header
                .calc_checksum_ipv4_raw(h.source(), h.destination(), payload)
                .ok()?
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            header
                .calc_checksum_ipv6_raw(h.source(), h.destination(), payload)
                .ok()?
        }
        _ => return None,
    };
    let offset = tcp.slice().as_ptr() as usize - frame.as_ptr() as usize;
    Some((offset, checksum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn segment() -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 502, 1, 64240)
            .ack(1)
            .psh();
        let payload = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1];
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        frame
    }

    #[test]
    fn a_correct_checksum_is_left_alone() {
        let mut frame = segment();
        let before = frame.clone();
        assert!(!repair_tcp_checksum(&mut frame));
        assert_eq!(frame, before);
    }

    #[test]
    fn an_offloaded_checksum_is_recomputed() {
        let mut frame = segment();
        let good = frame.clone();
        // Ethernet 14 + IPv4 20, then the checksum at TCP offset 16.
        frame[14 + 20 + 16] ^= 0x5a;
        assert!(repair_tcp_checksum(&mut frame));
        assert_eq!(frame, good);
    }

    #[test]
    fn non_tcp_frames_are_left_alone() {
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(!repair_tcp_checksum(&mut arp));
    }
}
