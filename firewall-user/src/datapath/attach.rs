//! Attaching the program to bridge ports: native (driver) XDP where the driver supports it,
//! generic (skb) XDP otherwise, and never on the bridge device itself (it sees no bridged
//! traffic there).

use std::{ffi::CString, fmt, path::Path};

use anyhow::{bail, Context as _, Result};
use aya::programs::{xdp::XdpLinkId, XdpMode};

use super::{
    ethtool::{self, driver},
    Datapath,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMode {
    Native,
    Generic,
}

impl fmt::Display for PortMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortMode::Native => "native",
            PortMode::Generic => "generic",
        })
    }
}

/// Which XDP mode to attach in: `Auto` tries native (driver) mode and falls back to generic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Debug)]
pub struct AttachedPort {
    pub name: String,
    pub ifindex: u32,
    pub mode: PortMode,
    link: XdpLinkId,
    /// GRO was on and otfw switched it off (generic mode); switched on again at detach.
    pub gro_switched_off: bool,
}

/// The ports the program is attached to; detached when `Datapath::detach` runs or the
/// `Datapath` is dropped.
#[derive(Debug, Default)]
pub struct Attached {
    pub ports: Vec<AttachedPort>,
}

/// The member ports of `bridge`, sorted by name.
pub fn bridge_ports(bridge: &str) -> Result<Vec<String>> {
    let dev = Path::new("/sys/class/net").join(bridge);
    if !dev.exists() {
        bail!("bridge {bridge} does not exist; create it or fix `gateway.bridge` / --bridge");
    }
    let brif = dev.join("brif");
    if !brif.exists() {
        bail!("{bridge} is not a bridge; name the bridge or use --iface for each port");
    }
    let mut ports: Vec<String> = std::fs::read_dir(&brif)
        .with_context(|| format!("listing the ports of {bridge}"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    ports.sort();
    if ports.is_empty() {
        bail!("bridge {bridge} has no ports; add the segment interfaces to it first");
    }
    Ok(ports)
}

/// The bridge all of `ports` belong to, if they are ports of one bridge (ports named one by one
/// may still be the ports of one bridge; the fast path needs to know it).
pub fn common_bridge(ports: &[String]) -> Option<String> {
    let mut bridge = None;
    for port in ports {
        let master = std::fs::read_link(Path::new("/sys/class/net").join(port).join("master"))
            .ok()?
            .file_name()?
            .to_string_lossy()
            .into_owned();
        match &bridge {
            None => bridge = Some(master),
            Some(b) if *b == master => {}
            Some(_) => return None,
        }
    }
    let bridge = bridge?;
    Path::new("/sys/class/net")
        .join(&bridge)
        .join("bridge")
        .exists()
        .then_some(bridge)
}

pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).context("interface name contains NUL")?;
    // SAFETY: if_nametoindex reads a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface named {name}");
    }
    Ok(index)
}

impl Datapath {
    /// Attaches to every interface in `ports`, native mode first. All or nothing: if one port
    /// fails, the ports already attached are detached again.
    pub fn attach(&mut self, ports: &[String], wanted: ModeChoice) -> Result<Attached> {
        let mut attached = Attached::default();
        for name in ports {
            if Path::new("/sys/class/net")
                .join(name)
                .join("bridge")
                .exists()
            {
                bail!(
                    "{name} is a bridge device: XDP there never sees bridged traffic; \
                     attach to its ports (--bridge {name})"
                );
            }
            let ifindex = ifindex(name)?;
            let program = self.program_mut();
            let result = match wanted {
                ModeChoice::Native => program
                    .attach(name, XdpMode::Driver)
                    .map(|l| (l, PortMode::Native)),
                ModeChoice::Generic => program
                    .attach(name, XdpMode::Skb)
                    .map(|l| (l, PortMode::Generic)),
                // Native XDP on a veth cannot send frames back (XDP_TX) unless its peer runs
                // XDP too, so the resets of `on_deny: reset` would vanish; generic XDP can.
                ModeChoice::Auto if driver(name).as_deref() == Some("veth") => program
                    .attach(name, XdpMode::Skb)
                    .map(|l| (l, PortMode::Generic)),
                ModeChoice::Auto => match program.attach(name, XdpMode::Driver) {
                    Ok(link) => Ok((link, PortMode::Native)),
                    Err(native) => {
                        log::debug!("native XDP on {name} failed ({native}); trying generic");
                        program
                            .attach(name, XdpMode::Skb)
                            .map(|l| (l, PortMode::Generic))
                    }
                },
            };
            match result {
                Ok((link, mode)) => {
                    let gro_switched_off = mode == PortMode::Generic && gro_off(name);
                    attached.ports.push(AttachedPort {
                        name: name.clone(),
                        ifindex,
                        mode,
                        link,
                        gro_switched_off,
                    })
                }
                Err(e) => {
                    self.detach(attached);
                    return Err(e).with_context(|| {
                        format!("attaching XDP to {name}; is another XDP program attached there?")
                    });
                }
            }
        }
        Ok(attached)
    }

    pub fn detach(&mut self, attached: Attached) {
        let program = self.program_mut();
        for port in attached.ports {
            if let Err(e) = program.detach(port.link) {
                log::warn!("detaching XDP from {}: {e}", port.name);
            }
            if port.gro_switched_off {
                match ethtool::set_gro(&port.name, true) {
                    Ok(()) => log::info!("switched GRO on again on {}", port.name),
                    Err(e) => log::warn!("switching GRO on again on {}: {e:#}", port.name),
                }
            }
        }
    }
}

/// Generic XDP runs after GRO has merged a port's segments into one large frame whose TCP
/// checksum field is not the wire's, so the inspectors could not verify it and would refuse
/// every inspected segment (`tcp_bad_checksum`). GRO is switched off on such a port while otfw
/// is attached (native XDP sees frames before GRO). Returns whether it was switched off.
fn gro_off(name: &str) -> bool {
    if ethtool::gro(name) != Some(true) {
        return false;
    }
    match ethtool::set_gro(name, false) {
        Ok(()) => {
            log::info!(
                "switched GRO off on {name}: generic XDP would see merged segments whose \
                 checksums the inspectors cannot verify"
            );
            true
        }
        Err(e) => {
            log::warn!(
                "could not switch GRO off on {name} ({e:#}): inspected TCP traffic through it \
                 may be refused as tcp_bad_checksum; run `ethtool -K {name} gro off`"
            );
            false
        }
    }
}
