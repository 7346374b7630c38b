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
    /// A segment of an inspected flow whose inspector program is not loaded (fail closed).
    InspectorMissing = 24,
    /// A Modbus request with a function code (or exception code 128..255) the rule does not
    /// allow.
    ModbusFunctionDenied = 25,
    /// A Modbus request to a unit id the rule does not allow.
    ModbusUnitDenied = 26,
    /// A diagnostics (8) sub-function or encapsulated interface (43) MEI type not allowed.
    ModbusSubFunctionDenied = 27,
    /// A Modbus request whose address range is not inside one allowed range of its table.
    ModbusAddressDenied = 28,
    /// A quantity outside the specification's limits, or a byte count that disagrees with it.
    ModbusBadQuantity = 29,
    /// An MBAP length outside 2..254 or inconsistent with the function's layout.
    ModbusBadLength = 30,
    /// An MBAP protocol id other than 0.
    ModbusBadProtocolId = 31,
    /// A value the function does not define (write single coil other than 0x0000/0xFF00).
    ModbusBadValue = 32,
    /// Bytes after the last complete ADU of a segment that cannot start an MBAP header.
    ModbusTrailingBytes = 33,
    /// A segment of a flow first seen mid-stream that is not a whole number of plausible ADUs:
    /// where an ADU starts cannot be established (non-Modbus bytes, or a split ADU).
    ModbusUnframed = 34,
    /// A segment starting after the next expected byte (an earlier segment is missing).
    ModbusOutOfOrder = 35,
    /// A segment re-sending bytes already passed that cannot be shown to frame as they did.
    ModbusRetransmission = 36,
    /// A segment of a connection direction blocked after a denied request.
    ModbusBlocked = 37,
    /// More ADUs in one segment than the inspector checks.
    ModbusTooManyAdus = 38,
    /// An encapsulation command the rule does not allow.
    EnipCommandDenied = 39,
    /// An encapsulation request with a non-zero status, or a length its command does not allow.
    EnipBadHeader = 40,
    /// An encapsulation request longer than the inspector parses (`enip::MSG_MAX`).
    EnipTooLong = 41,
    /// SendRRData/SendUnitData without the registered session handle (or before any).
    EnipBadSession = 42,
    /// Common packet format items that are missing, unknown, or disagree with the lengths.
    EnipBadCpf = 43,
    /// A segment of a flow first seen mid-stream that is not whole plausible encapsulations.
    EnipUnframed = 44,
    /// A segment starting after the next expected byte.
    EnipOutOfOrder = 45,
    /// A segment re-sending bytes already passed that cannot be shown to frame as they did.
    EnipRetransmission = 46,
    /// A segment of a connection blocked after a denied request.
    EnipBlocked = 47,
    /// More encapsulation messages in one segment or datagram than the inspector checks.
    EnipTooManyMessages = 48,
    /// Bytes after the last complete encapsulation of a datagram, or that cannot start a header.
    EnipTrailingBytes = 49,
    /// SendUnitData on a connection id no allowed Forward_Open opened.
    EnipUnknownConnection = 50,
    /// A CIP service the rule does not allow on the class (or tag path) it addresses.
    CipServiceDenied = 51,
    /// A request path the inspector cannot resolve completely (unknown, misplaced or cut-off segments, no class).
    CipBadPath = 52,
    /// A CIP request cut short, a response bit on a request, or an Unconnected Send / Forward_Open / Forward_Close whose layout disagrees with its length.
    CipMalformed = 53,
    /// A Multiple Service Packet with a bad count or offsets.
    CipBadMsp = 54,
    /// Nesting deeper, or more requests per message, than the inspector checks.
    CipTooDeep = 55,
    /// A tag not in the rule's `tags` list, or a tag service addressing the Symbol class by instance.
    CipTagDenied = 56,
    /// A tag name longer than the inspector matches (`enip::TAG_MAX`).
    CipTagTooLong = 57,
    /// An implicit I/O datagram whose connection id no allowed Forward_Open opened with `io: true` (or it closed or timed out).
    EnipIoNoConnection = 58,
    /// A UDP 2222 datagram that is not a sequenced address item and a connected data item.
    EnipIoMalformed = 59,
    /// A segment of an inspected flow with the URG flag: the receiver's stack takes the urgent
    /// byte out of the stream (SO_OOBINLINE is off by default), so it would not receive the
    /// bytes as framed.
    TcpUrgent = 60,
    /// A segment of an inspected flow whose TCP checksum is wrong (or too long to verify): the
    /// receiver discards it, so framing it would follow bytes the server never reads.
    TcpBadChecksum = 61,
    /// Data on a SYN of an inspected flow (TCP Fast Open): not delivered the same way by every
    /// stack, and never needed by the inspected protocols.
    TcpDataOnSyn = 62,
    /// A segment of an inspected flow with a lower TTL / hop limit than earlier segments from
    /// the same side: it may expire on the way to the receiver after the firewall framed it.
    TcpTtlLowered = 63,
    /// Data beyond the FIN of its direction (or a second FIN elsewhere): the receiver's stream
    /// has ended there and discards it.
    TcpDataAfterFin = 64,
    /// Data on an inspected flow after a RST passed: the receiver closed the connection.
    TcpDataAfterRst = 65,
    /// A Modbus request to refuse (`on_deny: refuse`) whose function code already passed in an
    /// earlier segment, so it cannot be neutralised: the connection is reset.
    ModbusRefusedSplit = 66,
    /// The server answered a neutralised Modbus request with something other than the
    /// exception it must send for an unassigned function code: the connection is reset.
    ModbusRefusedAnswer = 67,
    /// More refused Modbus requests awaiting their answer than a flow keeps
    /// (`modbus::REFUSALS_MAX`): the connection is reset.
    ModbusRefusalsFull = 68,
    /// A new flow whose initiator's zone already holds its share of the flow table
    /// (`ZoneInfo::max_flows`): the zone's other flows, and every other zone's, are kept.
    FlowQuota = 69,
    /// A segment of an inspected flow whose inspector state is gone (evicted): framing cannot
    /// be resumed safely in the middle of the stream, so the connection is reset.
    InspectorStateLost = 70,
    /// A CIP request to refuse (`on_deny: refuse`) whose service code already passed in an
    /// earlier segment, or an answer to restore whose bytes did: the connection is reset.
    EnipRefusedSplit = 71,
    /// The target answered a neutralised CIP request with something other than the "service
    /// not supported" error it must send (or response framing was lost while one was awaited):
    /// the connection is reset.
    EnipRefusedAnswer = 72,
    /// More refused CIP requests awaiting their answer than a flow keeps
    /// (`enip::ENIP_REFUSALS_MAX`): the connection is reset.
    EnipRefusalsFull = 73,
}

