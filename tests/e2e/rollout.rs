//! Safe rollout with real traffic: `otfw apply NEW --confirm-within` puts a policy in force at
//! once; unconfirmed, the controller rolls back to the policy before it at the deadline (the
//! change that would have locked the engineer out undoes itself); confirmed, it stays.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use otfw_tests::{HostSpec, Lab, TcpOutcome};

use crate::common::{self, office_plant_policy, otfw_logged, v4, Firewall};

/// The pinned instance of this test (pins and rollout files removed at the end).
const INSTANCE: &str = "otfwt-rollout";
const CONNECT: Duration = Duration::from_millis(1500);

/// Removes the instance's pins and rollout files when the test ends, passed or failed.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::remove_inventory(INSTANCE);
        for file in ["apply", "previous.yaml"] {
            let _ =
                std::fs::remove_file(Path::new("/var/lib/otfw").join(format!("{INSTANCE}.{file}")));
        }
        if Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists() {
            let _ = otfw_logged(&["stop", "--instance", INSTANCE]);
        }
    }
}

/// Exchanges with the echo servers on the conduit's old and new port from `a`: three where
/// the phase expects the port open (each must be echoed), one where it expects it closed (it
/// must time out: dropped, not refused; one, so that a phase fits before the rollback
/// deadline). Prints the counts.
fn phase(lab: &Lab, what: &str, old: SocketAddr, new: SocketAddr, old_open: bool) {
    for (port, to, open) in [("old", old, old_open), ("new", new, !old_open)] {
        let (sent, wanted) = if open {
            (3, TcpOutcome::Echoed)
        } else {
            (1, TcpOutcome::TimedOut)
        };
        let outcomes: Vec<TcpOutcome> = (0..sent)
            .map(|_| lab.tcp_echo("a", to, "hi", CONNECT).unwrap())
            .collect();
        let echoed = outcomes
            .iter()
            .filter(|o| **o == TcpOutcome::Echoed)
            .count();
        let expected = if open { sent } else { 0 };
        println!(
            "{what}: {port} port {}: sent {sent}, echoed {echoed}, expected {expected}",
            to.port()
        );
        assert!(
            outcomes.iter().all(|o| *o == wanted),
            "{what}: the {port} port: {outcomes:?}, expected {wanted:?} each"
        );
    }
}

/// `otfw apply FILE --confirm-within WITHIN` for the test's instance; whether it succeeded.
fn apply(file: &Path, within: &str) -> bool {
    let file = file.to_str().unwrap();
    otfw_logged(&[
        "apply",
        file,
        "--confirm-within",
        within,
        "--instance",
        INSTANCE,
    ])
    .status
    .success()
}

#[test]
fn apply_rolls_back_unless_confirmed() {
    let _cleanup = Cleanup;
    let lab = common::lab(&[
        HostSpec::new("a", "198.51.100.10/24"),
        HostSpec::new("b", "198.51.100.200/24"),
    ]);
    let mut fw = Firewall::start_with(&lab, &office_plant_policy(5020), &["--instance", INSTANCE]);
    let _b5020 = lab.tcp_echo_server("b", 5020).unwrap();
    let _b5021 = lab.tcp_echo_server("b", 5021).unwrap();
    let (old, new) = (v4(&lab, "b", 5020), v4(&lab, "b", 5021));
    phase(&lab, "before any apply", old, new, true);

    // A policy with errors is refused and changes nothing.
    let broken = std::env::temp_dir().join("otfwt-rollout-broken.yaml");
    std::fs::write(&broken, "version: 1\nzones: [\n").unwrap();
    assert!(!apply(&broken, "2s"));
    phase(&lab, "after a refused apply", old, new, true);

    // Applied, not confirmed: in force at once, rolled back at the deadline.
    let next = std::env::temp_dir().join("otfwt-rollout-next.yaml");
    std::fs::write(&next, office_plant_policy(5021)).unwrap();
    assert!(apply(&next, "3s"));
    fw.event("policy_applied", Duration::from_secs(5));
    phase(&lab, "applied, not confirmed", old, new, false);
    let rolled = fw.event("policy_rolled_back", Duration::from_secs(10));
    println!("rolled back: {rolled}");
    fw.event("policy_loaded", Duration::from_secs(5));
    phase(&lab, "rolled back", old, new, true);
    assert!(
        !otfw_logged(&["confirm", "--instance", INSTANCE])
            .status
            .success(),
        "nothing to confirm"
    );

    // Applied and confirmed: it stays past the deadline.
    assert!(apply(&next, "3s"));
    fw.event("policy_applied", Duration::from_secs(5));
    assert!(otfw_logged(&["confirm", "--instance", INSTANCE])
        .status
        .success());
    fw.event("policy_confirmed", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(4));
    phase(&lab, "confirmed, past the deadline", old, new, false);
    let _ = std::fs::remove_file(next);
    let _ = std::fs::remove_file(broken);
}
