//! Inventory and learning from the live datapath, with real peers: `otfw run` (pinned, the
//! policy in monitor mode) keeps the instance's inventory from the frames its XDP program
//! copies (flow answers and identity answers, no learning mode), and `otfw learn --live` writes
//! a policy from the frames copied while it learns. The pymodbus server (with its device
//! identification) runs on the PLC, cpppo's simulator on the engineering station; the client
//! polls both. Then the learned policy is enforced by the same instance (a restart onto its
//! pins, with the maps of this feature removed as an older otfw would have left them): the
//! reads and the write it saw pass, a function never seen is denied, and the inventory kept
//! before the restart is still there.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use otfw_tests::{
    free_loopback_addr, require_enip_peers, require_modbus_peers, scrape, target_binary,
    EnipClient, EnipOp, EnipResult, EnipServer, Lab, ModbusClient, ModbusOp, ModbusResult,
    ModbusServer, Table,
};
use serde_json::Value;

use crate::common::{self, otfw, otfw_logged, Firewall, PolicyFile};

/// The pinned instance of this test (pins and inventory removed at the end).
const INSTANCE: &str = "otfwt-live";
const TIMEOUT: Duration = Duration::from_secs(2);

/// A policy for the plant's client, engineering station and PLC: `$defaults` added to the
/// defaults, then the lines of the client's conduits to the PLC and to the station after their
/// `to:`.
macro_rules! plant_policy {
    ($defaults:literal, $plc:literal, $eng:literal) => {
        concat!(
            "version: 1\n",
            "gateway: { interfaces: [otfwt-client, otfwt-eng, otfwt-plc] }\n",
            "defaults: { action: deny, intra_zone: allow, unzoned: deny, non_ip: [arp]",
            $defaults,
            " }\n",
            "zones:\n",
            "  enterprise: { networks: [198.51.100.0/26], hosts: { client: 198.51.100.10 } }\n",
            "  engineering: { networks: [198.51.100.64/26], hosts: { eng: 198.51.100.70 } }\n",
            "  cell: { networks: [198.51.100.128/26], hosts: { plc: 198.51.100.130 } }\n",
            "conduits:\n",
            "  - name: client-to-plc\n",
            "    from: enterprise/client\n",
            "    to: cell/plc\n",
            $plc,
            "  - name: client-to-eng\n",
            "    from: enterprise/client\n",
            "    to: engineering/eng\n",
            $eng,
        )
    };
}

/// Everything the peers do is allowed, and the default is monitor: the controller only
/// watches. The conduits make the datapath track the flows (a flow's answer is copied when it
/// establishes the flow).
const MONITOR: &str = plant_policy!(
    ", mode: monitor",
    "    allow: [{ tcp: { ports: [502] } }]\n",
    "    allow: [{ tcp: { ports: [44818] } }, { udp: { ports: [44818] } }]\n"
);

/// The instance of the first-uses test.
const USES_INSTANCE: &str = "otfwt-uses";

/// Inspected conduits, enforcing: the inspectors copy each connection's first use of a
/// function, unit, command or service for the inventory, with no learning. The PLC's conduit
/// refuses what it does not allow (an exception, the connection lives on).
const INSPECTED: &str = plant_policy!(
    "",
    "    on_deny: refuse\n    allow: [{ modbus: { functions: [read, \"43/14\"] } }]\n",
    "    allow: [{ enip: { services: [read] } }, { udp: { ports: [44818] } }]\n"
);

/// Removes the instance's pins and inventory when the test ends, passed or failed. Declared
/// before the lab, so it runs after the lab has ended the controller.
struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::remove_inventory(self.0);
        if Path::new("/sys/fs/bpf/otfw").join(self.0).exists() {
            let _ = otfw(&["stop", "--instance", self.0]);
        }
    }
}

/// The client's Modbus polling: reads, the PLC's device identification and one write, with
/// pymodbus. Returns the identification objects the client received.
fn poll_modbus(lab: &Lab) -> Value {
    let lines = common::modbus_client_results(
        lab,
        "client",
        lab.host("plc").ipv4_addr().into(),
        &[
            "read_holding_registers:0:4",
            "read_input_registers:0:2",
            "read_device_identification:0:3",
            "write_register:10:7",
        ],
    );
    assert!(lines.iter().all(|l| l["result"] == "ok"), "{lines:?}");
    lines[2]["objects"].clone()
}

/// The client's EtherNet/IP traffic with cpppo: ListIdentity and a tag read.
fn poll_enip(lab: &Lab) {
    let results = lab
        .enip(
            EnipClient::Cpppo,
            "client",
            common::v4(lab, "eng", 44818),
            TIMEOUT,
            &[EnipOp::ListIdentity, EnipOp::Read("Line1_Speed".into())],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        results.iter().all(|r| matches!(r, EnipResult::Ok(_))),
        "{results:?}"
    );
}