/// Number of reason codes (size of per-reason arrays).
pub const REASON_COUNT: u32 = 74;

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
        "inspector_missing",
        "modbus_function_denied",
        "modbus_unit_denied",
        "modbus_sub_function_denied",
        "modbus_address_denied",
        "modbus_bad_quantity",
        "modbus_bad_length",
        "modbus_bad_protocol_id",
        "modbus_bad_value",
        "modbus_trailing_bytes",
        "modbus_unframed",
        "modbus_out_of_order",
        "modbus_retransmission",
        "modbus_blocked",
        "modbus_too_many_adus",
        "enip_command_denied",
        "enip_bad_header",
        "enip_too_long",
        "enip_bad_session",
        "enip_bad_cpf",
        "enip_unframed",
        "enip_out_of_order",
        "enip_retransmission",
        "enip_blocked",
        "enip_too_many_messages",
        "enip_trailing_bytes",
        "enip_unknown_connection",
        "cip_service_denied",
        "cip_bad_path",
        "cip_malformed",
        "cip_bad_msp",
        "cip_too_deep",
        "cip_tag_denied",
        "cip_tag_too_long",
        "enip_io_no_connection",
        "enip_io_malformed",
        "tcp_urgent",
        "tcp_bad_checksum",
        "tcp_data_on_syn",
        "tcp_ttl_lowered",
        "tcp_data_after_fin",
        "tcp_data_after_rst",
        "modbus_refused_split",
        "modbus_refused_answer",
        "modbus_refusals_full",
        "flow_quota",
        "inspector_state_lost",
        "enip_refused_split",
        "enip_refused_answer",
        "enip_refusals_full",
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
