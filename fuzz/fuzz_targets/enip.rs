//! The user-space EtherNet/IP decoders (inventory, learned policies): encapsulation framing of
//! a stream, CPF items, CIP requests with Multiple Service Packet and Unconnected Send
//! unwrapped, request paths, and ListIdentity replies. Malformed input is an error, never a
//! panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otfw::decode::cip::{self, parse_path, requests, split_message};
use otfw::inventory::identity::enip as identity;

fuzz_target!(|stream: &[u8]| {
    let mut rest = stream;
    while let Ok(Some((message, consumed))) = split_message(rest) {
        assert!(consumed >= cip::ENCAP_LEN && consumed <= rest.len());
        let _ = requests(&message);
        let _ = identity::parse(&message);
        rest = &rest[consumed..];
    }
    // The whole input as one CIP request and as one request path, as the decoders above hand
    // them over from inside a message.
    let mut out = Vec::new();
    if let Err(e) = cip::request(stream, 0, &mut out) {
        assert!(e.offset <= stream.len(), "{e}");
    }
    if let Err(e) = parse_path(stream) {
        assert!(e.offset <= stream.len(), "{e}");
    }
});
