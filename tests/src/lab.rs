//! The lab topology: one bridge in the root namespace, one namespace per host, each joined
//! to the bridge by a veth pair. Dropping the [`Lab`] removes all of it.
//!
//! Naming, for prefix `otfw` and host `plc`: namespace `otfw-plc`, bridge port (host-side
//! veth, root namespace) `otfw-plc`, the host's end `eth0` inside the namespace, bridge
//! `br-otfw`. Prefixes are lowercase letters and digits only, so `<prefix>-` names belong to
//! exactly one prefix and stale leftovers can be found by name.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::address::Cidr;
use crate::netns::{self, PrefixLock};
use crate::preflight::require_root_and_kernel;
use crate::process::{LabProcess, ProcessOutput, Registry};

/// Linux limits interface names to 15 bytes.
const IFNAME_MAX: usize = 15;
const PREFIX_MAX: usize = 10;
/// How long [`Lab::exec`] lets a command run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a lab waits for another lab with the same prefix to finish.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// A host to create: a name, an IPv4 address, optionally an IPv6 address and a MAC.
#[derive(Clone, Debug)]
pub struct HostSpec {
    pub name: String,
    /// e.g. `192.0.2.10/24`.
    pub ipv4: String,
    /// e.g. `2001:db8::10/64`.
    pub ipv6: Option<String>,
    /// e.g. `02:00:00:00:00:0a`; the kernel picks a random one otherwise.
    pub mac: Option<String>,
}

impl HostSpec {
    pub fn new(name: &str, ipv4: &str) -> Self {
        Self {
            name: name.to_string(),
            ipv4: ipv4.to_string(),
            ipv6: None,
            mac: None,
        }
    }

    pub fn ipv6(mut self, cidr: &str) -> Self {
        self.ipv6 = Some(cidr.to_string());
        self
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(mac.to_string());
        self
    }
}

/// Names and binaries a lab uses; `LabOptions::new(prefix)` gives the defaults.
#[derive(Clone, Debug)]
pub struct LabOptions {
    prefix: String,
    bridge: Option<String>,
    peer: Option<PathBuf>,
}

impl LabOptions {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            bridge: None,
            peer: None,
        }
    }

    /// The bridge's name instead of `br-<prefix>`. It must not exist yet, unless it is a
    /// crashed run's: the lab marks its bridge with the alias `otfw-lab:<prefix>`, and
    /// leftovers with that alias are removed like `br-<prefix>`.
    pub fn bridge(mut self, name: &str) -> Self {
        self.bridge = Some(name.to_string());
        self
    }

    /// The `otfw-peer` binary to run for traffic helpers, instead of looking for it next to
    /// the running executable. Integration tests of this crate pass
    /// `env!("CARGO_BIN_EXE_otfw-peer")`.
    pub fn peer_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.peer = Some(path.into());
        self
    }
}

/// A host of a running lab.
#[derive(Clone, Debug)]
pub struct LabHost {
    pub name: String,
    /// The host's network namespace.
    pub netns: String,
    /// The bridge port leading to the host (host-side veth, root namespace): where
    /// `otfw run` attaches.
    pub port: String,
    pub port_ifindex: u32,
    pub ipv4: Cidr,
    pub ipv6: Option<Cidr>,
    pub mac: Option<String>,
}

impl LabHost {
    pub fn ipv4_addr(&self) -> Ipv4Addr {
        match self.ipv4.addr {
            IpAddr::V4(addr) => addr,
            IpAddr::V6(_) => unreachable!("checked when the lab was built"),
        }
    }

    pub fn ipv6_addr(&self) -> Option<Ipv6Addr> {
        match self.ipv6?.addr {
            IpAddr::V6(addr) => Some(addr),
            IpAddr::V4(_) => unreachable!("checked when the lab was built"),
        }
    }
}

/// What this lab created, in creation order, so that teardown removes exactly that.
#[derive(Default)]
struct Created {
    bridge: Option<String>,
    netns: Vec<String>,
    ports: Vec<String>,
}

/// A running lab. Dropping it kills the processes it started and deletes its namespaces,
/// veths and bridge, also while unwinding from a panic.
pub struct Lab {
    prefix: String,
    bridge: String,
    hosts: Vec<LabHost>,
    peer: Option<PathBuf>,
    processes: Registry,
    created: Created,
    // Declared last: released only after teardown in drop.
    _lock: PrefixLock,
}

