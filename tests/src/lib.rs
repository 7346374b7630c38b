//! The end-to-end lab for otfw: network namespaces joined by a Linux bridge in the root
//! namespace, real traffic between them, and cleanup that also runs when a test panics.
//!
//! ```text
//!   netns <prefix>-a          netns <prefix>-b
//!   eth0 192.0.2.1/24         eth0 192.0.2.2/24
//!     |  (veth)                 |  (veth)
//!   <prefix>-a ---- br-<prefix> ---- <prefix>-b      (root namespace: bridge and ports)
//! ```
//!
//! `otfw run` attaches its XDP program to the bridge ports (the host-side veth ends), so
//! every frame between two hosts crosses the firewall once, on ingress of the sender's port.
//!
//! Used by the end-to-end tests (`tests/e2e`) and by `cargo xtask demo`. Everything here
//! needs root; [`require_root_and_kernel`] says clearly what is missing.

mod address;
mod binaries;
mod enip;
mod lab;
mod modbus;
mod netns;
mod peer;
mod preflight;
mod process;
mod prometheus;

pub use address::Cidr;
pub use binaries::{repo_root, target_binary, venv_python};
pub use enip::{
    initial as enip_initial, require_enip_peers, CipReply, EnipClient, EnipOp, EnipResult,
    EnipServer, EnipStep,
};
pub use lab::{HostSpec, Lab, LabHost, LabOptions};
pub use modbus::{
    initial as modbus_initial, require_modbus_peers, Datastore, ModbusClient, ModbusOp,
    ModbusResult, ModbusServer, Table,
};
pub use peer::{HoldSummary, PingOutcome, TcpOutcome, UdpOutcome};
pub use preflight::{bpffs_mounted, require_root_and_kernel, BPFFS};
pub use process::{LabProcess, ProcessOutput};
pub use prometheus::{free_loopback_addr, http_get, scrape, PrometheusServer};
