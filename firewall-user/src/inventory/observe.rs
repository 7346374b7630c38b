//! From frames to observations: every IP packet updates its two assets and the conversation it
//! belongs to; TCP streams are reassembled per direction so that Modbus ADUs and EtherNet/IP
//! messages split over segments (or several in one) are decoded whole; requests are recorded
//! on the conversation, identities from the answers on the answering asset.
//!
//! Who is the client: for TCP the sender of the SYN; for a connection first seen without its
//! SYN, the side whose port the other already serves, else the side not on a well-known
//! industrial port, else the higher port. For UDP and ICMP the first sender, as the datapath
//! starts a flow with the first datagram from a conduit's `from` side.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

use super::{
    add_range, identity, tally, Application, Asset, Conversation, ConversationKey, EnipUse,
    Inventory, ModbusUse, Seen, Service, Time, Transport,
};
use crate::{
    capture::{self, SYNTHETIC_DESTINATION, SYNTHETIC_SOURCE},
    decode::{cip, modbus, Error},
};

pub const MODBUS_PORT: u16 = 502;
pub const ENIP_PORT: u16 = 44818;
pub const CIP_IO_PORT: u16 = 2222;
/// A stream buffer that grows past this without yielding a message is not the protocol.
const MAX_BUFFERED: usize = 64 * 1024;
/// Flows remembered at once; the oldest are forgotten beyond this (their conversations stay).
const MAX_FLOWS: usize = 65_536;

/// One TCP direction being reassembled.
#[derive(Default)]
struct Stream {
    next_seq: Option<u32>,
    buffer: Vec<u8>,
    /// Decoding stopped (a malformed message, or a gap the protocol cannot resynchronise from).
    stopped: bool,
}

impl Stream {
    /// Appends the new bytes of a segment; false when bytes were missed (the buffer then
    /// restarts at this segment).
    fn push(&mut self, seq: u32, syn: bool, payload: &[u8]) -> bool {
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        let next = *self.next_seq.get_or_insert(seq);
        let ahead = seq.wrapping_sub(next) as i32;
        let mut in_order = true;
        let new = if ahead > 0 {
            self.buffer.clear();
            in_order = false;
            payload
        } else {
            // Retransmitted bytes are skipped.
            payload.get(ahead.unsigned_abs() as usize..).unwrap_or(&[])
        };
        let start = if ahead > 0 { seq } else { next };
        self.next_seq = Some(start.wrapping_add(new.len() as u32));
        self.buffer.extend_from_slice(new);
        in_order
    }
}

struct Flow {
    conversation: ConversationKey,
    client_port: u16,
    to_server: Stream,
    to_client: Stream,
}

impl Flow {
    fn stream(&mut self, from_client: bool) -> &mut Stream {
        if from_client {
            &mut self.to_server
        } else {
            &mut self.to_client
        }
    }
}

/// What a frame given to [`Observer::observe`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A frame of a capture, or of `otfw learn --live`: one of a contiguous sequence.
    Capture,
    /// The answer that established its flow.
    Answer,
    /// A client's requests, from this payload offset.
    Requests(usize),
}

/// Feeds frames into an [`Inventory`].
#[derive(Default)]
pub struct Observer {
    pub inventory: Inventory,
    flows: HashMap<FlowKey, Flow>,
    /// The bridge port the frames now being observed arrived on, when known.
    port: Option<String>,
}

/// (client, client port, server, server port, transport).
type FlowKey = (IpAddr, u16, IpAddr, u16, Transport);

/// Runs `each` on every complete message at the start of `bytes`, as `split` frames them:
/// (bytes used, the error that stopped decoding).
fn each_message<'a, M>(
    bytes: &'a [u8],
    split: impl Fn(&'a [u8]) -> Result<Option<(M, usize)>, Error>,
    mut each: impl FnMut(M) -> Result<(), Error>,
) -> (usize, Option<Error>) {
    let mut used = 0;
    loop {
        match split(&bytes[used..]) {
            Ok(None) => return (used, None),
            Err(e) => return (used, Some(e)),
            Ok(Some((m, n))) => {
                if let Err(e) = each(m) {
                    return (used, Some(e));
                }
                used += n;
            }
        }
    }
}

impl Observer {
    pub fn new(inventory: Inventory) -> Observer {
        Observer {
            inventory,
            flows: HashMap::new(),
            port: None,
        }
    }

