//! Datapath table tests: the real XDP object, loaded into the kernel, fed crafted frames through
//! BPF_PROG_TEST_RUN. Each case is policy + frames + expected decisions; every table also checks
//! the counters its rows imply. Needs root and BPF; fails (never skips) without them.

mod common;

use std::time::Duration;

use common::{
    frames::{
        arp_request, ethernet, ip, padded, patched, stp_bpdu, tagged, tcp_header, truncated, Ip,
        ETH_HLEN,
    },
    policy::{it_ot, it_ot_shifted, Conduit, Policy, ETH_P_LLDP},
    table::{
        case, drop, frame, frame_on, load, monitor, pass, reset, run, Case, Expect, Step, DEFAULT,
        INTRA_ZONE, NONE, UNZONED,
    },
    TestInterface,
};
use etherparse::TcpHeader;
use firewall_common::{
    config::NON_IP_STP,
    reason::Reason::{
        Fragment, IntraZoneDenied, IpBadIhl, IpBadLength, IpBadVersion, IpTruncated, Ipv6ExtHeader,
        L4Truncated, MidstreamDenied, NdBadHopLimit, NoConduit, NoPolicy, NonIpDenied, NotTracked,
        PolicyRevoked, ReverseSyn, Spoofed, TcpBadDataOffset, TcpBadFlags, Unzoned, VlanMalformed,
    },
};

const IT4: &str = "10.0.2.10";
const OT4: &str = "10.0.1.20";
const IT6: &str = "2001:db8:2::10";
const OT6: &str = "2001:db8:1::20";

/// Client (zone `it`) to server (zone `ot`), IPv4.
fn v4() -> Ip {
    ip(IT4, OT4)
}

/// Client (zone `it`) to server (zone `ot`), IPv6.
fn v6() -> Ip {
    ip(IT6, OT6)
}

fn one(name: &'static str, policy: &Policy, f: Vec<u8>, expect: Expect) -> Case {
    case(name, policy, vec![frame(f, expect)])
}

// Offsets into untagged frames, for the malformed cases etherparse cannot write.
const IP_VERSION_IHL: usize = ETH_HLEN;
const IPV4_TOTAL_LEN: usize = ETH_HLEN + 2;
const IPV6_PAYLOAD_LEN: usize = ETH_HLEN + 4;
const TCP4_DATA_OFFSET: usize = ETH_HLEN + 20 + 12;
const UDP4_LEN: usize = ETH_HLEN + 20 + 4;

/// Ethernet, VLAN tags, non-IP ethertypes.
fn l2_cases() -> Vec<Case> {
    let p = it_ot();
    let llc = Policy::new().non_ip(&[NON_IP_STP, ETH_P_LLDP]);
    let syn4 = v4().syn(40000, 502);
    vec![
        one("arp listed in non_ip", &p, arp_request(None), pass(NONE)),
        one(
            "arp behind a vlan tag",
            &p,
            arp_request(Some(7)),
            pass(NONE),
        ),
        one(
            "lldp not listed",
            &p,
            padded(ethernet(ETH_P_LLDP, &[0, 0])),
            drop(NonIpDenied, NONE),
        ),
        one(
            "802.3 llc frame not listed",
            &p,
            stp_bpdu(),
            drop(NonIpDenied, NONE),
        ),
        case(
            "802.3 llc and lldp listed, arp not",
            &llc,
            vec![
                frame(stp_bpdu(), pass(NONE)),
                frame(padded(ethernet(ETH_P_LLDP, &[0, 0])), pass(NONE)),
                frame(arp_request(None), drop(NonIpDenied, NONE)),
            ],
        ),
        one(
            "one vlan tag, ipv4",
            &p,
            v4().vlan(10).syn(40000, 502),
            pass("modbus").creates(),
        ),
        one(
            "one vlan tag, ipv6",
            &p,
            v6().vlan(10).syn(40000, 502),
            pass("modbus").creates(),
        ),
        one(
            "two vlan tags (802.1ad + 802.1q), ipv4",
            &p,
            v4().vlan(10).vlan(20).syn(40000, 502),
            pass("modbus").creates(),
        ),
        one(
            "two vlan tags (802.1ad + 802.1q), ipv6",
            &p,
            v6().vlan(10).vlan(20).udp(5000, 161, b"get"),
            pass("snmp").creates(),
        ),
        one(
            "three vlan tags",
            &p,
            tagged(&[0x88a8, 0x8100, 0x8100], 0x0800, &syn4[ETH_HLEN..]),
            drop(VlanMalformed, NONE),
        ),
        one(
            "vlan tag truncated",
            &p,
            ethernet(0x8100, &[0, 10]),
            drop(VlanMalformed, NONE),
        ),
        one(
            "inner vlan tag truncated",
            &p,
            tagged(&[0x88a8], 0x8100, &[0, 20]),
            drop(VlanMalformed, NONE),
        ),
    ]
}

