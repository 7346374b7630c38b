//! Test frames, built with etherparse. Raw byte surgery only where etherparse cannot express a
//! malformed case; those helpers say which header field they break.

use std::net::IpAddr;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpAuthHeader, IpFragOffset,
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
    PacketBuilderStep, SingleVlanHeader, TcpHeader, VlanHeader, VlanId, VlanPcp,
};

pub const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const ETH_HLEN: usize = 14;

fn vlan_id(id: u16) -> VlanId {
    VlanId::try_new(id).expect("vlan id")
}

fn tag(id: u16, ether_type: EtherType) -> SingleVlanHeader {
    SingleVlanHeader {
        pcp: VlanPcp::ZERO,
        drop_eligible_indicator: false,
        vlan_id: vlan_id(id),
        ether_type,
    }
}

/// An IP packet in the making: addresses, VLAN tags and IP-level options; the L4 methods
/// finish it into an Ethernet frame.
#[derive(Clone)]
pub struct Ip {
    src: IpAddr,
    dst: IpAddr,
    vlans: Vec<u16>,
    hop_limit: u8,
    v4_options: Vec<u8>,
    /// (more fragments, offset in 8-byte units): IPv4 flags, or an IPv6 fragment header.
    fragment: Option<(bool, u16)>,
    dont_fragment: bool,
    v6_exts: Ipv6Extensions,
}

pub fn ip(src: &str, dst: &str) -> Ip {
    let src: IpAddr = src.parse().expect("source address");
    let dst: IpAddr = dst.parse().expect("destination address");
    assert_eq!(src.is_ipv4(), dst.is_ipv4(), "mixed address families");
    Ip {
        src,
        dst,
        vlans: Vec::new(),
        hop_limit: 64,
        v4_options: Vec::new(),
        fragment: None,
        dont_fragment: false,
        v6_exts: Ipv6Extensions::default(),
    }
}

/// PadN-free extension header payload (six Pad1 options, or zeroed routing data).
fn ext(payload: &[u8]) -> Ipv6RawExtHeader {
    // The next header is set by the builder.
    Ipv6RawExtHeader::new_raw(IpNumber::TCP, payload).expect("extension header")
}

fn echo_fields(id: u16, seq: u16) -> [u8; 4] {
    let (id, seq) = (id.to_be_bytes(), seq.to_be_bytes());
    [id[0], id[1], seq[0], seq[1]]
}

/// TCP flags in tcpdump's letters: S syn, A ack, F fin, R rst, P psh, U urg.
pub fn tcp_header(sport: u16, dport: u16, flags: &str, seq: u32, ack: u32) -> TcpHeader {
    let mut h = TcpHeader::new(sport, dport, seq, 64240);
    for f in flags.chars() {
        match f {
            'S' => h.syn = true,
            'A' => {
                h.ack = true;
                h.acknowledgment_number = ack;
            }
            'F' => h.fin = true,
            'R' => h.rst = true,
            'P' => h.psh = true,
            'U' => h.urg = true,
            other => panic!("unknown TCP flag {other}"),
        }
    }
    h
}

impl Ip {
    /// The same endpoints, the other way round (for replies).
    pub fn reply(&self) -> Ip {
        let mut r = self.clone();
        std::mem::swap(&mut r.src, &mut r.dst);
        r
    }

    /// Adds a VLAN tag: one tag is 802.1Q (0x8100); two are 802.1ad (0x88a8) + 802.1Q.
    pub fn vlan(mut self, id: u16) -> Ip {
        assert!(self.vlans.len() < 2, "etherparse writes at most two tags");
        self.vlans.push(id);
        self
    }

    pub fn hop_limit(mut self, hop_limit: u8) -> Ip {
        self.hop_limit = hop_limit;
        self
    }

    pub fn v4_options(mut self, options: &[u8]) -> Ip {
        self.v4_options = options.to_vec();
        self
    }

    pub fn dont_fragment(mut self) -> Ip {
        self.dont_fragment = true;
        self
    }

    /// IPv4: the MF flag and offset; IPv6: a fragment header.
    pub fn fragment(mut self, more: bool, offset: u16) -> Ip {
        self.fragment = Some((more, offset));
        self
    }

