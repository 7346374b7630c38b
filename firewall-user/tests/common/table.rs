//! Table-driven datapath tests in the shape of Cilium's bpf tests: each case is a policy
//! (setup), frames in order (packet) and the decision expected for each (check). Counter
//! expectations are derived from the rows: after each generation the conduit traffic, after the
//! table the reason x verdict totals and the flow-table events.

use std::{collections::HashMap, fmt, thread, time::Duration};

use firewall_common::{
    counters::{
        Traffic, FLOW_ADOPTED, FLOW_CLOSED, FLOW_CREATED, FLOW_EXPIRED, FLOW_PROMOTED,
        FLOW_REVALIDATED, FLOW_REVOKED, FLOW_STATS_LEN, VERDICT_COUNT, VERDICT_DROP,
        VERDICT_MONITOR, VERDICT_NAMES, VERDICT_PASS, VERDICT_RESET,
    },
    reason::{Reason, REASON_COUNT},
};
use otfw::datapath::{Datapath, Decision};

use super::{policy::Policy, reset::check_reset};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The decision expected for one frame. The conduit is named as in the policy (pseudo conduits
/// as `PSEUDO_CONDUIT_NAMES`).
#[derive(Clone, Debug)]
pub struct Expect {
    action: u32,
    verdict: u32,
    reason: Reason,
    conduit: &'static str,
    /// Flow-table events (`FLOW_*` indexes) the frame causes, in order.
    flows: Vec<u32>,
}

pub const NONE: &str = "(none)";
pub const DEFAULT: &str = "(default)";
pub const INTRA_ZONE: &str = "(intra-zone)";
pub const UNZONED: &str = "(unzoned)";

fn expect(action: u32, verdict: u32, reason: Reason, conduit: &'static str) -> Expect {
    Expect {
        action,
        verdict,
        reason,
        conduit,
        flows: vec![],
    }
}

pub fn pass(conduit: &'static str) -> Expect {
    expect(XDP_PASS, VERDICT_PASS, Reason::None, conduit)
}

pub fn drop(reason: Reason, conduit: &'static str) -> Expect {
    expect(XDP_DROP, VERDICT_DROP, reason, conduit)
}

/// Would have been dropped; passed because the deciding conduit (or default) monitors.
pub fn monitor(reason: Reason, conduit: &'static str) -> Expect {
    expect(XDP_PASS, VERDICT_MONITOR, reason, conduit)
}

/// Answered with a TCP reset (the frame out is checked by `check_reset`).
pub fn reset(reason: Reason, conduit: &'static str) -> Expect {
    expect(XDP_TX, VERDICT_RESET, reason, conduit)
}

impl Expect {
    pub fn creates(mut self) -> Expect {
        self.flows.push(FLOW_CREATED);
        self
    }
    pub fn adopts(mut self) -> Expect {
        self.flows.push(FLOW_ADOPTED);
        self
    }
    pub fn expires(mut self) -> Expect {
        self.flows.push(FLOW_EXPIRED);
        self
    }
    pub fn revokes(mut self) -> Expect {
        self.flows.push(FLOW_REVOKED);
        self
    }
    pub fn revalidates(mut self) -> Expect {
        self.flows.push(FLOW_REVALIDATED);
        self
    }
    /// Forgets its flow: a reset, or a flow now decided by a default.
    pub fn closes(mut self) -> Expect {
        self.flows.push(FLOW_CLOSED);
        self
    }
    /// The responder's first answer: the flow moves to the established table. Checked in a
    /// table only if one of its rows says so (the tables written before the two flow tables
    /// leave promotions out).
    #[allow(dead_code)] // not every test binary that shares this module uses it
    pub fn promotes(mut self) -> Expect {
        self.flows.push(FLOW_PROMOTED);
        self
    }
}

pub enum Step {
    Frame {
        frame: Vec<u8>,
        ingress_ifindex: Option<u32>,
        expect: Expect,
    },
    /// Installs another generation mid-case (flows are kept).
    Install(Policy),
    /// Lets flows idle out. Bounded; only the expiry test uses it.
    Sleep(Duration),
}

/// A frame arriving on the loopback device (what BPF_PROG_TEST_RUN uses without a context).
pub fn frame(frame: Vec<u8>, expect: Expect) -> Step {
    Step::Frame {
        frame,
        ingress_ifindex: None,
        expect,
    }
}

/// A frame arriving on the interface with `ifindex`.
pub fn frame_on(ifindex: u32, frame: Vec<u8>, expect: Expect) -> Step {
    Step::Frame {
        frame,
        ingress_ifindex: Some(ifindex),
        expect,
    }
}

pub struct Case {
    pub name: &'static str,
    /// Installed before the first step; `None` runs the steps without any policy published
    /// (only possible before the table's first install).
    pub policy: Option<Policy>,
    pub steps: Vec<Step>,
}

pub fn case(name: &'static str, policy: &Policy, steps: Vec<Step>) -> Case {
    Case {
        name,
        policy: Some(policy.clone()),
        steps,
    }
}

/// What the rows imply for the counters of the whole table.
struct Totals {
    reasons: Vec<[u64; VERDICT_COUNT as usize]>,
    flows: [u64; FLOW_STATS_LEN as usize],
    /// Some row expects promotions: count them (`Expect::promotes`).
    promotions_checked: bool,
}

/// Conduit traffic implied by the rows of the generation in force: `(conduit, verdict)`.
type ConduitTotals = HashMap<(u16, u32), Traffic>;

struct Runner<'a> {
    dp: &'a mut Datapath,
    failures: Vec<String>,
    totals: Totals,
    conduits: ConduitTotals,
    /// Conduit names of the generation in force, and its epoch.
    names: Vec<String>,
    epoch: u32,
}

