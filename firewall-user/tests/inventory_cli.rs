//! `otfw inventory` on the shared captures (needs tshark): every device identity in them, from
//! Modbus Read Device Identification responses (43/14) and EtherNet/IP ListIdentity replies,
//! checked field by field against tshark's decoding of the same frames (the independent
//! oracle); and the JSON, CSV and state file forms.

#[path = "common/pcaps.rs"]
mod pcaps;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use regex::Regex;
use serde_json::Value;

fn pcaps() -> PathBuf {
    pcaps::dir()
}

fn captures() -> Vec<PathBuf> {
    let mut all = Vec::new();
    for protocol in ["modbus", "enip"] {
        for entry in std::fs::read_dir(pcaps().join(protocol)).unwrap() {
            all.push(entry.unwrap().path());
        }
    }
    all.sort();
    all
}

fn otfw(args: &[&str], captures: &[&Path]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otfw"));
    cmd.arg("inventory").args(args);
    if !captures.is_empty() {
        cmd.arg("--capture").args(captures);
    }
    let out = cmd.output().expect("running otfw");
    assert!(
        out.status.success(),
        "otfw inventory {args:?} {captures:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn inventory_json(capture: &Path) -> Vec<Value> {
    let out = otfw(&["--json"], &[capture]);
    let doc: Value =
        serde_json::from_slice(&out.stdout).expect("otfw inventory --json prints JSON");
    doc["assets"]
        .as_array()
        .expect("an array of assets")
        .clone()
}

/// One field of tshark's PDML: (showname, show).
type Fields = Vec<(String, String, String)>;

/// The PDML fields of every frame of `capture` that carries an identity, per frame.
fn tshark_identity_frames(capture: &Path) -> Vec<Fields> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(["-d", "tcp.port==5020,mbtcp", "-d", "tcp.port==5021,mbtcp"])
        .args([
            "-Y",
            "enip.lir.name or (modbus.mei == 14 and modbus.conformity_level)",
            "-T",
            "pdml",
        ])
        .output()
        .expect("the identity test needs tshark (cargo xtask setup installs it)");
    assert!(out.status.success(), "tshark on {}", capture.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let field =
        Regex::new(r#"<field name="([^"]+)" showname="([^"]*)"[^>]*? show="([^"]*)""#).unwrap();
    text.split("<packet>")
        .skip(1)
        .map(|packet| {
            field
                .captures_iter(packet)
                .map(|c| (c[1].to_owned(), unescape(&c[2]), unescape(&c[3])))
                .collect()
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn first<'a>(fields: &'a Fields, name: &str) -> Option<&'a (String, String, String)> {
    fields.iter().find(|f| f.0 == name)
}

fn show(fields: &Fields, name: &str) -> String {
    first(fields, name)
        .unwrap_or_else(|| panic!("tshark gave no {name}"))
        .2
        .clone()
}

/// The part of a showname after `Label: `, without a trailing ` (number)`.
fn shown_name(fields: &Fields, name: &str) -> Option<String> {
    let showname = &first(fields, name)?.1;
    let value = showname.split_once(": ")?.1;
    let name = value.rsplit_once(" (").map_or(value, |(n, _)| n);
    Some(name.to_owned())
}

/// The identity tshark shows in `capture`, per source address, as otfw's JSON should have it:
/// the last ListIdentity reply wins; Modbus objects of every response are merged, later
/// values winning.
fn expected(capture: &Path) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for f in tshark_identity_frames(capture) {
        let src = show(&f, "ip.src");
        let entry = out
            .entry(src)
            .or_insert_with(|| Value::Object(Default::default()));
        if first(&f, "enip.lir.name").is_some() {
            let vendor_id = show(&f, "enip.lir.vendor");
            let revision = shown_name(&f, "enip.lir.revision").unwrap();
            entry["enip"] = serde_json::json!({
                "vendor_id": u16::from_str_radix(vendor_id.trim_start_matches("0x"), 16).unwrap(),
                "vendor": shown_name(&f, "enip.lir.vendor"),
                "device_type": show(&f, "enip.lir.devtype").parse::<u16>().unwrap(),
                "device_type_name": shown_name(&f, "enip.lir.devtype"),
                "product_code": show(&f, "enip.lir.prodcode").parse::<u16>().unwrap(),
                "revision": revision,
                "serial_number": show(&f, "enip.lir.serial"),
                "product_name": show(&f, "enip.lir.name"),
                "state": show(&f, "enip.lir.state"),
                "status": show(&f, "enip.lir.status"),
            });
        } else {
            let modbus = entry
                .as_object_mut()
                .unwrap()
                .entry("modbus")
                .or_insert_with(|| serde_json::json!({ "conformity": 0 }));
            let level = show(&f, "modbus.conformity_level");
            let level = u8::from_str_radix(level.trim_start_matches("0x"), 16).unwrap();
            let before = modbus["conformity"].as_u64().unwrap();
            modbus["conformity"] = Value::from(before.max(u64::from(level)));
            let ids = f.iter().filter(|x| x.0 == "modbus.object_id");
            let values = f.iter().filter(|x| x.0 == "modbus.object_str_value");
            for (id, value) in ids.zip(values) {
                let id: u8 = id.2.parse().unwrap();
                let key = match id {
                    0 => "vendor_name".to_owned(),
                    1 => "product_code".to_owned(),
                    2 => "revision".to_owned(),
                    3 => "objects/vendor_url".to_owned(),
                    4 => "objects/product_name".to_owned(),
                    5 => "objects/model_name".to_owned(),
                    6 => "objects/user_application_name".to_owned(),
                    n => format!("objects/0x{n:02x}"),
                };
                match key.split_once('/') {
                    Some((_, name)) => {
                        modbus["objects"][name] = Value::from(value.2.clone());
                    }
                    None => modbus[key.as_str()] = Value::from(value.2.clone()),
                }
            }
        }
    }
    out
}

#[test]
fn identities_match_tshark_field_by_field() {
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for capture in captures() {
        let want = expected(&capture);
        if want.is_empty() {
            continue;
        }
        let name = capture.file_name().unwrap().to_string_lossy().into_owned();
        let assets = inventory_json(&capture);
        for (ip, identity) in &want {
            let Some(asset) = assets.iter().find(|a| a["ip"] == ip.as_str()) else {
                failures.push(format!("{name}: no asset {ip}"));
                continue;
            };
            for (protocol, fields) in identity.as_object().unwrap() {
                let got = &asset[protocol.as_str()];
                for (field, value) in fields.as_object().unwrap() {
                    if &got[field.as_str()] != value {
                        failures.push(format!(
                            "{name}: {ip} {protocol}.{field}: otfw {} tshark {value}",
                            got[field.as_str()]
                        ));
                    }
                }
                checked.push(format!("{name} {ip} {protocol}"));
            }
        }
    }
    println!("identities checked:\n  {}", checked.join("\n  "));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The corpus has 43/14 responses in two captures and ListIdentity replies in four.
    for expected in [
        "icsnpp_modbus_example.pcap 127.0.0.1 modbus",
        "zeek_modbus_eit.pcap 192.168.88.100 modbus",
        "iti_enip_test.pcap 10.1.1.164 enip",
        "suricata_enip_cip_example.pcap 10.1.1.164 enip",
        "suricata_enip_test1.pcap 172.25.23.2 enip",
        "peers_cpppo_pycomm3_vs_cpppo.pcapng 127.0.0.1 enip",
    ] {
        assert!(
            checked.contains(&expected.to_owned()),
            "{expected} was not checked"
        );
    }
}

#[test]
fn csv_and_state_file() {
    let modbus = pcaps().join("modbus/icsnpp_modbus_example.pcap");
    let enip = pcaps().join("enip/iti_enip_test.pcap");
    let out = otfw(&["--csv"], &[&enip]);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{text}");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let plc = rows.iter().find(|r| &r[col("ip")] == "10.1.1.164").unwrap();
    assert_eq!(&plc[col("zone")], "net-10.1.1.0-24");
    assert_eq!(&plc[col("enip_product_name")], "1756-ENBT/A");
    assert_eq!(&plc[col("serves")], "tcp/44818");

    // Two runs into one state file: the second sees both captures.
    let dir = std::env::temp_dir().join(format!("otfw-inventory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let state_arg = state.to_str().unwrap();
    otfw(&["--json", "--state", state_arg], &[&modbus]);
    let out = otfw(&["--json", "--state", state_arg], &[&enip]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let assets = doc["assets"].as_array().unwrap();
    let ips: Vec<&str> = assets.iter().map(|a| a["ip"].as_str().unwrap()).collect();
    assert!(
        ips.contains(&"127.0.0.1") && ips.contains(&"10.1.1.164"),
        "{ips:?}"
    );
    // The state alone, without captures.
    let out = otfw(&["--json", "--state", state_arg], &[]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again, doc);
    // The Modbus conversation of the first capture, with what was requested.
    let modbus_conversation = doc["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["service"] == "tcp/502"
                && c["modbus"]["functions"]
                    .as_array()
                    .is_some_and(|f| f.len() > 10)
        })
        .unwrap_or_else(|| panic!("{doc:#}"));
    let modbus = &modbus_conversation["modbus"];
    let functions: Vec<&str> = modbus["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(functions[0], "read_coils (1)", "{functions:?}");
    assert!(
        functions.contains(&"read_device_identification (43/14)"),
        "{functions:?}"
    );
    // As tshark decodes the requests: 3 from 1 (8 registers), 6 at 1, 16 from 1 (4), 22 at
    // 10, 23 reading from 1 (4) and writing from 2 (3).
    assert_eq!(
        modbus["addresses"]["holding_registers"],
        serde_json::json!(["1-8", "10"]),
        "{modbus}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zones_come_from_a_policy() {
    let dir = std::env::temp_dir().join(format!("otfw-inventory-zones-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("zones.yaml");
    std::fs::write(
        &policy,
        "version: 1\ngateway: { bridge: br-ot }\nzones:\n  cell:\n    networks: [10.1.1.128/25]\n    hosts:\n      enbt: 10.1.1.164\n  office:\n    networks: [10.1.1.0/25]\nconduits: []\n",
    )
    .unwrap();
    let enip = pcaps().join("enip/iti_enip_test.pcap");
    let out = otfw(&["--json", "--zones", policy.to_str().unwrap()], &[&enip]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let assets = doc["assets"].as_array().unwrap();
    let by_ip = |ip: &str| assets.iter().find(|a| a["ip"] == ip).unwrap().clone();
    assert_eq!(by_ip("10.1.1.164")["zone"], "cell");
    assert_eq!(by_ip("10.1.1.164")["host"], "enbt");
    assert_eq!(by_ip("10.1.1.167")["zone"], "cell");
    std::fs::remove_dir_all(&dir).unwrap();
}
