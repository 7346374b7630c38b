//! Fail secure: `otfw run` pins its program, links and maps, so enforcement survives the
//! controller (SIGKILL included), a restarted controller takes the pinned state over without an
//! unprotected moment, only `otfw stop` removes enforcement, and a second instance on the same
//! ports is refused. Traffic runs through every step and is counted where it arrives.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use otfw_tests::{
    modbus_initial as initial, require_modbus_peers, target_binary, Datastore, HoldSummary, Lab,
    LabProcess, ModbusClient, ModbusOp, ModbusResult, Table,
};

use crate::common::{self, otfw, v4, Firewall, START};

/// The pinned instance these tests run.
const INSTANCE: &str = "otfwt";

/// `a` (left) may reach `b` (right) on TCP 5020 and UDP 5353; nothing may go from right to
/// left. Flows first seen without their SYN are refused, so a held connection survives only if
/// its flow entry does.
const POLICY: &str = "\
version: 1
gateway: { interfaces: [otfwt-a, otfwt-b] }
defaults: { action: deny, midstream: deny, non_ip: [arp] }
zones:
  left: { networks: [198.51.100.0/25] }
  right: { networks: [198.51.100.128/25] }
conduits:
  - name: left-to-right
    from: left
    to: right
    allow: [{ tcp: { ports: [5020] } }, { udp: { ports: [5353] } }]
";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Removes the instance's pins when the test ends, passed or failed. Declared before the lab,
/// so it runs after the lab has killed the controller (`otfw stop` refuses while one runs).
struct Unpin;

impl Drop for Unpin {
    fn drop(&mut self) {
        common::remove_inventory(INSTANCE);
        if Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists() {
            let _ = otfw(&["stop", "--instance", INSTANCE]);
        }
    }
}

/// `otfw run --policy POLICY --metrics off ARGS` to its end (for starts that must fail).
fn run_to_exit(args: &[&str]) -> Output {
    run_to_exit_in(None, args)
}

/// As `run_to_exit`, with `otfw` run by `wrapper` (a test binary that execs its arguments).
fn run_to_exit_in(wrapper: Option<&str>, args: &[&str]) -> Output {
    let policy = std::env::temp_dir().join(format!("otfwt-once-{}.yaml", std::process::id()));
    std::fs::write(&policy, POLICY).unwrap();
    let mut all = vec![
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--metrics",
        "off",
    ];
    all.extend_from_slice(args);
    let out = match wrapper {
        None => otfw(&all),
        Some(wrapper) => {
            let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
            Command::new(target_binary(wrapper).unwrap_or_else(|e| panic!("{e:#}")))
                .arg(otfw)
                .args(&all)
                .output()
                .expect("run otfw")
        }
    };
    let _ = std::fs::remove_file(&policy);
    out
}

fn start(lab: &Lab) -> Firewall {
    Firewall::start_with(lab, POLICY, &["--metrics", "off", "--instance", INSTANCE])
}

/// Traffic that runs across a change of controller: a held TCP connection (left to right,
/// 5020) already exchanging, and echo servers for allowed (left to right, UDP 5353) and denied
/// (right to left, no conduit: UDP 5354) datagrams.
struct Traffic {
    _tcp: LabProcess,
    allowed_server: LabProcess,
    denied_server: LabProcess,
    hold: LabProcess,
}

impl Traffic {
    fn start(lab: &Lab, hold_for: Duration) -> Traffic {
        let _tcp = lab.tcp_echo_server("b", 5020).unwrap();
        let allowed_server = lab.udp_echo_server("b", 5353).unwrap();
        // Right to left has no conduit.
        let denied_server = lab.udp_echo_server("a", 5354).unwrap();
        let mut hold = lab
            .hold_tcp(
                "a",
                v4(lab, "b", 5020),
                Duration::from_millis(100),
                hold_for,
            )
            .unwrap();
        hold.wait_for_line(|l| l.contains("result=ok"), START)
            .unwrap();
        Traffic {
            _tcp,
            allowed_server,
            denied_server,
            hold,
        }
    }

