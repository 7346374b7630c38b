//! Modbus/TCP inspection in the datapath (root): the real object through BPF_PROG_TEST_RUN,
//! one table row or scenario per case of issue 3.

mod common;

use common::modbus::*;
use firewall_common::reason::Reason;

#[test]
fn loads_within_the_verifier_budget() {
    let dp = datapath(&policy("functions: [read]", ""));
    let main = dp.verified_instructions().unwrap();
    let modbus = dp.modbus_verified_instructions().unwrap();
    println!("verified instructions: otfw {main}, otfw_modbus {modbus}");
    assert!(main < 1_000_000 && modbus < 1_000_000);
}

#[test]
fn smoke() {
    let mut dp = datapath(&policy("functions: [read]", ""));
    let mut c = Conn::new(40000, 502);
    c.open(&mut dp);
    let d = c.send(&mut dp, &read(3, 0, 10));
    assert!(d.passed(), "{d:?}");
    let d = c.send(&mut dp, &write_single_register(0, 10));
    assert_eq!(d.reason, Reason::ModbusFunctionDenied, "{d:?}");
}
