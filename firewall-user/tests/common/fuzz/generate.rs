//! Request units for the fuzzer: Modbus ADUs and EtherNet/IP encapsulation messages, taken
//! from the requests of the shared captures or generated (every Modbus function code with the
//! layouts, sizes and unit ids around the policy's edges; EtherNet/IP commands; CIP Read/Write
//! Tag, attribute services, Multiple Service Packet and Unconnected Send nesting, Forward_Open
//! and Forward_Close), then mutated field by field.

use std::path::Path;

use otfw::{capture, decode};

use super::rng::Rng;
use crate::enip_common as enip;
use crate::modbus_common as modbus;

/// One request as the client writes it into its byte stream.
#[derive(Clone, Debug)]
pub struct Unit {
    pub bytes: Vec<u8>,
    /// The byte naming the operation (a Modbus function code, a top-level CIP service), which
    /// a forbidden twin of the same length changes.
    pub operation_at: Option<usize>,
}

/// Which inspector a campaign drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Modbus,
    Enip,
}

impl Protocol {
    pub fn port(self) -> u16 {
        match self {
            Protocol::Modbus => 502,
            Protocol::Enip => 44818,
        }
    }
}

/// Function codes a twin swaps in: writes and programming, never allowed by the read preset.
pub const MODBUS_FORBIDDEN: [u8; 9] = [5, 6, 8, 15, 16, 22, 23, 43, 90];
/// CIP services a twin swaps in: writes and administration on any class.
pub const CIP_FORBIDDEN: [u8; 7] = [0x02, 0x04, 0x05, 0x07, 0x10, 0x4D, 0x53];

/// The requests of the captures of one protocol: each client-to-server TCP payload on the
/// protocol's ports that splits into whole units. Captures repeat the same requests, so each
/// distinct unit is kept once.
pub fn corpus(dir: &Path, protocol: Protocol) -> Vec<Unit> {
    let (sub, ports): (&str, &[u16]) = match protocol {
        Protocol::Modbus => ("modbus", &[502, 5020, 5021]),
        Protocol::Enip => ("enip", &[44818]),
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir.join(sub))
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.join(sub).display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut units: Vec<Unit> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        let frames = capture::frames(&path)
            .unwrap_or_else(|e| panic!("reading capture {}: {e:#}", path.display()));
        for frame in frames {
            let Ok(packet) = etherparse::SlicedPacket::from_ethernet(&frame) else {
                continue;
            };
            let Some(etherparse::TransportSlice::Tcp(tcp)) = packet.transport else {
                continue;
            };
            if !ports.contains(&tcp.destination_port()) || tcp.payload().is_empty() {
                continue;
            }
            let mut rest = tcp.payload();
            while !rest.is_empty() {
                let split = match protocol {
                    Protocol::Modbus => decode::modbus::split_adu(rest).map(|s| s.map(|(_, n)| n)),
                    Protocol::Enip => decode::cip::split_message(rest).map(|s| s.map(|(_, n)| n)),
                };
                let Ok(Some(n)) = split else { break };
                if seen.insert(rest[..n].to_vec()) {
                    units.push(Unit {
                        bytes: rest[..n].to_vec(),
                        operation_at: operation_at(protocol, &rest[..n]),
                    });
                }
                rest = &rest[n..];
            }
        }
    }
    assert!(!units.is_empty(), "no {sub} requests in {}", dir.display());
    units
}

/// Where the operation byte of a unit is: the function code of an ADU, the service of the CIP
/// request a SendRRData / SendUnitData with a null or connected address item carries.
fn operation_at(protocol: Protocol, bytes: &[u8]) -> Option<usize> {
    match protocol {
        Protocol::Modbus => (bytes.len() > 7).then_some(7),
        Protocol::Enip => {
            let command = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]);
            let at = match command {
                0x6F => 40,
                0x70 => 46,
                _ => return None,
            };
            (bytes.len() > at).then_some(at)
        }
    }
}

/// The O->T connection id the fuzzed server gives every Forward_Open it accepts, which most
/// generated SendUnitData name (so that connected requests get past the connection check).
pub const CONNECTION_ID: u32 = 0x7700_1000;

const READS: [u8; 7] = [1, 2, 3, 4, 20, 24, 43];

