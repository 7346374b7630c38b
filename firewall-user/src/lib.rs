//! otfw: the user-space controller of the OT segmentation firewall.
//!
//! `unsafe` appears only where a kernel interface has no safe wrapper (the bpf syscall, ioctls,
//! signals, rlimits), each block with a `SAFETY:` note saying why it is sound.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod bench;
pub mod capture;
pub mod cli;
pub mod controller;
pub mod datapath;
pub mod decode;
pub mod events;
pub mod inventory;
pub mod lockdown;
pub mod metrics;
pub mod observe;
pub mod offload;
pub mod policy;
pub mod private;
pub mod replay;
pub mod rollout;
pub mod status;
