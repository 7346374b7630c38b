//! Modbus/TCP: MBAP framing of a byte stream into ADUs, and the request fields a policy is
//! written in (unit id, function and sub-function, the address range per table). Quantities
//! and byte counts are checked against the limits of the Modbus application protocol
//! specification (V1.1b3), as a server would.

use super::{Error, Reader};

/// The MBAP header: transaction id, protocol id, length, unit id.
pub const MBAP_LEN: usize = 7;

/// One Modbus/TCP application data unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adu<'a> {
    pub transaction: u16,
    pub unit: u8,
    /// Function code and data.
    pub pdu: &'a [u8],
}

/// The first ADU of `stream`: `Ok(Some((adu, consumed)))`, `Ok(None)` when more bytes are
/// needed, `Err` when the header cannot start an ADU (the stream cannot be framed further).
pub fn split_adu(stream: &[u8]) -> Result<Option<(Adu<'_>, usize)>, Error> {
    if stream.len() < MBAP_LEN {
        return Ok(None);
    }
    let mut r = Reader::new(stream);
    let transaction = r.u16_be("transaction id")?;
    let protocol = r.u16_be("protocol id")?;
    if protocol != 0 {
        return Err(Error::new(2, format!("protocol id {protocol}, not 0")));
    }
    let length = r.u16_be("length")? as usize;
    // Unit id plus a PDU of 1..=253 bytes.
    if !(2..=254).contains(&length) {
        return Err(Error::new(4, format!("length {length} outside 2..254")));
    }
    let unit = r.u8("unit id")?;
    let total = MBAP_LEN - 1 + length;
    if stream.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Adu {
            transaction,
            unit,
            pdu: &stream[MBAP_LEN..total],
        },
        total,
    )))
}

/// The four data tables a request addresses, named as in policies (`addresses:` keys).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coils,
    DiscreteInputs,
    HoldingRegisters,
    InputRegisters,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Coils,
        Table::DiscreteInputs,
        Table::HoldingRegisters,
        Table::InputRegisters,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Table::Coils => "coils",
            Table::DiscreteInputs => "discrete_inputs",
            Table::HoldingRegisters => "holding_registers",
            Table::InputRegisters => "input_registers",
        }
    }
}

/// What a request asks for, in the terms of a `modbus` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub unit: u8,
    pub function: u8,
    /// The diagnostics sub-function (8) or the MEI type (43).
    pub sub: Option<u16>,
    /// The addresses touched: (table, first, last), both ends included.
    pub ranges: Vec<(Table, u16, u16)>,
}

/// Decodes a request ADU. Function codes without address fields decode to their code alone;
/// exception codes (128..) and malformed fields are errors.
pub fn request(adu: &Adu) -> Result<Request, Error> {
    let mut r = Reader::new(adu.pdu);
    let function = r.u8("function code")?;
    let mut req = Request {
        unit: adu.unit,
        function,
        sub: None,
        ranges: Vec::new(),
    };
    let mut range = |r: &mut Reader, table: Table, max: u16| -> Result<(u16, u16), Error> {
        let at = r.pos();
        let first = r.u16_be("starting address")?;
        let quantity = r.u16_be("quantity")?;
        if quantity == 0 || quantity > max {
            return Err(Error::new(
                at + 2,
                format!("quantity {quantity} outside 1..{max}"),
            ));
        }
        let last = u32::from(first) + u32::from(quantity) - 1;
        let last = u16::try_from(last)
            .map_err(|_| Error::new(at, format!("range {first}+{quantity} passes 65535")))?;
        req.ranges.push((table, first, last));
        Ok((first, quantity))
    };
    let byte_count = |r: &mut Reader, want: usize| -> Result<(), Error> {
        let at = r.pos();
        let count = r.u8("byte count")? as usize;
        if count != want || r.remaining() != count {
            return Err(Error::new(
                at,
                format!(
                    "byte count {count}: {want} expected, {} present",
                    r.remaining()
                ),
            ));
        }
        Ok(())
    };
    match function {
        0 | 128..=255 => {
            return Err(Error::new(
                0,
                format!("function code {function} is not a request"),
            ))
        }
        1 => drop(range(&mut r, Table::Coils, 2000)?),
        2 => drop(range(&mut r, Table::DiscreteInputs, 2000)?),
        3 => drop(range(&mut r, Table::HoldingRegisters, 125)?),
        4 => drop(range(&mut r, Table::InputRegisters, 125)?),
        5 | 6 => {
            let table = if function == 5 {
                Table::Coils
            } else {
                Table::HoldingRegisters
            };
            let address = r.u16_be("output address")?;
            let value = r.u16_be("output value")?;
            if function == 5 && value != 0 && value != 0xff00 {
                return Err(Error::new(3, format!("coil value 0x{value:04x}")));
            }
            req.ranges.push((table, address, address));
        }
        8 => req.sub = Some(r.u16_be("sub-function")?),
        15 => {
            let (_, q) = range(&mut r, Table::Coils, 1968)?;
            byte_count(&mut r, (q as usize).div_ceil(8))?;
        }
        16 => {
            let (_, q) = range(&mut r, Table::HoldingRegisters, 123)?;
            byte_count(&mut r, 2 * q as usize)?;
        }
        22 => {
            let address = r.u16_be("reference address")?;
            r.take(4, "and/or masks")?;
            req.ranges.push((Table::HoldingRegisters, address, address));
        }
        23 => {
            range(&mut r, Table::HoldingRegisters, 125)?;
            let (_, q) = range(&mut r, Table::HoldingRegisters, 121)?;
            byte_count(&mut r, 2 * q as usize)?;
        }
        43 => req.sub = Some(u16::from(r.u8("MEI type")?)),
        _ => {}
    }
    Ok(req)
}