struct Mismatch<'a>(&'a Decision, &'a Expect, u16);

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Mismatch(d, e, conduit) = self;
        write!(
            f,
            "expected action {} {} {} conduit {} ({}), got action {} {} {} conduit {}",
            e.action,
            VERDICT_NAMES[e.verdict as usize],
            e.reason.name(),
            e.conduit,
            conduit,
            d.action,
            VERDICT_NAMES.get(d.verdict as usize).unwrap_or(&"?"),
            d.reason.name(),
            d.conduit_id,
        )
    }
}

impl Runner<'_> {
    fn install(&mut self, policy: &Policy) {
        let compiled = policy.compile();
        let generation = self
            .dp
            .install(&compiled)
            .expect("installing a test policy");
        if generation.epoch != self.epoch + 1 {
            self.failures.push(format!(
                "installing after epoch {} published epoch {}",
                self.epoch, generation.epoch
            ));
        }
        self.epoch = generation.epoch;
        self.names = compiled.names.conduits.clone();
        self.dp.enable_trace().expect("enabling the decision trace");
    }

    fn conduit_id(&self, name: &str) -> Option<u16> {
        if name == NONE {
            return Some(0);
        }
        self.names.iter().position(|n| n == name).map(|i| i as u16)
    }

    fn run_frame(
        &mut self,
        case: &str,
        step: usize,
        frame: &[u8],
        ingress: Option<u32>,
        e: &Expect,
    ) {
        let at = format!("{case} (step {step})");
        let Some(conduit) = self.conduit_id(e.conduit) else {
            self.failures
                .push(format!("{at}: the policy has no conduit {}", e.conduit));
            return;
        };
        let d = match self.dp.run_frame_on(frame, ingress) {
            Ok(d) => d,
            Err(err) => {
                self.failures
                    .push(format!("{at}: running the frame failed: {err:#}"));
                return;
            }
        };
        if d.action != e.action
            || u32::from(d.verdict) != e.verdict
            || d.reason != e.reason
            || d.conduit_id != conduit
        {
            self.failures
                .push(format!("{at}: {}", Mismatch(&d, e, conduit)));
        } else if d.epoch != self.epoch {
            self.failures.push(format!(
                "{at}: decided under epoch {}, expected {}",
                d.epoch, self.epoch
            ));
        } else if e.action == XDP_TX {
            if let Err(msg) = check_reset(frame, &d.frame_out) {
                self.failures.push(format!("{at}: bad reset: {msg}"));
            }
        }
        self.totals.reasons[e.reason as usize][e.verdict as usize] += 1;
        for &event in &e.flows {
            self.totals.flows[event as usize] += 1;
            self.totals.promotions_checked |= event == FLOW_PROMOTED;
        }
        let t = self.conduits.entry((conduit, e.verdict)).or_default();
        t.packets += 1;
        t.bytes += frame.len() as u64;
    }

    /// Compares the conduit traffic of the generation in force with what its rows imply, then
    /// starts counting afresh.
    fn check_conduits(&mut self, case: &str) {
        let expected = std::mem::take(&mut self.conduits);
        if self.epoch == 0 {
            return; // No generation: nothing to name the counters by.
        }
        let traffic = match self.dp.conduit_traffic() {
            Ok(t) => t,
            Err(err) => {
                self.failures
                    .push(format!("{case}: reading conduit traffic: {err:#}"));
                return;
            }
        };
        for (id, c) in traffic.iter().enumerate() {
            for verdict in 0..VERDICT_COUNT {
                let want = expected
                    .get(&(id as u16, verdict))
                    .copied()
                    .unwrap_or_default();
                let got = c.by_verdict[verdict as usize];
                if want != got {
                    self.failures.push(format!(
                        "{case}: conduit {} {}: expected {} packets / {} bytes, counted {} / {}",
                        c.conduit,
                        VERDICT_NAMES[verdict as usize],
                        want.packets,
                        want.bytes,
                        got.packets,
                        got.bytes,
                    ));
                }
            }
        }
    }

    fn check_totals(&mut self) {
        let counters = match self.dp.counters() {
            Ok(c) => c,
            Err(err) => {
                self.failures.push(format!("reading counters: {err:#}"));
                return;
            }
        };
        for (reason, (want, got)) in self
            .totals
            .reasons
            .iter()
            .zip(&counters.reasons)
            .enumerate()
        {
            if want != got {
                self.failures.push(format!(
                    "reason {}: expected [pass, drop, monitor, reset] = {want:?}, counted {got:?}",
                    Reason::NAMES[reason]
                ));
            }
        }
        let mut counted = counters.flows;
        if !self.totals.promotions_checked {
            counted[FLOW_PROMOTED as usize] = 0;
        }
        if self.totals.flows != counted {
            self.failures.push(format!(
                "flow events {:?}: expected {:?}, counted {:?}",
                firewall_common::counters::FLOW_STAT_NAMES,
                self.totals.flows,
                counted
            ));
        }
    }
}

