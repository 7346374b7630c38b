//! The inventory from the live datapath: records of the ring buffers `OBSERVED` (flow answers,
//! identity answers and the inspectors' first uses, always on) and `LEARN_FRAMES` (`otfw learn --live`) decoded into
//! frames for an [`Observer`], and the controller's inventory state file, kept across restarts.
//!
//! The state file accumulates: every save reads it, adds what was observed since the last save
//! and writes it back, so that `otfw inventory --state FILE --capture ...` may feed the same
//! file, and a restarted controller goes on where the last one stopped.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Result;
use firewall_common::observed::{
    ObservedHeader, OBSERVED_FLOW_ANSWERED, OBSERVED_IDENTITY, OBSERVED_LEARN, OBSERVED_USE,
};

use super::{observe::Observer, Inventory, Time};

/// Where a controller keeps its instance's inventory unless told otherwise.
pub const STATE_DIR: &str = "/var/lib/otfw";

/// The default inventory state file of an instance.
pub fn state_path(instance: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{instance}.inventory.json"))
}

/// How often the controller adds what it observed to its state file.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// One frame copied by the datapath.
#[derive(Debug, PartialEq, Eq)]
pub struct ObservedRecord<'a> {
    /// `OBSERVED_*`.
    pub kind: u8,
    pub ifindex: u32,
    /// When the datapath saw it (CLOCK_MONOTONIC ns).
    pub ktime_ns: u64,
    /// The frame's length on the wire; `frame` holds its first bytes (all of them unless the
    /// frame was longer than `OBSERVED_MAX_COPY`).
    pub frame_len: u16,
    pub frame: &'a [u8],
    /// `OBSERVED_USE`: the TCP payload offset of the first request with a new use.
    pub message: u16,
}

impl ObservedRecord<'_> {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            OBSERVED_FLOW_ANSWERED => "flow_answered",
            OBSERVED_IDENTITY => "identity",
            OBSERVED_LEARN => "learn",
            OBSERVED_USE => "first_use",
            _ => "unknown",
        }
    }
}

/// Decodes a ring buffer record; `None` for a record of another shape (shorter than its header
/// says, or of an unknown kind).
pub fn decode(bytes: &[u8]) -> Option<ObservedRecord<'_>> {
    let header: ObservedHeader = crate::datapath::read_record(bytes)?;
    if !matches!(
        header.kind,
        OBSERVED_FLOW_ANSWERED | OBSERVED_IDENTITY | OBSERVED_LEARN | OBSERVED_USE
    ) {
        return None;
    }
    let start = std::mem::size_of::<ObservedHeader>();
    let frame = bytes.get(start..start + header.copied as usize)?;
    Some(ObservedRecord {
        kind: header.kind,
        ifindex: header.ifindex,
        ktime_ns: header.ktime_ns,
        frame_len: header.frame_len,
        frame,
        message: header.message,
    })
}

