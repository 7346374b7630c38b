//! Corpus (root, tshark): every capture in ../shared/pcaps/modbus replayed through the datapath
//! under a read-only policy, with tshark (the Modbus decoder forced on the capture's ports) as
//! the independent oracle. No passed frame may carry a request outside the `read` preset;
//! frames carrying only reads pass unless a framing or sanity reason drops them. Prints the
//! per-capture tally.

#[path = "common/corpus.rs"]
mod corpus;

use std::{collections::HashMap, path::Path, process::Command};

use corpus::Seen;

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
    corpus::policy(&rules)
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

#[test]
fn read_only_corpus() {
    corpus::replay(
        "modbus",
        46,
        &policy(),
        |frame| corpus::on_ports(frame, &PORTS, &[]),
        oracle,
        |o: &Oracle, d| {
            if o.requests.is_empty() {
                return None;
            }
            let reads_only = o.requests.iter().all(is_read);
            let failure = if reads_only {
                (!d.passed() && !FRAMING_OR_SANITY.contains(&d.reason.name())).then(|| {
                    format!(
                        "reads only per tshark ({:?}) dropped as {}",
                        o.requests,
                        d.reason.name()
                    )
                })
            } else {
                d.passed()
                    .then(|| format!("passed with requests {:?} outside `read`", o.requests))
            };
            Some(Seen {
                reads_only,
                failure,
            })
        },
    );
}
