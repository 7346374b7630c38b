//! `cargo xtask package`: the Debian package of otfw. It holds the `otfw` binary, the systemd
//! unit (`packaging/otfw.service`), the configuration file `/etc/otfw/otfw.yaml` (a conffile:
//! upgrades keep the operator's edits), the example policy, the dashboard and alert rules under
//! `/usr/share/otfw`, and the documentation. `dpkg-deb` builds it; the maintainer scripts in
//! `packaging/` reload systemd and restart a running controller on upgrade.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd;

#[derive(Args)]
pub struct PackageArgs {
    /// Package the debug build instead of building the release one (quicker; for tests).
    #[arg(long)]
    pub debug: bool,
    /// Where to write the .deb (default: target/package).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// A file of the package: where it comes from in the repository, where it goes, its mode.
struct Entry {
    from: &'static str,
    to: &'static str,
    mode: u32,
}

const FILES: &[Entry] = &[
    Entry {
        from: "packaging/otfw.service",
        to: "lib/systemd/system/otfw.service",
        mode: 0o644,
    },
    Entry {
        from: "packaging/otfw.yaml",
        to: "etc/otfw/otfw.yaml",
        mode: 0o644,
    },
    Entry {
        from: "policies/example.yaml",
        to: "usr/share/otfw/examples/policy.yaml",
        mode: 0o644,
    },
    Entry {
        from: "dashboards/otfw.json",
        to: "usr/share/otfw/dashboards/otfw.json",
        mode: 0o644,
    },
    Entry {
        from: "dashboards/alerts.yml",
        to: "usr/share/otfw/dashboards/alerts.yml",
        mode: 0o644,
    },
    Entry {
        from: "README.md",
        to: "usr/share/doc/otfw/README.md",
        mode: 0o644,
    },
    Entry {
        from: "docs/INSTALL.md",
        to: "usr/share/doc/otfw/INSTALL.md",
        mode: 0o644,
    },
    Entry {
        from: "docs/OPERATIONS.md",
        to: "usr/share/doc/otfw/OPERATIONS.md",
        mode: 0o644,
    },
    Entry {
        from: "docs/EVENTS.md",
        to: "usr/share/doc/otfw/EVENTS.md",
        mode: 0o644,
    },
    Entry {
        from: "policies/README.md",
        to: "usr/share/doc/otfw/POLICIES.md",
        mode: 0o644,
    },
];

const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

pub fn run(repo: &Path, args: &PackageArgs) -> Result<()> {
    let profile = if args.debug { "debug" } else { "release" };
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(repo)
        .args(["build", "-p", "firewall-user", "--bin", "otfw"]);
    if !args.debug {
        build.arg("--release");
    }
    println!("package: running {}", cmd::display(&build));
    cmd::run(&mut build)?;
    let binary = repo.join("target").join(profile).join("otfw");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo.join("target").join("package"));
    let deb = build_deb(repo, &binary, &out, env!("CARGO_PKG_VERSION"))?;
    println!("package: {}", deb.display());
    Ok(())
}

/// The architecture dpkg builds for on this machine.
fn architecture() -> Result<String> {
    cmd::stdout_of("dpkg", ["--print-architecture"])
        .map(|a| a.trim().to_string())
        .context("dpkg --print-architecture failed; packaging needs dpkg (Debian)")
}

fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: otfw\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: otfw maintainers <otfw@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6, iproute2\n\
         Recommends: git\n\
         Section: net\n\
         Priority: optional\n\
         Description: inline OT segmentation firewall (XDP)\n \
         Enforces zone and conduit policies on the ports of a Linux bridge with XDP programs,\n \
         inspecting Modbus/TCP and EtherNet/IP/CIP. Enforcement is pinned and outlives the\n \
         controller; `otfw stop` removes it.\n"
    )
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(bytes)
}