/// Turns the datapath's clock (CLOCK_MONOTONIC, `bpf_ktime_get_ns`) into wall-clock time, by
/// the offset between the two when it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: SystemTime,
    monotonic_ns: u64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now(),
            monotonic_ns: monotonic_ns(),
        }
    }

    /// The wall-clock time of a datapath timestamp.
    pub fn at(&self, ktime_ns: u64) -> Time {
        let wall = if ktime_ns <= self.monotonic_ns {
            self.wall - Duration::from_nanos(self.monotonic_ns - ktime_ns)
        } else {
            self.wall + Duration::from_nanos(ktime_ns - self.monotonic_ns)
        };
        Time(wall)
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns` and of `LEARN_UNTIL`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The name of the bridge port with index `ifindex` (in this network namespace), or
/// `ifindex N` when it is gone.
pub fn port_name(ifindex: u32) -> String {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname(3) may write.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Feeds a copied frame to `observer`: a flow's answer as an answer (its receiver is the
/// client), a first use as a client's requests from the message it names, anything else as a
/// frame of a capture.
pub fn observe(observer: &mut Observer, record: &ObservedRecord, clock: &Clock) {
    let at = clock.at(record.ktime_ns);
    observer.arriving_on(Some(port_name(record.ifindex)));
    match record.kind {
        OBSERVED_FLOW_ANSWERED => observer.answer(record.frame, at),
        OBSERVED_USE => observer.requests(record.frame, usize::from(record.message), at),
        _ => observer.frame(record.frame, at),
    }
}

/// The controller's inventory: observations from `OBSERVED` since the last save, added to its
/// state file every `SAVE_INTERVAL` and at exit.
pub struct LiveInventory {
    path: PathBuf,
    observer: Observer,
    /// Records observed since the last save.
    pending: u64,
    /// Set when the state file could not be read: nothing is written over it (it may hold
    /// another version's inventory) until it can.
    refused: Option<String>,
}

impl LiveInventory {
    /// Keeps the inventory in `path`, checking at once that what is there can be read.
    pub fn open(path: PathBuf) -> LiveInventory {
        let refused = match path.exists() {
            true => Inventory::load(&path).err().map(|e| format!("{e:#}")),
            false => None,
        };
        if let Some(e) = &refused {
            log::warn!(
                "the live inventory is not saved while {} cannot be read ({e}); move it away \
                 or fix it",
                path.display()
            );
        }
        LiveInventory {
            path,
            observer: Observer::default(),
            pending: 0,
            refused,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One record of `OBSERVED`.
    pub fn record(&mut self, bytes: &[u8], clock: &Clock) {
        match decode(bytes) {
            Some(r) => {
                observe(&mut self.observer, &r, clock);
                self.pending += 1;
            }
            None => log::debug!("unknown observed-frame record ({} bytes)", bytes.len()),
        }
    }

    /// Adds what was observed since the last save to the state file.
    pub fn save(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let mut kept = if self.path.exists() {
            match Inventory::load(&self.path) {
                Ok(kept) => {
                    if self.refused.take().is_some() {
                        log::info!("{} can be read again", self.path.display());
                    }
                    kept
                }
                // Reported once (here or at start), not at every save.
                Err(e) => {
                    let first = self.refused.is_none();
                    self.refused = Some(format!("{e:#}"));
                    return if first { Err(e) } else { Ok(()) };
                }
            }
        } else {
            Inventory::default()
        };
        if let Some(dir) = self.path.parent() {
            crate::private::dir(dir)?;
        }
        kept.merge(&self.observer.inventory);
        kept.save(&self.path)?;
        // Flows are forgotten with the observations: their conversations are in the file.
        self.observer = Observer::default();
        self.pending = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall_common::observed::OBSERVED_DATA_BYTES;

    fn record(kind: u8, frame: &[u8], frame_len: u16) -> Vec<u8> {
        let header = ObservedHeader {
            ktime_ns: 5_000_000_000,
            ifindex: 7,
            frame_len,
            copied: frame.len() as u16,
            kind,
            _pad: 0,
            message: 3,
            _pad2: [0; 4],
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&header.ktime_ns.to_ne_bytes());
        bytes.extend_from_slice(&header.ifindex.to_ne_bytes());
        bytes.extend_from_slice(&header.frame_len.to_ne_bytes());
        bytes.extend_from_slice(&header.copied.to_ne_bytes());
        bytes.push(header.kind);
        bytes.push(0);
        bytes.extend_from_slice(&header.message.to_ne_bytes());
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(bytes.len(), std::mem::size_of::<ObservedHeader>());
        bytes.extend_from_slice(frame);
        // The ring's record is always the whole struct; bytes past the copy are undefined.
        bytes.resize(bytes.len() + OBSERVED_DATA_BYTES - frame.len(), 0xee);
        bytes
    }

    #[test]
    fn decodes_header_and_copied_bytes() {
        let frame: Vec<u8> = (0..60).collect();
        let bytes = record(OBSERVED_IDENTITY, &frame, 60);
        let r = decode(&bytes).unwrap();
        assert_eq!(r.kind, OBSERVED_IDENTITY);
        assert_eq!(r.kind_name(), "identity");
        assert_eq!(r.ifindex, 7);
        assert_eq!(r.ktime_ns, 5_000_000_000);
        assert_eq!(r.frame_len, 60);
        assert_eq!(r.frame, &frame[..]);
        assert_eq!(r.message, 3);
        assert_eq!(
            decode(&record(OBSERVED_USE, &frame, 60))
                .unwrap()
                .kind_name(),
            "first_use"
        );
    }

    #[test]
    fn a_truncated_copy_keeps_the_wire_length() {
        let frame = vec![0xabu8; 1514];
        let bytes = record(OBSERVED_LEARN, &frame, 9000);
        let r = decode(&bytes).unwrap();
        assert_eq!((r.frame_len, r.frame.len()), (9000, 1514));
    }

    #[test]
    fn refuses_unknown_kinds_and_short_records() {
        let frame = vec![1u8; 100];
        assert!(decode(&record(9, &frame, 100)).is_none());
        let bytes = record(OBSERVED_FLOW_ANSWERED, &frame, 100);
        assert!(
            decode(&bytes[..24 + 99]).is_none(),
            "fewer bytes than copied"
        );
        assert!(decode(&bytes[..10]).is_none(), "no whole header");
        assert!(decode(&bytes[..24 + 100]).is_some());
    }

    use crate::inventory::Transport;
    use std::net::IpAddr;

    const CLIENT: [u8; 4] = [10, 0, 1, 10];
    const SERVER: [u8; 4] = [10, 0, 3, 10];

    /// A frame from the server to the client, as the datapath copies a flow's answer.
    fn answer(transport: Transport, server_port: u16, client_port: u16) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 1])
            .ipv4(SERVER, CLIENT, 64);
        let mut out = Vec::new();
        match transport {
            Transport::Tcp => b
                .tcp(server_port, client_port, 9000, 64240)
                .syn()
                .ack(1001)
                .write(&mut out, &[]),
            Transport::Udp => b.udp(server_port, client_port).write(&mut out, b"reply"),
            Transport::Icmp => b.icmpv4_echo_reply(client_port, 1).write(&mut out, b"ping"),
        }
        .unwrap();
        out
    }

    fn conversation(o: &Observer) -> (IpAddr, IpAddr, Transport, u16) {
        let keys: Vec<_> = o.inventory.conversations.keys().copied().collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        keys[0]
    }

    #[test]
    fn a_flow_answer_names_its_receiver_the_client() {
        let clock = Clock::now();
        let (client, server) = (IpAddr::from(CLIENT), IpAddr::from(SERVER));
        for (transport, port, service) in [
            (Transport::Tcp, 502, 502),
            (Transport::Udp, 161, 161),
            (Transport::Icmp, 0, 8),
        ] {
            let bytes = record(OBSERVED_FLOW_ANSWERED, &answer(transport, port, 40000), 0);
            let mut o = Observer::default();
            observe(&mut o, &decode(&bytes).unwrap(), &clock);
            assert_eq!(
                conversation(&o),
                (client, server, transport, service),
                "{transport}"
            );
            if transport != Transport::Icmp {
                assert!(o.inventory.assets[&server]
                    .serves
                    .iter()
                    .any(|s| s.port == port));
            }
        }
        // The same UDP reply as a frame of a capture: its sender opened the flow.
        let mut o = Observer::default();
        o.frame(&answer(Transport::Udp, 161, 40000), clock.at(0));
        assert_eq!(conversation(&o), (server, client, Transport::Udp, 40000));
    }

    /// A client's Modbus request segment: `lead` bytes of an ADU that started in an earlier
    /// segment, then whole ADUs (transaction, unit, PDU).
    fn requests(lead: usize, adus: &[(u16, u8, &[u8])]) -> Vec<u8> {
        let mut payload = vec![0x5a; lead];
        for (transaction, unit, pdu) in adus {
            payload.extend_from_slice(&transaction.to_be_bytes());
            payload.extend_from_slice(&[0, 0]);
            payload.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
            payload.push(*unit);
            payload.extend_from_slice(pdu);
        }
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 3])
            .ipv4(CLIENT, SERVER, 64)
            .tcp(40000, 502, 1001, 64240)
            .ack(9001)
            .write(&mut out, &payload)
            .unwrap();
        out
    }

    #[test]
    fn a_first_use_is_decoded_from_its_message_on_and_joins_the_connection() {
        let clock = Clock::now();
        let mut o = Observer::default();
        let answered = record(
            OBSERVED_FLOW_ANSWERED,
            &answer(Transport::Tcp, 502, 40000),
            0,
        );
        observe(&mut o, &decode(&answered).unwrap(), &clock);
        // The segment starts with the tail of an ADU decided in an earlier segment; the copy
        // says where the first new request starts.
        let read = [3u8, 0, 10, 0, 2];
        let diagnostic = [8u8, 0, 4, 0, 0];
        let frame = requests(5, &[(7, 1, &read), (8, 9, &diagnostic)]);
        let mut bytes = record(OBSERVED_USE, &frame, frame.len() as u16);
        bytes[18..20].copy_from_slice(&5u16.to_ne_bytes());
        observe(&mut o, &decode(&bytes).unwrap(), &clock);
        // A later copy of the same connection, not contiguous with the first.
        let write = [16u8, 0, 20, 0, 1, 2, 0, 7];
        let frame = requests(0, &[(9, 1, &write)]);
        let bytes = record(OBSERVED_USE, &frame, frame.len() as u16);
        let mut r = decode(&bytes).unwrap();
        r.message = 0;
        observe(&mut o, &r, &clock);

        let key = conversation(&o);
        assert_eq!(key, (CLIENT.into(), SERVER.into(), Transport::Tcp, 502));
        let c = &o.inventory.conversations[&key];
        assert_eq!(c.flows, 1, "the copies belong to the answered connection");
        assert_eq!(c.undecoded, 0);
        let m = c.modbus.as_ref().expect("Modbus requests recorded");
        assert_eq!(
            m.functions.keys().map(String::as_str).collect::<Vec<_>>(),
            ["16", "3", "8/4"]
        );
        assert_eq!(m.units.keys().copied().collect::<Vec<_>>(), [1, 9]);
        // The records say the frames came in on ifindex 7, which is the port of their senders
        // (named by the index when no interface has it).
        let expected = port_name(7);
        for (ip, ports) in [(CLIENT, vec![expected.clone()]), (SERVER, vec![expected])] {
            let a = &o.inventory.assets[&IpAddr::from(ip)];
            assert_eq!(a.ports.iter().cloned().collect::<Vec<_>>(), ports, "{ip:?}");
        }
    }

    #[test]
    fn ports_are_named() {
        assert_eq!(port_name(1), "lo");
        assert_eq!(port_name(u32::MAX), format!("ifindex {}", u32::MAX));
    }

    #[test]
    fn datapath_time_becomes_wall_time() {
        let clock = Clock {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            monotonic_ns: 50_000_000_000,
        };
        assert_eq!(
            clock.at(49_000_000_000).0,
            SystemTime::UNIX_EPOCH + Duration::from_secs(999_999)
        );
        assert_eq!(
            clock.at(50_500_000_000).0,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000_500)
        );
    }
}
