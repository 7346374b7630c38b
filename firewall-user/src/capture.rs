//! Reading captures (pcap and pcapng, through pcap-file) into the Ethernet frames the datapath
//! judges, in file order. Packets captured with another link-layer header (Linux cooked, BSD
//! loopback, raw IP) are turned into Ethernet frames ([`LinkType::to_ethernet`]); the interfaces
//! of a pcapng file may differ in link type. [`Writer`] writes frames back out (as Ethernet).

mod cooked;
mod link;
mod loopback;
mod write;

use std::{
    fs::File,
    io::{BufReader, Read},
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use pcap_file::{
    pcap::PcapReader,
    pcapng::{blocks::interface_description::InterfaceDescriptionOption, Block, PcapNgReader},
};

pub use link::{LinkType, SYNTHETIC_DESTINATION, SYNTHETIC_SOURCE};
pub use write::Writer;

/// The pcapng section header block type, as the first four bytes of the file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// One captured packet, as the datapath judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The Ethernet frame: as captured, or the captured packet with a synthesised Ethernet
    /// header in place of its link header.
    pub data: Vec<u8>,
    /// The link type the packet was captured with.
    pub link: LinkType,
    /// When it was captured (since the Unix epoch).
    pub timestamp: Duration,
}

/// Every packet of the capture at `path` as an Ethernet frame, in order.
pub fn frames(path: &Path) -> Result<Vec<Vec<u8>>> {
    Ok(read(path)?.into_iter().map(|f| f.data).collect())
}

/// Every packet of the capture at `path`, in order, with the link type it was captured with.
/// Fails on a link type otfw cannot read (naming it), when a packet on it arrives, and on a
/// packet too short for its link header.
pub fn read(path: &Path) -> Result<Vec<Frame>> {
    let file = File::open(path).with_context(|| format!("opening capture {}", path.display()))?;
    read_from(&path.display().to_string(), BufReader::new(file))
}

/// Every packet of the capture read from `input` (pcap or pcapng, told apart by the first
/// bytes), named `name` in errors. Anything that is not a well-formed capture is an error,
/// never a panic: captures come from anywhere.
pub fn read_from(name: &str, mut input: impl Read) -> Result<Vec<Frame>> {
    let mut magic = [0u8; 4];
    input
        .read_exact(&mut magic)
        .with_context(|| format!("capture {name}: not a pcap or pcapng file (too short)"))?;
    // The readers parse the file header themselves: hand them the magic back.
    let input = magic.as_slice().chain(input);
    if magic == PCAPNG_MAGIC {
        read_pcapng(name, input)
    } else {
        read_pcap(name, input)
    }
}

fn read_pcap(name: &str, input: impl Read) -> Result<Vec<Frame>> {
    let mut reader = PcapReader::new(input)
        .with_context(|| format!("capture {name}: not a pcap or pcapng file"))?;
    let link = LinkType::from_datalink(reader.header().datalink)
        .map_err(|e| anyhow!("capture {name}: {e}"))?;
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let number = frames.len() + 1;
        let packet = packet.with_context(|| format!("capture {name}: frame {number}"))?;
        let data = packet.data.into_owned();
        frames.push(frame(name, number, link, packet.timestamp, data)?);
    }
    Ok(frames)
}

fn read_pcapng(name: &str, input: impl Read) -> Result<Vec<Frame>> {
    let mut reader = PcapNgReader::new(input)
        .with_context(|| format!("capture {name}: not a valid pcapng file"))?;
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        let block =
            block.with_context(|| format!("capture {name}: block after frame {}", frames.len()))?;
        // pcap-file hands over the raw timestamp as nanoseconds whatever the interface's
        // resolution (`raw_units`): scaled below once the interface is known.
        let (interface, raw_units, data) = match block {
            Block::EnhancedPacket(p) => (p.interface_id, p.timestamp, p.data.into_owned()),
            Block::SimplePacket(p) => (0, Duration::ZERO, p.data.into_owned()),
            Block::Packet(p) => (
                p.interface_id as u32,
                Duration::from_nanos(p.timestamp),
                p.data.into_owned(),
            ),
            _ => continue,
        };
        let number = frames.len() + 1;
        // Checked per packet, not per interface declared: an interface of a link type otfw
        // cannot read is no obstacle while no packet on it is to be judged.
        let (datalink, timestamp) = reader
            .interfaces()
            .get(interface as usize)
            .map(|i| (i.linktype, timestamp(raw_units, &i.options)))
            .with_context(|| {
                format!("capture {name}: frame {number} on undeclared interface {interface}")
            })?;
        let link = LinkType::from_datalink(datalink)
            .map_err(|e| anyhow!("capture {name}: interface {interface} (frame {number}): {e}"))?;
        frames.push(frame(name, number, link, timestamp, data)?);
    }
    Ok(frames)
}

/// A pcapng timestamp of `raw` units (handed over as nanoseconds) on an interface with these
/// options: `if_tsresol` gives the unit, 10^-n s or, with the high bit set, 2^-n s; without it
/// the unit is a microsecond.
fn timestamp(raw: Duration, options: &[InterfaceDescriptionOption]) -> Duration {
    let resolution = options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    let raw = raw.as_nanos();
    let exponent = u32::from(resolution & 0x7f);
    let base: u128 = if resolution & 0x80 != 0 { 2 } else { 10 };
    let nanos = base
        .checked_pow(exponent)
        .map_or(0, |per_second| raw * 1_000_000_000 / per_second);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn frame(
    name: &str,
    number: usize,
    link: LinkType,
    timestamp: Duration,
    packet: Vec<u8>,
) -> Result<Frame> {
    let data = link
        .to_ethernet(packet)
        .map_err(|e| anyhow!("capture {name}: frame {number}: {e}"))?;
    Ok(Frame {
        data,
        link,
        timestamp,
    })
}