/// IPv4 and IPv6 headers, options, extension headers, fragments.
fn l3_cases() -> Vec<Case> {
    let p = it_ot();
    let syn4 = || v4().syn(40000, 502);
    let syn6 = || v6().syn(40000, 502);
    let tcp_bytes = tcp_header(40000, 502, "S", 1, 0).to_bytes().to_vec();
    // Five destination-options headers, the last one pointing at TCP.
    let mut five_exts = Vec::new();
    for next in [60, 60, 60, 60, 6] {
        five_exts.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    five_exts.extend_from_slice(&tcp_bytes);
    let mut forty_option_bytes = [1u8; 40];
    forty_option_bytes[39] = 0;
    vec![
        one(
            "ipv4 with options (ihl 6)",
            &p,
            v4().v4_options(&[1, 1, 1, 0]).syn(40000, 502),
            pass("modbus").creates(),
        ),
        one(
            "ipv4 with 40 bytes of options (ihl 15)",
            &p,
            v4().v4_options(&forty_option_bytes).syn(40000, 502),
            pass("modbus").creates(),
        ),
        one(
            "ipv4 ihl 4",
            &p,
            patched(syn4(), IP_VERSION_IHL, &[0x44]),
            drop(IpBadIhl, NONE),
        ),
        one(
            "ipv4 ihl 0",
            &p,
            patched(syn4(), IP_VERSION_IHL, &[0x40]),
            drop(IpBadIhl, NONE),
        ),
        one(
            "ipv4 ethertype, version 6",
            &p,
            patched(syn4(), IP_VERSION_IHL, &[0x65]),
            drop(IpBadVersion, NONE),
        ),
        one(
            "ipv4 total length below the header length",
            &p,
            patched(syn4(), IPV4_TOTAL_LEN, &19u16.to_be_bytes()),
            drop(IpBadLength, NONE),
        ),
        one(
            "ipv4 total length below the options",
            &p,
            patched(
                v4().v4_options(&[1, 1, 1, 0]).syn(40000, 502),
                IPV4_TOTAL_LEN,
                &20u16.to_be_bytes(),
            ),
            drop(IpBadLength, NONE),
        ),
        one(
            "ipv4 total length beyond the frame",
            &p,
            truncated(syn4(), 1),
            drop(IpTruncated, NONE),
        ),
        one(
            "ipv4 header truncated",
            &p,
            syn4()[..ETH_HLEN + 19].to_vec(),
            drop(IpTruncated, NONE),
        ),
        case(
            "ethernet padding after a short ip packet",
            &p,
            vec![
                frame(padded(v4().udp(5000, 161, &[])), pass("snmp").creates()),
                frame(padded(syn4()), pass("modbus").creates()),
            ],
        ),
        one(
            "ipv4 more fragments",
            &p,
            v4().fragment(true, 0).syn(40000, 502),
            drop(Fragment, NONE),
        ),
        one(
            "ipv4 fragment offset",
            &p,
            v4().fragment(false, 185).udp(5000, 161, b"tail"),
            drop(Fragment, NONE),
        ),
        one(
            "ipv4 don't fragment is no fragment",
            &p,
            v4().dont_fragment().syn(40000, 502),
            pass("modbus").creates(),
        ),
        one("ipv6", &p, syn6(), pass("modbus").creates()),
        one(
            "ipv6 hop-by-hop and destination options skipped",
            &p,
            v6().hop_by_hop().destination_options().syn(40000, 502),
            pass("modbus").creates(),
        ),
        one(
            "ipv6 four extension headers (the limit)",
            &p,
            v6().hop_by_hop()
                .destination_options()
                .routing(4, true)
                .syn(40000, 502),
            pass("modbus").creates(),
        ),
        one(
            "ipv6 five extension headers",
            &p,
            v6().ext_chain(60, &five_exts),
            drop(Ipv6ExtHeader, NONE),
        ),
        one(
            "ipv6 routing header type 0",
            &p,
            v6().routing(0, false).syn(40000, 502),
            drop(Ipv6ExtHeader, NONE),
        ),
        one(
            "ipv6 fragment header",
            &p,
            v6().fragment(true, 0).syn(40000, 502),
            drop(Fragment, NONE),
        ),
        one(
            "ipv6 atomic fragment header",
            &p,
            v6().hop_by_hop().fragment(false, 0).syn(40000, 502),
            drop(Fragment, NONE),
        ),
        one(
            "ipv6 esp",
            &p,
            v6().raw(50, &[0; 16]),
            drop(Ipv6ExtHeader, NONE),
        ),
        one(
            "ipv6 no next header",
            &p,
            v6().raw(59, &[0; 8]),
            drop(Ipv6ExtHeader, NONE),
        ),
        one(
            "ipv6 authentication header",
            &p,
            v6().authentication().syn(40000, 502),
            drop(Ipv6ExtHeader, NONE),
        ),
        one(
            "ipv6 extension header cut short by the frame",
            &p,
            v6().ext_chain(0, &[6, 0]),
            drop(Ipv6ExtHeader, NONE),
        ),
        one(
            "ipv6 extension header beyond the payload length",
            &p,
            v6().ext_chain(60, &[6, 1, 0, 0, 0, 0, 0, 0]),
            drop(IpBadLength, NONE),
        ),
        one(
            "ipv6 payload length 0 (jumbogram)",
            &p,
            patched(syn6(), IPV6_PAYLOAD_LEN, &[0, 0]),
            drop(IpBadLength, NONE),
        ),
        one(
            "ipv6 header truncated",
            &p,
            syn6()[..ETH_HLEN + 39].to_vec(),
            drop(IpTruncated, NONE),
        ),
        one(
            "ipv6 payload beyond the frame",
            &p,
            truncated(syn6(), 1),
            drop(IpTruncated, NONE),
        ),
        one(
            "ipv6 ethertype, version 4",
            &p,
            patched(syn6(), IP_VERSION_IHL, &[0x40]),
            drop(IpBadVersion, NONE),
        ),
    ]
}

/// TCP, UDP and ICMP headers.
fn l4_cases() -> Vec<Case> {
    let p = it_ot();
    let syn4 = || v4().syn(40000, 502);
    vec![
        one(
            "tcp truncated",
            &p,
            v4().raw(6, &[0; 10]),
            drop(L4Truncated, NONE),
        ),
        one(
            "tcp truncated, ipv6",
            &p,
            v6().raw(6, &[0; 19]),
            drop(L4Truncated, NONE),
        ),
        one(
            "tcp data offset 4",
            &p,
            patched(syn4(), TCP4_DATA_OFFSET, &[0x40]),
            drop(TcpBadDataOffset, NONE),
        ),
        one(
            "tcp data offset beyond the segment",
            &p,
            patched(syn4(), TCP4_DATA_OFFSET, &[0x60]),
            drop(TcpBadDataOffset, NONE),
        ),
        one(
            "tcp data offset 15 on a bare header",
            &p,
            patched(syn4(), TCP4_DATA_OFFSET, &[0xf0]),
            drop(TcpBadDataOffset, NONE),
        ),
        // The IP length bounds the segment, not the frame: padding is no part of it.
        one(
            "tcp data offset reaching into ethernet padding",
            &p,
            padded(patched(syn4(), TCP4_DATA_OFFSET, &[0x60])),
            drop(TcpBadDataOffset, NONE),
        ),
        one(
            "tcp with options",
            &p,
            v4().tcp_with(syn_with_options(40000, 502), &[]),
            pass("modbus").creates(),
        ),
        one(
            "tcp syn+fin",
            &p,
            v4().tcp(40000, 502, "SF", 1, 0, &[]),
            drop(TcpBadFlags, NONE),
        ),
        one(
            "tcp syn+rst",
            &p,
            v4().tcp(40000, 502, "SR", 1, 0, &[]),
            drop(TcpBadFlags, NONE),
        ),
        one(
            "tcp without flags",
            &p,
            v4().tcp(40000, 502, "", 1, 0, &[]),
            drop(TcpBadFlags, NONE),
        ),
        one(
            "tcp fin without ack",
            &p,
            v4().tcp(40000, 502, "F", 1, 0, &[]),
            drop(TcpBadFlags, NONE),
        ),
        one(
            "tcp fin+psh+urg without ack",
            &p,
            v6().tcp(40000, 502, "FPU", 1, 0, &[]),
            drop(TcpBadFlags, NONE),
        ),
        one(
            "udp truncated",
            &p,
            v4().raw(17, &[0; 4]),
            drop(L4Truncated, NONE),
        ),
        one(
            "udp length beyond the ip payload",
            &p,
            patched(v4().udp(5000, 161, b"abcd"), UDP4_LEN, &13u16.to_be_bytes()),
            drop(L4Truncated, NONE),
        ),
        one(
            "udp length below its header",
            &p,
            patched(v4().udp(5000, 161, b"abcd"), UDP4_LEN, &7u16.to_be_bytes()),
            drop(L4Truncated, NONE),
        ),
        one(
            "udp length reaching into ethernet padding",
            &p,
            padded(patched(
                v4().udp(5000, 161, b"abcd"),
                UDP4_LEN,
                &16u16.to_be_bytes(),
            )),
            drop(L4Truncated, NONE),
        ),
        one(
            "icmp truncated",
            &p,
            v4().raw(1, &[8, 0, 0, 0]),
            drop(L4Truncated, NONE),
        ),
        one(
            "icmpv6 truncated",
            &p,
            v6().raw(58, &[128, 0, 0, 0]),
            drop(L4Truncated, NONE),
        ),
    ]
}

// Each test loads the program once (the verifier takes seconds) and runs its table on it.

#[test]
fn parsing() {
    let cases = [l2_cases(), l3_cases(), l4_cases()];
    run(&mut load(), cases.into_iter().flatten().collect());
}

#[test]
fn zones_and_conduits() {
    let cases = [zone_cases(), link_local_cases()];
    run(&mut load(), cases.into_iter().flatten().collect());
}

/// Nested zones and named hosts: `dmz` lies inside `ent`'s network, hosts are /32 and /128.
fn zones() -> Policy {
    Policy::new()
        .zone("ent", &["10.0.0.0/16", "2001:db8:e::/48"])
        .host("ent", "hist", "10.0.0.5")
        .host("ent", "hist6", "2001:db8:e::5")
        .zone("cell", &["10.0.128.0/24", "2001:db8:c::/64"])
        .host("cell", "plc", "10.0.128.30")
        .host("cell", "plc6", "2001:db8:c::30")
        .zone("dmz", &["10.0.200.0/24"])
        .conduit(Conduit::new("hist-reads", "ent/hist", "cell/plc").tcp(502))
        .conduit(Conduit::new("hist-to-cell", "ent/hist", "cell").tcp(502..=503))
        .conduit(
            Conduit::new("ent-to-plc", "ent", "cell/plc")
                .tcp(503)
                .tcp(8080),
        )
        .conduit(
            Conduit::new("ent-to-cell", "ent", "cell")
                .tcp(502)
                .tcp(8000..=8100)
                .icmp(8)
                .icmp(3)
                .icmpv6(128),
        )
        .conduit(Conduit::new("dmz-to-cell", "dmz", "cell").tcp(502))
        .conduit(Conduit::new("hist6-reads", "ent/hist6", "cell/plc6").tcp(502))
}

const HIST: &str = "10.0.0.5";
const ENT: &str = "10.0.3.3";
const PLC: &str = "10.0.128.30";
const CELL: &str = "10.0.128.40";
const DMZ: &str = "10.0.200.7";
const OUTSIDE: &str = "192.168.1.1";

/// Longest-prefix zones, host-specific conduits, ICMP, and the defaults.
fn zone_cases() -> Vec<Case> {
    let z = zones();
    let syn = |src: &str, dst: &str, port: u16| ip(src, dst).syn(40000, port);
    vec![
        one(
            "host to host",
            &z,
            syn(HIST, PLC, 502),
            pass("hist-reads").creates(),
        ),
        one(
            "host to host key without the port falls back to host to zone",
            &z,
            syn(HIST, PLC, 503),
            pass("hist-to-cell").creates(),
        ),
        one(
            "host to zone",
            &z,
            syn(HIST, CELL, 503),
            pass("hist-to-cell").creates(),
        ),
        one(
            "zone to host",
            &z,
            syn(ENT, PLC, 503),
            pass("ent-to-plc").creates(),
        ),
        one(
            "zone to host key without the port falls back to zone to zone",
            &z,
            syn(ENT, PLC, 502),
            pass("ent-to-cell").creates(),
        ),
        one(
            "host falls back to zone to host",
            &z,
            syn(HIST, PLC, 8080),
            pass("ent-to-plc").creates(),
        ),
        one(
            "zone to zone port range",
            &z,
            syn(ENT, CELL, 8050),
            pass("ent-to-cell").creates(),
        ),
        one(
            "zone to zone range end",
            &z,
            syn(HIST, CELL, 8100),
            pass("ent-to-cell").creates(),
        ),
        one(
            "port outside every rule",
            &z,
            syn(ENT, CELL, 8101),
            drop(NoConduit, NONE),
        ),
        one(
            "nested network: longest prefix wins",
            &z,
            syn(DMZ, CELL, 502),
            pass("dmz-to-cell").creates(),
        ),
        one(
            "nested network: no rules of the enclosing zone",
            &z,
            syn(DMZ, CELL, 8000),
            drop(NoConduit, NONE),
        ),
        one(
            "ipv6 host to host",
            &z,
            syn("2001:db8:e::5", "2001:db8:c::30", 502),
            pass("hist6-reads").creates(),
        ),
        one(
            "ipv6 zone to zone",
            &z,
            syn("2001:db8:e:1::9", "2001:db8:c::31", 8000),
            pass("ent-to-cell").creates(),
        ),
        one(
            "ipv6 no conduit",
            &z,
            syn("2001:db8:c::31", "2001:db8:e::9", 502),
            drop(NoConduit, NONE),
        ),
        case(
            "icmp echo request and its reply",
            &z,
            vec![
                frame(
                    ip(ENT, CELL).echo_request(77, 1),
                    pass("ent-to-cell").creates(),
                ),
                frame(ip(CELL, ENT).echo_reply(77, 1), pass("ent-to-cell")),
                frame(ip(CELL, ENT).echo_reply(78, 1), drop(NotTracked, NONE)),
            ],
        ),
        one(
            "icmp echo reply without request",
            &z,
            ip(CELL, ENT).echo_reply(77, 1),
            drop(NotTracked, NONE),
        ),
        one(
            "icmp echo request against the conduit",
            &z,
            ip(CELL, ENT).echo_request(77, 1),
            drop(NoConduit, NONE),
        ),
        case(
            "icmp echo request from the responder side of a tracked echo flow",
            &z,
            vec![
                frame(
                    ip(ENT, CELL).echo_request(77, 1),
                    pass("ent-to-cell").creates(),
                ),
                frame(ip(CELL, ENT).echo_request(77, 2), drop(NoConduit, NONE)),
                frame(ip(ENT, CELL).echo_reply(77, 2), drop(NotTracked, NONE)),
                frame(ip(CELL, ENT).echo_reply(77, 1), pass("ent-to-cell")),
            ],
        ),
        case(
            "icmp echo both ways with one identifier",
            &z.clone()
                .conduit(Conduit::new("cell-ping", "cell", "ent").icmp(8)),
            vec![
                frame(
                    ip(ENT, CELL).echo_request(5, 1),
                    pass("ent-to-cell").creates(),
                ),
                frame(
                    ip(CELL, ENT).echo_request(5, 1),
                    pass("cell-ping").creates(),
                ),
                frame(ip(CELL, ENT).echo_reply(5, 1), pass("ent-to-cell")),
                frame(ip(ENT, CELL).echo_reply(5, 1), pass("cell-ping")),
            ],
        ),
        case(
            "icmpv6 echo request and its reply",
            &z,
            vec![
                frame(
                    ip("2001:db8:e::9", "2001:db8:c::31").echo_request(9, 1),
                    pass("ent-to-cell").creates(),
                ),
                frame(
                    ip("2001:db8:c::31", "2001:db8:e::9").echo_reply(9, 1),
                    pass("ent-to-cell"),
                ),
            ],
        ),
        case(
            "icmp error type allowed by a conduit is not tracked",
            &z,
            vec![
                frame(ip(ENT, CELL).icmp(3, 1, &[0; 28]), pass("ent-to-cell")),
                frame(ip(ENT, CELL).icmp(3, 1, &[0; 28]), pass("ent-to-cell")),
                frame(ip(ENT, CELL).icmp(11, 0, &[0; 28]), drop(NoConduit, NONE)),
            ],
        ),
        case(
            "intra-zone allowed by default",
            &z,
            vec![
                frame(syn(ENT, HIST, 22), pass(INTRA_ZONE)),
                frame(ip(HIST, ENT).syn_ack(22, 40000), pass(INTRA_ZONE)),
            ],
        ),
        one(
            "intra-zone denied",
            &z.clone().intra_zone_deny(),
            syn(ENT, HIST, 22),
            drop(IntraZoneDenied, NONE),
        ),
        one(
            "intra-zone conduit under intra_zone deny",
            &z.clone()
                .intra_zone_deny()
                .conduit(Conduit::new("ent-ssh", "ent", "ent/hist").tcp(22)),
            syn(ENT, HIST, 22),
            pass("ent-ssh").creates(),
        ),
        case(
            "unzoned denied",
            &z,
            vec![
                frame(syn(OUTSIDE, CELL, 502), drop(Unzoned, NONE)),
                frame(syn(CELL, OUTSIDE, 502), drop(Unzoned, NONE)),
                frame(
                    syn("2001:db8:9::1", "2001:db8:c::31", 502),
                    drop(Unzoned, NONE),
                ),
            ],
        ),
        case(
            "unzoned allowed",
            &z.clone().unzoned_allow(),
            vec![
                frame(syn(OUTSIDE, CELL, 502), pass(UNZONED)),
                frame(ip(CELL, OUTSIDE).syn_ack(502, 40000), pass(UNZONED)),
            ],
        ),
        case(
            "default action allow",
            &z.clone().default_allow(),
            vec![
                frame(syn(ENT, CELL, 9999), pass(DEFAULT)),
                frame(ip(CELL, ENT).syn_ack(9999, 40000), pass(DEFAULT)),
                frame(syn(ENT, CELL, 502), pass("ent-to-cell").creates()),
                frame(syn(OUTSIDE, CELL, 502), drop(Unzoned, NONE)),
                frame(syn(ENT, HIST, 22), pass(INTRA_ZONE)),
            ],
        ),
    ]
}

/// IPv6 neighbour discovery and MLD, which pass without zones or conduits.
fn link_local_cases() -> Vec<Case> {
    let empty = Policy::new();
    let ns = |hop: u8| {
        ip("fe80::1", "ff02::1:ff00:20")
            .hop_limit(hop)
            .icmp(135, 0, &[0x20; 16])
    };
    vec![
        one(
            "nd neighbour solicitation, hop limit 255",
            &empty,
            ns(255),
            pass(NONE),
        ),
        one(
            "nd neighbour solicitation, hop limit 64",
            &empty,
            ns(64),
            drop(NdBadHopLimit, NONE),
        ),
        one(
            "nd router advertisement, hop limit 255",
            &empty,
            ip("fe80::1", "ff02::1")
                .hop_limit(255)
                .icmp(134, 0, &[0; 8]),
            pass(NONE),
        ),
        one(
            "nd redirect, hop limit 254",
            &empty,
            ip("fe80::1", "fe80::2")
                .hop_limit(254)
                .icmp(137, 0, &[0; 32]),
            drop(NdBadHopLimit, NONE),
        ),
        one(
            "mld report from a link-local address",
            &empty,
            ip("fe80::1", "ff02::16")
                .hop_limit(1)
                .hop_by_hop()
                .icmp(143, 0, &[0; 4]),
            pass(NONE),
        ),
        one(
            "mld report from a global address is ordinary traffic",
            &empty,
            ip("2001:db8:9::1", "ff02::16")
                .hop_limit(1)
                .icmp(143, 0, &[0; 4]),
            drop(Unzoned, NONE),
        ),
    ]
}

#[test]
fn anti_spoofing() {
    let port = TestInterface::create("otfwdp0");
    let lo = otfw::datapath::ifindex("lo").expect("ifindex of lo");
    let p = Policy::new()
        .zone("ot", &["10.0.1.0/24"])
        .ports("ot", &["lo"])
        .zone("it", &["10.0.2.0/24", "2001:db8:2::/64"])
        .ports("it", &[port.name])
        .zone("free", &["10.0.3.0/24"])
        .conduit(Conduit::new("it-ot", "it", "ot").tcp(502))
        .conduit(Conduit::new("ot-it", "ot", "it").tcp(502))
        .conduit(Conduit::new("free-ot", "free", "ot").tcp(502));
    let d = port.ifindex;
    // Zone `ot` on other ports, with the same zone id.
    let moved = |ports: &[&str]| {
        Policy::new()
            .zone("ot", &["10.0.1.0/24"])
            .ports("ot", ports)
            .zone("it", &["10.0.2.0/24"])
            .conduit(Conduit::new("ot-it", "ot", "it").tcp(502))
    };
    let mut dp = load();
    run(
        &mut dp,
        vec![
            one(
                "zone listing lo, frame from lo",
                &p,
                ip(OT4, IT4).syn(40000, 502),
                pass("ot-it").creates(),
            ),
            case(
                "zone listing lo, lo named explicitly",
                &p,
                vec![frame_on(
                    lo,
                    ip(OT4, IT4).syn(40000, 502),
                    pass("ot-it").creates(),
                )],
            ),
            case(
                "zone listing lo, frame from another port",
                &p,
                vec![frame_on(
                    d,
                    ip(OT4, IT4).syn(40000, 502),
                    drop(Spoofed, NONE),
                )],
            ),
            one(
                "zone listing another port, frame from lo",
                &p,
                v4().syn(40000, 502),
                drop(Spoofed, NONE),
            ),
            one(
                "ipv6 zone listing another port, frame from lo",
                &p,
                ip(IT6, "2001:db8:2::99").syn(1, 2),
                drop(Spoofed, NONE),
            ),
            case(
                "zone listing another port, frame from it",
                &p,
                vec![frame_on(d, v4().syn(40000, 502), pass("it-ot").creates())],
            ),
            case(
                "zone without ports, frames from both",
                &p,
                vec![
                    frame(
                        ip("10.0.3.1", OT4).syn(40000, 502),
                        pass("free-ot").creates(),
                    ),
                    frame_on(
                        d,
                        ip("10.0.3.1", OT4).syn(40001, 502),
                        pass("free-ot").creates(),
                    ),
                ],
            ),
            case(
                "replies are checked too",
                &p,
                vec![
                    frame(ip(OT4, IT4).syn(40000, 502), pass("ot-it").creates()),
                    frame(ip(IT4, OT4).syn_ack(502, 40000), drop(Spoofed, NONE)),
                    frame_on(d, ip(IT4, OT4).syn_ack(502, 40000), pass("ot-it")),
                ],
            ),
            case(
                "unzoned source on any port",
                &p.clone().unzoned_allow(),
                vec![frame_on(d, ip(OUTSIDE, OT4).syn(40000, 502), pass(UNZONED))],
            ),
            case(
                "ports of an older generation are purged with its slot",
                &moved(&["lo"]),
                vec![
                    frame(ip(OT4, IT4).syn(40000, 502), pass("ot-it").creates()),
                    Step::Install(moved(&["lo"])),
                    // The third generation reuses the first one's slot.
                    Step::Install(moved(&[port.name])),
                    frame(ip(OT4, IT4).syn(40001, 502), drop(Spoofed, NONE)),
                    frame_on(d, ip(OT4, IT4).syn(40002, 502), pass("ot-it").creates()),
                ],
            ),
        ],
    );
}

#[test]
fn flows() {
    let p = it_ot();
    let deny = it_ot().midstream_deny();
    let (c, s) = (v4(), v4().reply());
    let data = |ip: &Ip, sport, dport, flags| {
        ip.tcp(
            sport,
            dport,
            flags,
            2000,
            6000,
            b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01",
        )
    };
    let mut dp = load();
    run(
        &mut dp,
        vec![
            case(
                "tcp handshake, data, fin, rst; after the rst the flow is gone",
                &p,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    frame(s.syn_ack(502, 40000), pass("modbus")),
                    frame(c.ack(40000, 502), pass("modbus")),
                    frame(data(&c, 40000, 502, "PA"), pass("modbus")),
                    frame(data(&s, 502, 40000, "PA"), pass("modbus")),
                    frame(c.tcp(40000, 502, "FA", 3000, 7000, &[]), pass("modbus")),
                    frame(s.tcp(502, 40000, "FA", 7000, 3001, &[]), pass("modbus")),
                    frame(
                        c.tcp(40000, 502, "R", 3001, 0, &[]),
                        pass("modbus").closes(),
                    ),
                    frame(c.ack(40000, 502), pass("modbus").adopts()),
                ],
            ),
            case(
                "tcp handshake, ipv6",
                &p,
                vec![
                    frame(v6().syn(40000, 502), pass("modbus").creates()),
                    frame(v6().reply().syn_ack(502, 40000), pass("modbus")),
                    frame(v6().ack(40000, 502), pass("modbus")),
                ],
            ),
            case(
                "retransmitted syn",
                &p,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    frame(c.syn(40000, 502), pass("modbus")),
                ],
            ),
            case(
                "reverse syn on a tracked tuple",
                &p,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    frame(s.syn(502, 40000), drop(ReverseSyn, "modbus")),
                ],
            ),
            one(
                "reverse syn on a new tuple",
                &p,
                s.syn(40000, 502),
                drop(NoConduit, NONE),
            ),
            case(
                "replies without a flow, midstream deny",
                &deny,
                vec![
                    frame(s.syn_ack(502, 40000), drop(NotTracked, NONE)),
                    frame(s.ack(502, 40000), drop(NotTracked, NONE)),
                ],
            ),
            case(
                "midstream adopted",
                &p,
                vec![
                    frame(c.ack(40000, 502), pass("modbus").adopts()),
                    frame(s.ack(502, 40000), pass("modbus")),
                    frame(data(&c, 40000, 502, "PA"), pass("modbus")),
                ],
            ),
            case(
                "midstream denied",
                &deny,
                vec![
                    frame(c.ack(40000, 502), drop(MidstreamDenied, "modbus")),
                    frame(s.ack(502, 40000), drop(NotTracked, NONE)),
                ],
            ),
            case(
                "midstream first seen from the responder, adopted in reverse",
                &p,
                vec![
                    frame(s.ack(502, 40000), pass("modbus").adopts()),
                    frame(c.ack(40000, 502), pass("modbus")),
                    frame(s.syn(502, 40000), drop(ReverseSyn, "modbus")),
                ],
            ),
            one(
                "midstream on a port no conduit allows",
                &p,
                c.ack(40000, 9999),
                drop(NotTracked, NONE),
            ),
            case(
                "rst without a flow",
                &p,
                vec![
                    frame(
                        c.tcp(40000, 502, "R", 1, 0, &[]),
                        drop(NotTracked, "modbus"),
                    ),
                    frame(s.tcp(502, 40000, "RA", 1, 1, &[]), drop(NotTracked, NONE)),
                ],
            ),
            case(
                "udp flow and its reply",
                &p,
                vec![
                    frame(c.udp(5000, 161, b"get"), pass("snmp").creates()),
                    frame(s.udp(161, 5000, b"response"), pass("snmp")),
                    frame(c.udp(5000, 161, b"get-next"), pass("snmp")),
                    frame(s.udp(161, 5001, b"response"), drop(NoConduit, NONE)),
                ],
            ),
            case(
                "udp flow, ipv6",
                &p,
                vec![
                    frame(v6().udp(5000, 161, b"get"), pass("snmp").creates()),
                    frame(v6().reply().udp(161, 5000, b"response"), pass("snmp")),
                ],
            ),
            one(
                "udp reply without a flow",
                &p,
                s.udp(161, 5000, b"response"),
                drop(NoConduit, NONE),
            ),
            one(
                "udp to a port no conduit allows",
                &p,
                c.udp(5000, 162, b"trap"),
                drop(NoConduit, NONE),
            ),
            case(
                "udp idle expiry",
                &p.clone().udp_idle_secs(1),
                vec![
                    frame(c.udp(5000, 161, b"get"), pass("snmp").creates()),
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    frame(s.udp(161, 5000, b"response"), pass("snmp")),
                    Step::Sleep(Duration::from_millis(2100)),
                    frame(s.udp(161, 5000, b"late"), drop(NoConduit, NONE).expires()),
                    // TCP flows have their own (longer) idle time.
                    frame(s.syn_ack(502, 40000), pass("modbus")),
                    frame(c.udp(5000, 161, b"again"), pass("snmp").creates()),
                    frame(s.udp(161, 5000, b"response"), pass("snmp")),
                ],
            ),
        ],
    );
}

