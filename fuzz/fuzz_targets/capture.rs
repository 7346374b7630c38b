//! The capture reader behind `otfw replay`, `otfw inventory` and `otfw learn`: pcap and pcapng
//! files of any origin, every link type otfw converts to Ethernet. Malformed files are errors
//! that name the capture, never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otfw::capture::{self, LinkType};

const NAME: &str = "fuzz.pcap";

const LINK_TYPES: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
];

fuzz_target!(|data: &[u8]| {
    match capture::read_from(NAME, data) {
        Ok(frames) => {
            for frame in frames {
                if frame.link != LinkType::Ethernet {
                    // A synthesised Ethernet header is always whole.
                    assert!(frame.data.len() >= 14, "{frame:?}");
                }
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            assert!(
                message.starts_with(&format!("capture {NAME}: ")),
                "{message}"
            );
        }
    }
    // The same bytes as one packet of every link type: the header conversions on their own,
    // which a capture reaches only behind a well-formed file header.
    for link in LINK_TYPES {
        if let Ok(frame) = link.to_ethernet(data.to_vec()) {
            assert!(frame.len() >= 14 || link == LinkType::Ethernet);
        }
    }
});
