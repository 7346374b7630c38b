//! Reading captures (pcap and pcapng, through pcap-file) into the Ethernet frames the datapath
//! judges, in file order. Packets captured with another link-layer header (Linux cooked, BSD
//! loopback, raw IP) are turned into Ethernet frames ([`LinkType::to_ethernet`]); the interfaces
//! of a pcapng file may differ in link type.

mod cooked;
mod link;
mod loopback;

use std::{fs::File, io::BufReader, path::Path, time::Duration};

use anyhow::{anyhow, Context as _, Result};
use pcap_file::{
    pcap::PcapReader,
    pcapng::{blocks::interface_description::InterfaceDescriptionOption, Block, PcapNgReader},
};

pub use link::{LinkType, SYNTHETIC_DESTINATION, SYNTHETIC_SOURCE};

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
    /// When the packet was captured, since the Unix epoch (zero where the capture records no
    /// time: pcapng simple packet blocks).
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
    let mut magic = [0u8; 4];
    {
        use std::io::Read as _;
        File::open(path)
            .with_context(|| format!("opening capture {}", path.display()))?
            .read_exact(&mut magic)
            .with_context(|| {
                format!(
                    "capture {}: not a pcap or pcapng file (too short)",
                    path.display()
                )
            })?;
    }
    let file = BufReader::new(File::open(path)?);
    if magic == PCAPNG_MAGIC {
        read_pcapng(path, file)
    } else {
        read_pcap(path, file)
    }
}

fn read_pcap(path: &Path, file: BufReader<File>) -> Result<Vec<Frame>> {
    let mut reader = PcapReader::new(file)
        .with_context(|| format!("capture {}: not a pcap or pcapng file", path.display()))?;
    let link = LinkType::from_datalink(reader.header().datalink)
        .map_err(|e| anyhow!("capture {}: {e}", path.display()))?;
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let number = frames.len() + 1;
        let packet =
            packet.with_context(|| format!("capture {}: frame {number}", path.display()))?;
        let timestamp = packet.timestamp;
        frames.push(frame(
            path,
            number,
            link,
            packet.data.into_owned(),
            timestamp,
        )?);
    }
    Ok(frames)
}

fn read_pcapng(path: &Path, file: BufReader<File>) -> Result<Vec<Frame>> {
    let mut reader = PcapNgReader::new(file)
        .with_context(|| format!("capture {}: not a valid pcapng file", path.display()))?;
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.with_context(|| {
            format!(
                "capture {}: block after frame {}",
                path.display(),
                frames.len()
            )
        })?;
        let (interface, data, ticks) = match block {
            Block::EnhancedPacket(p) => (p.interface_id, p.data.into_owned(), p.timestamp),
            Block::SimplePacket(p) => (0, p.data.into_owned(), Duration::ZERO),
            Block::Packet(p) => (
                p.interface_id as u32,
                p.data.into_owned(),
                Duration::from_nanos(p.timestamp),
            ),
            _ => continue,
        };
        let number = frames.len() + 1;
        // Checked per packet, not per interface declared: an interface of a link type otfw
        // cannot read is no obstacle while no packet on it is to be judged.
        let (datalink, timestamp) = reader
            .interfaces()
            .get(interface as usize)
            .map(|i| (i.linktype, pcapng_time(&i.options, ticks)))
            .with_context(|| {
                format!(
                    "capture {}: frame {number} on undeclared interface {interface}",
                    path.display()
                )
            })?;
        let link = LinkType::from_datalink(datalink).map_err(|e| {
            anyhow!(
                "capture {}: interface {interface} (frame {number}): {e}",
                path.display()
            )
        })?;
        frames.push(frame(path, number, link, data, timestamp)?);
    }
    Ok(frames)
}

/// pcap-file hands over a pcapng timestamp as raw ticks (read as nanoseconds); the interface's
/// `if_tsresol` says what a tick is: 10^-n seconds, or 2^-n with the high bit set, microseconds
/// when absent.
fn pcapng_time(options: &[InterfaceDescriptionOption], ticks: Duration) -> Duration {
    let ticks = ticks.as_nanos();
    let resolution = options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    let nanos = if resolution & 0x80 == 0 {
        let exp = u32::from(resolution);
        if exp <= 9 {
            ticks.saturating_mul(10u128.pow(9 - exp))
        } else {
            ticks / 10u128.saturating_pow(exp - 9)
        }
    } else {
        let exp = u32::from(resolution & 0x7f).min(127);
        ticks.saturating_mul(1_000_000_000) >> exp
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn frame(
    path: &Path,
    number: usize,
    link: LinkType,
    packet: Vec<u8>,
    timestamp: Duration,
) -> Result<Frame> {
    let data = link
        .to_ethernet(packet)
        .map_err(|e| anyhow!("capture {}: frame {number}: {e}", path.display()))?;
    Ok(Frame {
        data,
        link,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_ticks_follow_if_tsresol() {
        // pcap-file reads raw ticks as nanoseconds.
        let ticks = Duration::from_nanos(1_500_000);
        assert_eq!(
            pcapng_time(&[], ticks),
            Duration::from_millis(1500),
            "microseconds"
        );
        let nanos = [InterfaceDescriptionOption::IfTsResol(9)];
        assert_eq!(pcapng_time(&nanos, ticks), Duration::from_micros(1500));
        let binary = [InterfaceDescriptionOption::IfTsResol(0x80 | 10)];
        assert_eq!(
            pcapng_time(&binary, Duration::from_nanos(2048)),
            Duration::from_secs(2),
            "1/1024 s ticks"
        );
        let pico = [InterfaceDescriptionOption::IfTsResol(12)];
        assert_eq!(pcapng_time(&pico, ticks), Duration::from_nanos(1500));
    }
}
