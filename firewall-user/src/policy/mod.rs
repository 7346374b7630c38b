//! Policies: YAML source -> validated model -> compiled map contents. Pure: no kernel needed.

pub mod compiled;
pub mod model;
pub mod source;