    /// The bridge port the next frames arrived on (`None`: not known), recorded on their
    /// senders.
    pub fn arriving_on(&mut self, port: Option<String>) {
        self.port = port;
    }

    /// Observes every frame of a capture.
    pub fn capture(&mut self, frames: &[capture::Frame]) {
        for f in frames {
            self.frame(&f.data, Time::from_unix(f.timestamp));
        }
    }

    /// Observes one Ethernet frame captured at `at`.
    pub fn frame(&mut self, frame: &[u8], at: Time) {
        self.observe(frame, at, Origin::Capture);
    }

    /// Observes the answer that established a flow, seen without the frame that opened it (the
    /// datapath's `flow_answered` copies): its receiver is the client. A SYN-ACK says so
    /// itself; a UDP reply or an ICMP echo reply would otherwise make its sender the client.
    pub fn answer(&mut self, frame: &[u8], at: Time) {
        self.observe(frame, at, Origin::Answer);
    }

    /// Observes a client's request segment copied for its connection's first use of a function,
    /// unit, command or service (the datapath's `first_use` copies): the requests from payload
    /// offset `message` on are decoded on their own, outside the connection's reassembly (the
    /// copies of one connection are not contiguous). Its sender is the client.
    pub fn requests(&mut self, frame: &[u8], message: usize, at: Time) {
        self.observe(frame, at, Origin::Requests(message));
    }

