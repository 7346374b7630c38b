//! The user-space Modbus/TCP decoders (inventory, learned policies): MBAP framing of a stream,
//! request fields, exceptions, and Read Device Identification (43/14) responses. They read
//! bytes that crossed the gateway: malformed input is an error with an offset inside the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otfw::decode::modbus::{exception, request, split_adu};
use otfw::inventory::identity::modbus::{self as identity, DeviceId};

fuzz_target!(|stream: &[u8]| {
    let mut device = DeviceId::default();
    let mut rest = stream;
    loop {
        match split_adu(rest) {
            Ok(Some((adu, consumed))) => {
                assert!(consumed > 0 && consumed <= rest.len());
                match request(&adu) {
                    Ok(req) => {
                        for &(_, first, last) in &req.ranges {
                            assert!(first <= last, "{req:?}");
                        }
                    }
                    Err(e) => assert!(e.offset <= adu.pdu.len(), "{e} in {:?}", adu.pdu),
                }
                let _ = exception(&adu);
                match identity::parse(adu.pdu) {
                    Ok(Some(response)) => device.merge(&response),
                    Ok(None) => {}
                    Err(e) => assert!(e.offset <= adu.pdu.len(), "{e} in {:?}", adu.pdu),
                }
                rest = &rest[consumed..];
            }
            Ok(None) => break,
            Err(e) => {
                assert!(e.offset <= rest.len(), "{e}");
                break;
            }
        }
    }
    // The whole input as one PDU, as the identity parser is handed one.
    if let Err(e) = identity::parse(stream) {
        assert!(e.offset <= stream.len(), "{e}");
    }
});
