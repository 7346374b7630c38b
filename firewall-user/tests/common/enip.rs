//! Builders for EtherNet/IP datapath tests: policies with one `enip:` conduit, encapsulation
//! messages, CPF items, CIP requests and paths. TCP connections come from `modbus.rs` (`Conn`).

#![allow(dead_code)]

use otfw::policy::check_str;

/// A policy with zones `ctl` (10.0.1.0/24, the client) and `cell` (10.0.2.0/24, the PLC) and
/// one conduit `plc` from ctl to cell whose only rule is `enip: {enip}` (a YAML flow map body).
pub fn policy(enip: &str, extra: &str) -> String {
    format!(
        "version: 1
gateway:
  bridge: br-test
defaults:
  action: deny
  midstream: adopt
zones:
  ctl:
    networks: [10.0.1.0/24]
  cell:
    networks: [10.0.2.0/24]
conduits:
  - name: plc
    from: ctl
    to: cell
{extra}
    allow:
      - enip: {{ {enip} }}
"
    )
}

pub fn compiles(yaml: &str) -> bool {
    check_str("test.yaml", yaml).0.is_some()
}

pub const SESSION: u32 = 0x1122_3344;

/// An encapsulation message.
pub fn encap(command: u16, session: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&command.to_le_bytes());
    v.extend_from_slice(&(body.len() as u16).to_le_bytes());
    v.extend_from_slice(&session.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(b"otfwtest");
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(body);
    v
}

pub fn register_session() -> Vec<u8> {
    encap(0x65, 0, &[1, 0, 0, 0])
}

pub fn register_reply(session: u32) -> Vec<u8> {
    encap(0x65, session, &[1, 0, 0, 0])
}

pub fn list_identity() -> Vec<u8> {
    encap(0x63, 0, &[])
}

