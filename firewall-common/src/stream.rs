//! What the TCP inspectors keep about how the receiver's stack treats a connection, beyond
//! framing: a segment the firewall framed but the receiver does not deliver byte for byte would
//! let the two disagree about where a request starts. See `Reason::undeliverable`.

/// `TcpGuard::flags`: `GUARD_FIN << side` marks that `fin_seq[side]` holds where the side's
/// stream ends (0: client to server, 1: server to client).
pub const GUARD_FIN: u8 = 1 << 0;
/// A RST passed: no data of either side is delivered after it.
pub const GUARD_RESET: u8 = 1 << 2;

/// Per inspected TCP connection, in both inspectors' flow state (`ModbusFlow`, `EnipFlow`).
/// Cleared by a client SYN that starts a new connection on the same addresses and ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpGuard {
    /// Per side, the sequence number just after the side's FIN.
    pub fin_seq: [u32; 2],
    /// Per side, the highest TTL / hop limit seen (0: none yet). A lower one may not reach
    /// the receiver: the path did not change within the connection, the sender's TTL did.
    pub ttl: [u8; 2],
    pub flags: u8,
    pub _pad: u8,
}