    /// Runs `change` 1.5 s into 40 allowed and 30 denied exchanges, then ends the traffic and
    /// checks it: every allowed datagram arrived, no denied one, the held connection unbroken.
    /// Returns what `change` returned and how many denied datagrams were sent.
    fn across<T: Send>(self, lab: &Lab, change: impl FnOnce() -> T + Send) -> (T, u32) {
        let (allowed, denied, changed) = std::thread::scope(|s| {
            let allowed = s.spawn(|| {
                lab.udp_exchange("a", v4(lab, "b", 5353), 40, Duration::from_millis(150))
                    .unwrap()
            });
            let denied = s.spawn(|| {
                lab.udp_exchange("b", v4(lab, "a", 5354), 30, Duration::from_millis(200))
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(1500));
            let changed = change();
            (allowed.join().unwrap(), denied.join().unwrap(), changed)
        });
        let summary =
            HoldSummary::from_output(&self.hold.wait(Duration::from_secs(20)).unwrap()).unwrap();
        let allowed_received = common::datagrams_received(self.allowed_server);
        let denied_received = common::datagrams_received(self.denied_server);
        println!(
            "allowed udp: sent {} received {} (server {allowed_received}), expected all; denied \
             udp: sent {} received {} (server {denied_received}), expected 0; held tcp: ok {} \
             failed {}, expected unbroken",
            allowed.sent,
            allowed.received,
            denied.sent,
            denied.received,
            summary.ok,
            summary.failed
        );
        assert_eq!(allowed.received, allowed.sent, "allowed datagrams lost");
        assert_eq!(allowed_received, allowed.sent as usize);
        assert_eq!(denied_received, 0, "denied datagrams passed");
        assert_eq!(denied.received, 0);
        assert!(
            summary.unbroken(),
            "the held connection broke (its flow entry was lost?): {summary:?}"
        );
        (changed, denied.sent)
    }
}

/// Three allowed datagrams pass and three denied ones do not (the pinned program enforces).
fn assert_still_enforced(lab: &Lab, when: &str) {
    let _allowed = lab.udp_echo_server("b", 5353).unwrap();
    let _denied = lab.udp_echo_server("a", 5354).unwrap();
    let allowed = lab
        .udp_exchange("a", v4(lab, "b", 5353), 3, Duration::from_millis(300))
        .unwrap();
    let denied = lab
        .udp_exchange("b", v4(lab, "a", 5354), 3, Duration::from_millis(300))
        .unwrap();
    println!(
        "after {when}: allowed {}/{} (expected 3), denied {}/{} (expected 0)",
        allowed.received, allowed.sent, denied.received, denied.sent
    );
    assert_eq!(allowed.received, 3);
    assert_eq!(denied.received, 0);
}

/// Every port runs another program than `before` (a new controller swapped its own in).
fn assert_swapped(lab: &Lab, before: &[Option<u32>], what: &str) {
    let after = common::xdp_programs(lab);
    println!("XDP programs on the ports: {before:?} before, {after:?} after the {what}");
    for (old, new) in before.iter().zip(&after) {
        assert!(
            old.is_some() && new.is_some() && old != new,
            "the {what} did not swap its program in: {before:?} -> {after:?}"
        );
    }
}

#[test]
fn enforcement_survives_sigkill_and_a_restart_takes_it_over() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let fw = start(&lab);
    let traffic = Traffic::start(&lab, Duration::from_secs(9));
    let (restarted, denied_sent) = traffic.across(&lab, || {
        let before = common::xdp_programs(&lab);
        let Firewall { process, policy } = fw;
        common::sigkill(process);
        drop(policy);
        assert_eq!(
            common::xdp_on_ports(&lab),
            [true, true],
            "the links went with the controller"
        );
        // No controller at all for a while: the pinned program alone enforces.
        std::thread::sleep(Duration::from_millis(1500));
        let restarted = start(&lab);
        assert_swapped(&lab, &before, "restart");
        restarted
    });

