//! Inventory and learning from real peers: traffic between pymodbus and cpppo peers in the lab
//! is recorded on the bridge (dumpcap), then `otfw inventory` must name the PLC as the peers
//! describe it (the Modbus device identification the client received, cpppo's ListIdentity)
//! and `otfw learn` must write a policy that passes `otfw check` and lets the recorded traffic
//! through `otfw replay` without a drop. Then `otfw run` enforces the learned policy on the lab
//! with the inventory exported as metrics: the same reads pass, a write nobody made while
//! learning is refused, and `/metrics` lists the PLC with its identity.

use std::{path::Path, process::Command, time::Duration};

use otfw_tests::{
    free_loopback_addr, require_enip_peers, require_modbus_peers, scrape, target_binary,
    EnipClient, EnipOp, EnipResult, Lab, ModbusClient, ModbusOp, ModbusResult, Table,
};
use serde_json::Value;

use crate::common::{self, Firewall};

const TIMEOUT: Duration = Duration::from_secs(2);

fn otfw(args: &[&str], path: &Path) -> Value {
    let out = Command::new(target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}")))
        .args(args)
        .arg(path)
        .output()
        .expect("running otfw");
    assert!(
        out.status.success(),
        "otfw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // replay: the summary is the last line.
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .or_else(|_| serde_json::from_str(&text))
        .unwrap_or_else(|e| panic!("otfw {args:?} printed no JSON ({e}): {text}"))
}

/// Records the bridge of `lab` into `path` while `traffic` runs.
fn record(lab: &Lab, path: &Path, traffic: impl FnOnce()) {
    let mut dumpcap = Command::new("dumpcap");
    dumpcap.args(["-q", "-i", lab.bridge(), "-w"]).arg(path);
    let process = lab
        .spawn_command(dumpcap)
        .unwrap_or_else(|e| panic!("dumpcap (installed with tshark): {e:#}"));
    // dumpcap writes the file's header once it listens.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "dumpcap did not start: {}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    traffic();
    std::thread::sleep(Duration::from_millis(300));
    process.stop();
}

#[test]
fn inventory_and_learned_policy_from_real_peers() {
    require_modbus_peers().unwrap_or_else(|e| panic!("{e:#}"));
    require_enip_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let lab = common::lab(&common::plant_hosts());
    let modbus = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let enip = lab
        .enip_server("plc", 44818)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = std::env::temp_dir().join(format!("otfwt-inventory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("bridge.pcapng");

    let mut identification = Value::Null;
    record(&lab, &capture, || {
        // pymodbus: a read, then the PLC's extended device identification.
        let lines = common::modbus_client_results(
            &lab,
            "client",
            modbus.addr.ip(),
            &[
                "read_holding_registers:0:4",
                "read_device_identification:0:3",
            ],
        );
        assert_eq!(lines[1]["result"], "ok", "{lines:?}");
        identification = lines[1]["objects"].clone();
        // cpppo: ListIdentity and a tag read from the engineering host.
        let results = lab
            .enip(
                EnipClient::Cpppo,
                "eng",
                enip.addr,
                TIMEOUT,
                &[EnipOp::ListIdentity, EnipOp::Read("Line1_Speed".into())],
            )
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            results.iter().all(|r| matches!(r, EnipResult::Ok(_))),
            "{results:?}"
        );
    });
    drop(modbus);
    drop(enip);

    let doc = otfw(&["inventory", "--json", "--capture"], &capture);
    let plc_ip = lab.host("plc").ipv4_addr().to_string();
    let plc = doc["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ip"] == plc_ip.as_str())
        .unwrap_or_else(|| panic!("no PLC in {doc:#}"))
        .clone();
    // What the client received is what the inventory says.
    let m = &plc["modbus"];
    assert_eq!(m["vendor_name"], identification["0"], "{plc:#}");
    assert_eq!(m["product_code"], identification["1"], "{plc:#}");
    assert_eq!(m["revision"], identification["2"], "{plc:#}");
    for (id, name) in [
        ("3", "vendor_url"),
        ("4", "product_name"),
        ("5", "model_name"),
        ("6", "user_application_name"),
        ("128", "0x80"),
    ] {
        assert_eq!(m["objects"][name], identification[id], "{name}: {plc:#}");
    }
    // cpppo's simulator announces itself as a Rockwell controller.
    let e = &plc["enip"];
    assert_eq!(e["vendor_id"], 1, "{plc:#}");
    assert!(
        e["product_name"].as_str().is_some_and(|n| !n.is_empty()),
        "{plc:#}"
    );
    for service in ["tcp/502", "tcp/44818"] {
        assert!(
            plc["serves"].as_array().unwrap().contains(&service.into()),
            "{plc:#}"
        );
    }

    let learned = dir.join("learned.yaml");
    let out = Command::new(target_binary("otfw").unwrap())
        .args(["learn", "--capture"])
        .arg(&capture)
        .arg("-o")
        .arg(&learned)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy = std::fs::read_to_string(&learned).unwrap();
    assert!(policy.contains("functions: [3, \"43/14\"]"), "{policy}");
    assert!(policy.contains("tags: [\"Line1_Speed\"]"), "{policy}");
    let summary = otfw(&["replay", "--policy", learned.to_str().unwrap()], &capture);
    assert_eq!(summary["summary"]["dropped"], 0, "{summary:#}\n{policy}");

    // Enforce what was learned, with the inventory exported.
    let state = dir.join("inventory.json");
    otfw(
        &[
            "inventory",
            "--json",
            "--state",
            state.to_str().unwrap(),
            "--capture",
        ],
        &capture,
    );
    let metrics = free_loopback_addr().unwrap();
    let _fw = Firewall::start_with(
        &lab,
        &policy,
        &[
            "--metrics",
            &metrics.to_string(),
            "--inventory",
            state.to_str().unwrap(),
        ],
    );
    let modbus = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let results = lab
        .modbus(
            ModbusClient::Pymodbus,
            "client",
            modbus.addr,
            1,
            TIMEOUT,
            &[
                ModbusOp::Read(Table::HoldingRegisters, 0, 4),
                ModbusOp::WriteRegister(0, 7),
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(matches!(results[0], ModbusResult::Ok(_)), "{results:?}");
    assert!(
        !matches!(results[1], ModbusResult::Ok(_)),
        "a write was never learned: {results:?}"
    );
    let body = scrape(metrics).unwrap_or_else(|e| panic!("{e:#}"));
    let plc_series = body
        .lines()
        .find(|l| l.starts_with("otfw_asset_info{") && l.contains(&format!("ip=\"{plc_ip}\"")))
        .unwrap_or_else(|| panic!("no asset series of the PLC in\n{body}"));
    let zone = plc["zone"].as_str().unwrap();
    assert!(
        plc_series.contains(&format!("zone=\"{zone}\"")),
        "{plc_series}"
    );
    assert!(
        plc_series.contains(&format!(
            "product=\"{}\"",
            e["product_name"].as_str().unwrap()
        )),
        "{plc_series}"
    );
    assert!(
        body.contains(&format!("otfw_assets{{zone=\"{zone}\"}} 3")),
        "three lab hosts in {zone}:\n{body}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
