//! otfw: the user-space controller of the OT segmentation firewall.

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
pub mod replay;
pub mod rollout;
pub mod status;
