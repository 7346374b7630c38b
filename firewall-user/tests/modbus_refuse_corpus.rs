//! Corpus with `on_deny: refuse` (root, tshark): every capture in ../shared/pcaps/modbus
//! replayed by `otfw replay` under the read-only policy refusing in-band, checked by the driver
//! in `common/refuse_corpus.rs` with tshark's Modbus decoder as the oracle. A refused request
//! carries the unassigned function code 60. Prints the per-capture tally.

#[path = "common/corpus.rs"]
#[allow(dead_code)] // the policy builder and the capture list are used here
mod corpus;
#[path = "common/modbus_oracle.rs"]
mod modbus_oracle;
#[path = "common/refuse_corpus.rs"]
mod refuse_corpus;

use std::{collections::HashMap, path::Path};

use modbus_oracle::{is_read, read_rules, requests};
use otfw::policy::modbus::REFUSE_FUNCTION;
use refuse_corpus::{Protocol, Requests};
use serde_json::Value;

/// Denials `on_deny: refuse` answers in-band: never a drop.
const REFUSABLE: [&str; 6] = [
    "modbus_function_denied",
    "modbus_unit_denied",
    "modbus_sub_function_denied",
    "modbus_address_denied",
    "modbus_bad_quantity",
    "modbus_bad_value",
];

fn decoded(path: &Path) -> HashMap<usize, Requests> {
    requests(path)
        .into_iter()
        .filter(|(_, q)| !q.is_empty())
        .map(|(number, q)| {
            let requests = Requests {
                reads_only: q.iter().all(is_read),
                neutralised: q.iter().filter(|q| q.0 == REFUSE_FUNCTION).count(),
                outside: q
                    .iter()
                    .filter(|q| q.0 != REFUSE_FUNCTION && !is_read(q))
                    .map(|q| format!("{q:?}"))
                    .collect(),
            };
            (number, requests)
        })
        .collect()
}

#[test]
fn read_only_corpus_refusing_in_band() {
    refuse_corpus::run(&Protocol {
        dir: "modbus",
        rules: read_rules(),
        reasons: &["modbus_"],
        blocked: "modbus_blocked",
        refused_answer: "modbus_refused_answer",
        refusable: |r: &Value| REFUSABLE.contains(&r["reason"].as_str().unwrap_or("")),
        records: "adus",
        refused: |a: &Value| a["direction"] == "request" && a["verdict"] == "refuse",
        requests: decoded,
    });
}