fn item(t: u16, data: &[u8]) -> Vec<u8> {
    let mut v = t.to_le_bytes().to_vec();
    v.extend_from_slice(&(data.len() as u16).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// CPF body: interface handle, timeout, item count, items.
pub fn cpf(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 0, 10, 0];
    v.extend_from_slice(&(items.len() as u16).to_le_bytes());
    for i in items {
        v.extend_from_slice(i);
    }
    v
}

/// SendRRData carrying `cip` (unconnected).
pub fn rr(session: u32, cip: &[u8]) -> Vec<u8> {
    encap(0x6F, session, &cpf(&[item(0, &[]), item(0xB2, cip)]))
}

/// SendUnitData on connection `id` carrying `cip`.
pub fn unit(session: u32, id: u32, seq: u16, cip: &[u8]) -> Vec<u8> {
    let mut data = seq.to_le_bytes().to_vec();
    data.extend_from_slice(cip);
    encap(
        0x70,
        session,
        &cpf(&[item(0xA1, &id.to_le_bytes()), item(0xB1, &data)]),
    )
}

/// A CIP request: service, path size in words, path, data.
pub fn req(service: u8, path: &[u8], data: &[u8]) -> Vec<u8> {
    assert!(path.len().is_multiple_of(2), "paths are whole words");
    let mut v = vec![service, (path.len() / 2) as u8];
    v.extend_from_slice(path);
    v.extend_from_slice(data);
    v
}

pub fn class8(c: u8) -> Vec<u8> {
    vec![0x20, c]
}
pub fn class16(c: u16) -> Vec<u8> {
    let mut v = vec![0x21, 0];
    v.extend_from_slice(&c.to_le_bytes());
    v
}
pub fn class32(c: u32) -> Vec<u8> {
    let mut v = vec![0x22, 0];
    v.extend_from_slice(&c.to_le_bytes());
    v
}
pub fn inst8(i: u8) -> Vec<u8> {
    vec![0x24, i]
}
pub fn inst16(i: u16) -> Vec<u8> {
    let mut v = vec![0x25, 0];
    v.extend_from_slice(&i.to_le_bytes());
    v
}
pub fn inst32(i: u32) -> Vec<u8> {
    let mut v = vec![0x26, 0];
    v.extend_from_slice(&i.to_le_bytes());
    v
}
pub fn attr8(a: u8) -> Vec<u8> {
    vec![0x30, a]
}
pub fn elem8(e: u8) -> Vec<u8> {
    vec![0x28, e]
}
/// An ANSI extended symbolic segment (one name part).
pub fn sym(name: &str) -> Vec<u8> {
    let mut v = vec![0x91, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    if name.len() % 2 == 1 {
        v.push(0);
    }
    v
}
/// A dotted tag name as symbolic segments.
pub fn tag_path(tag: &str) -> Vec<u8> {
    tag.split('.').flat_map(sym).collect()
}
pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

pub fn read_tag(tag: &str) -> Vec<u8> {
    req(0x4C, &tag_path(tag), &[1, 0])
}
pub fn write_tag(tag: &str) -> Vec<u8> {
    req(0x4D, &tag_path(tag), &[0xC3, 0, 1, 0, 7, 0])
}
/// Get_Attribute_Single on class/instance/attribute.
pub fn get_attr(class: u8, instance: u8, attr: u8) -> Vec<u8> {
    req(
        0x0E,
        &cat(&[class8(class), inst8(instance), attr8(attr)]),
        &[],
    )
}
pub fn set_attr(class: u8, instance: u8, attr: u8) -> Vec<u8> {
    req(
        0x10,
        &cat(&[class8(class), inst8(instance), attr8(attr)]),
        &[1, 0],
    )
}

/// Multiple Service Packet to the Message Router carrying `reqs`.
pub fn msp(reqs: &[Vec<u8>]) -> Vec<u8> {
    req(0x0A, &cat(&[class8(2), inst8(1)]), &msp_data(reqs))
}

/// The data of a Multiple Service Packet request or reply: count, offsets from the count,
/// the entries.
pub fn msp_data(entries: &[Vec<u8>]) -> Vec<u8> {
    let n = entries.len();
    let mut data = (n as u16).to_le_bytes().to_vec();
    let mut off = 2 + 2 * n;
    for r in entries {
        data.extend_from_slice(&(off as u16).to_le_bytes());
        off += r.len();
    }
    for r in entries {
        data.extend_from_slice(r);
    }
    data
}

/// Unconnected Send to the Connection Manager carrying `inner`, routed to backplane slot 0.
pub fn unconnected_send(inner: &[u8]) -> Vec<u8> {
    let mut data = vec![0x0A, 0x05];
    data.extend_from_slice(&(inner.len() as u16).to_le_bytes());
    data.extend_from_slice(inner);
    if inner.len() % 2 == 1 {
        data.push(0);
    }
    data.extend_from_slice(&[1, 0, 0x01, 0x00]);
    req(0x52, &cat(&[class8(6), inst8(1)]), &data)
}

/// Forward_Open (or Large Forward_Open) with connection triple (serial, vendor 0x4d, orig
/// serial 0x1234), transport class `class`, a connection path to the Message Router.
pub fn forward_open(serial: u16, class: u8, large: bool) -> Vec<u8> {
    let mut d = vec![0x0A, 0x05];
    d.extend_from_slice(&0u32.to_le_bytes()); // O->T id chosen by the target
    d.extend_from_slice(&0x7700_0001u32.to_le_bytes()); // T->O id
    d.extend_from_slice(&serial.to_le_bytes());
    d.extend_from_slice(&0x4du16.to_le_bytes());
    d.extend_from_slice(&0x1234u32.to_le_bytes());
    d.extend_from_slice(&[3, 0, 0, 0]); // multiplier, reserved
    for _ in 0..2 {
        d.extend_from_slice(&100_000u32.to_le_bytes()); // RPI 100 ms
        if large {
            d.extend_from_slice(&0x4200_01f4u32.to_le_bytes());
        } else {
            d.extend_from_slice(&0x43f4u16.to_le_bytes());
        }
    }
    d.push(0x80 | class);
    let path = [0x01, 0x00, 0x20, 0x02, 0x24, 0x01];
    d.push((path.len() / 2) as u8);
    d.extend_from_slice(&path);
    req(
        if large { 0x5B } else { 0x54 },
        &cat(&[class8(6), inst8(1)]),
        &d,
    )
}

/// The Forward_Open reply: O->T id `o2t`, T->O id `t2o`, the triple of `forward_open`.
pub fn forward_open_reply(session: u32, serial: u16, o2t: u32, t2o: u32) -> Vec<u8> {
    let mut cip = vec![0xD4, 0, 0, 0];
    cip.extend_from_slice(&o2t.to_le_bytes());
    cip.extend_from_slice(&t2o.to_le_bytes());
    cip.extend_from_slice(&serial.to_le_bytes());
    cip.extend_from_slice(&0x4du16.to_le_bytes());
    cip.extend_from_slice(&0x1234u32.to_le_bytes());
    cip.extend_from_slice(&100_000u32.to_le_bytes());
    cip.extend_from_slice(&100_000u32.to_le_bytes());
    cip.extend_from_slice(&[0, 0]);
    encap(0x6F, session, &cpf(&[item(0, &[]), item(0xB2, &cip)]))
}

pub fn forward_close(serial: u16) -> Vec<u8> {
    let mut d = vec![0x0A, 0x05];
    d.extend_from_slice(&serial.to_le_bytes());
    d.extend_from_slice(&0x4du16.to_le_bytes());
    d.extend_from_slice(&0x1234u32.to_le_bytes());
    let path = [0x01, 0x00, 0x20, 0x02, 0x24, 0x01];
    d.push((path.len() / 2) as u8);
    d.push(0);
    d.extend_from_slice(&path);
    req(0x4E, &cat(&[class8(6), inst8(1)]), &d)
}

/// An implicit I/O datagram: sequenced address item (connection id, sequence) + data.
pub fn io_datagram(id: u32, seq: u32, data: &[u8]) -> Vec<u8> {
    let mut addr = id.to_le_bytes().to_vec();
    addr.extend_from_slice(&seq.to_le_bytes());
    let mut v = 2u16.to_le_bytes().to_vec();
    v.extend_from_slice(&item(0x8002, &addr));
    v.extend_from_slice(&item(0xB1, data));
    v
}

/// A UDP datagram between the lab addresses.
pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}
