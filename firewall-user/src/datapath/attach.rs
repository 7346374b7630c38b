//! Attaching the program to bridge ports: native (driver) XDP where the driver supports it,
//! generic (skb) XDP otherwise, and never on the bridge device itself (it sees no bridged
//! traffic there).

use std::{ffi::CString, fmt, path::Path};

use anyhow::{bail, Context as _, Result};
use aya::programs::{xdp::XdpLinkId, XdpMode};

use super::Datapath;

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

/// The kernel driver behind an interface (`veth`, `ixgbe`, ...), from the ethtool ioctl.
pub fn driver(name: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: all-zero is a valid DrvInfo and ifreq (plain integers and arrays).
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a datagram socket only to issue the ioctl; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at a live DrvInfo.
    let ret = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if ret != 0 {
        return None;
    }
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
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
                Ok((link, mode)) => attached.ports.push(AttachedPort {
                    name: name.clone(),
                    ifindex,
                    mode,
                    link,
                }),
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
        }
    }
}
