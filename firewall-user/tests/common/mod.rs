//! Shared pieces of the datapath tests: policy builder, frames, the table runner, and checks.

pub mod frames;
pub mod policy;
pub mod reset;
pub mod table;

use std::process::Command;

/// A network interface for the life of a test: a second ingress port besides `lo`. One end of
/// a veth pair (this kernel has no dummy links); deleting it deletes both ends. Deleted on drop,
/// also when the test fails.
pub struct TestInterface {
    pub name: &'static str,
    pub ifindex: u32,
}

fn ip_link(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .arg("link")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip link {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip link {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl TestInterface {
    pub fn create(name: &'static str) -> TestInterface {
        // Left over from an interrupted run: start clean.
        let _ = ip_link(&["del", name]);
        let peer = format!("{name}p");
        ip_link(&["add", name, "type", "veth", "peer", "name", &peer])
            .unwrap_or_else(|e| panic!("the anti-spoofing test needs root and veth links: {e}"));
        // From here on, a panic deletes the interface again.
        let mut guard = TestInterface { name, ifindex: 0 };
        guard.ifindex = otfw::datapath::ifindex(name).expect("ifindex of the test interface");
        guard
    }
}

impl Drop for TestInterface {
    fn drop(&mut self) {
        if let Err(e) = ip_link(&["del", self.name]) {
            eprintln!("cleaning up: {e}");
        }
    }
}
