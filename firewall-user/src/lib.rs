pub mod cli;
pub mod policy;