    pub fn hop_by_hop(mut self) -> Ip {
        self.v6_exts.hop_by_hop_options = Some(ext(&[1, 4, 0, 0, 0, 0]));
        self
    }

    pub fn destination_options(mut self) -> Ip {
        self.v6_exts.destination_options = Some(ext(&[1, 4, 0, 0, 0, 0]));
        self
    }

    /// A routing header of `routing_type` (0 is the deprecated source route), optionally
    /// followed by destination options for the final destination.
    pub fn routing(mut self, routing_type: u8, final_destination_options: bool) -> Ip {
        self.v6_exts.routing = Some(Ipv6RoutingExtensions {
            routing: ext(&[routing_type, 0, 0, 0, 0, 0]),
            final_destination_options: final_destination_options.then(|| ext(&[1, 4, 0, 0, 0, 0])),
        });
        self
    }

    pub fn authentication(mut self) -> Ip {
        self.v6_exts.auth = Some(IpAuthHeader::new(IpNumber::TCP, 1, 1, &[0; 4]).expect("AH"));
        self
    }

    fn headers(&self) -> IpHeaders {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h =
                    Ipv4Header::new(0, self.hop_limit, IpNumber::TCP, s.octets(), d.octets())
                        .expect("ipv4 header");
                h.options = Ipv4Options::try_from(&self.v4_options[..]).expect("ipv4 options");
                h.dont_fragment = self.dont_fragment;
                if let Some((more, offset)) = self.fragment {
                    h.more_fragments = more;
                    h.fragment_offset = IpFragOffset::try_new(offset).expect("fragment offset");
                }
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: 0,
                    next_header: IpNumber::TCP,
                    hop_limit: self.hop_limit,
                    source: s.octets(),
                    destination: d.octets(),
                };
                let mut exts = self.v6_exts.clone();
                if let Some((more, offset)) = self.fragment {
                    exts.fragment = Some(Ipv6FragmentHeader::new(
                        IpNumber::TCP,
                        IpFragOffset::try_new(offset).expect("fragment offset"),
                        more,
                        7,
                    ));
                }
                IpHeaders::Ipv6(h, exts)
            }
            _ => unreachable!("checked in ip()"),
        }
    }

    fn builder(&self) -> PacketBuilderStep<IpHeaders> {
        let eth = PacketBuilder::ethernet2(MAC_SRC, MAC_DST);
        match self.vlans[..] {
            [] => eth.ip(self.headers()),
            [id] => eth.single_vlan(vlan_id(id)).ip(self.headers()),
            [outer, inner] => eth
                .double_vlan(vlan_id(outer), vlan_id(inner))
                .ip(self.headers()),
            _ => unreachable!("checked in vlan()"),
        }
    }

    pub fn tcp(
        &self,
        sport: u16,
        dport: u16,
        flags: &str,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        self.tcp_with(tcp_header(sport, dport, flags, seq, ack), payload)
    }

    pub fn tcp_with(&self, header: TcpHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        self.builder()
            .tcp_header(header)
            .write(&mut v, payload)
            .expect("tcp frame");
        v
    }

    pub fn syn(&self, sport: u16, dport: u16) -> Vec<u8> {
        self.tcp(sport, dport, "S", 1000, 0, &[])
    }

    pub fn syn_ack(&self, sport: u16, dport: u16) -> Vec<u8> {
        self.tcp(sport, dport, "SA", 5000, 1001, &[])
    }

    pub fn ack(&self, sport: u16, dport: u16) -> Vec<u8> {
        self.tcp(sport, dport, "A", 1001, 5001, &[])
    }

    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        self.builder()
            .udp(sport, dport)
            .write(&mut v, payload)
            .expect("udp frame");
        v
    }

    pub fn echo_request(&self, id: u16, seq: u16) -> Vec<u8> {
        let icmp_type = if self.src.is_ipv4() { 8 } else { 128 };
        self.icmp_message(icmp_type, 0, echo_fields(id, seq), b"ping")
    }

    pub fn echo_reply(&self, id: u16, seq: u16) -> Vec<u8> {
        let icmp_type = if self.src.is_ipv4() { 0 } else { 129 };
        self.icmp_message(icmp_type, 0, echo_fields(id, seq), b"ping")
    }

    /// Any ICMP (IPv4) or ICMPv6 (IPv6) message by type and code.
    pub fn icmp(&self, icmp_type: u8, code: u8, body: &[u8]) -> Vec<u8> {
        self.icmp_message(icmp_type, code, [0; 4], body)
    }

    /// `fields` are header bytes 5 to 8 (identifier and sequence number of an echo).
    fn icmp_message(&self, icmp_type: u8, code: u8, fields: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let builder = self.builder();
        match self.src {
            IpAddr::V4(_) => builder
                .icmpv4_raw(icmp_type, code, fields)
                .write(&mut v, body),
            IpAddr::V6(_) => builder
                .icmpv6_raw(icmp_type, code, fields)
                .write(&mut v, body),
        }
        .expect("icmp frame");
        v
    }

    /// The IP packet with `payload` as the upper layer of protocol `proto` (which may be an
    /// extension header number such as ESP).
    pub fn raw(&self, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        self.builder()
            .write(&mut v, IpNumber(proto), payload)
            .expect("ip frame");
        v
    }

    /// An IPv6 packet whose payload starts with an extension header chain etherparse cannot
    /// write (too many headers, lengths that disagree): written behind the experimental
    /// protocol number 253, then raw surgery sets the next-header field to `first`.
    pub fn ext_chain(&self, first: u8, chain: &[u8]) -> Vec<u8> {
        assert!(self.src.is_ipv6() && self.v6_exts == Ipv6Extensions::default());
        let frame = self.raw(253, chain);
        let next_header = ETH_HLEN + 4 * self.vlans.len() + 6;
        patched(frame, next_header, &[first])
    }
}

