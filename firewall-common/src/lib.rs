//! The ABI shared by the XDP program and the user-space controller.
//!
//! Every type here is `#[repr(C)]` without implicit padding: uninitialised padding bytes make map
//! lookups miss and can fail verification. Explicit `_pad` fields are always zero.
#![no_std]

pub mod conduit;
pub mod config;
pub mod counters;
pub mod enip;
pub mod event;
pub mod fastpath;
pub mod flow;
pub mod mem;
pub mod modbus;
pub mod observed;
pub mod reason;
pub mod stream;
pub mod zone;

#[cfg(feature = "user")]
pub mod user;

/// A policy generation lives in one of two slots. The controller fills the inactive slot
/// completely, then publishes it by writing a new epoch to `ACTIVE`; the datapath reads the epoch
/// once per packet and derives the slot from it, so a packet never mixes two policies.
pub const SLOTS: u32 = 2;

#[inline(always)]
pub const fn slot_of(epoch: u32) -> u32 {
    epoch & 1
}