/// A generated Modbus request: mostly reads of the policy's preset around its address ranges
/// and units, and every other function code with its layout.
pub fn modbus_request(rng: &mut Rng) -> Unit {
    let function = match rng.below(10) {
        0..=4 => *rng.pick(&READS),
        5..=7 => *rng.pick(&MODBUS_FORBIDDEN),
        _ => rng.byte(),
    };
    let unit = match rng.below(4) {
        0 | 1 => 1,
        2 => 255,
        _ => rng.byte(),
    };
    let address = match rng.below(4) {
        0 => rng.below(64) as u16,
        1 => rng.range(200, 299) as u16,
        2 => rng.interesting(16) as u16,
        _ => rng.below(1000) as u16,
    };
    let quantity = match rng.below(3) {
        0 => rng.range(1, 8) as u16,
        1 => rng.interesting(11) as u16,
        _ => rng.range(1, 125) as u16,
    };
    let w = |v: u16| v.to_be_bytes();
    let mut data: Vec<u8> = match function {
        1..=4 => [w(address), w(quantity)].concat(),
        5 => [w(address), w(if rng.chance(80) { 0xff00 } else { 0 })].concat(),
        6 => [w(address), w(rng.u16())].concat(),
        8 => [w(rng.interesting(6) as u16), w(0)].concat(),
        15 => {
            let q = quantity.clamp(1, 1968);
            let count = q.div_ceil(8) as u8;
            let mut d = [w(address), w(q)].concat();
            d.push(count);
            d.extend(std::iter::repeat_n(0xa5, count as usize));
            d
        }
        16 => {
            let q = quantity.clamp(1, 123);
            let mut d = [w(address), w(q)].concat();
            d.push((2 * q) as u8);
            d.extend(std::iter::repeat_n(0x5a, 2 * q as usize));
            d
        }
        20 => {
            let n = rng.range(1, 3);
            let mut d = vec![(7 * n) as u8];
            for _ in 0..n {
                d.push(6);
                d.extend_from_slice(&w(rng.range(1, 4) as u16));
                d.extend_from_slice(&w(rng.below(10) as u16));
                d.extend_from_slice(&w(rng.range(1, 10) as u16));
            }
            d
        }
        22 => [w(address), w(0xff00), w(0x00ff)].concat(),
        23 => {
            let q = rng.range(1, 4) as u16;
            let mut d = [w(address), w(quantity), w(address), w(q)].concat();
            d.push((2 * q) as u8);
            d.extend(std::iter::repeat_n(0x22, 2 * q as usize));
            d
        }
        24 => w(address).to_vec(),
        43 => vec![if rng.chance(80) { 14 } else { rng.byte() }, 1, 0],
        _ => (0..rng.below(6)).map(|_| rng.byte()).collect(),
    };
    if rng.chance(3) {
        data.truncate(rng.below(data.len() + 1));
    }
    let mut bytes = modbus::adu(unit, function, &data);
    bytes[..2].copy_from_slice(&rng.u16().to_be_bytes());
    Unit {
        bytes,
        operation_at: Some(7),
    }
}

const TAGS: [&str; 7] = [
    "Line1_Speed",
    "Line1_Temp",
    "Recipe.Setpoint",
    "Recipe.Other",
    "Secret",
    "line1_x",
    "Line1_Speed.Sub",
];

/// A generated CIP request, nested up to `depth` more levels.
pub fn cip_request(rng: &mut Rng, depth: usize) -> Vec<u8> {
    let pick = if depth == 0 {
        rng.below(9)
    } else {
        rng.below(12)
    };
    let tag = *rng.pick(&TAGS);
    match pick {
        0 => enip::read_tag(tag),
        1 => enip::write_tag(tag),
        2 => enip::get_attr(rng.byte(), rng.byte(), rng.byte()),
        3 => enip::set_attr(rng.byte(), rng.byte(), rng.byte()),
        4 => enip::req(
            *rng.pick(&[0x01, 0x03, 0x0E, 0x4C, 0x52, 0x55]),
            &enip::cat(&[enip::class8(0x6B), enip::inst8(rng.byte())]),
            &[1, 0],
        ),
        5 => enip::forward_open(rng.u16(), rng.below(4) as u8, rng.chance(30)),
        6 => enip::forward_close(rng.u16()),
        7 => enip::req(
            rng.byte() & 0x7f,
            &enip::cat(&[enip::class16(rng.u16()), enip::inst32(rng.next() as u32)]),
            &(0..rng.below(6)).map(|_| rng.byte()).collect::<Vec<_>>(),
        ),
        8 => enip::req(
            *rng.pick(&[0x4C, 0x4D, 0x52, 0x53]),
            &enip::cat(&[enip::tag_path(tag), enip::elem8(rng.byte())]),
            &[1, 0],
        ),
        9 | 10 => {
            let n = rng.range(1, 4);
            let inner: Vec<Vec<u8>> = (0..n).map(|_| cip_request(rng, depth - 1)).collect();
            enip::msp(&inner)
        }
        _ => enip::unconnected_send(&cip_request(rng, depth - 1)),
    }
}

