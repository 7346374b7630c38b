//! tshark as the independent Modbus oracle of the corpus tests: the request function codes it
//! decodes in each frame of a capture (the Modbus decoder forced on the ports the captures
//! use), and the `read` preset they are judged against.

use std::{collections::HashMap, path::Path, process::Command};

pub const PORTS: [u16; 3] = [502, 5020, 5021];
const READ: [u8; 7] = [1, 2, 3, 4, 20, 24, 43];

/// A request as tshark decodes it: function code, and MEI type for function 43.
pub type Request = (u8, Option<u8>);

/// The `allow` rules of the corpus policies: Modbus `read` on each of `PORTS`.
pub fn read_rules() -> String {
    PORTS
        .iter()
        .map(|p| format!("      - modbus: {{ port: {p}, functions: [read] }}\n"))
        .collect()
}

/// The requests (segments to a Modbus port) tshark decodes in the capture at `path`, by
/// 1-based frame number.
pub fn requests(path: &Path) -> HashMap<usize, Vec<Request>> {
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
    let mut frames: HashMap<usize, Vec<Request>> = HashMap::new();
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
        let entry = frames.entry(number).or_default();
        for f in functions {
            let mei = if f == 43 { meis.next() } else { None };
            entry.push((f, mei));
        }
    }
    frames
}

/// Whether the request is in the `read` preset (function 43 only as Read Device
/// Identification, MEI type 14).
pub fn is_read(request: &Request) -> bool {
    match request {
        (43, mei) => *mei == Some(14),
        (f, _) => READ.contains(f),
    }
}