    fn observe(&mut self, frame: &[u8], at: Time, origin: Origin) {
        let answer = origin == Origin::Answer;
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            return;
        };
        let (src, dst) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => (
                IpAddr::V4(ip.header().source_addr()),
                IpAddr::V4(ip.header().destination_addr()),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
            ),
            _ => {
                self.non_ip(frame, &p, at);
                return;
            }
        };
        let mac = match &p.link {
            Some(LinkSlice::Ethernet2(e)) => Some(e.source()),
            _ => None,
        }
        .filter(|m| *m != SYNTHETIC_SOURCE && *m != SYNTHETIC_DESTINATION);
        self.asset(src, at, mac);
        // The port the frame came in on is the sender's side of the gateway.
        if let (Some(port), Some(a)) = (&self.port, self.inventory.assets.get_mut(&src)) {
            a.ports.insert(port.clone());
        }
        if is_unicast(dst) {
            self.asset(dst, at, None);
        }
        match (&p.transport, origin) {
            (Some(TransportSlice::Tcp(t)), Origin::Requests(message)) => {
                let forward = (
                    src,
                    t.source_port(),
                    dst,
                    t.destination_port(),
                    Transport::Tcp,
                );
                // A connection seen first by a request (the controller started after its
                // handshake) is a connection, counted as such.
                let opens = (!self.flows.contains_key(&forward)).then_some(true);
                let key = self.flow(
                    (src, t.source_port()),
                    (dst, t.destination_port()),
                    Transport::Tcp,
                    at,
                    opens,
                );
                self.client_requests(key, t.payload().get(message..).unwrap_or(&[]), at);
            }
            (Some(TransportSlice::Tcp(t)), _) => {
                let (syn, ack) = (t.syn(), t.ack());
                let key = self.flow(
                    (src, t.source_port()),
                    (dst, t.destination_port()),
                    Transport::Tcp,
                    at,
                    syn.then_some(!ack),
                );
                self.tcp_segment(
                    key,
                    (src, t.source_port()),
                    t.sequence_number(),
                    syn,
                    t.payload(),
                    at,
                );
            }
            (Some(TransportSlice::Udp(u)), _) => {
                let key = self.flow(
                    (src, u.source_port()),
                    (dst, u.destination_port()),
                    Transport::Udp,
                    at,
                    Some(!answer),
                );
                self.datagram(
                    key,
                    src,
                    u.source_port(),
                    u.destination_port(),
                    u.payload(),
                    at,
                );
            }
            // An echo reply standing for its flow: the request it answers.
            (Some(TransportSlice::Icmpv4(i)), _) if answer && i.type_u8() == 0 => {
                self.icmp(dst, src, 8, at, &[])
            }
            (Some(TransportSlice::Icmpv6(i)), _) if answer && i.type_u8() == 129 => {
                self.icmp(dst, src, 128, at, &[])
            }
            (Some(TransportSlice::Icmpv4(i)), _) => self.icmp(src, dst, i.type_u8(), at, &[0, 14]),
            (Some(TransportSlice::Icmpv6(i)), _) => self.icmp(src, dst, i.type_u8(), at, &[129]),
            _ => {}
        }
    }

    fn non_ip(&mut self, frame: &[u8], p: &SlicedPacket, at: Time) {
        let Some(LinkSlice::Ethernet2(e)) = &p.link else {
            return;
        };
        let mut ether_type = e.ether_type().0;
        if let Some(v) = p.vlan() {
            ether_type = match v {
                etherparse::VlanSlice::SingleVlan(s) => s.ether_type().0,
                etherparse::VlanSlice::DoubleVlan(d) => d.inner.ether_type().0,
            };
        }
        if ether_type < 0x0600 {
            // 802.3 length field: spanning tree is LLC SAP 0x42, policies call it `stp`.
            if frame.get(14) == Some(&0x42) {
                tally(
                    &mut self.inventory.non_ip,
                    crate::policy::validated::NON_IP_STP,
                    at,
                );
            }
            return;
        }
        tally(&mut self.inventory.non_ip, ether_type, at);
    }

    fn asset(&mut self, ip: IpAddr, at: Time, mac: Option<[u8; 6]>) {
        let asset = self.inventory.assets.entry(ip).or_insert_with(|| Asset {
            ip,
            macs: Default::default(),
            seen: Seen {
                count: 0,
                first: at,
                last: at,
            },
            ports: Default::default(),
            serves: Default::default(),
            uses: Default::default(),
            identity: Default::default(),
        });
        asset.seen.record(at);
        if let Some(m) = mac {
            asset.macs.insert(format_mac(m));
        }
    }

    /// The flow of a packet from `a` to `b`, created when new. `opens`: `Some(true)` when the
    /// sender starts the flow (TCP SYN, any first datagram), `Some(false)` when the receiver did
    /// (SYN-ACK), `None` when the packet does not say.
    fn flow(
        &mut self,
        a: (IpAddr, u16),
        b: (IpAddr, u16),
        transport: Transport,
        at: Time,
        opens: Option<bool>,
    ) -> FlowKey {
        let forward = (a.0, a.1, b.0, b.1, transport);
        let backward = (b.0, b.1, a.0, a.1, transport);
        let new_connection = transport == Transport::Tcp && opens == Some(true);
        for key in [forward, backward] {
            if !new_connection || key != forward {
                if let Some(flow) = self.flows.get(&key) {
                    let c = flow.conversation;
                    if let Some(conv) = self.inventory.conversations.get_mut(&c) {
                        conv.packets.record(at);
                    }
                    return key;
                }
            }
        }
        let a_is_client = match opens {
            Some(o) => o,
            None => self.guess_client(a, b, transport),
        };
        let (client, server) = if a_is_client { (a, b) } else { (b, a) };
        let key = (client.0, client.1, server.0, server.1, transport);
        let application = application(transport, server.1);
        let conv_key = (client.0, server.0, transport, server.1);
        self.inventory
            .conversations
            .entry(conv_key)
            .and_modify(|c| {
                c.packets.record(at);
                c.flows += 1;
            })
            .or_insert_with(|| {
                Conversation::new((client.0, server.0, transport, server.1), application, at)
            });
        if transport == Transport::Udp && client.1 == ENIP_PORT && server.1 != ENIP_PORT {
            if let Some(c) = self.inventory.conversations.get_mut(&conv_key) {
                c.answers_from = Some(ENIP_PORT);
            }
        }
        let service = Service {
            transport,
            port: server.1,
        };
        if let Some(s) = self.inventory.assets.get_mut(&server.0) {
            s.serves.insert(service);
        }
        if let Some(c) = self.inventory.assets.get_mut(&client.0) {
            c.uses.insert(service);
        }
        if self.flows.len() >= MAX_FLOWS {
            self.flows.clear();
        }
        self.flows.insert(
            key,
            Flow {
                conversation: conv_key,
                client_port: client.1,
                to_server: Stream::default(),
                to_client: Stream::default(),
            },
        );
        key
    }

    /// For a TCP connection first seen without its handshake: is `a` the client?
    fn guess_client(&self, a: (IpAddr, u16), b: (IpAddr, u16), transport: Transport) -> bool {
        let serves = |ip: IpAddr, port: u16| {
            self.inventory
                .assets
                .get(&ip)
                .is_some_and(|x| x.serves.contains(&Service { transport, port }))
        };
        let known = |port: u16| [MODBUS_PORT, ENIP_PORT, CIP_IO_PORT].contains(&port);
        if serves(b.0, b.1) != serves(a.0, a.1) {
            return serves(b.0, b.1);
        }
        if known(a.1) != known(b.1) {
            return known(b.1);
        }
        a.1 >= b.1
    }

    fn conversation(&mut self, key: &FlowKey) -> &mut Conversation {
        let c = self.flows[key].conversation;
        self.inventory
            .conversations
            .get_mut(&c)
            .expect("every flow has its conversation")
    }

    fn tcp_segment(
        &mut self,
        key: FlowKey,
        sender: (IpAddr, u16),
        seq: u32,
        syn: bool,
        payload: &[u8],
        at: Time,
    ) {
        let application = self.conversation(&key).application;
        let sniff = application == Application::Other;
        let flow = self.flows.get_mut(&key).expect("flow just looked up");
        let from_client = sender == (key.0, flow.client_port);
        let stream = flow.stream(from_client);
        if stream.stopped || (payload.is_empty() && !syn) {
            if syn {
                stream.next_seq = Some(seq.wrapping_add(1));
            }
            return;
        }
        let in_order = stream.push(seq, syn, payload);
        if stream.buffer.is_empty() {
            return;
        }
        // A port otfw does not know: the first bytes of the client say what it speaks.
        let application = if sniff && from_client {
            let found = sniff_application(&stream.buffer);
            if found != Application::Other {
                self.conversation(&key).application = found;
            }
            found
        } else {
            application
        };
        let flow = self.flows.get_mut(&key).expect("flow just looked up");
        let stream = flow.stream(from_client);
        let buffer = std::mem::take(&mut stream.buffer);
        let server = key.2;
        let (used, failed) = match application {
            Application::Modbus => self.modbus_stream(&key, &buffer, from_client, at),
            Application::Enip => self.enip_stream(&key, &buffer, from_client, server, at),
            Application::CipIo | Application::Other => (buffer.len(), None),
        };
        let flow = self.flows.get_mut(&key).expect("flow just looked up");
        let stream = flow.stream(from_client);
        stream.buffer = buffer[used..].to_vec();
        if failed.is_some() || stream.buffer.len() > MAX_BUFFERED {
            stream.stopped = true;
            stream.buffer.clear();
        }
        // A request the decoder cannot read counts against the conversation, unless bytes
        // were missed before it (then the capture, not the client, is to blame).
        if let (Some(e), true, true) = (failed, from_client, in_order) {
            let c = self.conversation(&key);
            c.undecoded += 1;
            if c.decode_error.is_none() {
                c.decode_error = Some(e.to_string());
            }
        }
    }

    /// The complete requests at the start of `payload`, from the client of `key`; a message cut
    /// off by the end of the copy is left out.
    fn client_requests(&mut self, key: FlowKey, payload: &[u8], at: Time) {
        let mut application = self.conversation(&key).application;
        if application == Application::Other {
            application = sniff_application(payload);
            if application != Application::Other {
                self.conversation(&key).application = application;
            }
        }
        // Errors are not the client's to answer for: the copy may start or end inside a
        // message the datapath framed across segments.
        match application {
            Application::Modbus => {
                self.modbus_stream(&key, payload, true, at);
            }
            Application::Enip => {
                self.enip_stream(&key, payload, true, key.2, at);
            }
            Application::CipIo | Application::Other => {}
        }
    }

    /// Decodes the complete ADUs at the start of `bytes`: (bytes used, the error that stopped
    /// decoding).
    fn modbus_stream(
        &mut self,
        key: &FlowKey,
        bytes: &[u8],
        from_client: bool,
        at: Time,
    ) -> (usize, Option<Error>) {
        each_message(bytes, modbus::split_adu, |adu| {
            if from_client {
                let r = modbus::request(&adu)?;
                self.modbus_request(key, &r, at);
            } else if let Ok(Some(response)) = identity::modbus::parse(adu.pdu) {
                if let Some(a) = self.inventory.assets.get_mut(&key.2) {
                    a.identity
                        .modbus
                        .get_or_insert_with(Default::default)
                        .merge(&response);
                }
            }
            Ok(())
        })
    }

    fn modbus_request(&mut self, key: &FlowKey, r: &modbus::Request, at: Time) {
        let c = self.conversation(key);
        let m = c.modbus.get_or_insert_with(ModbusUse::default);
        tally(&mut m.units, r.unit, at);
        let function = match r.sub {
            Some(sub) => format!("{}/{sub}", r.function),
            None => r.function.to_string(),
        };
        tally(&mut m.functions, function, at);
        for &(table, lo, hi) in &r.ranges {
            add_range(m.addresses.entry(table).or_default(), lo, hi);
        }
    }

    fn enip_stream(
        &mut self,
        key: &FlowKey,
        bytes: &[u8],
        from_client: bool,
        sender: IpAddr,
        at: Time,
    ) -> (usize, Option<Error>) {
        each_message(bytes, cip::split_message, |m| {
            if from_client {
                self.enip_request(key, &m, at)
            } else {
                self.enip_reply(sender, &m);
                Ok(())
            }
        })
    }

    fn enip_request(&mut self, key: &FlowKey, m: &cip::Message, at: Time) -> Result<(), Error> {
        let requests = cip::requests(m)?;
        let c = self.conversation(key);
        let e = c.enip.get_or_insert_with(EnipUse::default);
        tally(&mut e.commands, m.command, at);
        for r in requests {
            let target = match (&r.tag, r.class) {
                (Some(_), _) => "tag".to_owned(),
                (None, Some(class)) => format!("0x{class:02x}"),
                (None, None) => continue,
            };
            tally(&mut e.services, format!("0x{:02x}@{target}", r.service), at);
            if let Some(tag) = r.tag {
                tally(&mut e.tags, tag, at);
            }
        }
        Ok(())
    }

    /// A ListIdentity reply names the device that sent it.
    fn enip_reply(&mut self, sender: IpAddr, m: &cip::Message) {
        if let Ok(Some(ids)) = identity::enip::parse(m) {
            if let (Some(id), Some(a)) = (
                ids.into_iter().next(),
                self.inventory.assets.get_mut(&sender),
            ) {
                a.identity.enip = Some(id);
            }
        }
    }

    fn datagram(
        &mut self,
        key: FlowKey,
        sender: IpAddr,
        source_port: u16,
        destination_port: u16,
        payload: &[u8],
        at: Time,
    ) {
        // EtherNet/IP over UDP: requests go to 44818, replies come from it, whichever side
        // started the flow (a ListIdentity broadcast is answered by unicast flows of their own).
        if destination_port == ENIP_PORT {
            if let Ok(Some((m, n))) = cip::split_message(payload) {
                if n == payload.len() {
                    let failed = self.enip_request(&key, &m, at).err();
                    if let Some(e) = failed {
                        let c = self.conversation(&key);
                        c.undecoded += 1;
                        c.decode_error.get_or_insert(e.to_string());
                    }
                    return;
                }
            }
            let c = self.conversation(&key);
            c.undecoded += 1;
            c.decode_error
                .get_or_insert_with(|| "not an EtherNet/IP message".to_owned());
        } else if source_port == ENIP_PORT {
            if let Ok(Some((m, _))) = cip::split_message(payload) {
                self.enip_reply(sender, &m);
            }
        }
    }

    fn icmp(&mut self, src: IpAddr, dst: IpAddr, kind: u8, at: Time, replies: &[u8]) {
        // Echo and timestamp replies answer a request of the other side.
        if replies.contains(&kind) {
            let conversations = &mut self.inventory.conversations;
            if let Some(c) = conversations
                .range_mut((dst, src, Transport::Icmp, 0)..=(dst, src, Transport::Icmp, 255))
                .next()
            {
                c.1.packets.record(at);
                return;
            }
        }
        let key = (src, dst, Transport::Icmp, u16::from(kind));
        self.inventory
            .conversations
            .entry(key)
            .and_modify(|c| {
                c.packets.record(at);
                c.flows += 1;
            })
            .or_insert_with(|| {
                Conversation::new(
                    (src, dst, Transport::Icmp, u16::from(kind)),
                    Application::Other,
                    at,
                )
            });
    }
}

