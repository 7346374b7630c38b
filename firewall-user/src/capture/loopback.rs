//! BSD loopback captures: a 4-byte address family in front of the packet. LINKTYPE_NULL writes
//! it in the byte order of the host that captured (macOS, the BSDs, Npcap's loopback adapter on
//! Windows), LINKTYPE_LOOP (OpenBSD) in network byte order.

use anyhow::{ensure, Result};
use etherparse::EtherType;

use super::link::{self, NO_ETHERNET_EQUIVALENT, SYNTHETIC_SOURCE};

const HEADER_LEN: usize = 4;

const AF_INET: u32 = 2;
/// AF_INET6 differs between the systems writing these captures: 24 (NetBSD, OpenBSD), 28
/// (FreeBSD), 30 (macOS); the link-type registry asks readers to accept all three.
const AF_INET6: [u32; 3] = [24, 28, 30];
/// Novell IPX, which has an ethertype of its own on Ethernet.
const AF_IPX: u32 = 23;
const ETHERTYPE_IPX: EtherType = EtherType(0x8137);

/// The Ethernet frame for a LINKTYPE_NULL packet.
pub fn null_to_ethernet(packet: &[u8]) -> Result<Vec<u8>> {
    let (family, payload) = split(packet, "NULL")?;
    // The capturing host's byte order is not recorded (the file's need not be it). Families are
    // small numbers, so one with any of its upper 16 bits set was written the other way round.
    let family = u32::from_le_bytes(family);
    let family = if family > 0xffff {
        family.swap_bytes()
    } else {
        family
    };
    Ok(to_ethernet(family, payload))
}

/// The Ethernet frame for a LINKTYPE_LOOP packet.
pub fn loop_to_ethernet(packet: &[u8]) -> Result<Vec<u8>> {
    let (family, payload) = split(packet, "LOOP")?;
    Ok(to_ethernet(u32::from_be_bytes(family), payload))
}

fn split<'a>(packet: &'a [u8], name: &str) -> Result<([u8; HEADER_LEN], &'a [u8])> {
    ensure!(
        packet.len() >= HEADER_LEN,
        "BSD loopback ({name}) header truncated: {} of {HEADER_LEN} bytes",
        packet.len()
    );
    let (family, payload) = packet.split_at(HEADER_LEN);
    Ok((
        family.try_into().expect("split at the header length"),
        payload,
    ))
}

fn to_ethernet(family: u32, payload: &[u8]) -> Vec<u8> {
    let ether_type = match family {
        AF_INET => EtherType::IPV4,
        f if AF_INET6.contains(&f) => EtherType::IPV6,
        AF_IPX => ETHERTYPE_IPX,
        // OSI (7) would need an LLC header made up; other families are not network traffic.
        _ => NO_ETHERNET_EQUIVALENT,
    };
    link::ethernet(SYNTHETIC_SOURCE, ether_type, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::link::SYNTHETIC_DESTINATION;

    const IPV4: [u8; 4] = [0x45, 0, 0, 20];
    const IPV6: [u8; 4] = [0x60, 0, 0, 0];

    fn ethertype(frame: &[u8]) -> u16 {
        u16::from_be_bytes([frame[12], frame[13]])
    }

    #[test]
    fn null_reads_either_byte_order() {
        for header in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            let frame = null_to_ethernet(&[&header[..], &IPV4].concat()).unwrap();
            assert_eq!(&frame[..6], &SYNTHETIC_DESTINATION);
            assert_eq!(&frame[6..12], &SYNTHETIC_SOURCE);
            assert_eq!(ethertype(&frame), 0x0800);
            assert_eq!(&frame[14..], &IPV4);
        }
        for family in AF_INET6 {
            for header in [family.to_le_bytes(), family.to_be_bytes()] {
                let frame = null_to_ethernet(&[&header[..], &IPV6].concat()).unwrap();
                assert_eq!(ethertype(&frame), 0x86dd, "family {family}");
                assert_eq!(&frame[14..], &IPV6);
            }
        }
    }

    #[test]
    fn loop_is_big_endian() {
        let frame = loop_to_ethernet(&[&24u32.to_be_bytes()[..], &IPV6].concat()).unwrap();
        assert_eq!(ethertype(&frame), 0x86dd);
        let frame = loop_to_ethernet(&[&2u32.to_be_bytes()[..], &IPV4].concat()).unwrap();
        assert_eq!(ethertype(&frame), 0x0800);
        // Read as little-endian, 2 would be 0x02000000: no family otfw knows.
        let frame = loop_to_ethernet(&[&2u32.to_le_bytes()[..], &IPV4].concat()).unwrap();
        assert_eq!(ethertype(&frame), 0xffff);
    }

    #[test]
    fn other_families() {
        let frame = loop_to_ethernet(&[&23u32.to_be_bytes()[..], &[0xff, 0xff]].concat()).unwrap();
        assert_eq!(ethertype(&frame), 0x8137);
        // OSI: judged, with the reserved ethertype, payload kept.
        let frame = null_to_ethernet(&[&7u32.to_le_bytes()[..], &[0x81]].concat()).unwrap();
        assert_eq!(ethertype(&frame), 0xffff);
        assert_eq!(&frame[14..], &[0x81]);
    }

    #[test]
    fn truncated_headers_are_errors() {
        let e = null_to_ethernet(&[2, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BSD loopback (NULL) header truncated: 2 of 4 bytes"
        );
        let e = loop_to_ethernet(&[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BSD loopback (LOOP) header truncated: 0 of 4 bytes"
        );
    }
}
