//! Why the datapath decided what it did. Every drop carries exactly one reason.

/// Reason codes. The numeric values are ABI (counter indexes, events): append, never renumber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Passed: no reason to drop.
    None = 0,
    /// No policy has been published yet.
    NoPolicy = 1,
    /// Frame shorter than an Ethernet header.
    EthTruncated = 2,
    /// VLAN tag cut short, or more than two stacked tags.
    VlanMalformed = 3,
    /// Ethertype not listed in `defaults.non_ip`.
    NonIpDenied = 4,
    /// IP header cut short (or total length beyond the frame).
    IpTruncated = 5,
    /// IP version field disagrees with the ethertype.
    IpBadVersion = 6,
    /// IPv4 header length below 20 bytes.
    IpBadIhl = 7,
    /// IP total/payload length smaller than the headers it must contain.
    IpBadLength = 8,
    /// IP fragment: ports cannot be matched to a conduit, so fragments are refused.
    Fragment = 9,
    /// IPv6 extension header that is unsupported, malformed, or one too many.
    Ipv6ExtHeader = 10,
    /// TCP/UDP/ICMP header cut short.
    L4Truncated = 11,
    /// TCP data offset below 5 words or beyond the segment.
    TcpBadDataOffset = 12,
    /// TCP flag combination no real stack sends (SYN+FIN, SYN+RST, no flags).
    TcpBadFlags = 13,
    /// Source address arrived on a bridge port its zone does not list.
    Spoofed = 14,
    /// An end of the flow is in no zone and `defaults.unzoned` is deny.
    Unzoned = 15,
    /// Both ends in one zone and `defaults.intra_zone` is deny (and no conduit).
    IntraZoneDenied = 16,
    /// No conduit allows this flow to be opened in this direction.
    NoConduit = 17,
    /// A packet of a flow that was never opened (a reply without its request, or a TCP
    /// segment without a tracked connection while mid-stream adoption is off or impossible).
    NotTracked = 18,
    /// The policy now in force no longer allows this established flow.
    PolicyRevoked = 19,
    /// A connection attempt (SYN) from the responder's side of a tracked flow.
    ReverseSyn = 20,
    /// IPv6 neighbour discovery with a hop limit other than 255 (off-link forgery).
    NdBadHopLimit = 21,
    /// Flow table full: the flow could not be tracked, so it is not opened.
    FlowTableFull = 22,
    /// A TCP segment of a connection opened before tracking began, with `defaults.midstream`
    /// set to deny.
    MidstreamDenied = 23,
}

/// Number of reason codes (size of per-reason arrays).
pub const REASON_COUNT: u32 = 24;

impl Reason {
    /// Stable snake_case names used in metrics, events, replay output and docs.
    pub const NAMES: [&'static str; REASON_COUNT as usize] = [
        "none",
        "no_policy",
        "eth_truncated",
        "vlan_malformed",
        "non_ip_denied",
        "ip_truncated",
        "ip_bad_version",
        "ip_bad_ihl",
        "ip_bad_length",
        "fragment",
        "ipv6_ext_header",
        "l4_truncated",
        "tcp_bad_data_offset",
        "tcp_bad_flags",
        "spoofed",
        "unzoned",
        "intra_zone_denied",
        "no_conduit",
        "not_tracked",
        "policy_revoked",
        "reverse_syn",
        "nd_bad_hop_limit",
        "flow_table_full",
        "midstream_denied",
    ];

    pub const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub const fn from_u8(v: u8) -> Option<Reason> {
        if (v as u32) < REASON_COUNT {
            // SAFETY: Reason is repr(u8) with contiguous discriminants 0..REASON_COUNT.
            Some(unsafe { core::mem::transmute::<u8, Reason>(v) })
        } else {
            None
        }
    }
}
