//! A structure-aware packet fuzzer for the datapath's TCP inspectors: seeded conversations of
//! Modbus/TCP and EtherNet/IP requests (from the shared captures and generated), mutated at the
//! field, segment and header level, played through the real XDP program, with what reached
//! the server judged by an independent decoder. `packet_fuzz.rs` runs the campaigns.

pub mod generate;
pub mod oracle;
pub mod play;
pub mod receiver;
pub mod rng;
pub mod schedule;