impl Lab {
    /// Builds a lab with default names: bridge `br-<prefix>`, namespaces and ports
    /// `<prefix>-<host>`.
    pub fn new(prefix: &str, hosts: &[HostSpec]) -> Result<Self> {
        Self::with_options(LabOptions::new(prefix), hosts)
    }

    pub fn with_options(options: LabOptions, hosts: &[HostSpec]) -> Result<Self> {
        require_root_and_kernel()?;
        let prefix = options.prefix;
        validate_prefix(&prefix)?;
        let bridge = options.bridge.unwrap_or_else(|| format!("br-{prefix}"));
        validate_ifname(&bridge, "bridge name")?;
        let planned = hosts
            .iter()
            .map(|spec| plan_host(&prefix, spec))
            .collect::<Result<Vec<_>>>()?;
        for (index, host) in planned.iter().enumerate() {
            if planned[..index].iter().any(|other| other.name == host.name) {
                bail!("host `{}` is listed twice", host.name);
            }
        }

        let lock = PrefixLock::acquire(&prefix, LOCK_WAIT)?;
        let removed = netns::remove_leftovers(&prefix)?;
        if !removed.is_empty() {
            eprintln!(
                "lab: removed leftovers of an earlier run: {}",
                removed.join(", ")
            );
        }
        if netns::link_exists(&bridge) {
            bail!(
                "a link named `{bridge}` exists and is not this lab's: choose another bridge name"
            );
        }

        let mut lab = Self {
            prefix,
            bridge,
            hosts: Vec::new(),
            peer: options.peer,
            processes: Registry::default(),
            created: Created::default(),
            _lock: lock,
        };
        // On error, dropping `lab` removes whatever was created so far.
        lab.create_bridge()?;
        for host in planned {
            lab.create_host(host)?;
        }
        Ok(lab)
    }

    fn create_bridge(&mut self) -> Result<()> {
        netns::disable_bridge_netfilter()?;
        let bridge = self.bridge.clone();
        // No STP: ports forward as soon as they are up. No multicast snooping: IPv6
        // neighbour discovery is flooded like on a plain switch.
        netns::ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        self.created.bridge = Some(bridge.clone());
        // Marks the bridge as this prefix's, so that a crashed run's bridge is found as a
        // leftover whatever its name.
        netns::ip(&[
            "link",
            "set",
            &bridge,
            "alias",
            &netns::bridge_alias(&self.prefix),
        ])?;
        // The root namespace takes no part in lab traffic: no IPv6 on the bridge, and no
        // ARP, since Linux would otherwise answer ARP on the bridge for any address of the
        // machine's own (a lab host with the machine's address would reach the root stack).
        netns::write_sysctl(&format!("net/ipv6/conf/{bridge}/disable_ipv6"), "1")?;
        netns::ip(&["link", "set", &bridge, "arp", "off", "up"])?;
        Ok(())
    }

