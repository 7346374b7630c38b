//! Device identity parsed from answers that crossed the gateway: Modbus Read Device
//! Identification (function 43, MEI type 14) and EtherNet/IP ListIdentity replies. Nothing is
//! ever sent to a device to obtain them.

pub mod enip;
pub mod modbus;
