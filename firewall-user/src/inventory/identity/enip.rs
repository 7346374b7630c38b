//! EtherNet/IP ListIdentity replies (command 0x63, over TCP or UDP 44818): the CIP Identity
//! item (type 0x0C) of every reply.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::decode::{
    cip::{self, Message, CMD_LIST_IDENTITY},
    Error, Reader,
};

pub const ITEM_IDENTITY: u16 = 0x000C;

/// The identity a device announces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub encapsulation_version: u16,
    /// The socket address the device gives for itself (often 0.0.0.0 or a private address
    /// behind NAT: informational).
    pub socket_address: Ipv4Addr,
    pub socket_port: u16,
    pub vendor_id: u16,
    pub device_type: u16,
    pub product_code: u16,
    pub revision_major: u8,
    pub revision_minor: u8,
    pub status: u16,
    pub serial_number: u32,
    pub product_name: String,
    pub state: u8,
}

/// The identities of a ListIdentity reply; `Ok(None)` for another command or a request (no
/// data).
pub fn parse(message: &Message) -> Result<Option<Vec<Identity>>, Error> {
    if message.command != CMD_LIST_IDENTITY || message.data.is_empty() {
        return Ok(None);
    }
    let mut r = Reader::new(message.data);
    let items = cip::items(&mut r)?;
    let mut out = Vec::new();
    for item in items.iter().filter(|i| i.kind == ITEM_IDENTITY) {
        out.push(identity(item.data)?);
    }
    Ok(Some(out))
}

fn identity(data: &[u8]) -> Result<Identity, Error> {
    let mut r = Reader::new(data);
    let encapsulation_version = r.u16_le("encapsulation version")?;
    // The socket address is in network byte order, unlike the rest.
    let _family = r.u16_be("sin_family")?;
    let socket_port = r.u16_be("sin_port")?;
    let a = r.take(4, "sin_addr")?;
    r.take(8, "sin_zero")?;
    let vendor_id = r.u16_le("vendor id")?;
    let device_type = r.u16_le("device type")?;
    let product_code = r.u16_le("product code")?;
    let revision_major = r.u8("major revision")?;
    let revision_minor = r.u8("minor revision")?;
    let status = r.u16_le("status")?;
    let serial_number = r.u32_le("serial number")?;
    let len = r.u8("product name length")? as usize;
    let product_name = String::from_utf8_lossy(r.take(len, "product name")?).into_owned();
    let state = r.u8("state")?;
    Ok(Identity {
        encapsulation_version,
        socket_address: Ipv4Addr::new(a[0], a[1], a[2], a[3]),
        socket_port,
        vendor_id,
        device_type,
        product_code,
        revision_major,
        revision_minor,
        status,
        serial_number,
        product_name,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::cip::split_message;

    /// The reply of a 1756-ENBT/A as the ITI capture has it.
    fn reply() -> Vec<u8> {
        let mut item = vec![
            1, 0, 0, 2, 0xaf, 0x12, 10, 1, 1, 164, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        item.extend([1, 0, 12, 0, 58, 0, 4, 3, 0x30, 0, 0x8e, 0x4d, 0x52, 0]);
        item.push(11);
        item.extend(b"1756-ENBT/A");
        item.push(3);
        let mut data = 1u16.to_le_bytes().to_vec();
        data.extend(ITEM_IDENTITY.to_le_bytes());
        data.extend((item.len() as u16).to_le_bytes());
        data.extend(item);
        let mut m = CMD_LIST_IDENTITY.to_le_bytes().to_vec();
        m.extend((data.len() as u16).to_le_bytes());
        m.extend([0; 20]);
        m.extend(data);
        m
    }

    #[test]
    fn parses_a_list_identity_reply() {
        let bytes = reply();
        let (m, _) = split_message(&bytes).unwrap().unwrap();
        let ids = parse(&m).unwrap().unwrap();
        assert_eq!(ids.len(), 1);
        let id = &ids[0];
        assert_eq!((id.vendor_id, id.device_type, id.product_code), (1, 12, 58));
        assert_eq!((id.revision_major, id.revision_minor), (4, 3));
        assert_eq!(id.serial_number, 0x0052_4d8e);
        assert_eq!(id.product_name, "1756-ENBT/A");
        assert_eq!(id.state, 3);
        assert_eq!(id.socket_address, Ipv4Addr::new(10, 1, 1, 164));
        assert_eq!(id.socket_port, 44818);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let bytes = reply();
        let full = bytes.len();
        for cut in 25..full {
            let mut b = bytes[..cut].to_vec();
            let len = (cut - 24) as u16;
            b[2..4].copy_from_slice(&len.to_le_bytes());
            let (m, _) = split_message(&b).unwrap().unwrap();
            assert!(parse(&m).is_err(), "cut at {cut}");
        }
        let mut long_name = bytes.clone();
        long_name[24 + 6 + 32] = 200;
        let (m, _) = split_message(&long_name).unwrap().unwrap();
        assert!(parse(&m).is_err());
        // A request (no data) is no identity.
        let req = [
            0x63, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let (m, _) = split_message(&req).unwrap().unwrap();
        assert_eq!(parse(&m), Ok(None));
    }
}