/// The application of a flow to `port`, by port alone.
fn application(transport: Transport, port: u16) -> Application {
    match (transport, port) {
        (Transport::Tcp, MODBUS_PORT) => Application::Modbus,
        (Transport::Tcp | Transport::Udp, ENIP_PORT) => Application::Enip,
        (Transport::Udp, CIP_IO_PORT) => Application::CipIo,
        _ => Application::Other,
    }
}

/// What the first bytes a client sent on a port otfw does not know look like: a whole
/// well-formed Modbus request, or a whole EtherNet/IP message of a known command.
fn sniff_application(first: &[u8]) -> Application {
    if let Ok(Some((adu, n))) = modbus::split_adu(first) {
        if n == first.len() && modbus::request(&adu).is_ok() {
            return Application::Modbus;
        }
    }
    if let Ok(Some((m, n))) = cip::split_message(first) {
        let known = crate::policy::enip::COMMANDS
            .iter()
            .any(|(_, c)| *c == m.command && *c != 0);
        if n == first.len() && known && cip::requests(&m).is_ok() {
            return Application::Enip;
        }
    }
    Application::Other
}

/// Whether `ip` names one host (not a broadcast, multicast or unspecified address).
pub fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_unspecified() || v4 == Ipv4Addr::BROADCAST),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_skip_retransmissions_and_restart_after_gaps() {
        let mut s = Stream::default();
        assert!(s.push(100, true, b""));
        assert!(s.push(101, false, b"abc"));
        assert!(s.push(101, false, b"abcde"), "overlap");
        assert_eq!(s.buffer, b"abcde");
        assert!(!s.push(200, false, b"xy"), "gap");
        assert_eq!(s.buffer, b"xy");
        assert!(s.push(202, false, b"z"));
        assert_eq!(s.buffer, b"xyz");
        assert!(s.push(201, false, b"y"), "old");
        assert_eq!(s.buffer, b"xyz");
    }
}