/// A SYN with MSS, window scale and SACK-permitted options (data offset 8).
fn syn_with_options(sport: u16, dport: u16) -> TcpHeader {
    let mut syn = tcp_header(sport, dport, "S", 1000, 0);
    syn.set_options_raw(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 1, 1])
        .expect("tcp options");
    syn
}

#[test]
fn modes_and_resets() {
    let m = it_ot()
        .midstream_deny()
        .conduit(Conduit::new("watched", "it", "ot").tcp(503).monitor())
        .conduit(Conduit::new("http", "it", "ot").tcp(80).reset());
    let (c, s) = (v4(), v4().reply());
    let mut dp = load();
    run(
        &mut dp,
        vec![
            one(
                "conduit in monitor: allowed is a plain pass",
                &m,
                c.syn(40000, 503),
                pass("watched").creates(),
            ),
            one(
                "conduit in monitor: midstream denied, passed",
                &m,
                c.ack(40000, 503),
                monitor(MidstreamDenied, "watched"),
            ),
            case(
                "conduit in monitor: reverse syn passed",
                &m,
                vec![
                    frame(c.syn(40000, 503), pass("watched").creates()),
                    frame(s.syn(503, 40000), monitor(ReverseSyn, "watched")),
                ],
            ),
            one(
                "conduit in monitor, defaults enforce",
                &m,
                c.syn(40000, 504),
                drop(NoConduit, NONE),
            ),
            case(
                "defaults in monitor",
                &m.clone().monitor(),
                vec![
                    frame(c.syn(40000, 9999), monitor(NoConduit, NONE)),
                    frame(c.ack(40000, 502), monitor(MidstreamDenied, "modbus")),
                    frame(ip(OUTSIDE, OT4).syn(1, 2), monitor(Unzoned, NONE)),
                    frame(
                        c.tcp(40000, 502, "SF", 1, 0, &[]),
                        monitor(TcpBadFlags, NONE),
                    ),
                    frame(
                        padded(ethernet(ETH_P_LLDP, &[0, 0])),
                        monitor(NonIpDenied, NONE),
                    ),
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                ],
            ),
            one(
                "reset by a conduit answers an ack segment",
                &m,
                c.tcp(40000, 80, "PA", 1001, 5001, b"GET / HTTP/1.0\r\n\r\n"),
                reset(MidstreamDenied, "http"),
            ),
            case(
                "reset by a conduit answers a reverse syn",
                &m,
                vec![
                    frame(c.syn(40000, 80), pass("http").creates()),
                    frame(s.syn(80, 40000), reset(ReverseSyn, "http")),
                ],
            ),
            one(
                "conduit reset does not cover the defaults",
                &m,
                c.syn(40000, 81),
                drop(NoConduit, NONE),
            ),
            one(
                "reset by the defaults: ipv4 syn",
                &m.clone().reset(),
                c.syn(40000, 9999),
                reset(NoConduit, NONE),
            ),
            one(
                "reset by the defaults: syn with data",
                &m.clone().reset(),
                c.tcp(40000, 9999, "S", 0xffff_fff0, 0, &[7; 40]),
                reset(NoConduit, NONE),
            ),
            one(
                "reset by the defaults: fin+ack with data",
                &m.clone().reset(),
                c.tcp(40000, 9999, "FPA", 123, 456, b"bye"),
                reset(NotTracked, NONE),
            ),
            one(
                "reset by the defaults: ipv6 syn",
                &m.clone().reset(),
                v6().syn(40000, 9999),
                reset(NoConduit, NONE),
            ),
            one(
                "reset by the defaults: ipv6 with hop-by-hop options",
                &m.clone().reset(),
                v6().hop_by_hop().tcp(40000, 9999, "PA", 77, 88, b"data"),
                reset(NotTracked, NONE),
            ),
            one(
                "reset by the defaults: syn with options",
                &m.clone().reset(),
                c.tcp_with(syn_with_options(40000, 9999), &[]),
                reset(NoConduit, NONE),
            ),
            one(
                "reset keeps both vlan tags",
                &m.clone().reset(),
                c.clone().vlan(5).vlan(6).syn(40000, 9999),
                reset(NoConduit, NONE),
            ),
            one(
                "reset with ipv4 options",
                &m.clone().reset(),
                c.clone()
                    .v4_options(&[1, 1, 1, 0, 1, 1, 1, 0])
                    .syn(40000, 9999),
                reset(NoConduit, NONE),
            ),
            one(
                "reset ignores ethernet padding",
                &m.clone().reset(),
                padded(c.syn(40000, 9999)),
                reset(NoConduit, NONE),
            ),
            one(
                "a reset is never answered with a reset",
                &m.clone().reset(),
                c.tcp(40000, 9999, "R", 1, 0, &[]),
                drop(NotTracked, NONE),
            ),
            one(
                "no reset for udp",
                &m.clone().reset(),
                c.udp(5000, 9999, b"x"),
                drop(NoConduit, NONE),
            ),
            one(
                "no reset for a malformed segment",
                &m.clone().reset(),
                c.tcp(40000, 9999, "SF", 1, 0, &[]),
                drop(TcpBadFlags, NONE),
            ),
            one(
                "monitor wins over reset",
                &m.clone().reset().monitor(),
                c.syn(40000, 9999),
                monitor(NoConduit, NONE),
            ),
        ],
    );
}