/// The exception code of an exception response, if `adu` is one.
pub fn exception(adu: &Adu) -> Option<u8> {
    match adu.pdu {
        [f, code, ..] if f & 0x80 != 0 => Some(*code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adu(unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 1, 0, 0];
        v.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
        v.push(unit);
        v.extend_from_slice(pdu);
        v
    }

    #[test]
    fn frames_pipelined_and_partial_adus() {
        let mut stream = adu(1, &[3, 0, 10, 0, 2]);
        stream.extend(adu(2, &[6, 0, 7, 0, 9]));
        let (first, used) = split_adu(&stream).unwrap().unwrap();
        assert_eq!((first.unit, first.pdu), (1, &[3, 0, 10, 0, 2][..]));
        let (second, used2) = split_adu(&stream[used..]).unwrap().unwrap();
        assert_eq!(second.unit, 2);
        assert_eq!(used + used2, stream.len());
        assert_eq!(split_adu(&stream[..used - 1]), Ok(None));
        assert_eq!(split_adu(&stream[..3]), Ok(None));
    }

    #[test]
    fn bad_headers_are_errors() {
        let mut bad = adu(1, &[3, 0, 0, 0, 1]);
        bad[3] = 1;
        assert_eq!(split_adu(&bad).unwrap_err().offset, 2);
        let mut long = adu(1, &[3]);
        long[4..6].copy_from_slice(&300u16.to_be_bytes());
        assert!(split_adu(&long).is_err());
        let mut short = adu(1, &[3]);
        short[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert!(split_adu(&short).is_err());
    }

    fn req(pdu: &[u8]) -> Result<Request, Error> {
        let bytes = adu(7, pdu);
        let (a, _) = split_adu(&bytes).unwrap().unwrap();
        request(&a)
    }

    #[test]
    fn requests_name_their_ranges() {
        let r = req(&[3, 0, 10, 0, 5]).unwrap();
        assert_eq!(r.ranges, vec![(Table::HoldingRegisters, 10, 14)]);
        assert_eq!(r.unit, 7);
        let r = req(&[16, 0, 100, 0, 2, 4, 0, 1, 0, 2]).unwrap();
        assert_eq!(r.ranges, vec![(Table::HoldingRegisters, 100, 101)]);
        let r = req(&[23, 0, 0, 0, 2, 0, 10, 0, 1, 2, 0, 0]).unwrap();
        assert_eq!(r.ranges.len(), 2);
        assert_eq!(req(&[8, 0, 4, 0, 0]).unwrap().sub, Some(4));
        assert_eq!(req(&[43, 14, 1, 0]).unwrap().sub, Some(14));
        assert_eq!(req(&[90, 0, 1]).unwrap().function, 90);
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        assert!(req(&[3, 0, 10, 0, 0]).is_err(), "quantity 0");
        assert!(req(&[3, 0, 10, 0, 126]).is_err(), "too many registers");
        assert!(req(&[3, 0xff, 0xff, 0, 2]).is_err(), "past 65535");
        assert!(req(&[16, 0, 0, 0, 2, 3, 0, 1, 0]).is_err(), "byte count");
        assert!(req(&[5, 0, 0, 0x12, 0x34]).is_err(), "coil value");
        assert!(req(&[0x83, 2]).is_err(), "exception as request");
        assert!(req(&[3, 0]).is_err(), "truncated");
        assert!(req(&[8]).is_err(), "no sub-function");
        for n in 1..12 {
            let _ = req(&[15, 0, 0, 0, 9, 2, 0xff, 0x01, 0, 0, 0, 0][..n]);
        }
    }
}