#[cfg(test)]
mod capture_tests {
    use std::path::PathBuf;

    use super::*;

    fn observe(relative: &str) -> Inventory {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/pcaps")
            .join(relative);
        let frames = capture::read(&path)
            .unwrap_or_else(|e| panic!("{e:#} (the corpus lives in ../shared/pcaps)"));
        let mut o = Observer::default();
        o.capture(&frames);
        o.inventory
    }

    #[test]
    fn modbus_conversations_and_identity() {
        let inv = observe("modbus/icsnpp_modbus_example.pcap");
        let with_id: Vec<&Asset> = inv
            .assets
            .values()
            .filter(|a| a.identity.modbus.is_some())
            .collect();
        assert_eq!(with_id.len(), 1, "{:#?}", inv.assets);
        let modbus: Vec<&Conversation> = inv
            .conversations
            .values()
            .filter(|c| c.application == Application::Modbus)
            .collect();
        assert!(!modbus.is_empty());
        let server = with_id[0].ip;
        let c = modbus.iter().find(|c| c.server == server).unwrap();
        let m = c.modbus.as_ref().unwrap();
        assert!(m.functions.contains_key("43/14"), "{m:?}");
        assert!(with_id[0].serves.contains(&Service {
            transport: Transport::Tcp,
            port: 502
        }));
        assert!(with_id[0].seen.first <= with_id[0].seen.last);
        assert!(with_id[0].seen.first.0 > std::time::SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn enip_identity_and_requests() {
        let inv = observe("enip/suricata_enip_cip_example.pcap");
        assert!(inv.assets.values().any(|a| a.identity.enip.is_some()));
        let e: Vec<&EnipUse> = inv
            .conversations
            .values()
            .filter_map(|c| c.enip.as_ref())
            .collect();
        assert!(e.iter().any(|e| !e.services.is_empty()), "{e:#?}");
    }

    #[test]
    fn state_survives_a_save_and_merges_on_load() {
        let inv = observe("modbus/icsnpp_modbus_example.pcap");
        let dir = std::env::temp_dir().join(format!("otfw-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        inv.save(&path).unwrap();
        let loaded = Inventory::load(&path).unwrap();
        assert_eq!(loaded, inv);
        let mut twice = loaded.clone();
        twice.merge(&inv);
        let (a, b) = (
            inv.conversations.values().next().unwrap(),
            twice.conversations.values().next().unwrap(),
        );
        assert_eq!(b.packets.count, 2 * a.packets.count);
        assert_eq!(twice.assets.len(), inv.assets.len());
        std::fs::write(
            &path,
            "{\"version\": 99, \"assets\": [], \"conversations\": []}",
        )
        .unwrap();
        let e = Inventory::load(&path).unwrap_err();
        assert!(format!("{e:#}").contains("version 99"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
