//! The driver shared by the corpus tests (root, tshark): every capture of a protocol's
//! directory in ../shared/pcaps replayed through a fresh datapath under a read-only policy,
//! each frame compared with what tshark (the independent oracle) saw in it, and a per-capture
//! tally printed.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use otfw::{
    capture,
    datapath::{Datapath, Decision},
    policy::check_str,
};

/// A policy whose one conduit, `read-only`, joins every address to every other with `allow`
/// (YAML list items indented by six spaces); adopted mid-stream flows, ARP passes.
pub fn policy(allow: &str) -> String {
    policy_on_deny(allow, "drop")
}

/// `policy` with this `on_deny` (`drop`, `reset` or `refuse`).
pub fn policy_on_deny(allow: &str, on_deny: &str) -> String {
    format!(
        "version: 1
gateway:
  bridge: br-corpus
defaults:
  action: deny
  on_deny: {on_deny}
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
{allow}"
    )
}

/// Whether a frame is TCP to or from one of `tcp` or UDP to or from one of `udp`.
pub fn on_ports(frame: &[u8], tcp: &[u16], udp: &[u16]) -> bool {
    match etherparse::SlicedPacket::from_ethernet(frame) {
        Ok(p) => match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                tcp.contains(&t.source_port()) || tcp.contains(&t.destination_port())
            }
            Some(etherparse::TransportSlice::Udp(u)) => {
                udp.contains(&u.source_port()) || udp.contains(&u.destination_port())
            }
            _ => false,
        },
        Err(_) => false,
    }
}

/// What the oracle says about one frame carrying requests.
pub struct Seen {
    /// Every request in the frame is inside the `read` preset.
    pub reads_only: bool,
    /// Why the datapath's decision is wrong (without the capture and frame), if it is.
    pub failure: Option<String>,
}

#[derive(Default)]
struct Tally {
    frames: usize,
    passed: usize,
    dropped: BTreeMap<&'static str, usize>,
    /// Frames with only read requests (per tshark) and how many passed.
    read_frames: usize,
    read_passed: usize,
    /// Frames with a request outside the read preset.
    other_frames: usize,
    other_passed: usize,
}

/// Every capture under `../shared/pcaps/<protocol>`, sorted. Fails if the corpus is missing.
pub fn captures(protocol: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/pcaps")
        .join(protocol);
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
    captures
}

/// Replays every capture under `../shared/pcaps/<protocol>` (frames for which `in_scope` holds)
/// through a fresh datapath with `policy` installed and tracing on. `oracle` reads a capture
/// into its frames (by 1-based number); `check` judges the decision on a frame the oracle
/// knows, or returns `None` if the frame carries no request. Fails with every failure found.
pub fn replay<O>(
    protocol: &str,
    name_width: usize,
    policy: &str,
    in_scope: impl Fn(&[u8]) -> bool,
    oracle: impl Fn(&Path) -> HashMap<usize, O>,
    check: impl Fn(&O, &Decision) -> Option<Seen>,
) {
    let captures = captures(protocol);
    let (loaded, diagnostics) = check_str("corpus.yaml", policy);
    let compiled = loaded
        .unwrap_or_else(|| panic!("policy: {diagnostics:#?}"))
        .compiled;
    let mut failures = Vec::new();
    println!(
        "{:<name_width$} {:>6} {:>6} {:>11} {:>11}  dropped by reason",
        "capture", "frames", "passed", "reads pass", "other pass"
    );
    for path in &captures {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // A fresh datapath per capture: the captures reuse addresses and ports.
        let mut dp = Datapath::load().expect("loading the XDP object (needs root)");
        dp.install(&compiled).unwrap();
        dp.enable_trace().unwrap();
        let truth = oracle(path);
        let mut frames = capture::frames(path).unwrap();
        // Endpoint captures record unfinished checksums (offload), as `otfw replay` knows.
        for frame in &mut frames {
            otfw::offload::repair_tcp_checksum(frame);
        }
        let mut t = Tally::default();
        for (i, frame) in frames.iter().enumerate() {
            if !in_scope(frame) {
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
            let Some(seen) = truth.get(&number).and_then(|o| check(o, &d)) else {
                continue;
            };
            let (frames, passed) = if seen.reads_only {
                (&mut t.read_frames, &mut t.read_passed)
            } else {
                (&mut t.other_frames, &mut t.other_passed)
            };
            *frames += 1;
            if d.passed() {
                *passed += 1;
            }
            if let Some(failure) = seen.failure {
                failures.push(format!("{name} frame {number}: {failure}"));
            }
        }
        let dropped: Vec<String> = t.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "{:<name_width$} {:>6} {:>6} {:>5}/{:<5} {:>5}/{:<5}  {}",
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
