//! Corpus (root, tshark): every capture in ../shared/pcaps/enip replayed through the datapath
//! under a read-only `enip` policy, with tshark (the ENIP decoder forced on TCP/UDP 44818 and
//! UDP 2222) as the independent oracle. No passed frame may carry a CIP request outside the
//! `read` preset, embedded requests (Multiple Service Packet, Unconnected Send) included.
//! Prints the per-capture tally.

#[path = "common/corpus.rs"]
mod corpus;

use std::{collections::HashMap, path::Path, process::Command};

use corpus::Seen;

/// Service codes of the `read` preset; 0x4E counts only on the Connection Manager
/// (Forward_Close; on a tag it is Read-Modify-Write), 0x52 is read either way (Unconnected
/// Send, Read Tag Fragmented).
const READ: [u8; 9] = [0x01, 0x03, 0x0E, 0x4C, 0x52, 0x55, 0x0A, 0x54, 0x5B];

fn policy() -> String {
    corpus::policy("      - enip: { services: [read] }\n")
}

/// The CIP requests tshark sees in one frame sent to 44818: service codes, and how many of
/// the 0x4E among them are Connection Manager services (Forward_Close).
#[derive(Default, Debug)]
struct Oracle {
    services: Vec<u8>,
    cm_4e: usize,
}

impl Oracle {
    fn outside_read(&self) -> Vec<u8> {
        let mut forward_closes = self.cm_4e;
        self.services
            .iter()
            .copied()
            .filter(|&s| {
                if s == 0x4E && forward_closes > 0 {
                    forward_closes -= 1;
                    return false;
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

fn oracle(path: &Path) -> HashMap<usize, Oracle> {
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
    }
    frames
}

#[test]
fn read_only_corpus() {
    corpus::replay(
        "enip",
        44,
        &policy(),
        |frame| corpus::on_ports(frame, &[44818], &[44818, 2222]),
        oracle,
        |o: &Oracle, d| {
            if o.services.is_empty() {
                return None;
            }
            let outside = o.outside_read();
            let failure = (!outside.is_empty() && d.passed()).then(|| {
                format!(
                    "passed with CIP requests {outside:02x?} outside `read` (all: {:02x?}; \
                     inspector saw {:?})",
                    o.services, d.cip
                )
            });
            Some(Seen {
                reads_only: outside.is_empty(),
                failure,
            })
        },
    );
}
