//! `otfw inventory` and `otfw learn` on a capture: frames -> assets, conversations and their
//! Modbus and EtherNet/IP uses (reassembled streams through the user-space decoders) -> the
//! report and the learned candidate policy. Whatever the capture holds, none of it may panic,
//! and the learned policy must pass `otfw check` (warnings allowed): `otfw learn` promises a
//! policy that allows exactly what was seen.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otfw::capture;
use otfw::inventory::learn::Learn;
use otfw::inventory::observe::Observer;
use otfw::inventory::report;
use otfw::inventory::vendors::MacVendors;
use otfw::inventory::zones::Zones;
use otfw::policy::check_str;

fuzz_target!(|data: &[u8]| {
    let Ok(frames) = capture::read_from("fuzz.pcap", data) else {
        return;
    };
    let mut observer = Observer::default();
    observer.capture(&frames);
    let inventory = observer.inventory;
    let zones = Zones::propose(inventory.assets.keys().copied());
    let records = report::records(&inventory, &zones, &MacVendors::default());
    for record in &records {
        let _ = report::describe(record);
    }
    let _ = report::conversations(&inventory, &zones);
    let learned = Learn {
        inventory: &inventory,
        policy: None,
        sources: vec!["fuzz.pcap".to_string()],
    }
    .policy_yaml();
    let (loaded, diagnostics) = check_str("learned.yaml", &learned);
    assert!(
        loaded.is_some(),
        "the learned policy does not pass otfw check: {diagnostics:?}\n{learned}"
    );
});
