//! Modbus Read Device Identification responses (function 43, MEI type 14): every object of
//! the response, basic (0-2), regular (3-6) and extended (0x80-0xFF) alike. A device that has
//! more objects than fit in one response says "more follows" and the client asks again from the
//! next object id: [`DeviceId::merge`] joins such responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decode::{Error, Reader};

pub const FUNCTION: u8 = 43;
pub const MEI_READ_DEVICE_ID: u8 = 14;

/// One Read Device Identification response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The read device id code (1 basic, 2 regular, 3 extended, 4 one object).
    pub read_code: u8,
    pub conformity: u8,
    /// 0x00 when this response is the last; 0xFF when more objects follow.
    pub more_follows: u8,
    pub next_object: u8,
    /// (object id, value) in response order.
    pub objects: Vec<(u8, Vec<u8>)>,
}

/// Parses a response PDU (function code first). `Ok(None)` for a PDU that is not a Read
/// Device Identification response (another function, an exception, another MEI type).
pub fn parse(pdu: &[u8]) -> Result<Option<Response>, Error> {
    if pdu.len() < 2 || pdu[0] != FUNCTION || pdu[1] != MEI_READ_DEVICE_ID {
        return Ok(None);
    }
    let mut r = Reader::new(&pdu[2..]);
    let shift = |e: Error| Error::new(e.offset + 2, e.message);
    let read_code = r.u8("read device id code").map_err(shift)?;
    let conformity = r.u8("conformity level").map_err(shift)?;
    let more_follows = r.u8("more follows").map_err(shift)?;
    let next_object = r.u8("next object id").map_err(shift)?;
    let count = r.u8("number of objects").map_err(shift)?;
    let mut objects = Vec::with_capacity(count.into());
    for _ in 0..count {
        let id = r.u8("object id").map_err(shift)?;
        let len = r.u8("object length").map_err(shift)? as usize;
        objects.push((id, r.take(len, "object value").map_err(shift)?.to_vec()));
    }
    // Bytes after the last object are ignored: some devices pad their responses (the
    // identity describes, it decides nothing).
    Ok(Some(Response {
        read_code,
        conformity,
        more_follows,
        next_object,
        objects,
    }))
}

/// The name of a standard object id.
pub fn object_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0 => "vendor_name",
        1 => "product_code",
        2 => "revision",
        3 => "vendor_url",
        4 => "product_name",
        5 => "model_name",
        6 => "user_application_name",
        _ => return None,
    })
}

/// What a device said about itself, over every response seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceId {
    pub vendor_name: Option<String>,
    pub product_code: Option<String>,
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    /// Every other object (3..=6 by name, reserved and extended ones as `0xNN`).
    pub objects: BTreeMap<String, String>,
    /// The highest conformity level reported.
    pub conformity: u8,
}

/// Object values are octet strings; the standard ones are text. Kept as text, with bytes that
/// are not UTF-8 replaced.
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

impl DeviceId {
    /// Adds the objects of one response (later values win for the same object).
    pub fn merge(&mut self, response: &Response) {
        self.conformity = self.conformity.max(response.conformity);
        for (id, value) in &response.objects {
            let value = text(value);
            match id {
                0 => self.vendor_name = Some(value),
                1 => self.product_code = Some(value),
                2 => self.revision = Some(value),
                _ => {
                    let key = object_name(*id).map_or_else(|| format!("0x{id:02x}"), str::to_owned);
                    self.objects.insert(key, value);
                }
            }
        }
    }

    /// Adds what another observation of the same device found (its values win).
    pub fn merge_id(&mut self, other: &DeviceId) {
        self.conformity = self.conformity.max(other.conformity);
        for (mine, theirs) in [
            (&mut self.vendor_name, &other.vendor_name),
            (&mut self.product_code, &other.product_code),
            (&mut self.revision, &other.revision),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        self.objects
            .extend(other.objects.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    pub fn is_empty(&self) -> bool {
        self.vendor_name.is_none()
            && self.product_code.is_none()
            && self.revision.is_none()
            && self.objects.is_empty()
    }

    /// The product name when the device gave one, else vendor and product code.
    pub fn label(&self) -> Option<String> {
        if let Some(p) = self.objects.get("product_name") {
            return Some(p.clone());
        }
        match (&self.vendor_name, &self.product_code) {
            (Some(v), Some(p)) => Some(format!("{v} {p}")),
            (v, p) => v.clone().or(p.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(more: u8, next: u8, objects: &[(u8, &str)]) -> Vec<u8> {
        let mut v = vec![43, 14, 3, 0x83, more, next, objects.len() as u8];
        for (id, s) in objects {
            v.push(*id);
            v.push(s.len() as u8);
            v.extend(s.as_bytes());
        }
        v
    }

    #[test]
    fn parses_every_object_and_merges_more_follows() {
        let first = parse(&response(
            0xff,
            4,
            &[(0, "Acme"), (1, "PLC-9"), (2, "v1.2"), (3, "acme.example")],
        ))
        .unwrap()
        .unwrap();
        assert_eq!((first.more_follows, first.next_object), (0xff, 4));
        let second = parse(&response(0, 0, &[(4, "Press line"), (0x80, "rack 2")]))
            .unwrap()
            .unwrap();
        let mut id = DeviceId::default();
        id.merge(&first);
        id.merge(&second);
        assert_eq!(id.vendor_name.as_deref(), Some("Acme"));
        assert_eq!(id.revision.as_deref(), Some("v1.2"));
        assert_eq!(id.objects["vendor_url"], "acme.example");
        assert_eq!(id.objects["0x80"], "rack 2");
        assert_eq!(id.label().as_deref(), Some("Press line"));
        assert_eq!(id.conformity, 0x83);
    }

    #[test]
    fn other_pdus_are_not_identities() {
        assert_eq!(parse(&[3, 2, 0, 1]), Ok(None));
        assert_eq!(parse(&[0xab, 1]), Ok(None));
        assert_eq!(parse(&[43, 13, 0]), Ok(None));
        assert_eq!(parse(&[]), Ok(None));
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        let good = response(0, 0, &[(0, "Acme"), (1, "X")]);
        for n in 2..good.len() {
            assert!(parse(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut padded = good.clone();
        padded.extend([0, 0]);
        assert_eq!(parse(&padded).unwrap().unwrap().objects.len(), 2, "padding");
        let mut overrun = good;
        overrun[8] = 200;
        assert!(parse(&overrun).is_err(), "object length past the end");
    }
}
