//! The kernel side, seen from user space: load the XDP object, own its maps, install policy
//! generations, attach to bridge ports, read counters, and run frames through the real program.

mod attach;
mod baseline;
mod counters;
mod enip;
mod ethtool;
mod fastpath;
mod flows;
mod generation;
mod maps;
mod modbus;
mod pin;
mod test_run;

use anyhow::{Context as _, Result};
use aya::{programs::Xdp, Ebpf, EbpfLoader};
use firewall_common::conduit::{FORWARD_SLOT, INSPECT_ENIP, INSPECT_ENIP_IO, INSPECT_MODBUS};

pub use attach::{
    bridge_ports, common_bridge, gro_on, ifindex, Attached, AttachedPort, ModeChoice, PortMode,
};
pub use baseline::Baseline;
pub use counters::{ConduitTraffic, Counters};
pub use enip::{EnipDenied, EnipTraffic};
pub use fastpath::{
    bridge_nftables, parse_brforward, BridgePort, BridgeView, FastPathChoice, FastPathStatus,
    Learnt, Mirror, Sysfs, SYNC_INTERVAL, VALIDITY,
};
pub use flows::{Sweep, ZoneShare};
pub use generation::Generation;
pub use modbus::{ModbusDenied, ModbusTraffic};
pub use pin::{
    check_bpffs, enforced_ports, finish_replacement, instance_enforcing, links_dir, pin_dir,
    remove as remove_pins, IncompatibleLayout, LearnMaps, PinnedMaps, Removed, BPFFS,
};
pub use test_run::{traced_adus, traced_cip_requests, Adu, CipRequest, Decision, TimedRun};

use maps::Maps;

/// The compiled XDP object, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/otfw"));

/// Name of the XDP program in the object.
const PROGRAM: &str = "otfw";
/// The Modbus/TCP inspector, tail called by `PROGRAM` (slot `INSPECT_MODBUS` of `INSPECTORS`).
const MODBUS_PROGRAM: &str = "otfw_modbus";
/// The EtherNet/IP inspector (slot `INSPECT_ENIP`) and the implicit I/O pinhole check (slot
/// `INSPECT_ENIP_IO`).
const ENIP_PROGRAM: &str = "otfw_enip";
const ENIP_IO_PROGRAM: &str = "otfw_enip_io";
/// The fast path for frames an inspector passed (slot `FORWARD_SLOT` of `INSPECTORS`).
const FORWARD_PROGRAM: &str = "otfw_forward";

pub struct Datapath {
    ebpf: Ebpf,
    /// Messages the program logs (aya-log), forwarded to the `log` crate by whoever runs the
    /// datapath: `take_logger` hands it to the controller's event loop.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    maps: Maps,
    /// What each slot holds, so counters and decisions can be named and stale entries removed.
    slots: [Option<Generation>; 2],
    /// Loaded onto fresh maps in place of pinned maps of another layout (the differences):
    /// the old maps are unpinned once every port runs this program.
    replacing_maps: Option<Vec<String>>,
}

/// What `Datapath::load_pinned` does with pinned maps whose layout differs from this version's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayoutChange {
    /// Refuse to start; the pinned program goes on enforcing.
    #[default]
    Refuse,
    /// Load onto fresh maps and replace the program on each port atomically.
    Replace,
}

impl Datapath {
    /// Loads the object into the kernel (verifier included). Nothing is attached yet.
    pub fn load() -> Result<Datapath> {
        Self::load_pinned(None, LayoutChange::Refuse)
    }