/// A generated EtherNet/IP message from the client: mostly SendRRData / SendUnitData with a CIP
/// request, and the other encapsulation commands.
pub fn enip_message(rng: &mut Rng) -> Unit {
    let bytes = match rng.below(12) {
        0 => enip::list_identity(),
        1 => enip::encap(0x04, 0, &[]),
        2 => enip::encap(0x64, 0, &[]),
        3 => enip::register_session(),
        4 => enip::encap(rng.u16() & 0xff, enip::SESSION, &[0; 4][..rng.below(5)]),
        5 | 6 => enip::unit(
            enip::SESSION,
            if rng.chance(75) {
                CONNECTION_ID
            } else {
                rng.next() as u32
            },
            rng.u16(),
            &cip_request(rng, 3),
        ),
        7 => enip::rr(
            enip::SESSION,
            &enip::forward_open(rng.u16(), rng.below(4) as u8, rng.chance(30)),
        ),
        _ => enip::rr(enip::SESSION, &cip_request(rng, 3)),
    };
    Unit {
        operation_at: operation_at(Protocol::Enip, &bytes),
        bytes,
    }
}

/// The corpus unit with the session of the fuzzed connection (the captures' sessions are
/// other servers' handles).
pub fn from_corpus(protocol: Protocol, unit: &Unit) -> Unit {
    let mut unit = unit.clone();
    if protocol == Protocol::Enip && unit.bytes.len() >= 8 {
        let command = u16::from_le_bytes([unit.bytes[0], unit.bytes[1]]);
        if matches!(command, 0x6F | 0x70) {
            unit.bytes[4..8].copy_from_slice(&enip::SESSION.to_le_bytes());
        }
    }
    unit
}

/// Changes one field of a unit: the operation byte, a length or count, a path size or
/// segment, a byte anywhere, or cuts it short. The unit may stop being well-formed; that is
/// the point.
pub fn mutate(rng: &mut Rng, protocol: Protocol, unit: &mut Unit) {
    let b = &mut unit.bytes;
    if b.is_empty() {
        return;
    }
    let n = b.len();
    match (protocol, rng.below(7)) {
        (_, 0) => {
            let at = rng.below(n);
            b[at] = rng.interesting(8) as u8;
        }
        (_, 1) => b.truncate(rng.below(n)),
        (_, 2) => {
            if let Some(at) = unit.operation_at.filter(|&a| a < n) {
                b[at] = match protocol {
                    Protocol::Modbus => rng.byte(),
                    Protocol::Enip => rng.byte() & 0x7f,
                };
            }
        }
        (Protocol::Modbus, 3) if n >= 6 => {
            // MBAP length.
            let len = rng.interesting(8) as u16;
            b[4..6].copy_from_slice(&len.to_be_bytes());
        }
        (Protocol::Modbus, 4) if n >= 12 => {
            // Quantity (or the second word of the PDU).
            let q = rng.interesting(16) as u16;
            b[10..12].copy_from_slice(&q.to_be_bytes());
        }
        (Protocol::Modbus, 5) if n >= 13 => b[12] = rng.interesting(8) as u8,
        (Protocol::Modbus, _) if n >= 4 => b[2..4].copy_from_slice(&rng.u16().to_be_bytes()),
        (Protocol::Enip, 3) if n >= 4 => {
            // Encapsulation length.
            let len = (n as u16)
                .wrapping_sub(24)
                .wrapping_add(rng.range(0, 8) as u16)
                .wrapping_sub(4);
            b[2..4].copy_from_slice(&len.to_le_bytes());
        }
        // Path size, item count or length, MSP count or offset: a byte past the header.
        (Protocol::Enip, 4) if n > 24 => {
            let at = rng.range(24, n - 1);
            b[at] = b[at].wrapping_add(*rng.pick(&[1u8, 2, 0xff, 0xfe]));
        }
        (Protocol::Enip, 5) => {
            if let Some(at) = unit.operation_at.filter(|&a| a + 1 < n) {
                b[at + 1] = rng.interesting(8) as u8;
            }
        }
        (Protocol::Enip, _) if n >= 8 => {
            b[4..8].copy_from_slice(&(rng.next() as u32).to_le_bytes())
        }
        _ => {}
    }
}