    fn create_host(&mut self, host: LabHost) -> Result<()> {
        let ns = host.netns.as_str();
        netns::ip(&["netns", "add", ns])?;
        self.created.netns.push(ns.to_string());

        let mut veth = vec![
            "link", "add", &host.port, "type", "veth", "peer", "name", "eth0",
        ];
        if let Some(mac) = &host.mac {
            veth.extend(["address", mac.as_str()]);
        }
        veth.extend(["netns", ns]);
        netns::ip(&veth)?;
        self.created.ports.push(host.port.clone());

        // The port only switches frames; it sends nothing of its own (no IPv6 link-local
        // chatter that would show up in counters).
        netns::write_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", host.port), "1")?;
        netns::ip(&["link", "set", &host.port, "master", &self.bridge, "up"])?;

        netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        // Addresses usable at once, without duplicate address detection.
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.eth0.accept_dad=0",
            ],
        )?;
        // Checksums in software: veths otherwise hand over TCP/UDP segments with only the
        // pseudo-header sum (CHECKSUM_PARTIAL), so XDP and captures on the ports would see
        // invalid checksums, and a reply built from such a frame would carry a wrong one.
        // Without TX checksumming TSO is off too: segments on the wire are MTU-sized, as
        // from a real device.
        netns::run(
            "ip",
            &["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"],
        )?;
        let ipv4 = host.ipv4.to_string();
        netns::ip(&["-n", ns, "addr", "add", &ipv4, "dev", "eth0"])?;
        if let Some(ipv6) = host.ipv6 {
            let ipv6 = ipv6.to_string();
            netns::ip(&["-n", ns, "addr", "add", &ipv6, "dev", "eth0", "nodad"])?;
        }
        netns::ip(&["-n", ns, "link", "set", "eth0", "up"])?;

        let port_ifindex = netns::ifindex(&host.port)?;
        self.hosts.push(LabHost {
            port_ifindex,
            ..host
        });
        Ok(())
    }

    /// The lab's name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bridge's name (root namespace).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    /// The host called `name`; panics if the lab has none, which is a mistake in the test.
    pub fn host(&self, name: &str) -> &LabHost {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.hosts.iter().map(|host| host.name.as_str()).collect();
                panic!("the lab has no host `{name}` (hosts: {names:?})")
            })
    }

    /// All bridge ports, in host order: what `otfw run --iface` takes.
    pub fn ports(&self) -> Vec<&str> {
        self.hosts.iter().map(|host| host.port.as_str()).collect()
    }

    /// A command that runs `args[0] args[1..]` inside the host's namespace.
    pub fn command<S: AsRef<OsStr>>(&self, host: &str, args: &[S]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(host).netns])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs a command inside the host's namespace to completion (at most 30 s).
    pub fn exec<S: AsRef<OsStr>>(&self, host: &str, args: &[S]) -> Result<ProcessOutput> {
        self.exec_timeout(host, args, EXEC_TIMEOUT)
    }

    /// Runs a command inside the host's namespace; kills it and fails after `timeout`.
    pub fn exec_timeout<S: AsRef<OsStr>>(
        &self,
        host: &str,
        args: &[S],
        timeout: Duration,
    ) -> Result<ProcessOutput> {
        self.spawn(host, args)?.wait(timeout)
    }

    /// Starts a command inside the host's namespace. It is stopped when the returned
    /// process or the lab is dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, host: &str, args: &[S]) -> Result<LabProcess> {
        self.spawn_command(self.command(host, args))
    }

    /// Starts any command (e.g. `otfw run` in the root namespace) under the lab's care: it
    /// is stopped, at the latest, when the lab is dropped, before the lab's links go.
    pub fn spawn_command(&self, command: Command) -> Result<LabProcess> {
        LabProcess::spawn(command, self.processes.clone())
    }

    /// The `otfw-peer` binary for the traffic helpers.
    pub(crate) fn peer_binary(&self) -> Result<PathBuf> {
        match &self.peer {
            Some(path) => Ok(path.clone()),
            None => crate::binaries::target_binary("otfw-peer"),
        }
    }

    /// Removes leftovers of an earlier, crashed run with this prefix (namespaces
    /// `<prefix>-*` with the processes inside them, links `<prefix>-*`, `br-<prefix>` and
    /// bridges with the alias `otfw-lab:<prefix>`).
    /// Fails if a running lab holds the prefix. Returns what was removed.
    pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
        require_root_and_kernel()?;
        validate_prefix(prefix)?;
        let _lock = PrefixLock::acquire(prefix, Duration::ZERO)?;
        netns::remove_leftovers(prefix)
    }

    /// What exists of labs with this prefix (`netns NAME`, `link NAME`): namespaces
    /// `<prefix>-*`, links `<prefix>-*`, `br-<prefix>` and bridges with the alias
    /// `otfw-lab:<prefix>`. Empty once every lab with the prefix is gone.
    pub fn leftovers(prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let netns = netns::prefix_netns(prefix)?;
        let links = netns::prefix_links(prefix)?;
        Ok(netns
            .into_iter()
            .map(|name| format!("netns {name}"))
            .chain(links.into_iter().map(|name| format!("link {name}")))
            .collect())
    }

    /// Tears the lab down now, reporting what could not be removed (dropping does the same
    /// but can only print errors).
    pub fn close(mut self) -> Result<()> {
        let errors = self.teardown();
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("lab teardown left things behind: {}", errors.join("; "))
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        // Processes first: a namespace lives on while a process is inside it.
        self.processes.kill_all();
        let mut errors = Vec::new();
        // Deleting a port deletes its peer eth0 at once; namespace teardown in the kernel
        // is asynchronous, so ports are not left to it.
        for port in self.created.ports.drain(..).rev() {
            if netns::link_exists(&port) {
                if let Err(error) = netns::ip(&["link", "del", &port]) {
                    errors.push(format!("{error:#}"));
                }
            }
        }
        for ns in self.created.netns.drain(..).rev() {
            if let Err(error) = netns::ip(&["netns", "del", &ns]) {
                errors.push(format!("{error:#}"));
            }
        }
        if let Some(bridge) = self.created.bridge.take() {
            if let Err(error) = netns::ip(&["link", "del", &bridge]) {
                errors.push(format!("{error:#}"));
            }
        }
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for error in self.teardown() {
            eprintln!("lab `{}` teardown: {error}", self.prefix);
        }
    }
}

