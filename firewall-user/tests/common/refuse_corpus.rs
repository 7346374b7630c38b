//! The driver of the corpus tests under `on_deny: refuse` (root, tshark): every capture of a
//! protocol's directory in ../shared/pcaps replayed by `otfw replay` under the read-only policy
//! refusing in-band, the forwarded frames written out (`--write`). tshark, the independent
//! oracle, decodes the captures and the written frames:
//!
//! - the written frames carry no request outside the `read` preset except the neutralised
//!   ones (the code a refused request is given), one for each request the replay reports
//!   refused;
//! - no denial the protocol always answers in-band is dropped, and a `*_blocked` drop only
//!   follows, on its connection, a denial `refuse` cannot answer (it falls back to drop) or a
//!   refusal that failed closed; the tally names those causes;
//! - every captured answer to a refused request that the replay replaced by the live server's
//!   error is restored by the datapath, and a `*_refused_answer` remains only where the
//!   capture's TCP stream is inconsistent (tshark flags the segment) or on a connection a cause
//!   above ended;
//! - connections whose answers were replaced stay consistent TCP streams in the written frames
//!   (tshark flags no more segments of them than in the capture);
//! - at least 99% of the frames carrying only reads pass, in all and on connections no such
//!   cause ended.
//!
//! Prints the per-capture tally.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use otfw::{
    offload::Checksums,
    policy::{check_str, compiled::CompiledPolicy},
    replay::replay,
};
use serde_json::Value;

/// What the driver needs to know of a protocol.
pub struct Protocol {
    /// Its directory in ../shared/pcaps.
    pub dir: &'static str,
    /// The `allow` rules of the read-only conduit.
    pub rules: String,
    /// Prefixes of the reasons its inspector decides with (its drops end a connection).
    pub reasons: &'static [&'static str],
    /// Its reasons for a blocked connection and an answer that cannot be restored.
    pub blocked: &'static str,
    pub refused_answer: &'static str,
    /// Whether a frame record was denied for a request `on_deny: refuse` answers in-band:
    /// never a drop.
    pub refusable: fn(&Value) -> bool,
    /// The key of a frame record's requests (`adus`, `cip`), and whether one is a refused
    /// request.
    pub records: &'static str,
    pub refused: fn(&Value) -> bool,
    /// tshark's decoding of a capture: what each frame carrying requests holds.
    pub requests: fn(&Path) -> HashMap<usize, Requests>,
}

/// The requests tshark decodes in one frame.
pub struct Requests {
    /// All of them are in the `read` preset.
    pub reads_only: bool,
    /// How many carry the neutral code of a refused request.
    pub neutralised: usize,
    /// The others outside the `read` preset, described.
    pub outside: Vec<String>,
}

#[derive(Default)]
struct Tally {
    frames: usize,
    passed: usize,
    refused: usize,
    dropped: usize,
    substituted: usize,
    read_frames: usize,
    read_passed: usize,
    /// Frames carrying only reads on connections a cause below ended, and how many passed.
    ended_read_frames: usize,
    ended_read_passed: usize,
    blocked: usize,
    /// What ended connections: the first drop or reset on each, by reason.
    causes: BTreeMap<String, usize>,
}

