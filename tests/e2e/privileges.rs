//! The capabilities of the packaged unit (`packaging/otfw.service`) are the ones `otfw run`
//! needs: with exactly that bounding set, as root, it pins, attaches and enforces; without any
//! one of them it fails to start and leaves no port enforced.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use otfw_tests::{target_binary, HostSpec, Lab, TcpOutcome};

use crate::common::{self, office_plant_policy, otfw_logged, v4, PolicyFile, START};

const INSTANCE: &str = "otfwt-caps";

/// `CapabilityBoundingSet=` of the packaged unit, e.g. `["CAP_BPF", "CAP_NET_ADMIN"]`.
fn unit_capabilities() -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/otfw.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    let ambient = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities=");
    assert_eq!(line, ambient, "bounding and ambient sets differ");
    line.split_whitespace().map(str::to_owned).collect()
}

/// `otfw run` as root limited to `capabilities` (what systemd's bounding set leaves a root
/// service): `Ok` with the running process once ready, `Err` with its output if it exits.
fn run_with(
    lab: &Lab,
    policy: &Path,
    capabilities: &[String],
) -> Result<otfw_tests::LabProcess, String> {
    let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
    let set: Vec<String> = capabilities
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--bounding-set=-all,{}", set.join(",")))
        .arg("--inh-caps=-all")
        .arg(otfw)
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .args(["--metrics", "off", "--instance", INSTANCE]);
    for port in lab.ports() {
        command.arg("--iface").arg(port);
    }
    let mut process = lab.spawn_command(command).expect("spawn setpriv otfw run");
    match process.wait_for_line(|l| l.contains(r#""event":"ready""#), START) {
        Ok(_) => Ok(process),
        Err(_) => {
            let output = process.stop();
            Err(output.stderr)
        }
    }
}

/// Removes the instance's pins when the test ends, passed or failed.
struct Unpin;

impl Drop for Unpin {
    fn drop(&mut self) {
        common::remove_inventory(INSTANCE);
        if Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists() {
            let _ = otfw_logged(&["stop", "--instance", INSTANCE]);
        }
    }
}

#[test]
fn the_units_capabilities_suffice_and_each_is_needed() {
    let _unpin = Unpin;
    let lab = common::lab(&[
        HostSpec::new("a", "198.51.100.10/24"),
        HostSpec::new("b", "198.51.100.200/24"),
    ]);
    let policy =
        PolicyFile(std::env::temp_dir().join(format!("otfwt-caps-{}.yaml", std::process::id())));
    std::fs::write(&policy.0, office_plant_policy(5020)).unwrap();
    let _b5020 = lab.tcp_echo_server("b", 5020).unwrap();
    let _b5021 = lab.tcp_echo_server("b", 5021).unwrap();
    let connect = Duration::from_millis(1500);
    let echo = |port| {
        lab.tcp_echo("a", v4(&lab, "b", port), "hi", connect)
            .unwrap()
    };

    let all = unit_capabilities();
    println!("the unit's capabilities: {}", all.join(" "));
    let running = run_with(&lab, &policy.0, &all)
        .unwrap_or_else(|stderr| panic!("otfw run failed with {all:?}: {stderr}"));
    assert_eq!(echo(5020), TcpOutcome::Echoed);
    assert_eq!(echo(5021), TcpOutcome::TimedOut, "the policy is enforced");
    running.stop();
    assert!(otfw_logged(&["stop", "--instance", INSTANCE])
        .status
        .success());
    assert_eq!(common::xdp_on_ports(&lab), [false, false]);

    let mut unneeded = Vec::new();
    for missing in &all {
        let fewer: Vec<String> = all.iter().filter(|c| *c != missing).cloned().collect();
        match run_with(&lab, &policy.0, &fewer) {
            Ok(process) => {
                process.stop();
                let _ = otfw_logged(&["stop", "--instance", INSTANCE]);
                println!("without {missing}: started");
                unneeded.push(missing.clone());
            }
            Err(stderr) => {
                let error = stderr
                    .lines()
                    .skip_while(|l| !l.starts_with("Error:"))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" / ");
                println!("without {missing}: {error}");
            }
        }
        assert_eq!(
            common::xdp_on_ports(&lab),
            [false, false],
            "without {missing}"
        );
        assert!(
            !Path::new("/sys/fs/bpf/otfw")
                .join(INSTANCE)
                .join("links")
                .exists()
                || std::fs::read_dir(Path::new("/sys/fs/bpf/otfw").join(INSTANCE).join("links"))
                    .unwrap()
                    .next()
                    .is_none(),
            "without {missing}: a link stayed pinned"
        );
    }
    assert!(
        unneeded.is_empty(),
        "otfw run starts without {unneeded:?}: the unit grants more than it needs"
    );
}