fn validate_prefix(prefix: &str) -> Result<()> {
    let valid = !prefix.is_empty()
        && prefix.len() <= PREFIX_MAX
        && prefix
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    if !valid {
        bail!(
            "lab prefix `{prefix}` must be 1-{PREFIX_MAX} lowercase letters or digits (names \
             `<prefix>-*` must belong to one prefix only)"
        );
    }
    Ok(())
}

fn validate_ifname(name: &str, what: &str) -> Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        bail!("{what} `{name}` must be 1-{IFNAME_MAX} bytes (Linux interface name limit)");
    }
    if name.contains(['/', ' ', ':']) {
        bail!("{what} `{name}` contains a character Linux does not allow in interface names");
    }
    Ok(())
}

/// Checks a host spec and derives its names; the port's ifindex is filled in on creation.
fn plan_host(prefix: &str, spec: &HostSpec) -> Result<LabHost> {
    let name = spec.name.as_str();
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if !valid_name {
        bail!("host name `{name}` must be lowercase letters, digits and dashes");
    }
    let port = format!("{prefix}-{name}");
    validate_ifname(&port, &format!("port name for host `{name}`"))
        .context("use a shorter prefix or host name")?;
    let ipv4: Cidr = spec
        .ipv4
        .parse()
        .with_context(|| format!("IPv4 address of host `{name}`"))?;
    if !ipv4.addr.is_ipv4() {
        bail!("host `{name}`: `{}` is not an IPv4 address", spec.ipv4);
    }
    let ipv6 = match &spec.ipv6 {
        None => None,
        Some(text) => {
            let cidr: Cidr = text
                .parse()
                .with_context(|| format!("IPv6 address of host `{name}`"))?;
            if !cidr.addr.is_ipv6() {
                bail!("host `{name}`: `{text}` is not an IPv6 address");
            }
            Some(cidr)
        }
    };
    Ok(LabHost {
        name: name.to_string(),
        netns: port.clone(),
        port,
        port_ifindex: 0,
        ipv4,
        ipv6,
        mac: spec.mac.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_names_from_prefix_and_host() {
        let host = plan_host(
            "otfw",
            &HostSpec::new("enterprise", "192.0.2.10/24").ipv6("2001:db8::10/64"),
        )
        .unwrap();
        assert_eq!(host.netns, "otfw-enterprise");
        assert_eq!(host.port, "otfw-enterprise");
        assert_eq!(host.ipv4_addr(), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(host.ipv6_addr(), Some("2001:db8::10".parse().unwrap()));
    }

    #[test]
    fn rejects_names_linux_or_cleanup_cannot_handle() {
        assert!(validate_prefix("otfw").is_ok());
        for prefix in ["", "otfw-t", "OTFW", "averylongprefix"] {
            assert!(
                validate_prefix(prefix).is_err(),
                "prefix {prefix:?} accepted"
            );
        }
        // otfw-engineering is 16 bytes, one over the interface name limit.
        assert!(plan_host("otfw", &HostSpec::new("engineering", "192.0.2.1/24")).is_err());
        assert!(plan_host("otfw", &HostSpec::new("Plc", "192.0.2.1/24")).is_err());
        assert!(plan_host("otfw", &HostSpec::new("plc", "2001:db8::1/64")).is_err());
        assert!(plan_host(
            "otfw",
            &HostSpec::new("plc", "192.0.2.1/24").ipv6("192.0.2.2/24")
        )
        .is_err());
    }
}
