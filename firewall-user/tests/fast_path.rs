//! Table tests of the fast path through BPF_PROG_TEST_RUN: the real program, a mirror written
//! by the controller's own synchronisation code from a bridge view, and frames whose action
//! must be `XDP_REDIRECT` exactly when the bridge would forward them to a known port, and
//! `XDP_PASS` (to the bridge) in every other case. Needs root and BPF; fails (never skips)
//! without them.

#[allow(dead_code)]
mod common;
#[path = "common/modbus.rs"]
mod modbus_common;

use std::{thread, time::Duration};

use common::{
    frames::{ip, MAC_DST, MAC_SRC},
    policy::{Conduit, Policy},
    table::load,
    TestInterface,
};
use firewall_common::{
    counters::{PATH_BRIDGE_LEARNS, PATH_REDIRECTED},
    fastpath::{mac_word, ForwardMemo},
    reason::Reason,
};
use otfw::datapath::{BridgePort, BridgeView, Datapath, FastPathStatus, Learnt, Mirror, VALIDITY};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const IT4: &str = "10.0.2.10";
const OT4: &str = "10.0.1.20";
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const STRANGER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];

/// Bridge port 1 is `lo` (where test frames arrive by default), port 2 the test interface.
fn view(lo: u32, other: u32, other_state: u8, other_mtu: u32) -> BridgeView {
    let port = |name: &str, ifindex, port_no, state, mtu| BridgePort {
        name: name.into(),
        ifindex,
        port_no,
        state,
        mtu,
        restricted: false,
    };
    let learnt = |mac, port_no, local| Learnt {
        mac,
        port_no,
        local,
    };
    BridgeView {
        ports: vec![
            port("lo", lo, 1, 3, 1500),
            port("other", other, 2, other_state, other_mtu),
        ],
        fdb: vec![
            learnt(MAC_SRC, 1, false),
            learnt(MAC_DST, 2, false),
            learnt(GATEWAY_MAC, 1, true),
        ],
        blocker: None,
    }
}

fn with_macs(mut frame: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}

struct Lab {
    dp: Datapath,
    mirror: Mirror,
    lo: u32,
    other: u32,
}

impl Lab {
    fn sync(&mut self, view: Option<&BridgeView>) -> FastPathStatus {
        let attached = [self.lo, self.other];
        self.dp
            .sync_fast_path(&mut self.mirror, view, &attached)
            .expect("synchronising the fast path")
    }

    fn action(&mut self, frame: &[u8]) -> (u32, Reason) {
        let d = self
            .dp
            .run_frame_on(frame, Some(self.lo))
            .expect("running a frame");
        (d.action, d.reason)
    }

    fn path(&self, index: u32) -> u64 {
        self.dp.path_stats().expect("reading PATH_STATS")[index as usize]
    }

    /// The forwarder's memo of frames from `src` to `dst` arriving on `lo`, on whichever CPU
    /// the test ran.
    fn memo(&self, dst: [u8; 6], src: [u8; 6]) -> Option<ForwardMemo> {
        let memos = self.dp.forward_memos().expect("reading FORWARD_MEMO");
        let (dst, src) = (mac_word(dst), mac_word(src));
        memos
            .into_iter()
            .filter(|m| (m.dst, m.src, m.ingress) == (dst, src, self.lo))
            .max_by_key(|m| m.generation)
    }

    fn generation(&self) -> u64 {
        self.dp.fdb_generation().expect("reading FDB_GENERATION")
    }
}