    // The restart took the links over and kept the counters: every denied datagram, before
    // and after the SIGKILL, is counted.
    let mut restarted = restarted;
    let stderr = restarted
        .process
        .stderr_with("took over otfwt-a", Duration::from_secs(5));
    assert!(stderr.contains("took over otfwt-a"), "{stderr}");
    let pid = libc::pid_t::try_from(restarted.process.pid()).unwrap();
    // SAFETY: signalling the otfw process this test started, by its PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let stats = restarted
        .process
        .wait_for_line(|l| l.contains(r#""event":"stats""#), START)
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let dropped = stats["reasons"]["no_conduit"]["drop"].as_u64().unwrap_or(0);
    println!("no_conduit drops counted across the restart: {dropped}, expected >= {denied_sent}");
    assert!(dropped >= u64::from(denied_sent), "{stats}");
    assert_eq!(
        stats["epoch"], 2,
        "the restart installed generation 2: {stats}"
    );

    // A clean exit leaves enforcement in place too; only `otfw stop` removes it.
    let Firewall { process, .. } = restarted;
    let output = process.stop();
    assert!(!output.stdout.contains(r#""event":"detached""#));
    assert_eq!(common::xdp_on_ports(&lab), [true, true]);
    let _denied_server = lab.udp_echo_server("a", 5354).unwrap();
    let after_exit = lab
        .udp_exchange("b", v4(&lab, "a", 5354), 3, Duration::from_millis(300))
        .unwrap();
    assert_eq!(after_exit.received, 0, "denied traffic passed after exit");

    let stop = otfw(&["stop", "--instance", INSTANCE]);
    let out = text(&stop.stdout);
    assert!(stop.status.success(), "{out}{}", text(&stop.stderr));
    assert!(
        out.contains("enforcement removed from otfwt-a, otfwt-b"),
        "{out}"
    );
    assert_eq!(common::xdp_on_ports(&lab), [false, false], "{out}");
    assert!(!Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists());
    let unfiltered = lab
        .udp_exchange("b", v4(&lab, "a", 5354), 3, Duration::from_millis(300))
        .unwrap();
    assert_eq!(
        unfiltered.received, 3,
        "after otfw stop the bridge forwards"
    );
}

#[test]
fn a_second_instance_on_the_same_ports_is_refused() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let _fw = start(&lab);
    // `otfw run` with `args` must fail; its stderr.
    let refused = |args: &[&str]| {
        let out = run_to_exit(args);
        let message = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} was not refused: {message}");
        message
    };

    let message = refused(&["--instance", INSTANCE]);
    assert!(
        message.contains("otfw instance `otfwt` is already running"),
        "{message}"
    );

    let message = refused(&["--instance", "otfwt2"]);
    assert!(
        message.contains("otfwt-a is already enforced by otfw instance `otfwt`"),
        "{message}"
    );
    assert!(
        !Path::new("/sys/fs/bpf/otfw/otfwt2").exists(),
        "the refused instance left pins"
    );
    assert!(
        !Path::new("/run/otfw/otfwt2.json").exists(),
        "the refused instance left a state file"
    );

    // Unpinned, too: the port is taken.
    let message = refused(&["--no-pin"]);
    assert!(
        message.contains("already enforced by otfw instance"),
        "{message}"
    );
}

/// Pins the BPF object pinned at `from` at `to` as well (`BPF_OBJ_GET`, `BPF_OBJ_PIN`; bpffs
/// does not rename).
fn pin_again(from: &Path, to: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes()).unwrap();
    let to = std::ffi::CString::new(to.as_os_str().as_bytes()).unwrap();
    /// The `BPF_OBJ_GET` / `BPF_OBJ_PIN` part of `union bpf_attr`.
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let bpf = |cmd: libc::c_long, attr: &ObjAttr| {
        // SAFETY: the bpf syscall reads `attr` and the NUL-terminated path it points to.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *const ObjAttr,
                std::mem::size_of::<ObjAttr>(),
            )
        }
    };
    let fd = bpf(
        7, // BPF_OBJ_GET
        &ObjAttr {
            pathname: from.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        },
    );
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {from:?}: {}",
        std::io::Error::last_os_error()
    );
    let pinned = bpf(
        6, // BPF_OBJ_PIN
        &ObjAttr {
            pathname: to.as_ptr() as u64,
            bpf_fd: fd as u32,
            file_flags: 0,
        },
    );
    let error = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor BPF_OBJ_GET returned, once.
    unsafe { libc::close(fd as i32) };
    assert_eq!(pinned, 0, "BPF_OBJ_PIN {to:?}: {error}");
}

