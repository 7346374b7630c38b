//! Corpus (root, tshark): every capture in ../shared/pcaps/enip replayed through the datapath
//! under a read-only `enip` policy, with tshark (the ENIP decoder forced on TCP/UDP 44818 and
//! UDP 2222) as the independent oracle. No passed frame may carry a CIP request outside the
//! `read` preset, embedded requests (Multiple Service Packet, Unconnected Send) included.
//! Prints the per-capture tally.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use otfw::{capture, datapath::Datapath, policy::check_str};

/// Service codes of the `read` preset; 0x4E counts only on the Connection Manager
/// (Forward_Close; on a tag it is Read-Modify-Write), 0x52 is read either way (Unconnected
/// Send, Read Tag Fragmented).
const READ: [u8; 9] = [0x01, 0x03, 0x0E, 0x4C, 0x52, 0x55, 0x0A, 0x54, 0x5B];

fn policy() -> String {
    "version: 1
gateway:
  bridge: br-corpus
defaults:
  action: deny
  intra_zone: deny
  midstream: adopt
  non_ip: [arp]
zones:
  everywhere:
    networks: [0.0.0.0/0, \"::/0\"]
conduits:
  - name: read-only
    from: everywhere
    to: everywhere
    allow:
      - enip: { services: [read] }
"
    .into()
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

fn on_enip_port(frame: &[u8]) -> bool {
    match etherparse::SlicedPacket::from_ethernet(frame) {
        Ok(p) => match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                t.source_port() == 44818 || t.destination_port() == 44818
            }
            Some(etherparse::TransportSlice::Udp(u)) => [44818, 2222]
                .iter()
                .any(|p| *p == u.source_port() || *p == u.destination_port()),
            _ => false,
        },
        Err(_) => false,
    }
}

#[derive(Default)]
struct Tally {
    frames: usize,
    passed: usize,
    dropped: BTreeMap<&'static str, usize>,
    read_frames: usize,
    read_passed: usize,
    other_frames: usize,
    other_passed: usize,
}

#[test]
fn read_only_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps/enip");
    assert!(
        dir.is_dir(),
        "{} is missing: the corpus lives in ../shared/pcaps next to the repository",
        dir.display()
    );
    let mut captures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    captures.sort();
    let (loaded, diagnostics) = check_str("corpus.yaml", &policy());
    let compiled = loaded
        .unwrap_or_else(|| panic!("policy: {diagnostics:#?}"))
        .compiled;
    let mut failures = Vec::new();
    println!(
        "{:<44} {:>6} {:>6} {:>11} {:>11}  dropped by reason",
        "capture", "frames", "passed", "reads pass", "other pass"
    );
    for path in &captures {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut dp = Datapath::load().expect("loading the XDP object (needs root)");
        dp.install(&compiled).unwrap();
        dp.enable_trace().unwrap();
        let truth = oracle(path);
        let frames = capture::frames(path).unwrap();
        let mut t = Tally::default();
        for (i, frame) in frames.iter().enumerate() {
            if !on_enip_port(frame) {
                continue;
            }
            let number = i + 1;
            let d = dp.run_frame(frame).unwrap();
            t.frames += 1;
            if d.passed() {
                t.passed += 1;
            } else {
                *t.dropped.entry(d.reason.name()).or_default() += 1;
            }
            let Some(o) = truth.get(&number).filter(|o| !o.services.is_empty()) else {
                continue;
            };
            let outside = o.outside_read();
            if outside.is_empty() {
                t.read_frames += 1;
                if d.passed() {
                    t.read_passed += 1;
                }
            } else {
                t.other_frames += 1;
                if d.passed() {
                    t.other_passed += 1;
                    failures.push(format!(
                        "{name} frame {number}: passed with CIP requests {outside:02x?} outside \
                         `read` (all: {:02x?}; inspector saw {:?})",
                        o.services, d.cip
                    ));
                }
            }
        }
        let dropped: Vec<String> = t.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "{:<44} {:>6} {:>6} {:>5}/{:<5} {:>5}/{:<5}  {}",
            name,
            t.frames,
            t.passed,
            t.read_passed,
            t.read_frames,
            t.other_passed,
            t.other_frames,
            dropped.join(", ")
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