    /// Loads the object; with `pin_dir`, onto the maps pinned there (created and pinned where
    /// missing, see `pin`), and pins its programs there once they are verified. Pinned maps of
    /// another layout are refused before anything changes (`pin::IncompatibleLayout`), unless
    /// `layout` is `Replace`: the object then loads onto fresh maps staged in `maps-next/`,
    /// which `pin::finish_replacement` makes the instance's maps once every port runs the new
    /// program (`Datapath::replacing_maps` says whether that is pending).
    pub fn load_pinned(
        pin_dir: Option<&std::path::Path>,
        layout: LayoutChange,
    ) -> Result<Datapath> {
        raise_memlock_limit();
        let mut replacing_maps = None;
        let pinnable = match pin_dir {
            Some(dir) => {
                pin::check_bpffs()?;
                let maps = pin::pinnable_maps(OBJECT)?;
                if !pin::maps_dir(dir).exists() {
                    // A replacement interrupted after the old maps were unpinned.
                    pin::finish_replacement(dir)?;
                }
                let maps_dir = match pin::check_layout(dir, &maps) {
                    Ok(()) => pin::maps_dir(dir),
                    Err(e) if layout == LayoutChange::Replace => {
                        let Some(incompatible) = e.downcast_ref::<IncompatibleLayout>() else {
                            return Err(e);
                        };
                        log::warn!(
                            "the pinned maps do not fit this version ({}): loading onto fresh \
                             maps; every port gets the new program atomically, flows and \
                             counters start afresh",
                            incompatible.differences.join("; ")
                        );
                        replacing_maps = Some(incompatible.differences.clone());
                        pin::make_dirs(dir)?;
                        pin::stage_fresh_maps(dir)?
                    }
                    Err(e) => return Err(e),
                };
                pin::make_dirs(dir)?;
                maps.into_iter()
                    .map(|(name, _)| {
                        let path = maps_dir.join(&name);
                        (name, path)
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let mut loader = EbpfLoader::new();
        for (name, path) in &pinnable {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        let mut ebpf = loader
            .verifier_log_level(if std::env::var_os("OTFW_VERIFIER_LOG").is_some() {
                aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS
            } else {
                aya::VerifierLogLevel::default()
            })
            .load(OBJECT)
            .map_err(|e| {
                anyhow::anyhow!(
                    "loading the XDP object failed: {e}. otfw needs root (CAP_BPF, CAP_NET_ADMIN, \
                 CAP_PERFMON) and a kernel with BPF and XDP support"
                )
            })?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .context("the XDP object has no log buffer (AYA_LOGS)")?;
        let mut maps = Maps::take(&mut ebpf)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("the XDP program is missing from the object")?
            .try_into()
            .context("the program in the object is not an XDP program")?;
        program.load().context(
            "the kernel verifier rejected the XDP program (`Permission denied` below means a \
                 missing capability: otfw run needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)",
        )?;
        // Inspectors go into their program array before anything is attached: a packet
        // handed to a missing inspector is dropped (`inspector_missing`).
        for (name, slot, what) in [
            (MODBUS_PROGRAM, INSPECT_MODBUS as u32, "Modbus inspector"),
            (ENIP_PROGRAM, INSPECT_ENIP as u32, "EtherNet/IP inspector"),
            (
                ENIP_IO_PROGRAM,
                INSPECT_ENIP_IO as u32,
                "EtherNet/IP implicit I/O inspector",
            ),
            (FORWARD_PROGRAM, FORWARD_SLOT, "fast path forwarder"),
        ] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("the {what} is missing from the object"))?
                .try_into()
                .with_context(|| format!("the {what} in the object is not an XDP program"))?;
            program
                .load()
                .with_context(|| format!("the kernel verifier rejected the {what}"))?;
            let fd = program
                .fd()
                .with_context(|| format!("the {what} has no fd"))?;
            maps.inspectors
                .set(slot, fd, 0)
                .with_context(|| format!("installing the {what} in INSPECTORS"))?;
        }
        if let Some(dir) = pin_dir {
            pin::pin_programs(&mut ebpf, dir)?;
        }
        Ok(Datapath {
            ebpf,
            logger: Some(logger),
            maps,
            slots: [None, None],
            replacing_maps,
        })
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("the XDP program was checked at load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("the XDP program was checked at load")
    }

    /// Instructions the verifier processed for the program (its complexity budget is 1,000,000).
    pub fn verified_instructions(&self) -> Option<u32> {
        self.program().info().ok()?.verified_instruction_count()
    }

    /// Instructions the verifier processed for the Modbus inspector (a program of its own, with
    /// its own 1,000,000 budget).
    pub fn modbus_verified_instructions(&self) -> Option<u32> {
        let program: &Xdp = self.ebpf.program(MODBUS_PROGRAM)?.try_into().ok()?;
        program.info().ok()?.verified_instruction_count()
    }

    /// Instructions the verifier processed for the EtherNet/IP inspectors (`otfw_enip`,
    /// `otfw_enip_io`).
    pub fn enip_verified_instructions(&self) -> Option<(u32, u32)> {
        let count = |name| -> Option<u32> {
            let program: &Xdp = self.ebpf.program(name)?.try_into().ok()?;
            program.info().ok()?.verified_instruction_count()
        };
        Some((count(ENIP_PROGRAM)?, count(ENIP_IO_PROGRAM)?))
    }

    /// The program's log channel; readable (as a file descriptor) when messages are waiting,
    /// which `flush` then hands to the `log` crate.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// The layout differences when this datapath replaces pinned maps of another layout.
    pub fn replacing_maps(&self) -> Option<&[String]> {
        self.replacing_maps.as_deref()
    }

    /// The generation now in force, if any.
    pub fn active(&self) -> Option<&Generation> {
        self.installed(self.maps.active_epoch().ok()?)
    }

    /// The generation `epoch`, while its slot still holds it.
    pub(crate) fn installed(&self, epoch: u32) -> Option<&Generation> {
        self.slots[firewall_common::slot_of(epoch) as usize]
            .as_ref()
            .filter(|g| g.epoch == epoch)
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so large maps load there too.
pub(crate) fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised rlimit.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

/// A record the datapath wrote to a ring buffer; `None` if `bytes` is too short for it.
pub fn read_record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked; `T: Pod` is plain data, valid for any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}
