//! The decoders of what the datapath hands to user space: ring-buffer records (`EVENTS`,
//! `MODBUS_EVENTS`, `ENIP_EVENTS`, the frames of `OBSERVED` and `LEARN_FRAMES` into an
//! inventory) and the per-decision trace (`TRACE` with `MODBUS_ADUS` or
//! `ENIP_TRACE`) that `otfw replay` reads. The records are plain data, valid for any bit
//! pattern: every id, code and count in them must be named or reported as unknown, never
//! trusted as an index. The first byte picks the decoder, the rest is the record.

#![no_main]

use std::mem::size_of;
use std::sync::OnceLock;

use firewall_common::{
    counters::Trace, enip::EnipEvent, enip::EnipTrace, event::DatapathEvent, modbus::AduTrace,
    modbus::ModbusEvent,
};
use libfuzzer_sys::fuzz_target;
use otfw::datapath::{read_record, traced_adus, traced_cip_requests, EnipDenied, ModbusDenied};
use otfw::events::DatapathEvents;
use otfw::policy::{check_str, LoadedPolicy};

/// The generation the records are decoded against: the example policy as epoch 1.
const EPOCH: u32 = 1;
const PORT: u32 = 3;

fn policy() -> &'static LoadedPolicy {
    static POLICY: OnceLock<LoadedPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let text = include_str!("../../policies/example.yaml");
        check_str("example.yaml", text)
            .0
            .expect("policies/example.yaml loads")
    })
}

fn events() -> &'static DatapathEvents {
    static EVENTS: OnceLock<DatapathEvents> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let mut events = DatapathEvents::default();
        events.generation(EPOCH, &policy().compiled);
        events.port(PORT, "port-1");
        events
    })
}

fn json(value: &impl serde::Serialize) {
    serde_json::to_string(value).expect("events serialise");
}

fn traced<T: aya::Pod>(record: &[u8]) -> Option<(Trace, T)> {
    let trace: Trace = read_record(record)?;
    Some((trace, read_record(&record[size_of::<Trace>()..])?))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, record)) = data.split_first() else {
        return;
    };
    let names = Some(&policy().compiled.names);
    match which % 6 {
        0 => {
            let event = events().decode(record);
            if record.len() < size_of::<DatapathEvent>() {
                assert!(event.is_none());
            }
            if let Some(event) = event {
                json(&event);
            }
        }
        1 => {
            let denied = ModbusDenied::decode(record, names);
            assert_eq!(denied.is_some(), record.len() >= size_of::<ModbusEvent>());
            assert_eq!(
                denied.is_some(),
                ModbusDenied::decode(record, None).is_some()
            );
            if let Some(denied) = denied {
                json(&denied);
            }
        }
        2 => {
            let denied = EnipDenied::decode(record, names);
            assert_eq!(denied.is_some(), record.len() >= size_of::<EnipEvent>());
            assert_eq!(denied.is_some(), EnipDenied::decode(record, None).is_some());
            if let Some(denied) = denied {
                json(&denied);
            }
        }
        3 => {
            if let Some((trace, recorded)) = traced::<AduTrace>(record) {
                let adus = traced_adus(&trace, &recorded);
                assert!(adus.len() <= (trace.adus as usize).min(recorded.adus.len()));
                json(&adus);
            }
        }
        5 => {
            if let Some(observed) = otfw::inventory::live::decode(record) {
                assert!(observed.frame.len() <= record.len());
                let mut observer = otfw::inventory::observe::Observer::default();
                let clock = otfw::inventory::live::Clock::now();
                otfw::inventory::live::observe(&mut observer, &observed, &clock);
            }
        }
        _ => {
            if let Some((trace, recorded)) = traced::<EnipTrace>(record) {
                let requests = traced_cip_requests(&trace, &recorded);
                assert!(requests.len() <= (trace.records as usize).min(recorded.records.len()));
                json(&requests);
            }
        }
    }
});
