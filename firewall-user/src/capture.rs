//! Reading Ethernet frames from pcap and pcapng files (through pcap-file), in file order.

use std::{fs::File, io::BufReader, path::Path};

use anyhow::{bail, Context as _, Result};
use pcap_file::{
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
    DataLink,
};

/// The pcapng section header block type, as the first four bytes of the file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Every frame of the capture at `path`, in order. Only Ethernet captures are accepted: the
/// datapath starts parsing at the Ethernet header.
pub fn frames(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read as _;
        File::open(path)
            .with_context(|| format!("opening capture {}", path.display()))?
            .read_exact(&mut magic)
            .with_context(|| {
                format!("{}: not a pcap or pcapng file (too short)", path.display())
            })?;
    }
    let file = BufReader::new(File::open(path)?);
    if magic == PCAPNG_MAGIC {
        read_pcapng(path, file)
    } else {
        read_pcap(path, file)
    }
}

fn read_pcap(path: &Path, file: BufReader<File>) -> Result<Vec<Vec<u8>>> {
    let mut reader = PcapReader::new(file)
        .with_context(|| format!("{}: not a pcap or pcapng file", path.display()))?;
    let link = reader.header().datalink;
    if link != DataLink::ETHERNET {
        bail!(
            "{}: link type {link:?} is not supported; otfw replays Ethernet captures",
            path.display()
        );
    }
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet =
            packet.with_context(|| format!("{}: frame {}", path.display(), frames.len() + 1))?;
        frames.push(packet.data.into_owned());
    }
    Ok(frames)
}

fn read_pcapng(path: &Path, file: BufReader<File>) -> Result<Vec<Vec<u8>>> {
    let mut reader = PcapNgReader::new(file)
        .with_context(|| format!("{}: not a valid pcapng file", path.display()))?;
    let mut frames = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block
            .with_context(|| format!("{}: block after frame {}", path.display(), frames.len()))?;
        let (interface, data) = match block {
            Block::EnhancedPacket(p) => (p.interface_id, p.data.into_owned()),
            Block::SimplePacket(p) => (0, p.data.into_owned()),
            Block::Packet(p) => (p.interface_id as u32, p.data.into_owned()),
            _ => continue,
        };
        let link = reader
            .interfaces()
            .get(interface as usize)
            .map(|i| i.linktype)
            .with_context(|| {
                format!(
                    "{}: frame on undeclared interface {interface}",
                    path.display()
                )
            })?;
        if link != DataLink::ETHERNET {
            bail!(
                "{}: link type {link:?} is not supported; otfw replays Ethernet captures",
                path.display()
            );
        }
        frames.push(data);
    }
    Ok(frames)
}
