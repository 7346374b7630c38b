//! Root-namespace plumbing: `ip` invocations, link and namespace listings, sysctls, the
//! per-prefix lock, and removal of what an earlier run left behind.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process;

/// Lock files, one per lab prefix; on tmpfs, like the namespaces they guard.
const LOCK_DIR: &str = "/run/otfw-lab";

/// Runs `program args...` to completion (stdin closed); fails with its stderr unless it
/// exits 0. For short configuration commands (`ip`, `ethtool`, `sysctl`).
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    let line = process::describe(&command);
    let output = command
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Names of all named network namespaces (`ip netns list`).
pub(crate) fn netns_names() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Names of the links in the root namespace.
pub(crate) fn link_names() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir("/sys/class/net").context("could not list /sys/class/net")? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub(crate) fn ifindex(name: &str) -> Result<u32> {
    let path = Path::new("/sys/class/net").join(name).join("ifindex");
    let text =
        fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds `{}`", path.display(), text.trim()))
}

/// Writes a sysctl of the root namespace, e.g. `net/ipv6/conf/br-otfw/disable_ipv6`.
pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    fs::write(&path, value).with_context(|| format!("could not write {}", path.display()))
}

/// Bridged frames go through iptables/ip6tables/arptables while `br_netfilter` is loaded
/// and these global switches are on; a FORWARD rule of someone else's (Docker's DROP
/// policy) would then decide about lab traffic instead of otfw. The per-bridge `nf_call_*`
/// options cannot override the global switches, so turn those off. They are left off: labs
/// may overlap in time, and restoring them would race with another lab.
pub(crate) fn disable_bridge_netfilter() -> Result<()> {
    for table in ["iptables", "ip6tables", "arptables"] {
        let key = format!("net/bridge/bridge-nf-call-{table}");
        let path = Path::new("/proc/sys").join(&key);
        // Absent when br_netfilter is not loaded: then bridged frames skip netfilter anyway.
        if fs::read_to_string(&path).is_ok_and(|value| value.trim() != "0") {
            write_sysctl(&key, "0")?;
        }
    }
    Ok(())
}

/// PIDs of the processes running inside a named namespace.
pub(crate) fn netns_pids(netns: &str) -> Result<Vec<u32>> {
    Ok(ip(&["netns", "pids", netns])?
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}

/// The alias (`ip link set BRIDGE alias ...`) a lab gives its bridge, so that a leftover
/// bridge of any name can be told to be a lab's.
pub(crate) fn bridge_alias(prefix: &str) -> String {
    format!("otfw-lab:{prefix}")
}

/// The alias of a root link, if it has one.
fn link_alias(name: &str) -> Option<String> {
    let alias = fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifalias")).ok()?;
    let alias = alias.trim_end_matches('\n');
    (!alias.is_empty()).then(|| alias.to_string())
}

/// Root links that belong to `prefix`'s labs: `<prefix>-*` (bridge ports), `br-<prefix>`
/// and bridges with the lab alias of `prefix`, sorted.
pub(crate) fn prefix_links(prefix: &str) -> Result<Vec<String>> {
    let owned = format!("{prefix}-");
    let bridge = format!("br-{prefix}");
    let alias = bridge_alias(prefix);
    let mut links: Vec<String> = link_names()?
        .into_iter()
        .filter(|link| {
            link.starts_with(&owned)
                || *link == bridge
                || link_alias(link).is_some_and(|found| found == alias)
        })
        .collect();
    links.sort();
    Ok(links)
}

/// Named namespaces `<prefix>-*`, sorted.
pub(crate) fn prefix_netns(prefix: &str) -> Result<Vec<String>> {
    let owned = format!("{prefix}-");
    let mut namespaces: Vec<String> = netns_names()?
        .into_iter()
        .filter(|netns| netns.starts_with(&owned))
        .collect();
    namespaces.sort();
    Ok(namespaces)
}

/// Deletes the root links and namespaces of `prefix` ([`prefix_links`], [`prefix_netns`])
/// that an earlier run left, killing the processes still inside those namespaces (an earlier
/// lab started them). Returns what it removed. The caller holds the prefix lock, so no
/// running lab owns these.
pub(crate) fn remove_leftovers(prefix: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for link in prefix_links(prefix)? {
        // Deleting one veth end deletes its peer inside the namespace too.
        ip(&["link", "del", &link])?;
        removed.push(format!("link {link}"));
    }
    for netns in prefix_netns(prefix)? {
        process::kill_pids(&netns_pids(&netns)?);
        ip(&["netns", "del", &netns])?;
        removed.push(format!("netns {netns}"));
    }
    Ok(removed)
}

/// Exclusive use of a lab prefix, across processes (engineers' test runs, the demo) and
/// threads: an flock on `/run/otfw-lab/<prefix>.lock`, released when dropped or when the
/// process dies, so a crashed run never blocks the next one.
pub(crate) struct PrefixLock {
    _file: File,
}

impl PrefixLock {
    /// Takes the lock, waiting up to `wait` for another lab with the same prefix to finish.
    pub(crate) fn acquire(prefix: &str, wait: Duration) -> Result<Self> {
        let path = lock_path(prefix)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("could not open {}", path.display()))?;
        let deadline = Instant::now() + wait;
        let mut told = false;
        loop {
            // SAFETY: flock on a file descriptor that `file` keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error).with_context(|| format!("flock {}", path.display()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "lab prefix `{prefix}` is still in use by another process after {wait:?} \
                     ({} is locked): wait for that test run or demo to end",
                    path.display()
                );
            }
            if !told {
                eprintln!("lab: prefix `{prefix}` is in use by another process; waiting");
                told = true;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn lock_path(prefix: &str) -> Result<PathBuf> {
    fs::create_dir_all(LOCK_DIR).with_context(|| format!("could not create {LOCK_DIR}"))?;
    Ok(Path::new(LOCK_DIR).join(format!("{prefix}.lock")))
}
