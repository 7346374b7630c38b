//! Corpus (root, tshark): every capture in ../shared/pcaps/modbus replayed through the datapath
//! under a read-only policy, with tshark (the Modbus decoder forced on the capture's ports) as
//! the independent oracle. No passed frame may carry a request outside the `read` preset;
//! frames carrying only reads pass unless a framing or sanity reason drops them. Prints the
//! per-capture tally.

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/modbus_oracle.rs"]
mod modbus_oracle;

use corpus::Seen;
use modbus_oracle::{is_read, read_rules, requests, Request, PORTS};

/// Reasons that may drop a frame carrying only reads: the framing could not be established
/// or the bytes are not sane Modbus (as the inspector frames them), or the direction was
/// blocked by an earlier denial on the same connection.
const FRAMING_OR_SANITY: [&str; 12] = [
    "modbus_unframed",
    "modbus_out_of_order",
    "modbus_retransmission",
    "modbus_trailing_bytes",
    "modbus_bad_length",
    "modbus_bad_protocol_id",
    "modbus_bad_quantity",
    "modbus_bad_value",
    "modbus_too_many_adus",
    "modbus_blocked",
    "tcp_bad_flags",
    "not_tracked",
];

#[test]
fn read_only_corpus() {
    corpus::replay(
        "modbus",
        46,
        &corpus::policy(&read_rules()),
        |frame| corpus::on_ports(frame, &PORTS, &[]),
        requests,
        |requests: &Vec<Request>, d| {
            if requests.is_empty() {
                return None;
            }
            let reads_only = requests.iter().all(is_read);
            let failure = if reads_only {
                (!d.passed() && !FRAMING_OR_SANITY.contains(&d.reason.name())).then(|| {
                    format!(
                        "reads only per tshark ({:?}) dropped as {}",
                        requests,
                        d.reason.name()
                    )
                })
            } else {
                d.passed()
                    .then(|| format!("passed with requests {:?} outside `read`", requests))
            };
            Some(Seen {
                reads_only,
                failure,
            })
        },
    );
}