#[test]
fn fast_path_takes_exactly_what_the_bridge_would_forward_to_a_known_port() {
    let port = TestInterface::create("otfwfp3");
    let lo = otfw::datapath::ifindex("lo").expect("ifindex of lo");
    let mut lab = Lab {
        dp: load(),
        mirror: Mirror::default(),
        lo,
        other: port.ifindex,
    };
    let policy = Policy::new()
        .zone("it", &["10.0.2.0/24"])
        .zone("ot", &["10.0.1.0/24"])
        .conduit(Conduit::new("tcp", "it", "ot").tcp(502))
        .compile();
    lab.dp.install(&policy).expect("installing the policy");
    lab.dp.enable_trace().expect("tracing");
    let (c, s) = (ip(IT4, OT4), ip(OT4, IT4));
    let allowed = c.syn(40000, 502);

    // Before any synchronisation the fast path is off.
    assert_eq!(lab.action(&allowed), (XDP_PASS, Reason::None));

    let on = lab.sync(Some(&view(lo, port.ifindex, 3, 1500)));
    assert_eq!(
        on,
        FastPathStatus::On {
            ports: vec!["lo".into(), "other".into()],
            addresses: 3
        }
    );
    let redirected = lab.path(PATH_REDIRECTED);
    let learns = lab.path(PATH_BRIDGE_LEARNS);
    assert_eq!(lab.action(&allowed), (XDP_REDIRECT, Reason::None));
    assert_eq!(lab.action(&c.ack(40000, 502)), (XDP_REDIRECT, Reason::None));
    assert_eq!(lab.path(PATH_REDIRECTED), redirected + 2);
    // The forwarder remembers the mirror's answer for the pair, under the mirror's generation.
    let generation = lab.generation();
    let memo = lab
        .memo(MAC_DST, MAC_SRC)
        .expect("a memo of the pair just forwarded");
    assert_eq!(
        (memo.generation, memo.egress, memo.max_frame),
        (generation, port.ifindex, 1514)
    );
    // What the policy denies is never forwarded.
    assert_eq!(
        lab.action(&s.syn(40000, 502)),
        (XDP_DROP, Reason::NoConduit)
    );
    // Group addresses, unknown destinations and the gateway's own address go to the bridge.
    let cases = [
        ("broadcast", [0xff; 6], MAC_SRC),
        ("multicast", [0x01, 0x80, 0xc2, 0, 0, 0], MAC_SRC),
        ("unknown destination", STRANGER_MAC, MAC_SRC),
        ("the gateway's own address", GATEWAY_MAC, MAC_SRC),
        // Learnt on the port the frame arrives on: the bridge would not send it back.
        ("destination on the ingress port", MAC_SRC, MAC_SRC),
    ];
    for (what, dst, src) in cases {
        assert_eq!(
            lab.action(&with_macs(c.ack(40000, 502), dst, src)),
            (XDP_PASS, Reason::None),
            "{what}"
        );
    }
    // VLAN-tagged frames stay on the bridge.
    assert_eq!(
        lab.action(&ip(IT4, OT4).vlan(10).syn(40001, 502)),
        (XDP_PASS, Reason::None)
    );
    // A source the bridge has not learnt goes to the bridge, so that it learns it.
    assert_eq!(
        lab.action(&with_macs(c.ack(40000, 502), MAC_DST, STRANGER_MAC)),
        (XDP_PASS, Reason::None)
    );
    assert_eq!(lab.path(PATH_BRIDGE_LEARNS), learns + 1);
    // A source learnt on another port has moved: the bridge must see it, and the mirror forgets
    // the old port at once, so frames to the address stop going there.
    assert_eq!(
        lab.action(&with_macs(s.ack(502, 40000), MAC_SRC, MAC_DST)),
        (XDP_PASS, Reason::None)
    );
    // The move made every memo stale (the one forwarding to the old port among them) ...
    assert!(lab.generation() > generation);
    assert_eq!(lab.action(&allowed), (XDP_PASS, Reason::None));
    // ... and a synchronisation that changes nothing leaves them valid.
    let unchanged = lab.generation();
    lab.sync(Some(&view(lo, port.ifindex, 3, 1500)));
    let rewritten = lab.generation();
    assert!(rewritten > unchanged, "the mirror was rewritten");
    lab.sync(Some(&view(lo, port.ifindex, 3, 1500)));
    assert_eq!(lab.generation(), rewritten, "nothing changed");
    // The synchronisations copied the bridge's view again.
    assert_eq!(lab.action(&allowed), (XDP_REDIRECT, Reason::None));

    // An egress port that is not forwarding (blocking, learning, disabled) never receives a
    // redirected frame.
    for state in [0, 1, 2, 4] {
        lab.sync(Some(&view(lo, port.ifindex, state, 1500)));
        assert_eq!(
            lab.action(&allowed),
            (XDP_PASS, Reason::None),
            "state {state}"
        );
    }
    // Nor is a frame arriving on a port that is not forwarding ever redirected: the mirror
    // holds no address of that port, so the bridge sees the frame (and drops it).
    for state in [0, 1, 2, 4] {
        let mut ingress_not_forwarding = view(lo, port.ifindex, 3, 1500);
        ingress_not_forwarding.ports[0].state = state;
        lab.sync(Some(&ingress_not_forwarding));
        assert_eq!(
            lab.action(&allowed),
            (XDP_PASS, Reason::None),
            "ingress state {state}"
        );
    }
    lab.sync(Some(&view(lo, port.ifindex, 3, 1500)));
    assert_eq!(lab.action(&allowed), (XDP_REDIRECT, Reason::None));
    // A frame bigger than the egress port's MTU allows is the bridge's to drop.
    lab.sync(Some(&view(lo, port.ifindex, 3, 100)));
    let big = c.tcp(40000, 502, "PA", 1001, 1, &[0u8; 100]);
    assert!(big.len() > 114);
    assert_eq!(lab.action(&big), (XDP_PASS, Reason::None));
    assert_eq!(lab.action(&allowed), (XDP_REDIRECT, Reason::None));

    // A bridge with something the mirror does not reproduce gets no fast path at all.
    let mut filtering = view(lo, port.ifindex, 3, 1500);
    filtering.blocker = Some("the bridge filters VLANs".into());
    assert!(matches!(lab.sync(Some(&filtering)), FastPathStatus::Off(_)));
    assert_eq!(lab.action(&allowed), (XDP_PASS, Reason::None));
    assert!(matches!(lab.sync(None), FastPathStatus::Off(_)));
    assert_eq!(lab.action(&allowed), (XDP_PASS, Reason::None));

    // A controller that stops synchronising: the mirror expires and every frame goes to the
    // bridge again.
    lab.sync(Some(&view(lo, port.ifindex, 3, 1500)));
    assert_eq!(lab.action(&allowed), (XDP_REDIRECT, Reason::None));
    thread::sleep(VALIDITY + Duration::from_millis(200));
    assert_eq!(lab.action(&allowed), (XDP_PASS, Reason::None));
}

#[test]
fn inspected_frames_take_the_fast_path_once_the_inspector_passes_them() {
    let port = TestInterface::create("otfwfp4");
    let lo = otfw::datapath::ifindex("lo").expect("ifindex of lo");
    let mut lab = Lab {
        dp: modbus_common::datapath(&modbus_common::policy("functions: [read]", "")),
        mirror: Mirror::default(),
        lo,
        other: port.ifindex,
    };
    let mut conn = modbus_common::Conn::new(40000, 502);
    conn.open(&mut lab.dp);
    lab.sync(Some(&view(lo, port.ifindex, 3, 1500)));
    let read = conn.send(&mut lab.dp, &modbus_common::read(3, 0, 1));
    assert_eq!((read.action, read.reason), (XDP_REDIRECT, Reason::None));
    let write = conn.send(&mut lab.dp, &modbus_common::write_single_register(0, 1));
    assert_eq!(
        write.action, XDP_DROP,
        "a refused request is never forwarded"
    );
}
