//! Corpus with `on_deny: refuse` (root, tshark): every capture in ../shared/pcaps/enip
//! replayed by `otfw replay` under the read-only `enip` policy refusing in-band, checked by the
//! driver in `common/refuse_corpus.rs` with tshark's ENIP/CIP decoder as the oracle. A refused
//! request carries the reserved service 0x7F; the captured reply to it is replaced by the
//! target's error for that service. Prints the per-capture tally.
//!
//! Refused in-band are CIP requests of SendRRData and SendUnitData whose reply can be located:
//! top-level or in a Multiple Service Packet, through Unconnected Sends. A denied request that
//! cannot be refused so (a packet's entry inside a packet's entry) falls back to drop and ends
//! its connection (`enip_blocked` after it), and so does a refusal past the bounds of
//! `ENIP_REFUSALS_MAX` (a one-sided capture whose client pipelines more refused messages than
//! that without a reply); the tally names those causes.

#[path = "common/corpus.rs"]
#[allow(dead_code)] // the policy builder and the capture list are used here
mod corpus;
#[path = "common/enip_oracle.rs"]
mod enip_oracle;
#[path = "common/refuse_corpus.rs"]
mod refuse_corpus;

use std::{collections::HashMap, path::Path};

use enip_oracle::{oracle, READ_RULES};
use otfw::policy::enip::REFUSE_SERVICE;
use refuse_corpus::{Protocol, Requests};
use serde_json::Value;

fn decoded(path: &Path) -> HashMap<usize, Requests> {
    oracle(path)
        .into_iter()
        .filter(|(_, o)| !o.services.is_empty())
        .map(|(number, o)| {
            let outside = o.outside_read();
            let requests = Requests {
                reads_only: outside.is_empty(),
                neutralised: outside.iter().filter(|&&s| s == REFUSE_SERVICE).count(),
                outside: outside
                    .iter()
                    .filter(|&&s| s != REFUSE_SERVICE)
                    .map(|s| format!("0x{s:02x} (all: {:02x?})", o.services))
                    .collect(),
            };
            (number, requests)
        })
        .collect()
}

/// Whether the frame was denied for a CIP request `refuse` answers in-band: one of SendRRData
/// or SendUnitData, top-level or in a top-level Multiple Service Packet, denied by its service
/// or tag. (Requests routed by an Unconnected Send are refused too; the table tests of
/// enip_refuse.rs cover them, a record's depth does not tell them from a packet in a packet.)
fn refusable(record: &Value) -> bool {
    let Some(cip) = record["cip"].as_array() else {
        return false;
    };
    let top = cip
        .iter()
        .find(|q| q["kind"] == "cip" && q["depth"] == 0)
        .map(|q| q["service"].clone());
    cip.iter().any(|q| {
        q["kind"] == "cip"
            && matches!(
                q["command"].as_str(),
                Some("send_rr_data" | "send_unit_data")
            )
            && matches!(
                q["reason"].as_str(),
                Some("cip_service_denied" | "cip_tag_denied")
            )
            && (q["depth"] == 0
                || (q["depth"] == 1
                    && top.as_ref().is_some_and(|s| s == "multiple_service_packet")))
    })
}

#[test]
fn read_only_corpus_refusing_in_band() {
    refuse_corpus::run(&Protocol {
        dir: "enip",
        rules: READ_RULES.to_owned(),
        reasons: &["enip_", "cip_"],
        blocked: "enip_blocked",
        refused_answer: "enip_refused_answer",
        refusable,
        records: "cip",
        refused: |q: &Value| q["kind"] == "cip" && q["verdict"] == "refuse",
        requests: decoded,
    });
}