/// A version whose maps differ from the pinned ones refuses to take over and leaves the old
/// program enforcing. The differing layout is made by pinning another map (`ACTIVE`, an array)
/// at `FLOWS`'s place; the running program is unaffected, since it holds its maps itself.
#[test]
fn an_incompatible_map_layout_is_refused_and_the_old_enforcement_stays() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let Firewall { process, .. } = start(&lab);
    common::sigkill(process);
    let maps = Path::new("/sys/fs/bpf/otfw").join(INSTANCE).join("maps");
    std::fs::remove_file(maps.join("FLOWS")).unwrap();
    pin_again(&maps.join("ACTIVE"), &maps.join("FLOWS"));

    let out = run_to_exit(&["--instance", INSTANCE]);
    let message = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains("do not fit this version of otfw: FLOWS (type 2, needs "),
        "{message}"
    );
    assert!(message.contains("otfw stop"), "{message}");
    assert_eq!(
        common::xdp_on_ports(&lab),
        [true, true],
        "enforcement was removed"
    );
    assert!(
        std::fs::read_dir(Path::new("/sys/fs/bpf/otfw").join(INSTANCE).join("links"))
            .unwrap()
            .count()
            == 2,
        "the refused start changed the link pins"
    );

    assert_still_enforced(&lab, "the refused takeover");
}