/// An Ethernet II frame with `ether_type` (or an 802.3 length) and `payload`.
pub fn ethernet(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Ethernet2Header {
        source: MAC_SRC,
        destination: MAC_DST,
        ether_type: EtherType(ether_type),
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

/// Ethernet with VLAN tags written as given (the tag protocol ids in `tpids`, the first after
/// the MAC addresses), then `ether_type` and `payload`.
pub fn tagged(tpids: &[u16], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let (first, rest) = tpids.split_first().expect("at least one tag");
    let mut v = ethernet(*first, &[]);
    for (i, _) in tpids.iter().enumerate() {
        let next = rest.get(i).copied().unwrap_or(ether_type);
        v.extend_from_slice(&tag(100 + i as u16, EtherType(next)).to_bytes());
    }
    v.extend_from_slice(payload);
    v
}

pub fn arp_request(vlan: Option<u16>) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_SRC,
        &[10, 0, 2, 10],
        &[0; 6],
        &[10, 0, 1, 20],
    )
    .expect("arp packet");
    let eth = PacketBuilder::ethernet2(MAC_SRC, MAC_DST);
    let mut v = Vec::new();
    match vlan {
        None => eth.arp(arp).write(&mut v),
        Some(id) => eth
            .vlan(VlanHeader::Single(tag(id, EtherType(0))))
            .arp(arp)
            .write(&mut v),
    }
    .expect("arp frame");
    v
}

/// An 802.3 frame (length instead of ethertype) carrying an LLC STP configuration BPDU.
pub fn stp_bpdu() -> Vec<u8> {
    let mut llc = vec![0x42, 0x42, 0x03];
    llc.extend_from_slice(&[0; 35]);
    let mut v = Ethernet2Header {
        source: MAC_SRC,
        destination: [0x01, 0x80, 0xc2, 0, 0, 0],
        ether_type: EtherType(llc.len() as u16),
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(&llc);
    v
}

/// Raw surgery: overwrite `bytes` at `offset`.
pub fn patched(mut frame: Vec<u8>, offset: usize, bytes: &[u8]) -> Vec<u8> {
    frame[offset..offset + bytes.len()].copy_from_slice(bytes);
    frame
}

/// Raw surgery: drop the last `n` bytes.
pub fn truncated(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    frame.truncate(frame.len() - n);
    frame
}

/// Ethernet padding: zeros up to the 60-byte minimum frame (without FCS).
pub fn padded(mut frame: Vec<u8>) -> Vec<u8> {
    frame.resize(frame.len().max(60), 0);
    frame
}
