//! The link-layer header types otfw reads from captures, and how a packet of each becomes the
//! Ethernet frame the datapath judges.
//!
//! The XDP program parses from an Ethernet header, so a packet captured without one (on Linux's
//! `any` device, on a loopback interface, on a tunnel) is judged as if it had arrived on an
//! Ethernet port: its link header is replaced by a synthesised Ethernet header carrying the
//! ethertype the link header names. The datapath does not judge by MAC addresses (it only swaps
//! them when it answers with a TCP reset), so the synthesised addresses only have to be
//! well-formed: fixed locally administered ones, or the sender's address where a Linux cooked
//! header records an Ethernet one.
//!
//! Every captured packet becomes a frame, also one that could never arrive on an Ethernet port
//! (a netlink message, a CAN frame): it gets the reserved ethertype [`NO_ETHERNET_EQUIVALENT`]
//! and with it a verdict, and frame numbers stay those other tools show for the capture.

use anyhow::{bail, Result};
use etherparse::{EtherType, Ethernet2Header};
use pcap_file::DataLink;

use super::{cooked, loopback};

/// A link-layer header type otfw turns into Ethernet frames (after tcpdump's LINKTYPE_ names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1): judged as captured.
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113), Linux cooked capture v1: `tcpdump -i any`.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276), Linux cooked capture v2 (`-y LINUX_SLL2`), which adds the
    /// interface index.
    LinuxSll2,
    /// LINKTYPE_NULL (0), BSD loopback: macOS and the BSDs on their loopback interface, Npcap's
    /// loopback adapter on Windows.
    Null,
    /// LINKTYPE_LOOP (108), OpenBSD loopback.
    Loop,
    /// LINKTYPE_RAW (101), also written as DLT_RAW's own numbers 12 (14 on OpenBSD) by old
    /// software: an IPv4 or IPv6 packet with nothing in front (tun devices, some VPNs).
    Raw,
    /// LINKTYPE_IPV4 (228): an IPv4 packet with nothing in front.
    Ipv4,
    /// LINKTYPE_IPV6 (229): an IPv6 packet with nothing in front.
    Ipv6,
}

/// What the unsupported-link-type error offers instead.
const SUPPORTED: &str = "otfw reads Ethernet, Linux cooked (v1, v2), BSD loopback, raw IPv4/IPv6";

/// Source address of a synthesised Ethernet header when the link header records no Ethernet
/// address: locally administered (second bit of the first octet), unicast.
pub const SYNTHETIC_SOURCE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Destination address of every synthesised Ethernet header (no link header otfw reads records
/// the destination): locally administered, unicast.
pub const SYNTHETIC_DESTINATION: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The ethertype of a synthesised frame whose payload has no Ethernet framing: 0xFFFF is
/// reserved in the IEEE 802 numbers registry and names no protocol, so the datapath judges the
/// frame as non-IP traffic of a kind no policy means to allow.
pub const NO_ETHERNET_EQUIVALENT: EtherType = EtherType(0xFFFF);

impl LinkType {
    /// The link type of `link`, or an error naming it (name and number) if otfw cannot read it.
    pub fn from_datalink(link: DataLink) -> Result<LinkType> {
        Ok(match link {
            DataLink::ETHERNET => LinkType::Ethernet,
            DataLink::LINUX_SLL => LinkType::LinuxSll,
            DataLink::LINUX_SLL2 => LinkType::LinuxSll2,
            DataLink::NULL => LinkType::Null,
            DataLink::LOOP => LinkType::Loop,
            DataLink::RAW | DataLink::Unknown(12 | 14) => LinkType::Raw,
            DataLink::IPV4 => LinkType::Ipv4,
            DataLink::IPV6 => LinkType::Ipv6,
            DataLink::Unknown(number) => {
                bail!("link type {number} is not supported; {SUPPORTED}")
            }
            named => bail!(
                "link type {named:?} ({}) is not supported; {SUPPORTED}",
                u32::from(named)
            ),
        })
    }

    /// tcpdump's name for the link type, in lower case (`linux_sll2`), as replay reports it.
    pub fn name(self) -> &'static str {
        match self {
            LinkType::Ethernet => "ethernet",
            LinkType::LinuxSll => "linux_sll",
            LinkType::LinuxSll2 => "linux_sll2",
            LinkType::Null => "null",
            LinkType::Loop => "loop",
            LinkType::Raw => "raw",
            LinkType::Ipv4 => "ipv4",
            LinkType::Ipv6 => "ipv6",
        }
    }

    /// The Ethernet frame the datapath judges for `packet`, a packet captured with this link
    /// type. Fails only if the packet is too short for its link header.
    pub fn to_ethernet(self, packet: Vec<u8>) -> Result<Vec<u8>> {
        Ok(match self {
            LinkType::Ethernet => packet,
            LinkType::LinuxSll => cooked::v1_to_ethernet(&packet)?,
            LinkType::LinuxSll2 => cooked::v2_to_ethernet(&packet)?,
            LinkType::Null => loopback::null_to_ethernet(&packet)?,
            LinkType::Loop => loopback::loop_to_ethernet(&packet)?,
            LinkType::Raw => ethernet(SYNTHETIC_SOURCE, raw_ip_ethertype(&packet), &packet),
            LinkType::Ipv4 => ethernet(SYNTHETIC_SOURCE, EtherType::IPV4, &packet),
            LinkType::Ipv6 => ethernet(SYNTHETIC_SOURCE, EtherType::IPV6, &packet),
        })
    }
}

