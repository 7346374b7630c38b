//! otfw: the user-space controller of the OT segmentation firewall.

pub mod datapath;
pub mod policy;
