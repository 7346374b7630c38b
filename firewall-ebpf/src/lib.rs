#![no_std]
// This library target exists only so that firewall-user can name this crate as a
// build-dependency: cargo then rebuilds firewall-user when the XDP program changes.
