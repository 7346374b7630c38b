//! Policies: YAML source -> validated model -> compiled map contents. Pure: no kernel needed.

pub mod compiled;
pub mod enip;
pub mod model;
pub mod modbus;
pub mod source;
pub mod validate;
pub mod validated;
