//! Linux cooked captures: what libpcap records on Linux's `any` device (and on devices without a
//! link header it can use), v1 (LINKTYPE_LINUX_SLL, 16 bytes) and v2 (LINKTYPE_LINUX_SLL2, 20
//! bytes, with the interface index). Both record the packet's protocol, the ARPHRD_ type of the
//! device and the sender's link-layer address; the payload is what followed the device's own
//! link header. Neither records the destination address, nor which port of a bridge the packet
//! crossed; a capture on `any` of a host that forwards records a forwarded packet once per
//! interface, and each copy is judged.
//!
//! VLAN tags: where libpcap reinserted the tag the kernel had stripped (protocol 0x8100, the tag
//! in front of the payload, as v1 captures have it), the tag stays in the frame as on the wire;
//! where it did not, the frame is judged untagged.
//!
//! The headers are read here rather than with etherparse's `LinuxSllHeaderSlice`: etherparse
//! (0.21) refuses v1 headers of devices other than five ARPHRD_ types, among them the loopback
//! device and tun devices, whose traffic is exactly what a capture on `any` holds for local and
//! VPN connections, and it has no v2. Its ARPHRD_ and ethertype constants are used.

use anyhow::{ensure, Result};
use etherparse::{ArpHardwareId, EtherType, LinuxNonstandardEtherType};

use super::link::{self, NO_ETHERNET_EQUIVALENT, SYNTHETIC_SOURCE};

const V1_LEN: usize = 16;
const V2_LEN: usize = 20;

/// Protocol values from here on are ethertypes; below, an Ethernet type field is an 802.3
/// length and a Linux protocol field one of the kernel's own ETH_P_ numbers.
const ETHERTYPE_MIN: u16 = 0x0600;
/// The longest payload an 802.3 length field can give.
const IEEE802_3_MAX_LEN: usize = 1500;

/// A Linux cooked header, v1 or v2, and the payload behind it.
#[derive(Debug)]
struct Cooked<'a> {
    hardware: ArpHardwareId,
    /// The sender's link-layer address, as long as the header says (at most 8 bytes recorded).
    address: &'a [u8],
    /// An ethertype, one of Linux's ETH_P_ numbers below 0x0600, or, for some devices,
    /// something else (see [`Cooked::ethertype`]).
    protocol: u16,
    payload: &'a [u8],
}

/// The Ethernet frame for a LINKTYPE_LINUX_SLL packet.
pub fn v1_to_ethernet(packet: &[u8]) -> Result<Vec<u8>> {
    ensure!(
        packet.len() >= V1_LEN,
        "Linux cooked (v1) header truncated: {} of {V1_LEN} bytes",
        packet.len()
    );
    // Packet type (2), ARPHRD_ type (2), address length (2), address (8), protocol (2).
    let (h, payload) = packet.split_at(V1_LEN);
    let address_len = usize::from(be16(&h[4..6]));
    Ok(Cooked {
        hardware: ArpHardwareId(be16(&h[2..4])),
        address: &h[6..6 + address_len.min(8)],
        protocol: be16(&h[14..16]),
        payload,
    }
    .to_ethernet())
}

/// The Ethernet frame for a LINKTYPE_LINUX_SLL2 packet.
pub fn v2_to_ethernet(packet: &[u8]) -> Result<Vec<u8>> {
    ensure!(
        packet.len() >= V2_LEN,
        "Linux cooked (v2) header truncated: {} of {V2_LEN} bytes",
        packet.len()
    );
    // Protocol (2), reserved (2), interface index (4), ARPHRD_ type (2), packet type (1),
    // address length (1), address (8).
    let (h, payload) = packet.split_at(V2_LEN);
    let address_len = usize::from(h[11]);
    Ok(Cooked {
        hardware: ArpHardwareId(be16(&h[8..10])),
        address: &h[12..12 + address_len.min(8)],
        protocol: be16(&h[0..2]),
        payload,
    }
    .to_ethernet())
}

