//! `cargo xtask setup`: installs every prerequisite on a Debian 12 machine.
//!
//! Each step checks first and acts only when something is missing, so a second run costs a
//! few process starts. Steps print one line each: `ok (already installed)` or what they
//! install.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use otfw_tests::BPFFS;

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker, the lab's network tools, and the real protocol
/// peers and observers that the end-to-end tests and the demo run.
const DEBIAN_PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22, the major version of the nightly's LLVM.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "build-essential",
    // The lab: namespaces, veths, the bridge, offload switches, reachability checks.
    "iproute2",
    "iputils-ping",
    "ethtool",
    // Peers, observers and traffic tools.
    "tshark",
    "mbpoll",
    "prometheus",
    "nftables",
    "iptables",
    "tcpreplay",
    "netsniff-ng",
    "python3-venv",
    // The IEEE MA-L/MA-M/MA-S registries: MAC vendors of the inventory (read at run time).
    "ieee-data",
    // Policies from git: the controller records the commit it enforces (and its tests).
    "git",
    // The package test checks the unit with systemd-analyze.
    "systemd",
    // The benchmark's charts render text with DejaVu Sans.
    "fonts-dejavu-core",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// `cargo xtask test` runs `cargo deny check` (deny.toml) before the tests.
const CARGO_DENY_VERSION: &str = "0.20.2";
/// cargo-fuzz runs the libFuzzer targets of `fuzz/` (`cargo xtask fuzz`, and briefly in
/// `cargo xtask test`) with the nightly toolchain.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// The shared library a correctly built bpf-linker loads; another LLVM major cannot link
/// the nightly's bitcode.
const LLVM_LIBRARY: &str = "libLLVM.so.22";
/// The Debian interpreter, which `python3-venv` equips with `venv`.
const PYTHON: &str = "/usr/bin/python3";
/// Written into the venv after a successful install; holds what was installed.
const VENV_STAMP: &str = "otfw-requirements.stamp";

pub fn run(repo: &Path) -> Result<()> {
    require_root()?;
    warn_unless_debian_12();
    debian_packages()?;
    nightly_toolchain()?;
    bpf_linker()?;
    cargo_deny()?;
    cargo_fuzz()?;
    python_venv(repo)?;
    bpffs()?;
    Ok(())
}

fn report(step: &str, message: &str) {
    println!("setup: {step:<18} {message}");
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "setup installs Debian packages, mounts bpffs and creates network namespaces, \
             which needs root (effective uid is {euid}): run it again as root, e.g. \
             `sudo -E cargo xtask setup`"
        );
    }
    Ok(())
}

fn warn_unless_debian_12() {
    let release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let is_debian_12 = release.lines().any(|line| line == "ID=debian")
        && release.lines().any(|line| line == "VERSION_ID=\"12\"");
    if !is_debian_12 {
        report(
            "os",
            "warning: not Debian 12; package names may differ, continuing",
        );
    }
}

/// Packages of `wanted` that dpkg does not report as installed (`ii`).
fn missing_packages(wanted: &[&str]) -> Result<Vec<String>> {
    // dpkg-query exits 1 when some package is unknown; it still lists the others.
    let output = cmd::capture(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package}\\t${db:Status-Abbrev}\\n"])
            .args(wanted),
    )?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(package, _)| package)
        .collect();
    Ok(wanted
        .iter()
        .filter(|package| !installed.contains(package))
        .map(|package| package.to_string())
        .collect())
}

