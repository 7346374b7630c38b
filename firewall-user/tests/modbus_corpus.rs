//! Corpus (root, tshark): every capture in ../shared/pcaps/modbus replayed through the datapath
//! under a read-only policy, with tshark (the Modbus decoder forced on the capture's ports) as
//! the independent oracle. No passed frame may carry a request outside the `read` preset;
//! frames carrying only reads pass unless a framing or sanity reason drops them. Prints the
//! per-capture tally.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use otfw::{capture, datapath::Datapath, policy::check_str};

const PORTS: [u16; 3] = [502, 5020, 5021];
const READ: [u8; 7] = [1, 2, 3, 4, 20, 24, 43];

/// Reasons that may drop a frame carrying only reads: the framing could not be established
/// or the bytes are not sane Modbus (as the inspector frames them), or the direction was
/// blocked by an earlier denial on the same connection.
const FRAMING_OR_SANITY: [&str; 12] = [
    "modbus_unframed",
    "modbus_out_of_order",
    "modbus_retransmission",
    "modbus_trailing_bytes",
    "modbus_bad_length",
    "modbus_bad_protocol_id",
    "modbus_bad_quantity",
    "modbus_bad_value",
    "modbus_too_many_adus",
    "modbus_blocked",
    "tcp_bad_flags",
    "not_tracked",
];

fn policy() -> String {
    let rules: String = PORTS
        .iter()
        .map(|p| format!("      - modbus: {{ port: {p}, functions: [read] }}\n"))
        .collect();
    format!(
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
{rules}"
    )
}

/// What tshark sees in one frame: the request function codes (with MEI type for 43).
#[derive(Default, Debug)]
struct Oracle {
    /// Requests (to a Modbus port): (function, MEI type).
    requests: Vec<(u8, Option<u8>)>,
}

fn oracle(path: &Path) -> HashMap<usize, Oracle> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path);
    for p in PORTS {
        cmd.args(["-d", &format!("tcp.port=={p},mbtcp")]);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        "-e",
        "frame.number",
        "-e",
        "tcp.dstport",
        "-e",
        "modbus.func_code",
        "-e",
        "modbus.mei",
        "-Y",
        "mbtcp",
    ]);
    let out = cmd
        .output()
        .expect("running tshark (apt-get install tshark): it is this test's oracle");
    assert!(out.status.success(), "tshark failed on {}", path.display());
    let mut frames = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let number: usize = cols[0].parse().unwrap();
        let dport: u16 = cols.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if !PORTS.contains(&dport) {
            continue;
        }
        let functions: Vec<u8> = cols
            .get(2)
            .unwrap_or(&"")
            .split(',')
            .filter_map(|f| f.parse().ok())
            .collect();
        let mut meis = cols
            .get(3)
            .unwrap_or(&"")
            .split(',')
            .filter_map(|m| m.parse::<u8>().ok());
        let entry: &mut Oracle = frames.entry(number).or_default();
        for f in functions {
            let mei = if f == 43 { meis.next() } else { None };
            entry.requests.push((f, mei));
        }
    }
    frames
}

fn is_read(request: &(u8, Option<u8>)) -> bool {
    match request {
        (43, mei) => *mei == Some(14),
        (f, _) => READ.contains(f),
    }
}

fn on_modbus_port(frame: &[u8]) -> bool {
    match etherparse::SlicedPacket::from_ethernet(frame) {
        Ok(p) => match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                PORTS.contains(&t.source_port()) || PORTS.contains(&t.destination_port())
            }
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
    /// Frames with only read requests (per tshark) and what happened to them.
    read_frames: usize,
    read_passed: usize,
    /// Frames with a request outside the read preset.
    other_frames: usize,
    other_passed: usize,
}

#[test]
fn read_only_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps/modbus");
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
        "{:<46} {:>6} {:>6} {:>11} {:>11}  dropped by reason",
        "capture", "frames", "passed", "reads pass", "other pass"
    );
    for path in &captures {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // A fresh datapath per capture: the captures reuse addresses and ports.
        let mut dp = Datapath::load().expect("loading the XDP object (needs root)");
        dp.install(&compiled).unwrap();
        dp.enable_trace().unwrap();
        let truth = oracle(path);
        let frames = capture::frames(path).unwrap();
        let mut t = Tally::default();
        for (i, frame) in frames.iter().enumerate() {
            if !on_modbus_port(frame) {
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
            let Some(o) = truth.get(&number).filter(|o| !o.requests.is_empty()) else {
                continue;
            };
            if o.requests.iter().all(is_read) {
                t.read_frames += 1;
                if d.passed() {
                    t.read_passed += 1;
                } else if !FRAMING_OR_SANITY.contains(&d.reason.name()) {
                    failures.push(format!(
                        "{name} frame {number}: reads only per tshark ({:?}) dropped as {}",
                        o.requests,
                        d.reason.name()
                    ));
                }
            } else {
                t.other_frames += 1;
                if d.passed() {
                    t.other_passed += 1;
                    failures.push(format!(
                        "{name} frame {number}: passed with requests {:?} outside `read`",
                        o.requests
                    ));
                }
            }
        }
        let dropped: Vec<String> = t.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "{:<46} {:>6} {:>6} {:>5}/{:<5} {:>5}/{:<5}  {}",
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
