//! Passive asset inventory: what the gateway learns about the devices behind it from traffic
//! that crosses it, never by sending anything. So far: device identities parsed from
//! responses (`identity`) and vendor names (`vendors`); the observation model, its state file
//! and `otfw inventory` / `otfw learn` build on them.

pub mod identity;
pub mod vendors;