/// Replays every capture of `p` and checks it (see the module comment); fails with every
/// failure found.
pub fn run(p: &Protocol) {
    let (loaded, diagnostics) = check_str(
        "corpus.yaml",
        &super::corpus::policy_on_deny(&p.rules, "refuse"),
    );
    let compiled = loaded
        .unwrap_or_else(|| panic!("policy: {diagnostics:#?}"))
        .compiled;
    let mut failures = Vec::new();
    let mut total = Tally::default();
    println!(
        "{:<46} {:>6} {:>6} {:>6} {:>6} {:>6} {:>11} {:>7}  ended by",
        "capture", "frames", "passed", "refuse", "drop", "subst", "reads pass", "blocked"
    );
    for path in super::corpus::captures(p.dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (records, written) = replay_written(&compiled, &path);
        let captured = (p.requests)(&path);
        let captured_inconsistent = inconsistent_segments(&path);
        let inconsistent: HashSet<usize> = captured_inconsistent.iter().map(|(n, _)| *n).collect();
        let mut renumbered: HashSet<(String, String)> = HashSet::new();
        let mut t = Tally::default();
        let mut ended: HashSet<(String, String)> = HashSet::new();
        let mut refused_requests = 0;
        for r in &records {
            let number = r["frame"].as_u64().unwrap() as usize;
            let (verdict, reason) = (
                r["verdict"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            );
            let action = r["action"].as_str().unwrap();
            let conn = connection(r);
            let substituted = r.get("answer").and_then(Value::as_str) == Some("substituted");
            let was_ended = conn.as_ref().is_some_and(|c| ended.contains(c));
            t.frames += 1;
            t.substituted += substituted as usize;
            if substituted {
                renumbered.extend(conn.clone());
            }
            match verdict {
                "pass" => t.passed += 1,
                "refuse" => t.refused += 1,
                _ => t.dropped += 1,
            }
            refused_requests += r[p.records]
                .as_array()
                .map_or(0, |q| q.iter().filter(|q| (p.refused)(q)).count());
            let at = format!("{name} frame {number}");
            if reason == p.blocked {
                t.blocked += 1;
                if !was_ended {
                    failures.push(format!(
                        "{at}: {reason} on a connection no fallback drop or failed refusal \
                         ended"
                    ));
                }
            } else if verdict == "drop" || action == "reset" {
                if (p.refusable)(r) {
                    failures.push(format!("{at}: {reason} dropped instead of refused"));
                }
                if reason == p.refused_answer
                    && (substituted || !(inconsistent.contains(&number) || was_ended))
                {
                    failures.push(format!(
                        "{at}: {reason} on a consistent segment{}",
                        if substituted {
                            " carrying a substituted answer"
                        } else {
                            ""
                        }
                    ));
                }
                // Only the protocol's inspector blocks a connection.
                if let Some(c) = conn.filter(|_| p.reasons.iter().any(|r| reason.starts_with(r))) {
                    if ended.insert(c) {
                        *t.causes.entry(reason.to_owned()).or_default() += 1;
                    }
                }
            }
            // A connection a fallback drop or failed refusal ended blocks everything after it,
            // substituted answers too.
            if substituted && verdict == "drop" && !(reason == p.blocked && was_ended) {
                failures.push(format!(
                    "{at}: the substituted answer was dropped as {reason}"
                ));
            }
            let Some(requests) = captured.get(&number) else {
                continue;
            };
            if requests.reads_only {
                let passed = verdict != "drop";
                t.read_frames += 1;
                t.read_passed += passed as usize;
                if was_ended {
                    t.ended_read_frames += 1;
                    t.ended_read_passed += passed as usize;
                }
            }
        }

        // What the server gets: reads, and refused requests neutralised.
        let mut neutralised = 0;
        for (number, requests) in (p.requests)(&written.0) {
            neutralised += requests.neutralised;
            for q in requests.outside {
                failures.push(format!(
                    "{name}: written frame {number} carries request {q} outside `read`"
                ));
            }
        }
        if neutralised != refused_requests {
            failures.push(format!(
                "{name}: tshark decodes {neutralised} neutralised requests in the written \
                 frames, the replay refused {refused_requests}"
            ));
        }

        // Renumbering keeps each connection a consistent TCP stream: tshark finds no more
        // problems in it than in the capture (connections a drop left gaps in aside).
        let problems = |segments: &[(usize, (String, String))], c: &(String, String)| {
            segments.iter().filter(|(_, s)| s == c).count()
        };
        let written_inconsistent = inconsistent_segments(&written.0);
        for c in renumbered.difference(&ended) {
            let (before, after) = (
                problems(&captured_inconsistent, c),
                problems(&written_inconsistent, c),
            );
            if after > before {
                failures.push(format!(
                    "{name}: connection {} - {}: tshark finds {after} inconsistent segments in \
                     the written frames, {before} in the capture",
                    c.0, c.1
                ));
            }
        }

        let causes: Vec<String> = t.causes.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "{:<46} {:>6} {:>6} {:>6} {:>6} {:>6} {:>5}/{:<5} {:>7}  {}",
            name,
            t.frames,
            t.passed,
            t.refused,
            t.dropped,
            t.substituted,
            t.read_passed,
            t.read_frames,
            t.blocked,
            causes.join(", ")
        );
        total.read_frames += t.read_frames;
        total.read_passed += t.read_passed;
        total.ended_read_frames += t.ended_read_frames;
        total.ended_read_passed += t.ended_read_passed;
    }
    let (open_frames, open_passed) = (
        total.read_frames - total.ended_read_frames,
        total.read_passed - total.ended_read_passed,
    );
    println!(
        "reads passed: {}/{} in all, {open_passed}/{open_frames} on connections no fallback \
         drop or failed refusal ended",
        total.read_passed, total.read_frames
    );
    assert!(open_frames > 0, "no read requests found in the corpus");
    for (passed, frames, on) in [
        (total.read_passed, total.read_frames, "in all"),
        (
            open_passed,
            open_frames,
            "on connections no such cause ended",
        ),
    ] {
        if passed * 100 < frames * 99 {
            failures.push(format!(
                "only {passed} of {frames} frames carrying only reads passed {on} (99% needed)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `otfw replay --write` of the capture at `path` under `policy`: its frame records (the
/// summary left out) and the written frames, in a scratch file.
fn replay_written(policy: &CompiledPolicy, path: &Path) -> (Vec<Value>, Scratch) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let written = Scratch(std::env::temp_dir().join(format!(
        "otfw-refuse-corpus-{}-{name}.pcap",
        std::process::id()
    )));
    let mut out = Vec::new();
    replay(
        policy,
        std::slice::from_ref(&path.to_path_buf()),
        Checksums::Repair,
        Some(&written.0),
        &mut out,
    )
    .unwrap_or_else(|e| panic!("replaying {name}: {e:#}"));
    let records = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .filter(|r: &Value| r.get("frame").is_some())
        .collect();
    (records, written)
}

/// A scratch file removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The segments of the capture tshark finds inconsistent with their TCP stream (retransmitted,
/// out of order, after or acknowledging a segment never captured): frame number and
/// connection.
fn inconsistent_segments(path: &Path) -> Vec<(usize, (String, String))> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args([
            "-Y",
            "tcp.analysis.retransmission || tcp.analysis.out_of_order \
             || tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
        ])
        .output()
        .expect("running tshark (apt-get install tshark): it is this test's oracle");
    assert!(out.status.success(), "tshark failed on {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let (a, b) = (
                format!("{}:{}", c.get(1)?, c.get(2)?),
                format!("{}:{}", c.get(3)?, c.get(4)?),
            );
            Some((
                c[0].trim().parse().ok()?,
                if a < b { (a, b) } else { (b, a) },
            ))
        })
        .collect()
}

/// The connection of a replayed frame ("tcp A:p > B:q ..."), the same both ways.
fn connection(record: &Value) -> Option<(String, String)> {
    let packet = record["packet"].as_str()?;
    let mut words = packet.split(' ');
    (words.next()? == "tcp").then_some(())?;
    let (a, _, b) = (words.next()?, words.next()?, words.next()?);
    Some(if a < b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    })
}
