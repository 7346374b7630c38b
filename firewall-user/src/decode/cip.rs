//! EtherNet/IP encapsulation (TCP and UDP 44818) and the CIP requests it carries: the
//! command of every message, the CPF items of SendRRData / SendUnitData, and each CIP request
//! resolved to its service and the class or tag it addresses, with Multiple Service Packet and
//! Unconnected Send unwrapped (their embedded requests follow the container in the list).

use super::{Error, Reader};

pub const ENCAP_LEN: usize = 24;
pub const CMD_LIST_IDENTITY: u16 = 0x63;
pub const CMD_SEND_RR_DATA: u16 = 0x6F;
pub const CMD_SEND_UNIT_DATA: u16 = 0x70;
pub const ITEM_CONNECTED_DATA: u16 = 0x00B1;
pub const ITEM_UNCONNECTED_DATA: u16 = 0x00B2;
pub const MESSAGE_ROUTER: u16 = 0x02;
pub const CONNECTION_MANAGER: u16 = 0x06;
pub const SVC_MULTIPLE_SERVICE_PACKET: u8 = 0x0A;
pub const SVC_UNCONNECTED_SEND: u8 = 0x52;
// The datapath's limits (firewall_common::enip): a message it would refuse for its size,
// nesting or request count is one this decoder cannot read either, so what is learned from a
// flow never allows less than the flow needs.
use firewall_common::enip::{MAX_DEPTH, MAX_MSP_COUNT, MAX_REQUESTS, MSG_MAX};

/// One encapsulation message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub command: u16,
    pub session: u32,
    pub status: u32,
    /// The command-specific data.
    pub data: &'a [u8],
}

/// The first message of `stream`: `Ok(None)` when more bytes are needed.
pub fn split_message(stream: &[u8]) -> Result<Option<(Message<'_>, usize)>, Error> {
    if stream.len() < ENCAP_LEN {
        return Ok(None);
    }
    let mut r = Reader::new(stream);
    let command = r.u16_le("command")?;
    let length = r.u16_le("length")? as usize;
    let session = r.u32_le("session handle")?;
    let status = r.u32_le("status")?;
    if stream.len() < ENCAP_LEN + length {
        return Ok(None);
    }
    Ok(Some((
        Message {
            command,
            session,
            status,
            data: &stream[ENCAP_LEN..ENCAP_LEN + length],
        },
        ENCAP_LEN + length,
    )))
}

/// One item of a common packet format list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub kind: u16,
    pub data: &'a [u8],
}

/// The CPF item list starting at `r` (item count, then type/length/data items).
pub fn items<'a>(r: &mut Reader<'a>) -> Result<Vec<Item<'a>>, Error> {
    let count = r.u16_le("item count")?;
    let mut out = Vec::with_capacity(usize::from(count).min(8));
    for _ in 0..count {
        let kind = r.u16_le("item type")?;
        let len = r.u16_le("item length")? as usize;
        out.push(Item {
            kind,
            data: r.take(len, "item data")?,
        });
    }
    Ok(out)
}

/// A CIP request as a policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub service: u8,
    /// The class of a logical path.
    pub class: Option<u16>,
    pub instance: Option<u32>,
    /// The symbolic segments of a tag path joined with `.` (elements left out).
    pub tag: Option<String>,
}