/// Stages the package's tree under `out` and builds `otfw_<version>_<arch>.deb` there from it
/// and `binary`.
pub fn build_deb(repo: &Path, binary: &Path, out: &Path, version: &str) -> Result<PathBuf> {
    if !binary.is_file() {
        bail!("{} does not exist; build otfw first", binary.display());
    }
    let arch = architecture()?;
    let name = format!("otfw_{version}_{arch}");
    let stage = out.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("removing the old {}", stage.display()))?;
    }
    let mut size = copy(binary, &stage.join("usr/bin/otfw"), 0o755)?;
    for entry in FILES {
        size += copy(&repo.join(entry.from), &stage.join(entry.to), entry.mode)?;
    }
    let debian = stage.join("DEBIAN");
    for script in SCRIPTS {
        copy(
            &repo.join("packaging").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    std::fs::write(debian.join("conffiles"), "/etc/otfw/otfw.yaml\n")?;
    std::fs::write(
        debian.join("control"),
        control(version, &arch, size.div_ceil(1024)),
    )?;
    let deb = out.join(format!("{name}.deb"));
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dpkg` on the scratch root `root`: maintainer scripts run outside a chroot with
    /// `DPKG_ROOT` set (they then leave systemd alone); the root has no libc6 to depend on.
    fn dpkg(root: &Path, args: &[&str]) -> String {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-not-root",
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args)
            .output()
            .expect("dpkg runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dpkg {args:?}: {text}");
        text
    }

    fn status(root: &Path) -> String {
        std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap()
    }

    /// Builds two versions around `/bin/true` (any program does for the layout; the e2e tests
    /// cover the real one),
    /// installs, upgrades with an edited configuration, and purges, in a scratch dpkg root; and
    /// checks the unit with `systemd-analyze verify`.
    #[test]
    fn the_package_installs_upgrades_and_purges_cleanly() {
        let repo = crate::repo_root();
        let scratch = std::env::temp_dir().join(format!("otfw-package-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let binary = Path::new("/bin/true");
        let first = build_deb(&repo, binary, &scratch.join("out"), "0.1.0").unwrap();
        let second = build_deb(&repo, binary, &scratch.join("out"), "0.1.1").unwrap();
        let root = scratch.join("root");
        for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();

        dpkg(&root, &["-i", first.to_str().unwrap()]);
        for file in [
            "usr/bin/otfw",
            "lib/systemd/system/otfw.service",
            "etc/otfw/otfw.yaml",
            "usr/share/otfw/examples/policy.yaml",
            "usr/share/otfw/dashboards/otfw.json",
            "usr/share/otfw/dashboards/alerts.yml",
            "usr/share/doc/otfw/INSTALL.md",
            "usr/share/doc/otfw/OPERATIONS.md",
        ] {
            assert!(root.join(file).is_file(), "{file} not installed");
        }
        assert!(status(&root).contains("Version: 0.1.0\n"));
        assert!(status(&root).contains("Status: install ok installed"));
        // That `otfw run` accepts this file is checked by firewall-user's config tests.
        let config = std::fs::read_to_string(root.join("etc/otfw/otfw.yaml")).unwrap();
        assert!(config.contains("policy: policy.yaml"), "{config}");

        // An upgrade keeps the operator's configuration.
        let edited = format!("{config}instance: gw1\n");
        std::fs::write(root.join("etc/otfw/otfw.yaml"), &edited).unwrap();
        dpkg(&root, &["-i", second.to_str().unwrap()]);
        assert!(status(&root).contains("Version: 0.1.1\n"));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/otfw/otfw.yaml")).unwrap(),
            edited
        );

        // Purge removes everything, configuration included.
        dpkg(&root, &["--purge", "otfw"]);
        for dir in ["usr", "etc", "lib"] {
            let left: Vec<_> = walk(&root.join(dir));
            assert!(left.is_empty(), "left after purge: {left:?}");
        }

        // The unit as installed, with ExecStart pointing at the staged binary (verify checks
        // that the program exists).
        let staged = scratch.join("out/otfw_0.1.1_".to_string() + &architecture().unwrap());
        let unit = std::fs::read_to_string(repo.join("packaging/otfw.service"))
            .unwrap()
            .replace(
                "/usr/bin/otfw",
                staged.join("usr/bin/otfw").to_str().unwrap(),
            );
        let unit_path = scratch.join("otfw.service");
        std::fs::write(&unit_path, unit).unwrap();
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit_path)
            .output()
            .expect("systemd-analyze (systemd) runs");
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
        std::fs::remove_dir_all(&scratch).unwrap();
    }

    /// Regular files below `dir` (none if it does not exist).
    fn walk(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .flat_map(|p| if p.is_dir() { walk(&p) } else { vec![p] })
            .collect()
    }
}
