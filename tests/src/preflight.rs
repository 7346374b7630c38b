//! Checks that end-to-end tests can run here, failing with what to do when they cannot.
//! Tests that need the lab fail, they never skip.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Where otfw pins its links and maps.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Fails unless this process is root, iproute2 is installed, the kernel has network
/// namespaces and bpffs is mounted at /sys/fs/bpf.
pub fn require_root_and_kernel() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "the end-to-end lab needs root to create network namespaces, a bridge and XDP \
             attachments (effective uid is {euid}): run the tests as root, e.g. \
             `sudo -E cargo xtask test`"
        );
    }
    let ip_works = Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !ip_works {
        bail!("`ip netns list` does not run: install iproute2 (`cargo xtask setup` does)");
    }
    if !Path::new("/proc/self/ns/net").exists() {
        bail!("this kernel has no network namespaces (CONFIG_NET_NS); the lab cannot run");
    }
    if !bpffs_mounted()? {
        bail!(
            "bpffs is not mounted at /sys/fs/bpf (otfw pins its links and maps there): run \
             `cargo xtask setup` or `mount -t bpf bpf /sys/fs/bpf`"
        );
    }
    Ok(())
}

/// True if a bpf filesystem is mounted at [`BPFFS`].
pub fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("could not read /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}
