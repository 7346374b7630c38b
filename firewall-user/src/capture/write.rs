//! Writing frames to a pcap file: what `otfw replay --write` produces, the frames as the gateway
//! would forward them. Always Ethernet (the link type frames are judged in) with nanosecond
//! timestamps.

use std::{fs::File, io::BufWriter, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    DataLink, TsResolution,
};

pub struct Writer {
    pcap: PcapWriter<BufWriter<File>>,
}

impl Writer {
    /// Creates (or truncates) the pcap file at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            ..PcapHeader::default()
        };
        let pcap = PcapWriter::with_header(BufWriter::new(file), header)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { pcap })
    }

    pub fn write(&mut self, timestamp: Duration, frame: &[u8]) -> Result<()> {
        let packet = PcapPacket::new(timestamp, frame.len() as u32, frame);
        self.pcap.write_packet(&packet).context("writing a frame")?;
        Ok(())
    }

    /// Flushes the file: without it the last frames may be lost.
    pub fn finish(self) -> Result<()> {
        use std::io::Write as _;
        self.pcap
            .into_writer()
            .flush()
            .context("flushing the written capture")
    }
}