/// The CIP requests of a client's message: empty for commands that carry none.
pub fn requests(message: &Message) -> Result<Vec<Request>, Error> {
    let data_item = match message.command {
        CMD_SEND_RR_DATA => ITEM_UNCONNECTED_DATA,
        CMD_SEND_UNIT_DATA => ITEM_CONNECTED_DATA,
        _ => return Ok(Vec::new()),
    };
    if ENCAP_LEN + message.data.len() > MSG_MAX as usize {
        return Err(Error::new(
            2,
            format!(
                "message of {} bytes, longer than {MSG_MAX}",
                ENCAP_LEN + message.data.len()
            ),
        ));
    }
    let mut r = Reader::new(message.data);
    r.take(6, "interface handle and timeout")?;
    let items = items(&mut r)?;
    let mut out = Vec::new();
    for item in items.iter().filter(|i| i.kind == data_item) {
        let cip = if data_item == ITEM_CONNECTED_DATA {
            // A connected data item starts with its sequence count.
            item.data.get(2..).ok_or_else(|| {
                Error::new(0, "connected data item shorter than its sequence count")
            })?
        } else {
            item.data
        };
        request(cip, 0, &mut out)?;
    }
    if out.len() > MAX_REQUESTS as usize {
        return Err(Error::new(
            ENCAP_LEN,
            format!(
                "{} requests in one message, more than {MAX_REQUESTS}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Decodes the request in `bytes` and, for containers, the requests inside it.
pub fn request(bytes: &[u8], depth: usize, out: &mut Vec<Request>) -> Result<(), Error> {
    if depth >= MAX_DEPTH as usize {
        return Err(Error::new(
            0,
            format!("requests nested deeper than {MAX_DEPTH}"),
        ));
    }
    let mut r = Reader::new(bytes);
    let service = r.u8("service")?;
    if service & 0x80 != 0 {
        return Err(Error::new(0, format!("service 0x{service:02x} is a reply")));
    }
    let words = r.u8("path size")? as usize;
    let path = r.take(2 * words, "request path")?;
    let (class, instance, tag) =
        parse_path(path).map_err(|e| Error::new(2 + e.offset, e.message))?;
    let data = r.rest();
    let data_at = r.pos();
    out.push(Request {
        service,
        class,
        instance,
        tag: tag.clone(),
    });
    let shift = |e: Error| Error::new(data_at + e.offset, e.message);
    if tag.is_none() && class == Some(MESSAGE_ROUTER) && service == SVC_MULTIPLE_SERVICE_PACKET {
        let mut d = Reader::new(data);
        let count = d.u16_le("service count").map_err(shift)? as usize;
        if count == 0 || count > MAX_MSP_COUNT as usize {
            return Err(Error::new(
                data_at,
                format!("{count} services in a Multiple Service Packet, not 1..{MAX_MSP_COUNT}"),
            ));
        }
        let mut offsets = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            offsets.push(d.u16_le("service offset").map_err(shift)? as usize);
        }
        if offsets[0] != 2 + 2 * count {
            return Err(Error::new(
                data_at + 2,
                format!(
                    "first service offset {} does not follow the offsets",
                    offsets[0]
                ),
            ));
        }
        for (i, &start) in offsets.iter().enumerate() {
            let end = offsets.get(i + 1).copied().unwrap_or(data.len());
            let embedded = data
                .get(start..end)
                .filter(|_| start < end)
                .ok_or_else(|| {
                    Error::new(data_at, format!("service offset {start} out of place"))
                })?;
            request(embedded, depth + 1, out)
                .map_err(|e| Error::new(data_at + start + e.offset, e.message))?;
        }
    } else if tag.is_none() && class == Some(CONNECTION_MANAGER) && service == SVC_UNCONNECTED_SEND
    {
        let mut d = Reader::new(data);
        d.take(2, "priority and timeout ticks").map_err(shift)?;
        let size = d.u16_le("message size").map_err(shift)? as usize;
        let at = d.pos();
        let embedded = d.take(size, "embedded message").map_err(shift)?;
        if size % 2 == 1 {
            d.take(1, "pad byte").map_err(shift)?;
        }
        let route = d.u8("route path size").map_err(shift)? as usize;
        d.take(1, "reserved byte").map_err(shift)?;
        d.take(2 * route, "route path").map_err(shift)?;
        if d.remaining() != 0 {
            return Err(Error::new(
                data_at + d.pos(),
                format!("{} bytes after the route path", d.remaining()),
            ));
        }
        request(embedded, depth + 1, out)
            .map_err(|e| Error::new(data_at + at + e.offset, e.message))?;
    }
    Ok(())
}

/// What a request path addresses: (class, instance, tag).
pub type PathTarget = (Option<u16>, Option<u32>, Option<String>);

/// A request path: (class, instance, tag). Logical class/instance/member/connection point/
/// attribute segments (8, 16 and 32 bit) and ANSI symbolic segments; anything else, two
/// classes, or a class and a tag, is an error.
pub fn parse_path(path: &[u8]) -> Result<PathTarget, Error> {
    let mut r = Reader::new(path);
    let (mut class, mut instance, mut tag): (Option<u16>, Option<u32>, Option<String>) =
        (None, None, None);
    while r.remaining() > 0 {
        let at = r.pos();
        let segment = r.u8("path segment")?;
        match segment {
            0x20..=0x3f => {
                let kind = (segment >> 2) & 0x07;
                let value = match segment & 0x03 {
                    0 => u32::from(r.u8("8-bit logical value")?),
                    1 => {
                        r.take(1, "pad byte")?;
                        u32::from(r.u16_le("16-bit logical value")?)
                    }
                    2 => {
                        r.take(1, "pad byte")?;
                        r.u32_le("32-bit logical value")?
                    }
                    _ => {
                        return Err(Error::new(
                            at,
                            format!("reserved logical format in 0x{segment:02x}"),
                        ))
                    }
                };
                match kind {
                    0 => {
                        if class.is_some() || tag.is_some() {
                            return Err(Error::new(at, "a second class or a class after a tag"));
                        }
                        class = Some(
                            u16::try_from(value)
                                .map_err(|_| Error::new(at, "class above 0xffff"))?,
                        );
                    }
                    1 => instance = Some(value),
                    // Member (array elements after a tag), connection point, attribute.
                    2..=4 => {}
                    _ => return Err(Error::new(at, format!("logical segment 0x{segment:02x}"))),
                }
            }
            0x91 => {
                if class.is_some() {
                    return Err(Error::new(at, "a tag after a class"));
                }
                let len = r.u8("symbol length")? as usize;
                let name = r.take(len, "symbol")?;
                if len % 2 == 1 {
                    r.take(1, "symbol pad byte")?;
                }
                let name = std::str::from_utf8(name)
                    .map_err(|_| Error::new(at + 2, "symbol is not text"))?;
                tag = Some(match tag {
                    Some(t) => format!("{t}.{name}"),
                    None => name.to_owned(),
                });
            }
            _ => {
                return Err(Error::new(
                    at,
                    format!("unsupported path segment 0x{segment:02x}"),
                ))
            }
        }
    }
    if class.is_none() && tag.is_none() {
        return Err(Error::new(0, "path names neither a class nor a tag"));
    }
    Ok((class, instance, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encap(command: u16, body: &[u8]) -> Vec<u8> {
        let mut v = command.to_le_bytes().to_vec();
        v.extend((body.len() as u16).to_le_bytes());
        v.extend([0x11, 0x22, 0x33, 0x44]);
        v.extend([0; 16]);
        v.extend(body);
        v
    }

    fn rr(cip: &[u8]) -> Vec<u8> {
        let mut b = vec![0; 6];
        b.extend(2u16.to_le_bytes());
        b.extend([0, 0, 0, 0]);
        b.extend(ITEM_UNCONNECTED_DATA.to_le_bytes());
        b.extend((cip.len() as u16).to_le_bytes());
        b.extend(cip);
        encap(CMD_SEND_RR_DATA, &b)
    }

    fn read_tag(name: &str) -> Vec<u8> {
        let mut path = vec![0x91, name.len() as u8];
        path.extend(name.as_bytes());
        if name.len() % 2 == 1 {
            path.push(0);
        }
        let mut v = vec![0x4C, (path.len() / 2) as u8];
        v.extend(path);
        v.extend([1, 0]);
        v
    }

    #[test]
    fn unwraps_unconnected_send_and_multiple_service_packets() {
        let inner = read_tag("Line1.Speed");
        let mut msp = vec![0x0A, 2, 0x20, 0x02, 0x24, 0x01];
        msp.extend(2u16.to_le_bytes());
        msp.extend(6u16.to_le_bytes());
        msp.extend((6 + inner.len() as u16).to_le_bytes());
        msp.extend(&inner);
        msp.extend([0x0E, 3, 0x20, 0x01, 0x24, 0x01, 0x30, 0x07]);
        let mut ucs = vec![0x52, 2, 0x20, 0x06, 0x24, 0x01, 0x0a, 0xf0];
        ucs.extend((msp.len() as u16).to_le_bytes());
        ucs.extend(&msp);
        ucs.extend([1, 0, 1, 0]);
        let stream = rr(&ucs);
        let (m, used) = split_message(&stream).unwrap().unwrap();
        assert_eq!(used, stream.len());
        let reqs = requests(&m).unwrap();
        let summary: Vec<(u8, Option<u16>, Option<&str>)> = reqs
            .iter()
            .map(|r| (r.service, r.class, r.tag.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0x52, Some(6), None),
                (0x0A, Some(2), None),
                (0x4C, None, Some("Line1.Speed")),
                (0x0E, Some(1), None),
            ]
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let good = rr(&read_tag("A"));
        for n in 0..good.len() {
            if let Ok(Some((m, _))) = split_message(&good[..n]) {
                let _ = requests(&m);
            }
        }
        let mut bad_path = read_tag("Ab");
        bad_path[2] = 0x99;
        let stream = rr(&bad_path);
        let (m2, _) = split_message(&stream).unwrap().unwrap();
        assert!(requests(&m2).is_err());
        assert!(
            parse_path(&[0x20, 0x01, 0x20, 0x02]).is_err(),
            "two classes"
        );
        assert!(parse_path(&[0x24, 0x01]).is_err(), "no class");
        assert!(parse_path(&[0x21, 0x00, 0x01]).is_err(), "truncated");
        let mut deep = read_tag("A");
        for _ in 0..5 {
            let mut ucs = vec![0x52, 2, 0x20, 0x06, 0x24, 0x01, 0, 0];
            ucs.extend((deep.len() as u16).to_le_bytes());
            ucs.extend(&deep);
            deep = ucs;
        }
        assert!(request(&deep, 0, &mut Vec::new()).is_err(), "nesting");
        // An MSP whose offsets point backwards.
        let msp = [0x0A, 2, 0x20, 0x02, 0x24, 0x01, 2, 0, 8, 0, 6, 0, 0x0E, 0];
        assert!(request(&msp, 0, &mut Vec::new()).is_err());
    }
}