/// An upgrade whose maps differ from the pinned ones, started with
/// `--replace-incompatible-maps`, takes every port over without an unprotected moment: the new
/// program runs on fresh maps, swapped into each pinned link atomically, while traffic runs.
/// Allowed datagrams all arrive, denied ones never, and a held TCP connection goes on (its flow
/// is adopted mid-stream, as the policy allows, since the fresh flow table does not know it).
/// The layout difference is made as in the refusal test above.
#[test]
fn an_incompatible_map_layout_is_replaced_without_an_unprotected_moment() {
    let _unpin = Unpin;
    let policy = POLICY.replace("midstream: deny", "midstream: adopt");
    let events = std::env::temp_dir().join(format!("otfwt-events-{}.jsonl", std::process::id()));
    let lab = common::lab(&common::left_right_hosts());
    let first = Firewall::start_with(&lab, &policy, &["--metrics", "off", "--instance", INSTANCE]);
    let traffic = Traffic::start(&lab, Duration::from_secs(8));
    let Firewall {
        process,
        policy: policy_file,
    } = first;
    common::sigkill(process);
    let maps = Path::new("/sys/fs/bpf/otfw").join(INSTANCE).join("maps");
    std::fs::remove_file(maps.join("FLOWS")).unwrap();
    pin_again(&maps.join("ACTIVE"), &maps.join("FLOWS"));

    let (upgraded, _) = traffic.across(&lab, || {
        let before = common::xdp_programs(&lab);
        let upgraded = Firewall::start_file(
            &lab,
            policy_file,
            &[
                "--metrics",
                "off",
                "--instance",
                INSTANCE,
                "--replace-incompatible-maps",
                "--events-file",
                events.to_str().unwrap(),
            ],
        );
        assert_swapped(&lab, &before, "upgrade");
        upgraded
    });

    let Firewall {
        process,
        policy: policy_file,
    } = upgraded;
    let stderr = process.stderr();
    assert!(
        stderr.contains("replaced the pinned maps of another layout (FLOWS (type 2, needs "),
        "{stderr}"
    );
    let logged = std::fs::read_to_string(&events).unwrap_or_default();
    let _ = std::fs::remove_file(&events);
    assert!(logged.contains(r#""event":"maps_replaced""#), "{logged}");
    assert!(logged.contains(r#""taken_over":true"#), "{logged}");
    let instance = Path::new("/sys/fs/bpf/otfw").join(INSTANCE);
    assert!(
        !instance.join("maps-next").exists(),
        "the staged maps were not moved into place"
    );
    // The maps pinned now are this version's: a plain restart takes them over.
    common::sigkill(process);
    let restarted = Firewall::start_file(
        &lab,
        policy_file,
        &["--metrics", "off", "--instance", INSTANCE],
    );
    let stderr = restarted
        .process
        .stderr_with("took over otfwt-a", Duration::from_secs(5));
    assert!(stderr.contains("took over otfwt-a"), "{stderr}");
    assert!(!stderr.contains("replaced the pinned maps"), "{stderr}");
    let _denied_server = lab.udp_echo_server("a", 5354).unwrap();
    let still_denied = lab
        .udp_exchange("b", v4(&lab, "a", 5354), 3, Duration::from_millis(300))
        .unwrap();
    assert_eq!(
        still_denied.received, 0,
        "denied traffic passed after the restart"
    );
}

/// Modbus inspection needs the inspectors in the pinned `INSPECTORS` array: polling a PLC
/// through a read-only conduit goes on with the controller running, SIGKILLed, and restarted,
/// and every write is refused in each phase.
#[test]
fn modbus_inspection_goes_on_without_a_controller() {
    require_modbus_peers().unwrap_or_else(|e| panic!("{e:#}"));
    let _unpin = Unpin;
    let lab = common::lab(&common::plant_hosts());
    let policy = common::plant_policy(
        "modbus",
        "reset",
        "{ functions: [read] }",
        "{ functions: [read, write] }",
    );
    let args = ["--metrics", "off", "--instance", INSTANCE];
    let fw = Firewall::start_with(&lab, &policy, &args);
    let mut server = lab
        .modbus_server("plc", 502)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let plc = server.addr;
    // One poll: a read the conduit allows, then a write it refuses (with a reset).
    let ops = [
        ModbusOp::Read(Table::HoldingRegisters, 0, 2),
        ModbusOp::WriteRegister(0, 999),
    ];
    let expected = [
        ModbusResult::Ok(vec![
            initial::holding_register(0),
            initial::holding_register(1),
        ]),
        ModbusResult::Reset,
    ];
    const POLLS: usize = 3;
    let polls = |phase: &str| {
        for n in 0..POLLS {
            let results = lab
                .modbus(
                    ModbusClient::TokioModbus,
                    "client",
                    plc,
                    1,
                    Duration::from_secs(2),
                    &ops,
                )
                .unwrap_or_else(|e| panic!("{phase}: {e:#}"));
            assert_eq!(results, expected, "{phase}, poll {n}");
        }
        println!(
            "{phase}: {POLLS} polls, {POLLS} reads answered, {POLLS} writes refused (expected all)"
        );
    };

    polls("controller running");
    let Firewall { process, .. } = fw;
    common::sigkill(process);
    polls("no controller");
    let _fw = Firewall::start_with(&lab, &policy, &args);
    polls("controller restarted");
    assert_eq!(server.datastore().unwrap(), Datastore::initial());
}

/// A start that fails on its second port leaves the first one as it found it: no program, no
/// pins, no state file.
#[test]
fn a_failed_start_leaves_no_port_half_configured() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let out = run_to_exit(&[
        "--instance",
        INSTANCE,
        "--iface",
        "otfwt-a",
        "--iface",
        "otfwt-nosuch",
    ]);
    let message = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{message}");
    assert!(
        message.contains("no interface named otfwt-nosuch"),
        "{message}"
    );
    assert_eq!(common::xdp_on_ports(&lab), [false, false], "{message}");
    assert!(!Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists());
    assert!(!Path::new("/run/otfw")
        .join(format!("{INSTANCE}.json"))
        .exists());
    // Nothing to stop, and `otfw stop` says so.
    let stop = otfw(&["stop", "--instance", INSTANCE]);
    let message = text(&stop.stderr);
    assert_eq!(stop.status.code(), Some(1), "{message}");
    assert!(
        message.contains("no pinned otfw instance `otfwt`"),
        "{message}"
    );
    assert!(!Path::new("/run/otfw")
        .join(format!("{INSTANCE}.lock"))
        .exists());
}

/// A kernel that refuses otfw's programs (here: every BPF program load answered `EACCES`, by a
/// seccomp filter around `otfw run`): a first start says so, exits non-zero and leaves no port
/// attached and nothing pinned; a restart of a pinned instance fails the same way and leaves
/// the pinned program enforcing, untouched.
#[test]
fn a_program_the_kernel_rejects_fails_cleanly_and_keeps_the_pinned_enforcement() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let rejected = |what: &str| {
        let out = run_to_exit_in(Some("otfw-no-programs"), &["--instance", INSTANCE]);
        let message = text(&out.stderr);
        println!(
            "{what}: exit {:?}: {}",
            out.status.code(),
            message.trim_end()
        );
        assert_eq!(out.status.code(), Some(1), "{message}");
        assert!(
            message.contains("loading the XDP object failed")
                || message.contains("the kernel verifier rejected"),
            "{message}"
        );
        assert!(message.contains("kernel with BPF and XDP support") || message.contains("CAP_BPF"));
    };
    rejected("first start");
    assert_eq!(common::xdp_on_ports(&lab), [false, false]);
    assert!(!Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists());

    let Firewall { process, .. } = start(&lab);
    common::sigkill(process);
    let before = common::xdp_programs(&lab);
    rejected("restart of a pinned instance");
    assert_eq!(
        common::xdp_programs(&lab),
        before,
        "the failed restart changed the ports' programs"
    );
    assert_still_enforced(&lab, "the failed restart");
}

/// Without a BPF filesystem (unmounted in a mount namespace of its own, so the host keeps
/// its own), `otfw run` says what to do, exits non-zero and touches no port.
#[test]
fn a_start_without_a_bpf_filesystem_fails_cleanly() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
    let policy = std::env::temp_dir().join(format!("otfwt-nobpffs-{}.yaml", std::process::id()));
    std::fs::write(&policy, POLICY).unwrap();
    let script = format!(
        "umount /sys/fs/bpf && exec {} run --policy {} --metrics off --instance {INSTANCE}",
        otfw.display(),
        policy.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("running unshare");
    let _ = std::fs::remove_file(&policy);
    let message = text(&out.stderr);
    println!("without bpffs: exit {:?}: {message}", out.status.code());
    assert_ne!(out.status.code(), Some(0), "{message}");
    assert!(message.contains("bpffs is not mounted"), "{message}");
    assert_eq!(common::xdp_on_ports(&lab), [false, false], "{message}");
    assert!(!Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists());
}

/// otfw never replaces an XDP program it did not pin: here one from an unpinned `otfw run`,
/// which for the pinned instance is just another program on the port.
#[test]
fn a_port_carrying_another_xdp_program_is_refused() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let _other = Firewall::start(&lab, POLICY);
    let before = common::xdp_programs(&lab);
    let out = run_to_exit(&["--instance", INSTANCE]);
    let message = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{message}");
    assert!(
        message.contains("otfwt-a already carries an XDP program that otfw did not install"),
        "{message}"
    );
    assert_eq!(
        common::xdp_programs(&lab),
        before,
        "the other program was touched"
    );
    assert!(!Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists());
}

/// Without privileges the start fails with a clear error and touches no port.
#[test]
fn a_start_without_privileges_fails_cleanly() {
    let _unpin = Unpin;
    let lab = common::lab(&common::left_right_hosts());
    let policy = std::env::temp_dir().join(format!("otfwt-nopriv-{}.yaml", std::process::id()));
    std::fs::write(&policy, POLICY).unwrap();
    let otfw = target_binary("otfw").unwrap_or_else(|e| panic!("{e:#}"));
    // As `nobody`, with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(otfw)
        .args(["run", "--policy"])
        .arg(&policy)
        .args(["--metrics", "off", "--instance", INSTANCE])
        .output()
        .expect("setpriv (util-linux) runs otfw as nobody");
    let _ = std::fs::remove_file(&policy);
    let message = text(&out.stderr);
    println!("as nobody: {message}");
    assert_ne!(out.status.code(), Some(0), "{message}");
    assert!(message.contains("need root"), "{message}");
    assert_eq!(common::xdp_on_ports(&lab), [false, false], "{message}");
    assert!(!Path::new("/sys/fs/bpf/otfw").join(INSTANCE).exists());
}
