//! Shared setup for the end-to-end tests.

use std::net::{IpAddr, SocketAddr};

use otfw_tests::{HostSpec, Lab, LabOptions};

/// The prefix of every lab these tests build: namespaces and ports `otfwt-*`, bridge
/// `br-otfwt`.
pub const PREFIX: &str = "otfwt";

/// Two hosts on one IPv4 and one IPv6 subnet (documentation ranges: they exist only inside
/// the lab's namespaces).
pub fn two_hosts() -> Vec<HostSpec> {
    vec![
        HostSpec::new("a", "198.51.100.1/24")
            .ipv6("2001:db8:100::1/64")
            .mac("02:00:00:00:00:0a"),
        HostSpec::new("b", "198.51.100.2/24").ipv6("2001:db8:100::2/64"),
    ]
}

/// A lab of `hosts` whose traffic helpers use this build's `otfw-peer`. Fails the test with
/// the reason (not root, no bpffs, ...) when the lab cannot be built.
pub fn lab(hosts: &[HostSpec]) -> Lab {
    let options = LabOptions::new(PREFIX).peer_binary(env!("CARGO_BIN_EXE_otfw-peer"));
    Lab::with_options(options, hosts).unwrap_or_else(|error| panic!("lab: {error:#}"))
}

pub fn v4(lab: &Lab, host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(lab.host(host).ipv4_addr()), port)
}

pub fn v6(lab: &Lab, host: &str, port: u16) -> SocketAddr {
    let addr = lab
        .host(host)
        .ipv6_addr()
        .expect("host has an IPv6 address");
    SocketAddr::new(IpAddr::V6(addr), port)
}

/// Namespaces and root links that carry the test prefix.
pub fn leftovers() -> Vec<String> {
    let owned = format!("{PREFIX}-");
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let mut found: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&owned))
        .map(|name| format!("netns {name}"))
        .collect();
    for entry in std::fs::read_dir("/sys/class/net").expect("list /sys/class/net") {
        let name = entry
            .expect("link entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with(&owned) || name == format!("br-{PREFIX}") {
            found.push(format!("link {name}"));
        }
    }
    found
}
