//! Operator-facing events as JSON lines on stdout (journald and SIEM friendly); human logs go
//! to stderr. Every line carries `timestamp` and `event`; the other fields depend on the event.

use std::{io::Write as _, time::SystemTime};

use serde::Serialize;

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A policy generation is in force.
    PolicyLoaded {
        file: &'a str,
        epoch: u32,
        zones: usize,
        conduits: usize,
    },
    /// A policy file was refused; the generation in force (if any) stays.
    PolicyRejected {
        file: &'a str,
        errors: &'a [String],
        /// The epoch still in force, if any.
        kept_epoch: Option<u32>,
    },
    /// The program is attached to a bridge port.
    Attached {
        port: &'a str,
        ifindex: u32,
        mode: String,
    },
    /// Enforcement is running on every port.
    Ready { ports: usize },
    /// The program was detached from a port (shutdown).
    Detached { port: &'a str },
    /// A Modbus request was refused (or, in monitor mode, would have been): the flow, the
    /// request and the reason.
    ModbusDenied(crate::datapath::ModbusDenied),
    /// Denied-request events the ring buffer had no room for, since the controller started.
    ModbusEventsLost { total: u64 },
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

pub fn emit(event: &Event) {
    let line = Line {
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        event,
    };
    let mut out = std::io::stdout().lock();
    // Events must not take the controller down: a closed stdout only loses the line.
    if serde_json::to_writer(&mut out, &line).is_ok() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}
