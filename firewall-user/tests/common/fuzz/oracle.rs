//! The judge of what reached the server: the server-side stream (see `receiver`) decoded with
//! the user-space decoders of `otfw::decode` (bounds-checked Rust written from the protocol
//! specifications, sharing no code with the eBPF inspectors, only the datapath's size limits),
//! and every request checked against the fuzzed policy as its documentation states it
//! (policies/README.md), written out here a second time rather than compiled from the policy.

use otfw::decode::{self, cip, modbus};

/// The Modbus rule of the fuzzed conduit, in the policy format.
pub const MODBUS_RULE: &str = "units: [1, 255], functions: [read], addresses: { \
     holding_registers: [\"0-999\"], input_registers: [\"0-99\", \"200-299\"], \
     coils: [\"0-63\"], discrete_inputs: [\"0-63\"] }";
/// The EtherNet/IP rule of the fuzzed conduit.
pub const ENIP_RULE: &str = "services: [read], tags: [\"Line1_*\", \"Recipe.Setpoint\"]";

/// The function code a refused request is neutralised to (`refuse_function`'s default).
pub const NEUTRAL_FUNCTION: u8 = 60;

/// What a complete request in the server's stream is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// The policy allows it.
    Allowed,
    /// A refused Modbus request neutralised in-band: the server answers it with an exception.
    Neutralised,
    /// The policy refuses it: a finding.
    Forbidden(String),
}

/// The judgement of every complete request of a stream, in order; bytes after the last
/// complete request are not read by the server yet and are not judged. A stream that cannot
/// be framed further ends with a `Forbidden` naming why.
pub fn judge(protocol: super::generate::Protocol, stream: &[u8], refuse: bool) -> Vec<Judgement> {
    match protocol {
        super::generate::Protocol::Modbus => judge_modbus(stream, refuse),
        super::generate::Protocol::Enip => judge_enip(stream),
    }
}

fn in_ranges(ranges: &[(u16, u16)], first: u16, last: u16) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= first && last <= hi)
}

fn judge_modbus(stream: &[u8], refuse: bool) -> Vec<Judgement> {
    let mut out = Vec::new();
    let mut rest = stream;
    loop {
        match modbus::split_adu(rest) {
            Ok(None) => return out,
            Err(e) => {
                out.push(Judgement::Forbidden(format!(
                    "the server reads bytes that are no MBAP header ({e}): {:02x?}",
                    &rest[..rest.len().min(16)]
                )));
                return out;
            }
            Ok(Some((adu, used))) => {
                out.push(modbus_adu(&adu, refuse));
                rest = &rest[used..];
            }
        }
    }
}

fn modbus_adu(adu: &modbus::Adu, refuse: bool) -> Judgement {
    let function = adu.pdu[0];
    let mlen = adu.pdu.len() + 1;
    let forbidden = |why: String| {
        Judgement::Forbidden(format!(
            "unit {} function {function} ({why}): {:02x?}",
            adu.unit, adu.pdu
        ))
    };
    if refuse && function == NEUTRAL_FUNCTION {
        return Judgement::Neutralised;
    }
    if ![1, 2, 3, 4, 20, 24, 43].contains(&function) {
        return forbidden("not in the read preset".into());
    }
    if ![1, 255].contains(&adu.unit) {
        return forbidden("unit not allowed".into());
    }
    let length_ok = match function {
        1..=4 => mlen == 6,
        20 => mlen >= 3 && mlen == 3 + adu.pdu[1] as usize,
        24 => mlen == 4,
        _ => mlen >= 3,
    };
    if !length_ok {
        return forbidden(format!("MBAP length {mlen} does not fit the layout"));
    }
    if function == 43 && adu.pdu[1] != 14 {
        return forbidden(format!("MEI type {}", adu.pdu[1]));
    }
    let request = match modbus::request(adu) {
        Ok(r) => r,
        Err(e) => return forbidden(format!("malformed: {e}")),
    };
    for (table, first, last) in request.ranges {
        let allowed: &[(u16, u16)] = match table {
            modbus::Table::HoldingRegisters => &[(0, 999)],
            modbus::Table::InputRegisters => &[(0, 99), (200, 299)],
            modbus::Table::Coils | modbus::Table::DiscreteInputs => &[(0, 63)],
        };
        if !in_ranges(allowed, first, last) {
            return forbidden(format!("{} {first}..={last} outside the rule", table.key()));
        }
    }
    Judgement::Allowed
}

