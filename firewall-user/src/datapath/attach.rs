//! Attaching the program to bridge ports: native (driver) XDP where the driver supports it,
//! generic (skb) XDP otherwise, and never on the bridge device itself (it sees no bridged
//! traffic there). With pinning (`pin`), each port's link is pinned so enforcement outlives the
//! controller, and a link pinned by an earlier controller is taken over by swapping the new
//! program into it.

use std::{ffi::CString, fmt, path::Path};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
    ProgramError, Xdp, XdpMode,
};

use super::{
    ethtool::{self, driver},
    pin, Datapath,
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
    /// For a taken-over port, the mode this controller would have chosen; the controller
    /// corrects it from the previous controller's state file.
    pub mode: PortMode,
    link: PortLink,
    /// GRO was on and otfw switched it off (generic mode); switched on again at detach.
    pub gro_switched_off: bool,
    /// The port's pinned link was already enforcing (an earlier controller's) and now runs
    /// this controller's program.
    pub taken_over: bool,
}

#[derive(Debug)]
enum PortLink {
    /// Detached when the controller detaches or exits.
    Owned(XdpLinkId),
    /// Pinned: stays attached without any handle open, until `otfw stop` removes the pin.
    Pinned,
}

impl AttachedPort {
    pub fn pinned(&self) -> bool {
        matches!(self.link, PortLink::Pinned)
    }
}

/// The ports the program is attached to. Owned links are detached when `Datapath::detach`
/// runs or the `Datapath` is dropped; pinned links stay.
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
    /// Attaches to every interface in `ports`, native mode first. With `links` (the instance's
    /// `links/` pin directory), each link is pinned there, and a port whose link is already
    /// pinned there gets the new program swapped in atomically instead. All or nothing: if one
    /// port fails, the links this call created are removed again (taken-over links keep
    /// enforcing).
    pub fn attach(
        &mut self,
        ports: &[String],
        wanted: ModeChoice,
        links: Option<&Path>,
    ) -> Result<Attached> {
        let mut attached = Attached::default();
        for name in ports {
            match self.attach_port(name, wanted, links) {
                Ok(port) => attached.ports.push(port),
                Err(e) => {
                    self.roll_back(attached, links);
                    return Err(e);
                }
            }
        }
        Ok(attached)
    }

    fn attach_port(
        &mut self,
        name: &str,
        wanted: ModeChoice,
        links: Option<&Path>,
    ) -> Result<AttachedPort> {
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
        let pin = links.map(|dir| dir.join(name));
        let program = self.program_mut();
        if let Some(pin) = &pin {
            if take_over(program, pin, ifindex)
                .with_context(|| format!("taking over the pinned link of {name}"))?
            {
                return Ok(AttachedPort {
                    name: name.to_string(),
                    ifindex,
                    mode: default_mode(name, wanted),
                    link: PortLink::Pinned,
                    gro_switched_off: false,
                    taken_over: true,
                });
            }
        }
        let (id, mode) = attach_fresh(program, name, wanted).map_err(|e| refusal(name, e))?;
        let gro_switched_off = mode == PortMode::Generic && gro_off(name);
        let link = match &pin {
            None => PortLink::Owned(id),
            Some(pin) => match pin_link(program, id, pin) {
                Ok(()) => PortLink::Pinned,
                Err(e) => {
                    if gro_switched_off {
                        gro_on(name);
                    }
                    return Err(e.context(format!("pinning the XDP link of {name}")));
                }
            },
        };
        Ok(AttachedPort {
            name: name.to_string(),
            ifindex,
            mode,
            link,
            gro_switched_off,
            taken_over: false,
        })
    }

    /// Undoes a failed `attach`: owned links are detached, links pinned by this call unpinned
    /// (with no handle open, that detaches them); taken-over links stay as they were.
    fn roll_back(&mut self, attached: Attached, links: Option<&Path>) {
        let mut owned = Attached::default();
        for port in attached.ports {
            match (&port.link, links) {
                (PortLink::Pinned, Some(dir)) if !port.taken_over => {
                    let _ = std::fs::remove_file(dir.join(&port.name));
                    if port.gro_switched_off {
                        gro_on(&port.name);
                    }
                }
                (PortLink::Pinned, _) => {}
                (PortLink::Owned(_), _) => owned.ports.push(port),
            }
        }
        self.detach(owned);
    }

    /// Detaches the owned links and switches GRO on again where it was switched off; returns the
    /// ports detached. Pinned links stay attached: enforcement outlives the controller.
    pub fn detach(&mut self, attached: Attached) -> Vec<String> {
        let program = self.program_mut();
        let mut detached = Vec::new();
        for port in attached.ports {
            let PortLink::Owned(link) = port.link else {
                continue;
            };
            if let Err(e) = program.detach(link) {
                log::warn!("detaching XDP from {}: {e}", port.name);
            }
            if port.gro_switched_off {
                gro_on(&port.name);
            }
            detached.push(port.name);
        }
        detached
    }
}