/// `otfw inventory --instance INSTANCE --json` once it shows what `done` wants, within `within`.
fn inventory_until(instance: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let out = otfw(&["inventory", "--instance", instance, "--json"]);
        let doc: Value = if out.status.success() {
            serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "the instance's inventory did not get there within {within:?}: {doc:#}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until `otfw learn --live` has set its deadline.
fn wait_for_learning(learning: &otfw_tests::LabProcess) {
    let started = Instant::now();
    while !learning.stderr().contains("learning from instance") {
        assert!(
            started.elapsed() < TIMEOUT,
            "otfw learn did not start learning: {}",
            learning.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn policy_file(dir: &Path, name: &str, text: &str) -> PolicyFile {
    let file = PolicyFile(dir.join(name));
    std::fs::write(&file.0, text).unwrap();
    file
}

fn asset<'a>(doc: &'a Value, ip: &str) -> Option<&'a Value> {
    doc["assets"].as_array()?.iter().find(|a| a["ip"] == ip)
}

/// The lab of the plant with the PLC's pymodbus server and the engineering station's cpppo
/// simulator running, and a scratch directory, for `instance` (whose inventory is removed
/// first). Called after the instance's `Cleanup` is made, so that it runs after the lab ends.
fn plant(instance: &str) -> (Lab, (ModbusServer, EnipServer), PathBuf) {
    require_modbus_peers().unwrap_or_else(|e| panic!("{e:#}"));
    require_enip_peers().unwrap_or_else(|e| panic!("{e:#}"));
    common::remove_inventory(instance);
    let lab = common::lab(&common::plant_hosts());
    let modbus = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let enip = lab
        .enip_server("eng", 44818)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = std::env::temp_dir().join(format!("{instance}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (lab, (modbus, enip), dir)
}

/// The conversation from `client` to `service` (`tcp/502`) of `server`.
fn conversation<'a>(
    doc: &'a Value,
    client: &str,
    server: &str,
    service: &str,
) -> Option<&'a Value> {
    doc["conversations"]
        .as_array()?
        .iter()
        .find(|c| c["client"] == client && c["server"] == server && c["service"] == service)
}

/// The strings of a JSON array (none if it is not one).
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn first_uses_in_the_live_inventory() {
    let _cleanup = Cleanup(USES_INSTANCE);
    let (lab, _servers, dir) = plant(USES_INSTANCE);
    let metrics = free_loopback_addr().unwrap();
    let _fw = Firewall::start_file(
        &lab,
        policy_file(&dir, "inspected.yaml", INSPECTED),
        &[
            "--metrics",
            &metrics.to_string(),
            "--instance",
            USES_INSTANCE,
        ],
    );
    let (client_ip, plc_ip, eng_ip) = (
        lab.host("client").ipv4_addr().to_string(),
        lab.host("plc").ipv4_addr().to_string(),
        lab.host("eng").ipv4_addr().to_string(),
    );

    // Reads, the device identification, a write the conduit refuses, a read after it: one
    // connection, polled twice (the second poll is no news).
    let ops = [
        "read_holding_registers:0:4",
        "read_input_registers:0:2",
        "read_device_identification:0:3",
        "write_register:10:7",
        "read_holding_registers:0:1",
    ];
    for _ in 0..2 {
        let lines = common::modbus_client_results(&lab, "client", plc_ip.parse().unwrap(), &ops);
        let results: Vec<&str> = lines
            .iter()
            .map(|l| l["result"].as_str().unwrap())
            .collect();
        assert_eq!(results, ["ok", "ok", "ok", "exception", "ok"], "{lines:?}");
        assert_eq!(lines[3]["code"], 1, "illegal function: {lines:?}");
    }
    poll_enip(&lab);

    let doc = inventory_until(USES_INSTANCE, Duration::from_secs(20), |doc| {
        conversation(doc, &client_ip, &plc_ip, "tcp/502")
            .is_some_and(|c| strings(&c["modbus"]["functions"]).len() >= 4)
            && conversation(doc, &client_ip, &eng_ip, "tcp/44818")
                .is_some_and(|c| !strings(&c["enip"]["services"]).is_empty())
    });
    // Each asset on the bridge port its frames came in on.
    for (ip, port) in [
        (&client_ip, "otfwt-client"),
        (&plc_ip, "otfwt-plc"),
        (&eng_ip, "otfwt-eng"),
    ] {
        let a = asset(&doc, ip).unwrap_or_else(|| panic!("no asset {ip}: {doc:#}"));
        assert_eq!(strings(&a["ports"]), [port], "{a:#}");
    }
    let plc = conversation(&doc, &client_ip, &plc_ip, "tcp/502").unwrap();
    let functions = strings(&plc["modbus"]["functions"]);
    for code in ["(3)", "(4)", "(43/14)", "(6)"] {
        assert!(
            functions.iter().any(|f| f.ends_with(code)),
            "function {code} (the refused write too) missing: {plc:#}"
        );
    }
    assert_eq!(functions.len(), 4, "nothing else: {plc:#}");
    assert!(
        plc["modbus"]["units"]
            .as_array()
            .is_some_and(|u| u.len() == 1),
        "{plc:#}"
    );
    assert_eq!(plc["undecoded"], 0, "{plc:#}");
    let eng = conversation(&doc, &client_ip, &eng_ip, "tcp/44818").unwrap();
    let commands = strings(&eng["enip"]["commands"]);
    assert!(
        commands.contains(&"register_session") && commands.contains(&"send_rr_data"),
        "{eng:#}"
    );
    assert!(
        strings(&eng["enip"]["services"]).contains(&"0x4c@tag"),
        "Read Tag: {eng:#}"
    );

    // One copy per connection and news: the first poll's requests (4 functions), the second
    // poll's connection (4 again), the EtherNet/IP session's few; none lost.
    let body = scrape(metrics).unwrap_or_else(|e| panic!("{e:#}"));
    let counter = |result: &str| -> u64 {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    r#"otfw_observed_uses_total{{result="{result}"}} "#
                ))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no otfw_observed_uses_total{{result={result}}} in\n{body}"))
    };
    let sent = counter("sent");
    assert!((9..=16).contains(&sent), "{sent} copies:\n{body}");
    assert_eq!(counter("rate_limited") + counter("ring_full"), 0, "{body}");
}

#[test]
fn inventory_and_learning_from_the_live_datapath() {
    let _cleanup = Cleanup(INSTANCE);
    let (lab, _servers, dir) = plant(INSTANCE);
    let zones = PolicyFile(dir.join("monitor.yaml"));
    std::fs::write(&zones.0, MONITOR).unwrap();
    let metrics = free_loopback_addr().unwrap();
    let fw = Firewall::start_file(
        &lab,
        policy_file(&dir, "run.yaml", MONITOR),
        &["--metrics", &metrics.to_string(), "--instance", INSTANCE],
    );

    // 1. The inventory of the live datapath, without learning.
    let identification = poll_modbus(&lab);
    poll_enip(&lab);
    let (client_ip, plc_ip, eng_ip) = (
        lab.host("client").ipv4_addr().to_string(),
        lab.host("plc").ipv4_addr().to_string(),
        lab.host("eng").ipv4_addr().to_string(),
    );
    let doc = inventory_until(INSTANCE, Duration::from_secs(20), |doc| {
        asset(doc, &plc_ip).is_some_and(|a| !a["modbus"].is_null())
            && asset(doc, &eng_ip).is_some_and(|a| !a["enip"].is_null())
    });
    let plc = asset(&doc, &plc_ip).unwrap();
    let m = &plc["modbus"];
    assert_eq!(m["vendor_name"], identification["0"], "{plc:#}");
    assert_eq!(m["product_code"], identification["1"], "{plc:#}");
    assert_eq!(m["objects"]["product_name"], identification["4"], "{plc:#}");
    let eng = asset(&doc, &eng_ip).unwrap();
    assert_eq!(eng["enip"]["vendor_id"], 1, "cpppo's simulator: {eng:#}");
    assert!(
        eng["enip"]["product_name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{eng:#}"
    );
    let body = scrape(metrics).unwrap_or_else(|e| panic!("{e:#}"));
    let sent: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(r#"otfw_observed_frames_total{result="sent"} "#))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no observed frames counted in\n{body}"));
    // Two flow answers and two identity answers at least.
    assert!(sent >= 4, "{body}");
    // The flows' answers (SYN-ACKs) named the client as the client.
    for (server, service) in [(&plc_ip, "tcp/502"), (&eng_ip, "tcp/44818")] {
        assert!(
            doc["conversations"].as_array().unwrap().iter().any(|c| {
                c["client"] == client_ip.as_str()
                    && c["server"] == server.as_str()
                    && c["service"] == service
            }),
            "no conversation client -> {server} {service}: {doc:#}"
        );
    }

    // 2. Learning from the live datapath while the peers keep polling.
    let learned = dir.join("learned.yaml");
    let mut learn = Command::new(target_binary("otfw").unwrap());
    learn
        .args(["learn", "--live", "5s", "--instance", INSTANCE, "--zones"])
        .arg(&zones.0)
        .arg("-o")
        .arg(&learned);
    let learning = lab.spawn_command(learn).expect("spawn otfw learn");
    wait_for_learning(&learning);
    // A second learner would take part of the frames: refused while the first runs.
    let second = otfw(&["learn", "--live", "1s", "--instance", INSTANCE]);
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && said.contains("another `otfw learn --live` is learning"),
        "a second learner was not refused: {said}"
    );
    poll_modbus(&lab);
    poll_enip(&lab);
    let out = learning
        .wait(Duration::from_secs(20))
        .expect("otfw learn did not end");
    let stderr = out.stderr.clone();
    eprintln!("otfw learn --live:\n{stderr}");
    assert!(out.success(), "otfw learn --live failed:\n{stderr}");
    let copied: u64 = stderr
        .split("the datapath copied ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in:\n{stderr}"));
    assert!(copied > 0, "{stderr}");
    assert!(stderr.contains("lost 0 to a full ring"), "{stderr}");
    let check = otfw_logged(&["check", learned.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "the learned policy fails otfw check"
    );
    let policy = std::fs::read_to_string(&learned).unwrap();
    eprintln!("{policy}");
    // The reads (3, 4), the identification (43/14) and the write (6) the client made.
    assert!(
        policy.contains(r#"functions: [3, 4, 6, "43/14"]"#),
        "{policy}"
    );
    assert!(policy.contains(r#"tags: ["Line1_Speed"]"#), "{policy}");

    // Ctrl-C ends learning early, and the policy is still written.
    let interrupted = dir.join("interrupted.yaml");
    let mut learn = Command::new(target_binary("otfw").unwrap());
    learn
        .args(["learn", "--live", "10m", "--instance", INSTANCE, "-o"])
        .arg(&interrupted);
    let learning = lab.spawn_command(learn).expect("spawn otfw learn");
    wait_for_learning(&learning);
    poll_enip(&lab);
    let pid = libc::pid_t::try_from(learning.pid()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = learning
        .wait(Duration::from_secs(10))
        .expect("otfw learn did not end on SIGINT");
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stderr.contains("interrupted"), "{}", out.stderr);
    let policy_interrupted = std::fs::read_to_string(&interrupted).unwrap();
    assert!(
        policy_interrupted.contains(r#"tags: ["Line1_Speed"]"#),
        "{policy_interrupted}"
    );

    // 3. The same instance enforces the learned policy (taking over its pins).
    let stopped = fw.process.stop();
    assert!(
        stopped.stderr.contains("exiting"),
        "otfw run did not exit cleanly:\n{}",
        stopped.stderr
    );
    // Pins as an otfw without live inventory left them: the maps it did not have are made
    // at the restart, the others taken over.
    let maps = Path::new("/sys/fs/bpf/otfw").join(INSTANCE).join("maps");
    const NEW_MAPS: [&str; 6] = [
        "OBSERVED",
        "OBSERVED_BUCKET",
        "OBSERVED_STATS",
        "LEARN_UNTIL",
        "LEARN_FRAMES",
        "LEARN_STATS",
    ];
    for map in NEW_MAPS {
        std::fs::remove_file(maps.join(map)).unwrap_or_else(|e| panic!("{map}: {e}"));
    }
    let _fw = Firewall::start_file(
        &lab,
        policy_file(&dir, "learned-run.yaml", &policy),
        &["--metrics", "off", "--instance", INSTANCE],
    );
    for map in NEW_MAPS {
        assert!(
            maps.join(map).exists(),
            "{map} was not pinned at the restart"
        );
    }
    let client_to_plc = |ops: &[ModbusOp]| {
        lab.modbus(
            ModbusClient::Pymodbus,
            "client",
            common::v4(&lab, "plc", 502),
            1,
            TIMEOUT,
            ops,
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
    };
    let results = client_to_plc(&[
        ModbusOp::Read(Table::HoldingRegisters, 0, 4),
        ModbusOp::WriteRegister(10, 8),
    ]);
    assert!(
        results.iter().all(|r| matches!(r, ModbusResult::Ok(_))),
        "learned reads and write: {results:?}"
    );
    let results = client_to_plc(&[ModbusOp::WriteCoil(0, true)]);
    assert!(
        !matches!(results[0], ModbusResult::Ok(_)),
        "write_coil (5) was never seen while learning: {results:?}"
    );
    poll_enip(&lab);
    // What the first controller kept is still there after the restart.
    let doc = inventory_until(INSTANCE, Duration::from_secs(1), |doc| {
        asset(doc, &plc_ip).is_some_and(|a| !a["modbus"].is_null())
    });
    assert!(asset(&doc, &eng_ip).is_some_and(|a| !a["enip"].is_null()));
    std::fs::remove_dir_all(&dir).unwrap();
}
