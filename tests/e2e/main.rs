//! End-to-end tests: real namespaces, a real bridge, real traffic. They need root and share
//! kernel state, so they run one at a time (`cargo xtask test` passes --test-threads=1; the
//! lab's per-prefix lock also serialises labs that would collide).

mod common;
mod controller;
mod enip;
mod evasion;
mod exhaustion;
mod failsecure;
mod fast_path;
mod firewall;
mod inventory;
mod lab;
mod live_inventory;
mod lockdown;
mod metrics;
mod modbus;
mod permissions;
mod policy_git;
mod privileges;
mod rollout;