/// The mode `attach_fresh` would try first.
fn default_mode(name: &str, wanted: ModeChoice) -> PortMode {
    match wanted {
        ModeChoice::Native => PortMode::Native,
        ModeChoice::Generic => PortMode::Generic,
        ModeChoice::Auto if driver(name).as_deref() == Some("veth") => PortMode::Generic,
        ModeChoice::Auto => PortMode::Native,
    }
}

fn attach_fresh(
    program: &mut Xdp,
    name: &str,
    wanted: ModeChoice,
) -> Result<(XdpLinkId, PortMode), ProgramError> {
    match wanted {
        ModeChoice::Native => program
            .attach(name, XdpMode::Driver)
            .map(|l| (l, PortMode::Native)),
        ModeChoice::Generic => program
            .attach(name, XdpMode::Skb)
            .map(|l| (l, PortMode::Generic)),
        // Native XDP on a veth cannot send frames back (XDP_TX) unless its peer runs XDP too,
        // so the resets of `on_deny: reset` would vanish; generic XDP can.
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
    }
}

/// Why a port could not be attached, in the operator's terms. The kernel answers EBUSY or EEXIST
/// when the port already carries an XDP program; otfw never replaces one it did not install.
fn refusal(name: &str, error: ProgramError) -> anyhow::Error {
    let busy = matches!(
        &error,
        ProgramError::SyscallError(e)
            if matches!(e.io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST))
    );
    if !busy {
        return anyhow::Error::new(error).context(format!("attaching XDP to {name}"));
    }
    match pin::instance_enforcing(name) {
        Some(instance) => anyhow!(
            "{name} is already enforced by otfw instance `{instance}` (pinned in {}): one \
             instance per port. Run this as instance `{instance}` (--instance {instance}) to take \
             it over, or remove it with `otfw stop --instance {instance}`",
            pin::pin_dir(&instance).display()
        ),
        None => anyhow!(
            "{name} already carries an XDP program that otfw did not install (see `ip link show \
             dev {name}`); otfw does not replace it. Remove it first if the port is meant for otfw"
        ),
    }
}

/// Swaps `program` into the link pinned at `pin` (`BPF_LINK_UPDATE`: packets see the old
/// program or the new one, never none). `false` when there is no live link there: no pin, or a
/// link whose device is gone (its pin is removed).
fn take_over(program: &mut Xdp, pin: &Path, ifindex: u32) -> Result<bool> {
    if !pin.exists() {
        return Ok(false);
    }
    let fd = pin::open_pinned(pin).with_context(|| format!("opening {}", pin.display()))?;
    let attached_to = pin::link_ifindex(&fd)
        .with_context(|| format!("reading the link pinned at {}", pin.display()))?;
    drop(fd);
    if attached_to == 0 {
        log::info!(
            "the link pinned at {} belonged to a device that is gone; attaching afresh",
            pin.display()
        );
        std::fs::remove_file(pin).with_context(|| format!("removing {}", pin.display()))?;
        return Ok(false);
    }
    if attached_to != ifindex {
        bail!(
            "the link pinned at {} is attached to interface index {attached_to}, not this port \
             ({ifindex}); the port was renamed or replaced. Remove the old enforcement with \
             `otfw stop` first",
            pin.display()
        );
    }
    let link = FdLink::from(PinnedLink::from_pin(pin)?);
    let link = XdpLink::try_from(link).context("the pinned link is not an XDP link")?;
    let id = program
        .attach_to_link(link)
        .context("swapping the new program into the pinned link")?;
    // The pin keeps the link; this process's handle on it closes here.
    let link = program.take_link(id)?;
    drop(FdLink::try_from(link)?);
    Ok(true)
}

/// Pins a link just created, so that it stays when the controller exits.
fn pin_link(program: &mut Xdp, id: XdpLinkId, pin: &Path) -> Result<()> {
    let link = program.take_link(id)?;
    // Dropping `link` on an error below detaches it again.
    let link = FdLink::try_from(link).map_err(|_| {
        anyhow!(
            "the kernel attached XDP through netlink, not a BPF link (Linux before 5.9?); links \
             cannot be pinned there: run with --no-pin (enforcement then ends with the controller)"
        )
    })?;
    if let Some(dir) = pin.parent() {
        crate::private::dir(dir)?;
    }
    link.pin(pin)?;
    Ok(())
}

/// Switches GRO on again on a port where otfw switched it off.
pub fn gro_on(name: &str) {
    match ethtool::set_gro(name, true) {
        Ok(()) => log::info!("switched GRO on again on {name}"),
        Err(e) => log::warn!("switching GRO on again on {name}: {e:#}"),
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