/// A raw IP packet says which IP it is in its first four bits (the version field of both
/// headers). Anything but 6 is judged as IPv4, whose version check then refuses what is not
/// IPv4, as it would refuse the same bytes behind an IPv4 ethertype.
fn raw_ip_ethertype(packet: &[u8]) -> EtherType {
    match packet.first().map(|b| b >> 4) {
        Some(6) => EtherType::IPV6,
        _ => EtherType::IPV4,
    }
}

/// `payload` behind a synthesised Ethernet header from `source` to [`SYNTHETIC_DESTINATION`].
pub(super) fn ethernet(source: [u8; 6], ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
    let header = Ethernet2Header {
        source,
        destination: SYNTHETIC_DESTINATION,
        ether_type,
    };
    let mut frame = Vec::with_capacity(Ethernet2Header::LEN + payload.len());
    frame.extend_from_slice(&header.to_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPV4_START: [u8; 4] = [0x45, 0x00, 0x00, 0x14];
    const IPV6_START: [u8; 4] = [0x60, 0x00, 0x00, 0x00];

    fn ethertype(frame: &[u8]) -> u16 {
        u16::from_be_bytes([frame[12], frame[13]])
    }

    #[test]
    fn ethernet_is_judged_as_captured() {
        let frame = vec![7u8; 60];
        assert_eq!(
            LinkType::Ethernet.to_ethernet(frame.clone()).unwrap(),
            frame
        );
    }

    #[test]
    fn raw_ip_is_told_apart_by_the_version_field() {
        for link in [DataLink::RAW, DataLink::Unknown(12), DataLink::Unknown(14)] {
            let link = LinkType::from_datalink(link).unwrap();
            assert_eq!(link, LinkType::Raw);
            let v4 = link.to_ethernet(IPV4_START.to_vec()).unwrap();
            assert_eq!(&v4[..6], &SYNTHETIC_DESTINATION);
            assert_eq!(&v4[6..12], &SYNTHETIC_SOURCE);
            assert_eq!(ethertype(&v4), 0x0800);
            assert_eq!(&v4[14..], &IPV4_START);
            let v6 = link.to_ethernet(IPV6_START.to_vec()).unwrap();
            assert_eq!(ethertype(&v6), 0x86dd);
            assert_eq!(&v6[14..], &IPV6_START);
        }
        // Neither version (or nothing at all): judged as a broken IPv4 packet.
        let bad = LinkType::Raw.to_ethernet(vec![0x55, 0, 0, 0]).unwrap();
        assert_eq!(ethertype(&bad), 0x0800);
        let empty = LinkType::Raw.to_ethernet(Vec::new()).unwrap();
        assert_eq!(empty.len(), 14);
        assert_eq!(ethertype(&empty), 0x0800);
    }

    #[test]
    fn ipv4_and_ipv6_link_types_name_the_protocol() {
        // The link type decides, not the version field.
        let v4 = LinkType::Ipv4.to_ethernet(IPV6_START.to_vec()).unwrap();
        assert_eq!(ethertype(&v4), 0x0800);
        let v6 = LinkType::Ipv6.to_ethernet(IPV4_START.to_vec()).unwrap();
        assert_eq!(ethertype(&v6), 0x86dd);
        assert_eq!(&v6[14..], &IPV4_START);
    }

    #[test]
    fn supported_link_types() {
        for (link, name) in [
            (DataLink::ETHERNET, "ethernet"),
            (DataLink::LINUX_SLL, "linux_sll"),
            (DataLink::LINUX_SLL2, "linux_sll2"),
            (DataLink::NULL, "null"),
            (DataLink::LOOP, "loop"),
            (DataLink::RAW, "raw"),
            (DataLink::IPV4, "ipv4"),
            (DataLink::IPV6, "ipv6"),
        ] {
            assert_eq!(LinkType::from_datalink(link).unwrap().name(), name);
        }
    }

    #[test]
    fn unsupported_link_types_are_named() {
        let e = LinkType::from_datalink(DataLink::IEEE802_11).unwrap_err();
        assert_eq!(
            e.to_string(),
            "link type IEEE802_11 (105) is not supported; otfw reads Ethernet, Linux cooked \
             (v1, v2), BSD loopback, raw IPv4/IPv6"
        );
        let e = LinkType::from_datalink(DataLink::PPP).unwrap_err();
        assert!(e.to_string().starts_with("link type PPP (9) is not"), "{e}");
        let e = LinkType::from_datalink(DataLink::Unknown(147)).unwrap_err();
        assert!(e.to_string().starts_with("link type 147 is not"), "{e}");
    }
}