const COMMANDS: [u16; 7] = [0x04, 0x63, 0x64, 0x65, 0x66, 0x6F, 0x70];
const SYMBOL_CLASS: u16 = 0x6B;
/// The services that address a tag's value (Read/Write Tag, fragmented, read-modify-write):
/// with `tags`, addressing them to a Symbol instance is refused. Get_Instance_Attribute_List
/// (0x55) lists tags by instance and is not one of them.
const TAG_SERVICES: [u8; 5] = [0x4C, 0x4D, 0x4E, 0x52, 0x53];

fn judge_enip(stream: &[u8]) -> Vec<Judgement> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Ok(Some((message, used))) = cip::split_message(rest) {
        out.push(enip_message(&message));
        rest = &rest[used..];
    }
    out
}

/// The CIP requests of a message, with symbol bytes that are not text (which the decoder
/// refuses: it names tags for people) read as `~`. The datapath matches a tag name byte for
/// byte against the listed names, which are text: such a byte never matches one, and `~`
/// matches none either, so the judgement is the same.
fn requests_with_any_symbols(message: &cip::Message) -> Result<Vec<cip::Request>, decode::Error> {
    let mut data = message.data.to_vec();
    // Each round makes one more symbol text; a message has at most a few dozen.
    for _ in 0..64 {
        let copy = cip::Message {
            data: &data,
            ..*message
        };
        let err = match cip::requests(&copy) {
            Err(e) if e.message == "symbol is not text" => e,
            other => return other,
        };
        // The error's offset counts from the CIP request in the data item (after the
        // sequence count of a connected one); the symbol's length byte precedes it.
        let mut r = decode::Reader::new(&data);
        r.take(6, "interface handle and timeout")?;
        let items = cip::items(&mut r)?;
        let Some(item) = items.iter().find(|i| matches!(i.kind, 0xB1 | 0xB2)) else {
            return Err(err);
        };
        let sequence = if item.kind == 0xB1 { 2 } else { 0 };
        let start = item.data.as_ptr() as usize - data.as_ptr() as usize + sequence + err.offset;
        let len = usize::from(*data.get(start.wrapping_sub(1)).ok_or(err.clone())?);
        let Some(name) = data.get_mut(start..start + len) else {
            return Err(err);
        };
        name.iter_mut()
            .filter(|b| **b >= 0x80)
            .for_each(|b| *b = b'~');
    }
    cip::requests(&cip::Message {
        data: &data,
        ..*message
    })
}

fn tag_listed(tag: &str) -> bool {
    let tag = tag.to_ascii_lowercase();
    tag == "recipe.setpoint" || tag.starts_with("line1_")
}

fn enip_message(message: &cip::Message) -> Judgement {
    let forbidden =
        |why: String| Judgement::Forbidden(format!("command 0x{:02x}: {why}", message.command));
    if !COMMANDS.contains(&message.command) {
        return forbidden("not a default command".into());
    }
    if message.status != 0 {
        return forbidden(format!("status {} in a request", message.status));
    }
    let requests = match requests_with_any_symbols(message) {
        Ok(r) => r,
        Err(e) => return forbidden(format!("undecodable: {e}")),
    };
    for r in requests {
        let what = format!(
            "service 0x{:02x} class {:?} instance {:?} tag {:?}",
            r.service, r.class, r.instance, r.tag
        );
        let symbolic = r.tag.is_some() || r.class == Some(SYMBOL_CLASS);
        let allowed = match r.service {
            0x01 | 0x03 | 0x0A | 0x0E => true,
            0x4C | 0x52 if symbolic => true,
            0x55 => symbolic,
            0x4E | 0x52 | 0x54 | 0x5B => r.class == Some(0x06),
            _ => false,
        };
        if !allowed {
            return forbidden(format!("{what}: not in the read preset"));
        }
        if let Some(tag) = &r.tag {
            if !tag_listed(tag) {
                return forbidden(format!("{what}: tag not listed"));
            }
        } else if r.class == Some(SYMBOL_CLASS) && TAG_SERVICES.contains(&r.service) {
            return forbidden(format!("{what}: tag service by instance"));
        }
    }
    Judgement::Allowed
}