fn debian_packages() -> Result<()> {
    const STEP: &str = "debian packages";
    let missing = missing_packages(DEBIAN_PACKAGES)?;
    if missing.is_empty() {
        report(STEP, "ok (already installed)");
        return Ok(());
    }
    report(STEP, &format!("installing {}", missing.join(" ")));

    // tshark asks whether non-root users may capture; answer it before it is asked.
    let mut preseed = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .context("could not start debconf-set-selections (is this Debian?)")?;
    preseed
        .stdin
        .take()
        .context("debconf-set-selections has no stdin")?
        .write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n")?;
    if !preseed.wait()?.success() {
        bail!("debconf-set-selections failed to preseed wireshark-common/install-setuid");
    }

    let _no_services = ServiceStartsBlocked::new()?;
    cmd::run(apt_get().args(["update", "-q"]))
        .context("apt-get update failed: check the Debian mirror in /etc/apt/sources.list*")?;
    cmd::run(
        apt_get()
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(["-o", "Dpkg::Options::=--force-confdef"])
            .args(["-o", "Dpkg::Options::=--force-confold"])
            .args(&missing),
    )
    .context("apt-get install failed")?;

    let still_missing = missing_packages(DEBIAN_PACKAGES)?;
    if !still_missing.is_empty() {
        bail!(
            "apt-get reported success but these packages are not installed: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

/// Keeps Debian's maintainer scripts from starting daemons (prometheus would take port 9090
/// that the demo wants) while packages install: a `policy-rc.d` that denies every start,
/// removed again on drop. An operator's own `policy-rc.d` is left as it is.
struct ServiceStartsBlocked {
    created: Option<PathBuf>,
}

impl ServiceStartsBlocked {
    fn new() -> Result<Self> {
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.exists() {
            return Ok(Self { created: None });
        }
        fs::write(
            &path,
            "#!/bin/sh\n# installed by cargo xtask setup while it installs packages\nexit 101\n",
        )
        .with_context(|| format!("could not write {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            created: Some(path),
        })
    }
}

impl Drop for ServiceStartsBlocked {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = fs::remove_file(path);
        }
    }
}

fn nightly_toolchain() -> Result<()> {
    const STEP: &str = "nightly rust-src";
    let toolchains = cmd::stdout_of("rustup", ["toolchain", "list"]).context(
        "`rustup toolchain list` failed: install rustup (https://rustup.rs) and put \
         ~/.cargo/bin on PATH",
    )?;
    let has_nightly = toolchains.lines().any(|line| line.starts_with("nightly-"));
    let has_rust_src = has_nightly
        && cmd::stdout_of(
            "rustup",
            ["component", "list", "--toolchain", "nightly", "--installed"],
        )
        .is_some_and(|components| components.lines().any(|line| line.trim() == "rust-src"));
    if has_rust_src {
        report(STEP, "ok (already installed)");
        return Ok(());
    }
    if !has_nightly {
        report(STEP, "installing the nightly toolchain");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("the eBPF program is built with nightly (-Z build-std)")?;
    }
    report(STEP, "installing rust-src for nightly");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("the eBPF program is built with -Z build-std=core, which needs rust-src")
}

/// Whether `binary --version` runs and names `version` (`bpf-linker 0.13.0`, `cargo-fuzz 0.13.1`).
fn reports_version(binary: &Path, version: &str) -> bool {
    cmd::stdout_of(binary, ["--version"])
        .is_some_and(|output| output.split_whitespace().any(|word| word == version))
}

fn bpf_linker() -> Result<()> {
    const STEP: &str = "bpf-linker";
    let binary = cmd::cargo_home()?.join("bin").join("bpf-linker");
    let version_ok = reports_version(&binary, BPF_LINKER_VERSION);
    let llvm_ok = || {
        cmd::stdout_of("ldd", [&binary]).is_some_and(|libraries| libraries.contains(LLVM_LIBRARY))
    };
    if version_ok && llvm_ok() {
        report(STEP, "ok (already installed)");
        return Ok(());
    }
    report(
        STEP,
        &format!("installing {BPF_LINKER_VERSION} against LLVM 22 (takes 1-3 minutes)"),
    );
    let llvm_bin = PathBuf::from(LLVM_PREFIX).join("bin");
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "--locked", "--force", "bpf-linker"])
            .args(["--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .env("PATH", cmd::path_with(&[llvm_bin])?),
    )
    .context("installing bpf-linker failed (it needs llvm-22-dev and libpolly-22-dev)")?;
    if !llvm_ok() {
        bail!(
            "{} does not load {LLVM_LIBRARY}; remove it and run setup again",
            binary.display()
        );
    }
    Ok(())
}

fn cargo_deny() -> Result<()> {
    const STEP: &str = "cargo-deny";
    let binary = cmd::cargo_home()?.join("bin").join("cargo-deny");
    if reports_version(&binary, CARGO_DENY_VERSION) {
        report(STEP, "ok (already installed)");
        return Ok(());
    }
    report(
        STEP,
        &format!("installing {CARGO_DENY_VERSION} (takes 5-15 minutes)"),
    );
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "--locked", "--force", "cargo-deny"])
            .args(["--version", CARGO_DENY_VERSION]),
    )
    .context("installing cargo-deny failed")
}

fn cargo_fuzz() -> Result<()> {
    const STEP: &str = "cargo-fuzz";
    let binary = cmd::cargo_home()?.join("bin").join("cargo-fuzz");
    if reports_version(&binary, CARGO_FUZZ_VERSION) {
        report(STEP, "ok (already installed)");
        return Ok(());
    }
    report(
        STEP,
        &format!("installing {CARGO_FUZZ_VERSION} (takes about a minute)"),
    );
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "--locked", "--force", "cargo-fuzz"])
            .args(["--version", CARGO_FUZZ_VERSION]),
    )
    .context("installing cargo-fuzz failed (it builds from crates.io with the stable toolchain)")
}

fn python_venv(repo: &Path) -> Result<()> {
    const STEP: &str = "python venv";
    let venv = repo.join(".venv");
    let requirements_path = repo.join("tests").join("requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .with_context(|| format!("could not read {}", requirements_path.display()))?;
    let python_version = cmd::stdout_of(PYTHON, ["--version"]).with_context(|| {
        format!("{PYTHON} does not run: install Debian's python3 and python3-venv")
    })?;
    // The stamp ties the venv to the interpreter and the exact pins it was built from.
    let stamp = format!("{}{requirements}", python_version.trim_end());
    let stamp_path = venv.join(VENV_STAMP);
    let venv_python = venv.join("bin").join("python");
    if venv_python.exists()
        && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
    {
        report(STEP, "ok (already installed)");
        return Ok(());
    }
    report(
        STEP,
        &format!(
            "installing {} into {}",
            requirements_path.display(),
            venv.display()
        ),
    );
    // A venv built from other pins is rebuilt from scratch so that no removed pin lingers.
    cmd::run(
        Command::new(PYTHON)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    cmd::run(
        Command::new(&venv_python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-input", "-r"])
            .arg(&requirements_path),
    )
    .context("pip could not install the pinned Python peers")?;
    fs::write(&stamp_path, stamp)
        .with_context(|| format!("could not write {}", stamp_path.display()))
}

fn bpffs() -> Result<()> {
    const STEP: &str = "bpffs";
    if otfw_tests::bpffs_mounted()? {
        report(STEP, "ok (already mounted)");
        return Ok(());
    }
    report(STEP, &format!("mounting bpffs at {BPFFS}"));
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])).with_context(|| {
        format!("pinned links and maps live in bpffs; mount it by hand: mount -t bpf bpf {BPFFS}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_uninstalled_and_unknown_packages_as_missing() {
        // dpkg itself is always installed; the second name is not a Debian package.
        let missing = missing_packages(&["dpkg", "otfw-no-such-package"]).unwrap();
        assert_eq!(missing, ["otfw-no-such-package"]);
    }
}
