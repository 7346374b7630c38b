//! Checks of the bytes the datapath rewrites in place (`on_deny: refuse`): the frame that came
//! out equals the one that went in but for the named payload bytes, and its TCP checksum is
//! right (recomputed here, independently of the datapath's incremental update).

#![allow(dead_code)]

use otfw::offload::repair_tcp_checksum;

/// Ethernet + IPv4 + TCP without options: where the payload starts in the test frames.
pub const PAYLOAD: usize = 14 + 20 + 20;

/// `out` equals `input` except at the payload offsets of `changed` (offset, new byte), and its
/// TCP checksum is right.
pub fn rewritten(input: &[u8], out: &[u8], changed: &[(usize, u8)]) {
    assert_eq!(input.len(), out.len(), "same length");
    let mut expected = input.to_vec();
    for &(at, value) in changed {
        expected[PAYLOAD + at] = value;
    }
    let mut fixed = expected.clone();
    repair_tcp_checksum(&mut fixed);
    assert_eq!(out, &fixed[..], "bytes and checksum");
    let mut check = out.to_vec();
    assert!(
        !repair_tcp_checksum(&mut check),
        "checksum of the output is valid"
    );
}
