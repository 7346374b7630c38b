//! Corpus (root, tshark): every capture in ../shared/pcaps/enip replayed through the datapath
//! under a read-only `enip` policy, with tshark (the ENIP decoder forced on TCP/UDP 44818 and
//! UDP 2222) as the independent oracle. No passed frame may carry a CIP request outside the
//! `read` preset, embedded requests (Multiple Service Packet, Unconnected Send) included.
//! Prints the per-capture tally.

#[path = "common/corpus.rs"]
mod corpus;
#[path = "common/enip_oracle.rs"]
mod enip_oracle;

use corpus::Seen;
use enip_oracle::{oracle, Oracle, READ_RULES};

#[test]
fn read_only_corpus() {
    corpus::replay(
        "enip",
        44,
        &corpus::policy(READ_RULES),
        |frame| corpus::on_ports(frame, &[44818], &[44818, 2222]),
        oracle,
        |o: &Oracle, d| {
            if o.services.is_empty() {
                return None;
            }
            let outside = o.outside_read();
            let failure = (!outside.is_empty() && d.passed()).then(|| {
                format!(
                    "passed with CIP requests {outside:02x?} outside `read` (all: {:02x?}; \
                     inspector saw {:?})",
                    o.services, d.cip
                )
            });
            Some(Seen {
                reads_only: outside.is_empty(),
                failure,
            })
        },
    );
}