/// Loads the XDP object; a missing privilege or kernel feature is a failure, never a skip.
pub fn load() -> Datapath {
    Datapath::load().unwrap_or_else(|e| {
        panic!(
            "the datapath tests need root and a kernel with BPF and XDP (BPF_PROG_TEST_RUN); \
             loading the program failed: {e:#}"
        )
    })
}

/// Runs every case on `dp` (flows are cleared between cases) and fails with every mismatch,
/// each naming its case.
pub fn run(dp: &mut Datapath, cases: Vec<Case>) {
    let mut runner = Runner {
        dp,
        failures: Vec::new(),
        totals: Totals {
            reasons: vec![[0; VERDICT_COUNT as usize]; REASON_COUNT as usize],
            flows: [0; FLOW_STATS_LEN as usize],
            promotions_checked: false,
        },
        conduits: HashMap::new(),
        names: vec![NONE.into()],
        epoch: 0,
    };
    for case in cases {
        runner.dp.clear_flows().expect("clearing the flow table");
        if let Some(policy) = &case.policy {
            runner.install(policy);
        } else {
            assert_eq!(
                runner.epoch, 0,
                "{}: a case without policy must come first",
                case.name
            );
            runner
                .dp
                .enable_trace()
                .expect("enabling the decision trace");
        }
        for (i, step) in case.steps.into_iter().enumerate() {
            match step {
                Step::Frame {
                    frame,
                    ingress_ifindex,
                    expect,
                } => runner.run_frame(case.name, i, &frame, ingress_ifindex, &expect),
                Step::Install(policy) => {
                    runner.check_conduits(case.name);
                    runner.install(&policy);
                }
                Step::Sleep(d) => thread::sleep(d),
            }
        }
        runner.check_conduits(case.name);
    }
    runner.check_totals();
    if !runner.failures.is_empty() {
        panic!(
            "{} mismatches:\n{}",
            runner.failures.len(),
            runner.failures.join("\n")
        );
    }
}
