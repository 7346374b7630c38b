//! `otfw learn` -> `otfw check` -> `otfw replay` on every shared capture (root: the replays run
//! the XDP program): the policy learned from a capture passes `otfw check` and lets the
//! capture through; the only frames it drops are frames a policy allowing everything drops
//! too (malformed IP or TCP, which no policy can allow). And what was not seen is denied: a
//! Modbus write injected into a capture of reads, a CIP Write Tag to a tag never addressed,
//! and genuine Write Tag requests against a policy learned without them.

#[path = "common/pcaps.rs"]
mod pcaps;

use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
    process::Command,
};

use etherparse::{SlicedPacket, TransportSlice};
use otfw::{capture, offload::Checksums, policy::check_str, replay::replay};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    DataLink,
};
use serde_json::Value;

fn pcaps() -> PathBuf {
    pcaps::dir()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("otfw-learn-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `otfw learn --capture CAPTURE -o DIR/learned.yaml`, then `otfw check` on the result; the
/// policy text.
fn learn(capture: &Path, dir: &Path) -> String {
    learn_with_zones(capture, None, dir)
}

/// `otfw learn` with `--zones ZONES` if given.
fn learn_with_zones(capture: &Path, zones: Option<&Path>, dir: &Path) -> String {
    let out_file = dir.join("learned.yaml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otfw"));
    cmd.arg("learn");
    if let Some(z) = zones {
        cmd.arg("--zones").arg(z);
    }
    let out = cmd
        .arg("--capture")
        .arg(capture)
        .arg("-o")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "otfw learn {}: {}",
        capture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let check = Command::new(env!("CARGO_BIN_EXE_otfw"))
        .arg("check")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "otfw check of the policy learned from {}: {}",
        capture.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    std::fs::read_to_string(out_file).unwrap()
}

/// The per-frame records and the summary of replaying `capture` under `policy`.
fn replayed(policy: &str, capture: &Path) -> (Vec<Value>, Value) {
    let (loaded, diagnostics) = check_str("learned.yaml", policy);
    let compiled = loaded
        .unwrap_or_else(|| panic!("policy: {diagnostics:#?}"))
        .compiled;
    let mut out = Vec::new();
    replay(
        &compiled,
        &[capture.to_owned()],
        Checksums::Repair,
        None,
        &mut out,
    )
    .unwrap_or_else(|e| panic!("replaying {} (needs root): {e:#}", capture.display()));
    let mut records: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = records.pop().unwrap()["summary"].clone();
    (records, summary)
}

fn dropped(records: &[Value]) -> BTreeSet<u64> {
    records
        .iter()
        .filter(|r| r["verdict"] == "drop")
        .map(|r| r["frame"].as_u64().unwrap())
        .collect()
}

/// A policy that allows everything, passing the same non-IP frames as `learned`.
fn allow_all(learned: &str) -> String {
    let non_ip = learned
        .lines()
        .find(|l| l.trim_start().starts_with("non_ip:"))
        .expect("the learned policy lists non_ip")
        .trim();
    format!(
        "version: 1\ngateway: {{ bridge: br-ot }}\ndefaults:\n  action: allow\n  intra_zone: allow\n  \
         unzoned: allow\n  {non_ip}\nzones: {{}}\nconduits: []\n"
    )
}

#[test]
fn every_capture_passes_the_policy_learned_from_it() {
    let mut captures = Vec::new();
    for protocol in ["modbus", "enip"] {
        for e in std::fs::read_dir(pcaps().join(protocol)).unwrap() {
            captures.push(e.unwrap().path());
        }
    }
    captures.sort();
    assert!(captures.len() >= 20, "the corpus is incomplete");
    let dir = scratch("all");
    let mut failures = Vec::new();
    for capture in &captures {
        let name = capture.file_name().unwrap().to_string_lossy().into_owned();
        let policy = learn(capture, &dir);
        let (records, summary) = replayed(&policy, capture);
        let learned_drops = dropped(&records);
        let (everything, _) = replayed(&allow_all(&policy), capture);
        let unavoidable = dropped(&everything);
        let reasons: BTreeSet<&str> = records
            .iter()
            .filter(|r| r["verdict"] == "drop")
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        println!(
            "{name:<48} {:>6} frames {:>3} dropped {reasons:?} ({} dropped under allow-all)",
            summary["frames"],
            learned_drops.len(),
            unavoidable.len()
        );
        if !learned_drops.is_subset(&unavoidable) {
            let extra: Vec<String> = records
                .iter()
                .filter(|r| {
                    let f = r["frame"].as_u64().unwrap();
                    learned_drops.contains(&f) && !unavoidable.contains(&f)
                })
                .take(5)
                .map(|r| format!("frame {} {} ({})", r["frame"], r["reason"], r["packet"]))
                .collect();
            failures.push(format!("{name}: {}", extra.join("; ")));
        }
        if summary["by_action"].get("monitor").is_some() {
            failures.push(format!(
                "{name}: the learned policy monitors instead of enforcing"
            ));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Writes the frames of `capture` into a pcap at `path`, each passed through `edit` first
/// (frame number from 1, Ethernet bytes); returns the numbers of the frames `edit` changed.
fn rewrite(
    capture: &Path,
    path: &Path,
    mut edit: impl FnMut(usize, &mut Vec<u8>) -> bool,
) -> Vec<usize> {
    let frames = capture::read(capture).unwrap();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
    let mut changed = Vec::new();
    for (i, f) in frames.into_iter().enumerate() {
        let mut data = f.data;
        if edit(i + 1, &mut data) {
            changed.push(i + 1);
        }
        writer
            .write_packet(&PcapPacket::new(f.timestamp, data.len() as u32, &data))
            .unwrap();
    }
    changed
}

/// Where the TCP payload of `frame` starts and its destination port.
fn tcp_payload(frame: &[u8]) -> Option<(usize, u16)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    match p.transport {
        Some(TransportSlice::Tcp(t)) if !t.payload().is_empty() => {
            let start = t.payload().as_ptr() as usize - frame.as_ptr() as usize;
            Some((start, t.destination_port()))
        }
        _ => None,
    }
}

fn verdict_of(records: &[Value], frame: usize) -> &Value {
    records
        .iter()
        .find(|r| r["frame"] == frame as u64)
        .unwrap_or_else(|| panic!("no record of frame {frame}"))
}

#[test]
fn an_injected_modbus_write_is_denied() {
    // Polling with Read Holding Registers (3) only.
    let original = pcaps().join("modbus/ndpi_modbus.pcap");
    let dir = scratch("modbus");
    let policy = learn(&original, &dir);
    assert!(policy.contains("functions: [3]"), "{policy}");
    // The tenth request becomes Write Single Register (6) to the same address: a well-formed
    // write, same length, same TCP sequence.
    let injected = dir.join("injected.pcap");
    let mut requests = 0;
    let changed = rewrite(&original, &injected, |_, frame| {
        let Some((start, port)) = tcp_payload(frame) else {
            return false;
        };
        if port != 502 || frame.get(start + 7) != Some(&3) {
            return false;
        }
        requests += 1;
        if requests != 10 {
            return false;
        }
        frame[start + 7] = 6;
        true
    });
    assert_eq!(changed.len(), 1, "one request rewritten");
    let (records, _) = replayed(&policy, &injected);
    let r = verdict_of(&records, changed[0]);
    assert_eq!(r["verdict"], "drop", "{r}");
    assert_eq!(r["reason"], "modbus_function_denied", "{r}");
    // Every frame before it passed.
    assert!(records
        .iter()
        .filter(|x| x["frame"].as_u64().unwrap() < changed[0] as u64)
        .all(|x| x["verdict"] == "pass"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The offsets in `frame`'s TCP payload (to port 44818) of CIP requests with `service` on a
/// symbolic path: service, path size, 0x91.
fn tag_requests(frame: &[u8], service: u8) -> Vec<usize> {
    let Some((start, 44818)) = tcp_payload(frame) else {
        return Vec::new();
    };
    (start..frame.len().saturating_sub(3))
        .filter(|&i| frame[i] == service && frame[i + 2] == 0x91 && frame[i + 1] > 0)
        .collect()
}

#[test]
fn write_tags_not_seen_are_denied() {
    // pycomm3 reading and writing tags of a cpppo controller simulator.
    let original = pcaps().join("enip/peers_cpppo_pycomm3_vs_cpppo.pcapng");
    let dir = scratch("enip");
    let policy = learn(&original, &dir);
    assert!(policy.contains("write_tag"), "{policy}");

    // A Write Tag to a tag the capture never addressed ("Tag" renamed "Tbg").
    let injected = dir.join("other-tag.pcap");
    let mut done = false;
    let changed = rewrite(&original, &injected, |_, frame| {
        if done {
            return false;
        }
        for at in tag_requests(frame, 0x4D) {
            if frame.get(at + 3..at + 7) == Some(&[3, b'T', b'a', b'g'][..]) {
                frame[at + 5] = b'b';
                done = true;
                return true;
            }
        }
        false
    });
    assert_eq!(changed.len(), 1, "one Write Tag of `Tag` rewritten");
    let (records, _) = replayed(&policy, &injected);
    let r = verdict_of(&records, changed[0]);
    assert_eq!(r["verdict"], "drop", "{r}");
    assert_eq!(r["reason"], "cip_tag_denied", "{r}");

    // Learned from the same traffic with its Write Tags turned into Read Tags, the policy
    // allows no write: the genuine Write Tag requests are denied.
    let reads_only = dir.join("reads-only.pcap");
    let writes = rewrite(&original, &reads_only, |_, frame| {
        let at = tag_requests(frame, 0x4D);
        for &i in &at {
            frame[i] = 0x4C;
        }
        !at.is_empty()
    });
    assert!(!writes.is_empty(), "the capture has Write Tag requests");
    let read_policy = learn(&reads_only, &dir);
    assert!(!read_policy.contains("write_tag"), "{read_policy}");
    let (records, _) = replayed(&read_policy, &original);
    let first_write = verdict_of(&records, writes[0]);
    assert_eq!(first_write["verdict"], "drop", "{first_write}");
    assert_eq!(first_write["reason"], "cip_service_denied", "{first_write}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zones_and_hosts_of_a_policy_are_kept() {
    // The ITI capture: a client (10.1.1.167) asks a 1756-ENBT/A (10.1.1.164) who it is.
    let capture = pcaps().join("enip/iti_enip_test.pcap");
    let dir = scratch("zones");
    let zones = dir.join("current.yaml");
    std::fs::write(
        &zones,
        "version: 1\ngateway: { interfaces: [eth1, eth2] }\nzones:\n  cell:\n    \
         networks: [10.1.1.160/29]\n    security_level: 3\n    hosts:\n      plc: 10.1.1.164\n\
         conduits: []\n",
    )
    .unwrap();
    let text = learn_with_zones(&capture, Some(&zones), &dir);
    let (loaded, diagnostics) = check_str("learned.yaml", &text);
    let policy = loaded
        .unwrap_or_else(|| panic!("{diagnostics:#?}\n{text}"))
        .policy;
    assert_eq!(
        policy.gateway,
        otfw::policy::validated::Attachment::Interfaces(vec!["eth1".into(), "eth2".into()])
    );
    let cell = &policy.zones[0];
    assert_eq!((cell.name.as_str(), cell.security_level), ("cell", Some(3)));
    // The named host keeps its name; the client, inside the zone, gets one.
    assert_eq!(cell.hosts[0].name, "plc");
    assert_eq!(cell.hosts[1].addr.to_string(), "10.1.1.167");
    assert_eq!(policy.conduits.len(), 1);
    assert_eq!(
        policy.endpoint_name(&policy.conduits[0].to),
        "cell/plc",
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One Ethernet frame from `src` to `dst` MAC with the packet `build` makes.
fn frame(
    build: impl FnOnce(etherparse::PacketBuilderStep<etherparse::Ethernet2Header>, &mut Vec<u8>),
    src: u8,
    dst: [u8; 6],
) -> Vec<u8> {
    let mut out = Vec::new();
    build(
        etherparse::PacketBuilder::ethernet2([0x00, 0x00, 0xbc, 0, 0, src], dst),
        &mut out,
    );
    out
}

/// A ListIdentity reply of a 1756-L61 (vendor 1, type 14, product 54, revision 20.11).
fn list_identity_reply() -> Vec<u8> {
    let mut item = vec![1, 0, 0, 2, 0xaf, 0x12, 10, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0];
    item.extend([1, 0, 14, 0, 54, 0, 20, 11, 0x60, 0, 0x44, 0x33, 0x22, 0x11]);
    item.push(17);
    item.extend(b"1756-L61/B LOGIX5");
    item.push(3);
    let mut data = 1u16.to_le_bytes().to_vec();
    data.extend(0x0Cu16.to_le_bytes());
    data.extend((item.len() as u16).to_le_bytes());
    data.extend(item);
    let mut m = 0x63u16.to_le_bytes().to_vec();
    m.extend((data.len() as u16).to_le_bytes());
    m.extend([0; 20]);
    m.extend(data);
    m
}

#[test]
fn broadcasts_multicasts_and_pings_are_learned() {
    const BROADCAST: [u8; 6] = [0xff; 6];
    let (client, plc) = ([10, 0, 0, 5], [10, 0, 0, 7]);
    let mac_client = [0, 0, 0xbc, 0, 0, 5];
    let v6 = |last: u8| {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    };
    let mut list_identity = 0x63u16.to_le_bytes().to_vec();
    list_identity.extend([0; 22]);
    let udp = |src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload: &[u8], to: [u8; 6]| {
        frame(
            |b, o| {
                b.ipv4(src, dst, 64)
                    .udp(ports.0, ports.1)
                    .write(o, payload)
                    .unwrap()
            },
            src[3],
            to,
        )
    };
    // Echo request from `a` to `b` and its reply, IPv4 or IPv6 by the addresses' length.
    let ping = |a: u8, b: u8, v4: bool| -> [Vec<u8>; 2] {
        [(a, b, false), (b, a, true)].map(|(from, to, reply)| {
            let mac = [0, 0, 0xbc, 0, 0, to];
            frame(
                |p, o| {
                    let step = if v4 {
                        p.ipv4([10, 0, 0, from], [10, 0, 0, to], 64)
                    } else {
                        p.ipv6(v6(from), v6(to), 64)
                    };
                    match (v4, reply) {
                        (true, false) => step.icmpv4_echo_request(1, 1).write(o, b"ping"),
                        (true, true) => step.icmpv4_echo_reply(1, 1).write(o, b"ping"),
                        (false, false) => step.icmpv6_echo_request(1, 1).write(o, b"ping"),
                        (false, true) => step.icmpv6_echo_reply(1, 1).write(o, b"ping"),
                    }
                    .unwrap()
                },
                from,
                mac,
            )
        })
    };
    let mut frames: Vec<Vec<u8>> = vec![
        // ListIdentity broadcast over UDP, answered by unicast from 44818.
        udp(client, [255; 4], (50000, 44818), &list_identity, BROADCAST),
        udp(
            plc,
            client,
            (44818, 50000),
            &list_identity_reply(),
            mac_client,
        ),
        // A DHCP discover (from 0.0.0.0) and an mDNS query (multicast).
        udp([0; 4], [255; 4], (68, 67), &[1; 240], BROADCAST),
        udp(
            client,
            [224, 0, 0, 251],
            (5353, 5353),
            &[0; 12],
            [1, 0, 0x5e, 0, 0, 0xfb],
        ),
    ];
    frames.extend(ping(5, 7, true));
    frames.extend(ping(5, 7, false));
    let dir = scratch("broadcast");
    let capture = dir.join("synthetic.pcap");
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(File::create(&capture).unwrap(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let at = std::time::Duration::from_secs(1_700_000_000 + i as u64);
        writer
            .write_packet(&PcapPacket::new(at, f.len() as u32, f))
            .unwrap();
    }
    drop(writer);

    let policy = learn(&capture, &dir);
    println!("{policy}");
    for expected in [
        "\"broadcast-multicast\":",
        "\"255.255.255.255/32\"",
        "\"224.0.0.251/32\"",
        "\"0.0.0.0/32\"",
        "types: [echo_request]",
        "1756-l61-b-logix5-10-0-0-7",
        "commands: [list_identity]",
        "h-10-0-0-5-to-broadcast-255-255-255-255",
        "\"unspecified-0-0-0-0\": \"0.0.0.0\"",
        "answers from udp/44818",
    ] {
        assert!(policy.contains(expected), "{expected} missing in\n{policy}");
    }
    let (records, summary) = replayed(&policy, &capture);
    assert_eq!(summary["dropped"], 0, "{records:#?}\n{policy}");
    assert_eq!(summary["frames"], frames.len());
    std::fs::remove_dir_all(&dir).unwrap();
}