impl Cooked<'_> {
    fn to_ethernet(&self) -> Vec<u8> {
        // An Ethernet device's address is the frame's source; other devices' addresses (or none,
        // or the loopback device's zeros) do not belong in an Ethernet header.
        let source = match <[u8; 6]>::try_from(self.address) {
            Ok(mac) if self.hardware == ArpHardwareId::ETHERNET => mac,
            _ => SYNTHETIC_SOURCE,
        };
        link::ethernet(source, self.ethertype(), self.payload)
    }

    /// The ethertype an Ethernet frame with this payload has, or the 802.3 length of one.
    fn ethertype(&self) -> EtherType {
        match self.hardware {
            // The protocol field holds a netlink protocol, or nothing (802.11 with radiotap,
            // frame relay): payloads no Ethernet port carries.
            ArpHardwareId::NETLINK | ArpHardwareId::IEEE80211_RADIOTAP | ArpHardwareId::FRAD => {
                NO_ETHERNET_EQUIVALENT
            }
            // Ethertypes, also those otfw does not know: the datapath judges them by the
            // policy's `non_ip` list. A GRE device's protocol field is the GRE protocol type,
            // an ethertype too.
            _ if self.protocol >= ETHERTYPE_MIN => EtherType(self.protocol),
            // 802.2 LLC (STP and other bridge protocols, which the datapath matches by DSAP)
            // or Novell's raw 802.3: an 802.3 frame, whose type field is the payload length.
            _ if matches!(
                LinuxNonstandardEtherType::try_from(self.protocol),
                Ok(LinuxNonstandardEtherType::N802_2 | LinuxNonstandardEtherType::N802_3)
            ) && self.payload.len() <= IEEE802_3_MAX_LEN =>
            {
                EtherType(self.payload.len() as u16)
            }
            // Linux's other ETH_P_ numbers below 0x0600 (CAN, DSA, ...): no Ethernet framing.
            _ => NO_ETHERNET_EQUIVALENT,
        }
    }
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::link::SYNTHETIC_DESTINATION;
    use etherparse::{
        LinuxSllHeader, LinuxSllHeaderSlice, LinuxSllPacketType, LinuxSllProtocolType,
    };

    const MAC: [u8; 6] = [0x00, 0x1b, 0x1b, 0x12, 0x34, 0x56];
    const IPV4: [u8; 4] = [0x45, 0, 0, 20];

    /// A v1 header through etherparse's writer, for the device types it knows.
    fn v1(hardware: ArpHardwareId, address: &[u8], protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut sender = [0u8; 8];
        sender[..address.len()].copy_from_slice(address);
        let header = LinuxSllHeader {
            packet_type: LinuxSllPacketType::HOST,
            arp_hrd_type: hardware,
            sender_address_valid_length: address.len() as u16,
            sender_address: sender,
            protocol_type: LinuxSllProtocolType::try_from((hardware, protocol)).unwrap(),
        };
        [&header.to_bytes()[..], payload].concat()
    }

    /// A v1 header by hand, for device types etherparse refuses.
    fn v1_raw(hardware: u16, address: &[u8], protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0, 0];
        h.extend_from_slice(&hardware.to_be_bytes());
        h.extend_from_slice(&(address.len() as u16).to_be_bytes());
        let mut sender = [0u8; 8];
        sender[..address.len()].copy_from_slice(address);
        h.extend_from_slice(&sender);
        h.extend_from_slice(&protocol.to_be_bytes());
        [&h[..], payload].concat()
    }

    fn v2(hardware: u16, address: &[u8], protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = protocol.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 0]); // reserved
        h.extend_from_slice(&7u32.to_be_bytes()); // interface index
        h.extend_from_slice(&hardware.to_be_bytes());
        h.push(4); // PACKET_OUTGOING
        h.push(address.len() as u8);
        let mut sender = [0u8; 8];
        sender[..address.len()].copy_from_slice(address);
        h.extend_from_slice(&sender);
        [&h[..], payload].concat()
    }

    fn ethertype(frame: &[u8]) -> u16 {
        u16::from_be_bytes([frame[12], frame[13]])
    }

    #[test]
    fn v1_ethernet_device_keeps_the_sender_address() {
        let frame = v1_to_ethernet(&v1(ArpHardwareId::ETHERNET, &MAC, 0x0800, &IPV4)).unwrap();
        assert_eq!(&frame[..6], &SYNTHETIC_DESTINATION);
        assert_eq!(&frame[6..12], &MAC);
        assert_eq!(ethertype(&frame), 0x0800);
        assert_eq!(&frame[14..], &IPV4);
    }

    #[test]
    fn v2_ethernet_device_keeps_the_sender_address() {
        let frame = v2_to_ethernet(&v2(1, &MAC, 0x86dd, &[0x60, 0, 0, 0])).unwrap();
        assert_eq!(&frame[6..12], &MAC);
        assert_eq!(ethertype(&frame), 0x86dd);
        assert_eq!(&frame[14..], &[0x60, 0, 0, 0]);
    }

    #[test]
    fn loopback_and_tun_devices_get_the_synthetic_source() {
        // `any` records loopback traffic with ARPHRD_LOOPBACK and a zero address.
        let lo = v1_raw(772, &[0; 6], 0x0800, &IPV4);
        // etherparse refuses this header: why cooked headers are read here.
        assert!(LinuxSllHeaderSlice::from_slice(&lo).is_err());
        let frame = v1_to_ethernet(&lo).unwrap();
        assert_eq!(&frame[6..12], &SYNTHETIC_SOURCE);
        assert_eq!(ethertype(&frame), 0x0800);
        assert_eq!(&frame[14..], &IPV4);
        // A tun device (ARPHRD_NONE) has no address at all.
        let frame = v2_to_ethernet(&v2(0xfffe, &[], 0x0800, &IPV4)).unwrap();
        assert_eq!(&frame[6..12], &SYNTHETIC_SOURCE);
        assert_eq!(ethertype(&frame), 0x0800);
    }

    #[test]
    fn non_ip_ethertypes_are_kept_for_the_datapath_to_judge() {
        for protocol in [0x0806, 0x88cc, 0x8892, 0x88b5] {
            let frame = v1_to_ethernet(&v1(ArpHardwareId::ETHERNET, &MAC, protocol, b"x")).unwrap();
            assert_eq!(ethertype(&frame), protocol);
            let frame = v2_to_ethernet(&v2(1, &MAC, protocol, b"x")).unwrap();
            assert_eq!(ethertype(&frame), protocol);
        }
    }

    #[test]
    fn a_reinserted_vlan_tag_stays_in_the_frame() {
        // protocol 0x8100, then TCI (VLAN 10) and the inner ethertype.
        let payload = [&[0x00, 0x0a, 0x08, 0x00][..], &IPV4].concat();
        let frame = v1_to_ethernet(&v1(ArpHardwareId::ETHERNET, &MAC, 0x8100, &payload)).unwrap();
        assert_eq!(ethertype(&frame), 0x8100);
        assert_eq!(&frame[14..], &payload[..]);
    }

    #[test]
    fn llc_becomes_an_802_3_frame() {
        // An STP BPDU: DSAP 0x42, SSAP 0x42, UI, then the BPDU.
        let bpdu = [0x42, 0x42, 0x03, 0x00, 0x00, 0x00, 0x00];
        let frame = v1_to_ethernet(&v1(ArpHardwareId::ETHERNET, &MAC, 0x0004, &bpdu)).unwrap();
        assert_eq!(ethertype(&frame), bpdu.len() as u16);
        assert_eq!(&frame[14..], &bpdu);
        let frame = v2_to_ethernet(&v2(1, &MAC, 0x0004, &bpdu)).unwrap();
        assert_eq!(ethertype(&frame), bpdu.len() as u16);
        // Longer than an 802.3 length can say: no Ethernet framing.
        let jumbo = vec![0x42; 1501];
        let frame = v1_to_ethernet(&v1(ArpHardwareId::ETHERNET, &MAC, 0x0004, &jumbo)).unwrap();
        assert_eq!(ethertype(&frame), NO_ETHERNET_EQUIVALENT.0);
    }

    #[test]
    fn payloads_without_ethernet_framing_get_the_reserved_ethertype() {
        // CAN (ETH_P_CAN on ARPHRD_CAN), netlink (NETLINK_ROUTE), 802.11 with radiotap.
        for packet in [
            v1_raw(280, &[], 0x000c, b"can"),
            v1(ArpHardwareId::NETLINK, &[], 0, b"netlink"),
            v1_raw(803, &[], 0x0003, b"radiotap"),
        ] {
            let frame = v1_to_ethernet(&packet).unwrap();
            assert_eq!(ethertype(&frame), 0xffff, "{packet:02x?}");
            assert_eq!(&frame[14..], &packet[V1_LEN..]);
        }
        let frame = v2_to_ethernet(&v2(824, &[], 0, b"netlink")).unwrap();
        assert_eq!(ethertype(&frame), 0xffff);
    }

    #[test]
    fn a_gre_device_names_the_inner_protocol() {
        let frame = v1_to_ethernet(&v1(ArpHardwareId::IPGRE, &[10, 0, 0, 1], 0x0800, &IPV4));
        let frame = frame.unwrap();
        assert_eq!(&frame[6..12], &SYNTHETIC_SOURCE);
        assert_eq!(ethertype(&frame), 0x0800);
    }

    #[test]
    fn truncated_headers_are_errors() {
        let e = v1_to_ethernet(&[0; 15]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Linux cooked (v1) header truncated: 15 of 16 bytes"
        );
        let e = v2_to_ethernet(&[0; 16]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Linux cooked (v2) header truncated: 16 of 20 bytes"
        );
        // A header and no payload is a frame.
        let frame = v2_to_ethernet(&v2(1, &MAC, 0x0800, &[])).unwrap();
        assert_eq!(frame.len(), 14);
    }

    #[test]
    fn overlong_address_lengths_are_cut_to_the_recorded_bytes() {
        // InfiniBand addresses are 20 bytes; 8 are recorded.
        let mut packet = v1_raw(32, &[1; 8], 0x0800, &IPV4);
        packet[4..6].copy_from_slice(&20u16.to_be_bytes());
        let frame = v1_to_ethernet(&packet).unwrap();
        assert_eq!(&frame[6..12], &SYNTHETIC_SOURCE);
        assert_eq!(ethertype(&frame), 0x0800);
    }
}