#[test]
fn policy_generations() {
    let a = it_ot();
    let zones_only = Policy::new()
        .zone("it", &["10.0.2.0/24", "2001:db8:2::/64"])
        .zone("ot", &["10.0.1.0/24", "2001:db8:1::/64"]);
    let (c, s) = (v4(), v4().reply());
    // Three generations in a row; the third reuses the first one's slot.
    let g1 = Policy::new()
        .zone("a", &["10.1.0.0/16", "2001:db8:a::/48"])
        .zone("b", &["10.2.0.0/16", "2001:db8:b::/48"])
        .conduit(Conduit::new("web", "a", "b").tcp(80));
    let g2 = Policy::new()
        .zone("c", &["10.3.0.0/16"])
        .zone("d", &["10.4.0.0/16"])
        .conduit(Conduit::new("web2", "c", "d").tcp(80));
    let g3 = Policy::new()
        .zone("c", &["10.3.0.0/16"])
        .zone("d", &["10.4.0.0/16"])
        .conduit(Conduit::new("web3", "c", "d").tcp(80));
    let mut dp = load();
    run(
        &mut dp,
        vec![
            Case {
                name: "no policy published",
                policy: None,
                steps: vec![
                    frame(c.syn(40000, 502), drop(NoPolicy, NONE)),
                    frame(arp_request(None), drop(NoPolicy, NONE)),
                ],
            },
            case(
                "reload revokes a flow",
                &a,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    frame(s.syn_ack(502, 40000), pass("modbus")),
                    Step::Install(zones_only.clone()),
                    frame(c.ack(40000, 502), drop(PolicyRevoked, NONE).revokes()),
                    frame(c.ack(40000, 502), drop(NotTracked, NONE)),
                ],
            ),
            case(
                "reload revokes a flow seen from the responder",
                &a,
                vec![
                    frame(c.udp(5000, 161, b"get"), pass("snmp").creates()),
                    Step::Install(zones_only.clone()),
                    frame(
                        s.udp(161, 5000, b"response"),
                        drop(PolicyRevoked, NONE).revokes(),
                    ),
                ],
            ),
            case(
                "reload that keeps the conduit: initiator side",
                &a,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    Step::Install(it_ot_shifted()),
                    frame(c.ack(40000, 502), pass("modbus").revalidates()),
                    frame(s.ack(502, 40000), pass("modbus")),
                ],
            ),
            case(
                "reload that keeps the conduit: responder side",
                &a,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    Step::Install(it_ot_shifted()),
                    frame(s.syn_ack(502, 40000), pass("modbus").revalidates()),
                    frame(c.ack(40000, 502), pass("modbus")),
                ],
            ),
            case(
                "reload that keeps the conduit: udp reply",
                &a,
                vec![
                    frame(c.udp(5000, 161, b"get"), pass("snmp").creates()),
                    Step::Install(it_ot_shifted()),
                    frame(s.udp(161, 5000, b"response"), pass("snmp").revalidates()),
                ],
            ),
            case(
                "reload that keeps the conduit: icmp echo reply",
                &a,
                vec![
                    frame(c.echo_request(0x4242, 1), pass("ping").creates()),
                    Step::Install(it_ot_shifted()),
                    frame(s.echo_reply(0x4242, 1), pass("ping").revalidates()),
                ],
            ),
            case(
                "reload that keeps the conduit: icmpv6 echo reply",
                &a,
                vec![
                    frame(v6().echo_request(0x4242, 1), pass("ping").creates()),
                    Step::Install(it_ot_shifted()),
                    frame(
                        v6().reply().echo_reply(0x4242, 1),
                        pass("ping").revalidates(),
                    ),
                ],
            ),
            case(
                "reverse syn after a reload names the conduit now in force",
                &a,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    Step::Install(it_ot_shifted()),
                    frame(s.syn(502, 40000), drop(ReverseSyn, "modbus").revalidates()),
                ],
            ),
            case(
                "reload hands a flow over to a default",
                &a,
                vec![
                    frame(c.syn(40000, 502), pass("modbus").creates()),
                    Step::Install(zones_only.clone().default_allow()),
                    frame(c.ack(40000, 502), pass(DEFAULT).closes()),
                    frame(s.ack(502, 40000), pass(DEFAULT)),
                ],
            ),
            case(
                "three generations: the old slot is purged",
                &g1,
                vec![
                    frame(
                        ip("10.1.0.1", "10.2.0.1").syn(40000, 80),
                        pass("web").creates(),
                    ),
                    frame(
                        ip("2001:db8:a::1", "2001:db8:b::1").syn(40000, 80),
                        pass("web").creates(),
                    ),
                    Step::Install(g2),
                    frame(
                        ip("10.1.0.1", "10.2.0.1").syn(40001, 80),
                        drop(Unzoned, NONE),
                    ),
                    frame(
                        ip("10.3.0.1", "10.4.0.1").syn(40000, 80),
                        pass("web2").creates(),
                    ),
                    Step::Install(g3),
                    frame(
                        ip("10.1.0.1", "10.2.0.1").syn(40002, 80),
                        drop(Unzoned, NONE),
                    ),
                    frame(
                        ip("2001:db8:a::1", "2001:db8:b::2").syn(40000, 80),
                        drop(Unzoned, NONE),
                    ),
                    frame(
                        ip("10.3.0.1", "10.4.0.1").syn(40001, 80),
                        pass("web3").creates(),
                    ),
                    // A flow of the first generation, untouched since: re-checked, revoked.
                    frame(
                        ip("10.1.0.1", "10.2.0.1").ack(40000, 80),
                        drop(PolicyRevoked, NONE).revokes(),
                    ),
                ],
            ),
        ],
    );
}
