//! EtherNet/IP and CIP inspection in the datapath (root): the real object through
//! BPF_PROG_TEST_RUN, one table row or scenario per case of issue 4.

#[path = "common/enip.rs"]
mod enip_common;
#[path = "common/modbus.rs"]
mod modbus_common;

use enip_common::*;
use firewall_common::reason::Reason;
use modbus_common::{datapath, run, segment, Conn, CLIENT, SERVER};
use otfw::datapath::{Datapath, Decision};

#[test]
fn loads_within_the_verifier_budget() {
    let dp = datapath(&policy("services: [read]", ""));
    let main = dp.verified_instructions().unwrap();
    let (enip, io) = dp.enip_verified_instructions().unwrap();
    println!("verified instructions: otfw {main}, otfw_enip {enip}, otfw_enip_io {io}");
    assert!(main < 1_000_000 && enip < 1_000_000 && io < 1_000_000);
}

/// A connection opened with its handshake and a registered session.
fn session(dp: &mut Datapath, sport: u16) -> Conn {
    let mut c = Conn::new(sport, 44818);
    c.open(dp);
    expect(&c.send(dp, &register_session()), Reason::None, "register");
    expect(
        &c.reply(dp, &register_reply(SESSION)),
        Reason::None,
        "register reply",
    );
    c
}

fn expect(d: &Decision, reason: Reason, what: &str) {
    assert_eq!(d.reason, reason, "{what}: {d:?}");
    if reason == Reason::None {
        assert!(d.passed(), "{what}: {d:?}");
    } else {
        assert!(d.dropped(), "{what}: {d:?}");
    }
}

#[test]
fn smoke() {
    let mut dp = datapath(&policy("services: [read]", ""));
    let mut c = session(&mut dp, 40000);
    let d = c.send(&mut dp, &rr(SESSION, &read_tag("Counter")));
    expect(&d, Reason::None, "read tag");
    println!("{:?}", d.cip);
    let d = c.send(&mut dp, &rr(SESSION, &write_tag("Counter")));
    expect(&d, Reason::CipServiceDenied, "write tag");
    println!("{:?}", d.cip);
}
