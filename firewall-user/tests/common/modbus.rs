//! Builders for Modbus datapath tests: policies with one Modbus conduit, TCP connections whose
//! segments carry Modbus ADUs, and the ADUs themselves.

#![allow(dead_code)]

use etherparse::PacketBuilder;
use otfw::{
    datapath::{Datapath, Decision},
    policy::check_str,
};

pub const CLIENT: [u8; 4] = [10, 0, 1, 10];
pub const SERVER: [u8; 4] = [10, 0, 2, 20];

/// A policy with zones `ctl` (10.0.1.0/24, the client) and `cell` (10.0.2.0/24, the PLC) and
/// one conduit `plc` from ctl to cell whose only rule is `modbus: {modbus}` (a YAML flow map
/// body), with conduit options `extra` (e.g. `on_deny: reset`).
pub fn policy(modbus: &str, extra: &str) -> String {
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
      - modbus: {{ {modbus} }}
"
    )
}

/// Loads the object and installs `yaml`, with tracing on (`run_frame` needs it).
pub fn datapath(yaml: &str) -> Datapath {
    let (loaded, diagnostics) = check_str("test.yaml", yaml);
    let Some(loaded) = loaded else {
        panic!("policy rejected: {diagnostics:#?}\n{yaml}");
    };
    let mut dp = Datapath::load()
        .expect("loading the XDP object (datapath tests need root: run them with sudo or as root)");
    dp.install(&loaded.compiled).expect("installing the policy");
    dp.enable_trace().expect("enabling the trace");
    dp
}

/// Installs `yaml` on `dp` as a new generation (a policy swap), tracing on again.
pub fn swap(dp: &mut Datapath, yaml: &str) {
    let (loaded, diagnostics) = check_str("test.yaml", yaml);
    let Some(loaded) = loaded else {
        panic!("policy rejected: {diagnostics:#?}\n{yaml}");
    };
    dp.install(&loaded.compiled).expect("installing the policy");
    dp.enable_trace().expect("enabling the trace");
}

/// A request ADU: MBAP header (transaction id 1, protocol 0, length from the PDU) + PDU.
pub fn adu(unit: u8, function: u8, data: &[u8]) -> Vec<u8> {
    let len = (2 + data.len()) as u16;
    let mut v = vec![0, 1, 0, 0];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(unit);
    v.push(function);
    v.extend_from_slice(data);
    v
}

fn words(ws: &[u16]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// Functions 1-4: read `quantity` items from `address`.
pub fn read(function: u8, address: u16, quantity: u16) -> Vec<u8> {
    adu(1, function, &words(&[address, quantity]))
}

pub fn write_single_coil(address: u16, value: u16) -> Vec<u8> {
    adu(1, 5, &words(&[address, value]))
}

pub fn write_single_register(address: u16, value: u16) -> Vec<u8> {
    adu(1, 6, &words(&[address, value]))
}

pub fn write_coils(address: u16, quantity: u16) -> Vec<u8> {
    let count = quantity.div_ceil(8) as u8;
    let mut d = words(&[address, quantity]);
    d.push(count);
    d.extend(std::iter::repeat_n(0xff, count as usize));
    adu(1, 15, &d)
}

pub fn write_registers(address: u16, quantity: u16) -> Vec<u8> {
    let mut d = words(&[address, quantity]);
    d.push((quantity * 2) as u8);
    d.extend(std::iter::repeat_n(0x11, quantity as usize * 2));
    adu(1, 16, &d)
}

pub fn read_write(read_at: u16, read_qty: u16, write_at: u16, write_qty: u16) -> Vec<u8> {
    let mut d = words(&[read_at, read_qty, write_at, write_qty]);
    d.push((write_qty * 2) as u8);
    d.extend(std::iter::repeat_n(0x22, write_qty as usize * 2));
    adu(1, 23, &d)
}

pub fn diagnostics(sub: u16) -> Vec<u8> {
    adu(1, 8, &words(&[sub, 0]))
}

pub fn mei(mei_type: u8) -> Vec<u8> {
    adu(1, 43, &[mei_type, 1, 0])
}

/// A well-formed request of any function code (the layout the inspector expects for the
/// public codes; a bare function code otherwise).
pub fn request(function: u8) -> Vec<u8> {
    match function {
        1..=4 => read(function, 0, 1),
        5 => write_single_coil(0, 0xff00),
        6 => write_single_register(0, 1),
        8 => diagnostics(0),
        15 => write_coils(0, 8),
        16 => write_registers(0, 2),
        20 | 21 => adu(1, function, &[7, 6, 0, 1, 0, 1, 0, 1]),
        22 => adu(1, 22, &words(&[0, 0xffff, 0])),
        23 => read_write(0, 1, 0, 1),
        24 => adu(1, 24, &words(&[0])),
        43 => mei(14),
        _ => adu(1, function, &[]),
    }
}

/// One TCP connection from CLIENT:sport to SERVER:port, with both sequence spaces.
pub struct Conn {
    pub sport: u16,
    pub dport: u16,
    /// Next sequence number of the client and of the server.
    pub cseq: u32,
    pub sseq: u32,
}

impl Conn {
    pub fn new(sport: u16, dport: u16) -> Conn {
        Conn {
            sport,
            dport,
            cseq: 0xffff_fff0,
            sseq: 5000,
        }
    }

    pub fn client_frame(&self, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
        segment(
            CLIENT, SERVER, self.sport, self.dport, seq, self.sseq, flags, payload,
        )
    }

    pub fn server_frame(&self, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
        segment(
            SERVER, CLIENT, self.dport, self.sport, seq, self.cseq, flags, payload,
        )
    }

    /// SYN, SYN-ACK, ACK through `dp`, each asserted passed.
    pub fn open(&mut self, dp: &mut Datapath) {
        let syn = self.client_frame(self.cseq.wrapping_sub(1), "S", &[]);
        assert!(run(dp, &syn).passed(), "SYN");
        let syn_ack = self.server_frame(self.sseq.wrapping_sub(1), "SA", &[]);
        assert!(run(dp, &syn_ack).passed(), "SYN-ACK");
        let ack = self.client_frame(self.cseq, "A", &[]);
        assert!(run(dp, &ack).passed(), "ACK");
    }

    /// A client data segment at the current sequence number; advances it.
    pub fn send(&mut self, dp: &mut Datapath, payload: &[u8]) -> Decision {
        let frame = self.client_frame(self.cseq, "PA", payload);
        self.cseq = self.cseq.wrapping_add(payload.len() as u32);
        run(dp, &frame)
    }

    /// A server data segment at its current sequence number; advances it.
    pub fn reply(&mut self, dp: &mut Datapath, payload: &[u8]) -> Decision {
        let frame = self.server_frame(self.sseq, "PA", payload);
        self.sseq = self.sseq.wrapping_add(payload.len() as u32);
        run(dp, &frame)
    }
}

#[allow(clippy::too_many_arguments)]
pub fn segment(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64240);
    for f in flags.chars() {
        tcp = match f {
            'S' => tcp.syn(),
            'A' => tcp.ack(ack),
            'P' => tcp.psh(),
            'F' => tcp.fin(),
            'R' => tcp.rst(),
            _ => panic!("flag {f}"),
        };
    }
    let mut out = Vec::new();
    tcp.write(&mut out, payload).unwrap();
    out
}

pub fn run(dp: &mut Datapath, frame: &[u8]) -> Decision {
    dp.run_frame(frame).expect("BPF_PROG_TEST_RUN")
}
