//! tshark as the independent EtherNet/IP oracle of the corpus tests: the CIP requests it
//! decodes in each frame sent to 44818 (the ENIP decoder forced on TCP/UDP 44818 and UDP 2222),
//! and the `read` preset they are judged against.

use std::{collections::HashMap, path::Path, process::Command};

/// Service codes of the `read` preset; 0x4E counts only on the Connection Manager
/// (Forward_Close; on a tag it is Read-Modify-Write), 0x4C only on a tag (Read Tag; on another
/// class it is that class's own service), 0x52 is read either way (Unconnected Send, Read Tag
/// Fragmented).
const READ: [u8; 9] = [0x01, 0x03, 0x0E, 0x4C, 0x52, 0x55, 0x0A, 0x54, 0x5B];

/// The `allow` rule of the corpus policies: EtherNet/IP `read`.
pub const READ_RULES: &str = "      - enip: { services: [read] }\n";

/// The CIP requests tshark sees in one frame sent to 44818: service codes, and how many of
/// the 0x4E among them are Connection Manager services (Forward_Close).
#[derive(Default, Debug)]
pub struct Oracle {
    pub services: Vec<u8>,
    cm_4e: usize,
    /// The frame names a tag (a symbolic segment or the Symbol class): its 0x4C requests are
    /// taken for Read Tag.
    tags: bool,
}

impl Oracle {
    /// The service codes outside the `read` preset.
    pub fn outside_read(&self) -> Vec<u8> {
        let mut forward_closes = self.cm_4e;
        self.services
            .iter()
            .copied()
            .filter(|&s| {
                if s == 0x4E && forward_closes > 0 {
                    forward_closes -= 1;
                    return false;
                }
                if s == 0x4C {
                    return !self.tags;
                }
                !READ.contains(&s)
            })
            .collect()
    }
}

fn list(col: Option<&&str>) -> Vec<u8> {
    col.unwrap_or(&"")
        .split(',')
        .filter_map(|v| u8::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .collect()
}

/// The CIP requests tshark decodes in the capture at `path`, by 1-based frame number.
pub fn oracle(path: &Path) -> HashMap<usize, Oracle> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-d", "tcp.port==44818,enip", "-d", "udp.port==44818,enip"])
        .args(["-d", "udp.port==2222,cipio"])
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"])
        .args([
            "-e",
            "frame.number",
            "-e",
            "tcp.dstport",
            "-e",
            "udp.dstport",
        ])
        .args([
            "-e",
            "cip.rr",
            "-e",
            "cip.sc",
            "-e",
            "cip.cm.sc",
            "-e",
            "cip.class",
            "-e",
            "cip.symbol",
            "-Y",
            "cip",
        ])
        .output()
        .expect("running tshark (apt-get install tshark): it is this test's oracle");
    assert!(out.status.success(), "tshark failed on {}", path.display());
    let mut frames = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let number: usize = cols[0].parse().unwrap();
        let dport = |i: usize| cols.get(i).and_then(|p| p.parse::<u16>().ok());
        if dport(1) != Some(44818) && dport(2) != Some(44818) {
            continue;
        }
        let rr = list(cols.get(3));
        let sc = list(cols.get(4));
        let cm = list(cols.get(5));
        let entry: &mut Oracle = frames.entry(number).or_default();
        for (i, s) in sc.iter().enumerate() {
            if rr.get(i).copied().unwrap_or(0) & 0x80 == 0 && s & 0x80 == 0 {
                entry.services.push(s & 0x7f);
            }
        }
        entry.cm_4e = cm.iter().filter(|&&s| s == 0x4E).count();
        entry.tags = list(cols.get(6)).contains(&0x6B)
            || cols.get(7).is_some_and(|symbols| !symbols.is_empty());
    }
    frames
}
