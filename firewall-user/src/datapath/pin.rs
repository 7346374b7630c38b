//! Fail-secure pinning. Everything an instance enforces with lives under one bpffs directory,
//! `/sys/fs/bpf/otfw/<instance>/`:
//!
//! - `maps/<MAP>`: every map of the object (flows, policy slots, counters, event rings);
//! - `programs/<program>`: the XDP program and its inspectors;
//! - `links/<port>`: the XDP link of each port;
//! - `maps-next/`: only while a version with another map layout replaces the maps
//!   (`--replace-incompatible-maps`, see [`finish_replacement`]).
//!
//! A pinned link keeps its program on the port after `otfw run` exits for any reason (SIGKILL
//! included), and the program keeps its maps: enforcement goes on with the policy in force. The
//! next `otfw run` of the instance reuses the pinned maps (flows and counters kept) and swaps its
//! freshly verified program into each pinned link atomically (`BPF_LINK_UPDATE`), so no packet
//! meets an unprotected port. Only `otfw stop` removes the pins, and with them the enforcement.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, MapInfo, PerCpuArray},
    Ebpf,
};
use firewall_common::{
    config::ACTIVE_INDEX,
    counters::Traffic,
    event::EVENT_STATS_LEN,
    flow::{DenialMemo, FlowKey, FlowMemo, FlowState},
};

use super::counters::{
    count_flows, read_conduit_traffic, read_counters, read_event_stats, ConduitTraffic, Counters,
    Memos,
};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The pin directory of an instance.
pub fn pin_dir(instance: &str) -> PathBuf {
    Path::new(BPFFS).join("otfw").join(instance)
}

pub fn maps_dir(dir: &Path) -> PathBuf {
    dir.join("maps")
}

/// Where the fresh maps of a version with another layout are pinned until every port runs its
/// program; then they become `maps/`.
pub fn staged_maps_dir(dir: &Path) -> PathBuf {
    dir.join("maps-next")
}

pub fn programs_dir(dir: &Path) -> PathBuf {
    dir.join("programs")
}

pub fn links_dir(dir: &Path) -> PathBuf {
    dir.join("links")
}

/// Makes the instance's pin directory and its `maps/`, `programs/` and `links/`, and the
/// `otfw` directory above it, root-only (`crate::private::dir`: created 0700, a looser one
/// tightened). The pins inside are 0600: the kernel creates every pin with read and write
/// for its owner only (less the umask).
pub fn make_dirs(dir: &Path) -> Result<()> {
    if let Some(root) = dir.parent() {
        crate::private::dir(root)?;
    }
    for dir in [
        dir.to_path_buf(),
        maps_dir(dir),
        programs_dir(dir),
        links_dir(dir),
    ] {
        crate::private::dir(&dir)?;
    }
    Ok(())
}

/// Fails with what to do when bpffs is not mounted.
pub fn check_bpffs() -> Result<()> {
    // SAFETY: all-zero is a valid statfs (plain integers).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let path = CString::new(BPFFS).expect("no NUL");
    // SAFETY: statfs(2) reads the NUL-terminated path and writes only into `st`.
    let ret = unsafe { libc::statfs(path.as_ptr(), &mut st) };
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    if ret != 0 || st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "bpffs is not mounted at {BPFFS}; mount it (`mount -t bpf bpf {BPFFS}`, or run \
             `cargo xtask setup`), or pass --no-pin"
        );
    }
    Ok(())
}

/// The maps of an object that are pinned: all but the per-program global data sections
/// (`.rodata`, `.bss`, `.data`), which belong to one build of the program.
pub(super) fn pinnable_maps(object: &[u8]) -> Result<Vec<(String, aya_obj::Map)>> {
    let parsed = aya_obj::Object::parse(object).context("reading the XDP object's maps")?;
    let mut maps: Vec<(String, aya_obj::Map)> = parsed
        .maps
        .into_iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    maps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(maps)
}

/// Compares every pinned map with the object's definition of it. Maps the object adds are
/// created at load; maps it no longer has stay pinned (unused) until `otfw stop`.
pub(super) fn check_layout(dir: &Path, maps: &[(String, aya_obj::Map)]) -> Result<()> {
    let mut differences = Vec::new();
    for (name, def) in maps {
        let path = maps_dir(dir).join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path)
            .with_context(|| format!("reading the pinned map {}", path.display()))?;
        let pinned_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        let ring = def.map_type() == aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32;
        // The kernel makes device maps read-only for programs (BPF_F_RDONLY_PROG) itself.
        let devmap = [
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_DEVMAP as u32,
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_DEVMAP_HASH as u32,
        ]
        .contains(&def.map_type());
        let pinned_flags = if devmap {
            info.map_flags() & !aya_obj::generated::BPF_F_RDONLY_PROG
        } else {
            info.map_flags()
        };
        let mut diff = Vec::new();
        if pinned_type != def.map_type() {
            diff.push(format!("type {pinned_type}, needs {}", def.map_type()));
        }
        // A ring buffer's size is rounded to pages at creation and its key/value sizes are 0.
        if !ring {
            for (what, pinned, wanted) in [
                ("key size", info.key_size(), def.key_size()),
                ("value size", info.value_size(), def.value_size()),
                ("max entries", info.max_entries(), def.max_entries()),
                ("flags", pinned_flags, def.map_flags()),
            ] {
                if pinned != wanted && !(what == "max entries" && wanted == 0) {
                    diff.push(format!("{what} {pinned}, needs {wanted}"));
                }
            }
        }
        if !diff.is_empty() {
            differences.push(format!("{name} ({})", diff.join(", ")));
        }
    }
    if !differences.is_empty() {
        bail!(IncompatibleLayout {
            dir: dir.to_path_buf(),
            differences,
        });
    }
    Ok(())
}

/// The pinned maps were made by a version whose map layout differs from this one's. Nothing
/// was changed: the pinned enforcement stays in force.
#[derive(Debug)]
pub struct IncompatibleLayout {
    pub dir: PathBuf,
    pub differences: Vec<String>,
}

impl std::fmt::Display for IncompatibleLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the pinned maps in {} do not fit this version of otfw: {}. Nothing was changed: \
             the pinned program keeps enforcing the policy it had. To switch versions without \
             an unprotected moment, start `otfw run` with --replace-incompatible-maps: this \
             version then loads onto fresh maps and replaces the program on each port \
             atomically (flows and counters start afresh; connections go on where the \
             policy adopts flows mid-stream). Alternatively run `otfw stop` for this \
             instance in a maintenance window (the ports forward unfiltered until the next \
             start) and start `otfw run` again",
            self.dir.display(),
            self.differences.join("; ")
        )
    }
}

impl std::error::Error for IncompatibleLayout {}

/// Prepares `maps-next/` for a version replacing maps of another layout: empty (pins left by
/// an earlier attempt are removed; programs still using those maps keep them) and root-only.
pub(super) fn stage_fresh_maps(dir: &Path) -> Result<PathBuf> {
    let staged = staged_maps_dir(dir);
    clear(&staged)?;
    crate::private::dir(&staged)?;
    Ok(staged)
}

/// Completes a replacement once every port runs the new program: the old maps' pins are
/// removed (the kernel frees those maps with the last program using them) and `maps-next/`
/// becomes `maps/`. Also finishes a replacement interrupted between those two steps.
pub fn finish_replacement(dir: &Path) -> Result<()> {
    let staged = staged_maps_dir(dir);
    if !staged.exists() {
        return Ok(());
    }
    let maps = maps_dir(dir);
    clear(&maps)?;
    std::fs::rename(&staged, &maps).with_context(|| {
        format!(
            "moving the new maps from {} to {}",
            staged.display(),
            maps.display()
        )
    })
}

/// Removes a pin directory and the pins in it; nothing if it does not exist.
fn clear(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        remove_pin(&entry.path())?;
        removed += 1;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(removed)
}

/// Pins every program of a freshly loaded object into `programs/`, replacing the pins of an
/// earlier version (links keep whichever program they run until they are updated).
pub(super) fn pin_programs(ebpf: &mut Ebpf, dir: &Path) -> Result<()> {
    let programs = programs_dir(dir);
    crate::private::dir(&programs)?;
    for (name, program) in ebpf.programs_mut() {
        let path = programs.join(name);
        remove_pin(&path)?;
        program
            .pin(&path)
            .with_context(|| format!("pinning the program {name} at {}", path.display()))?;
    }
    Ok(())
}

fn remove_pin(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the pin {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A BPF object opened from its pin (`BPF_OBJ_GET`).
pub(super) fn open_pinned(path: &Path) -> std::io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let attr = ObjGet {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: the bpf syscall reads `attr` (size given) and the NUL-terminated path it points to.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The interface an XDP link is attached to; 0 once the device is gone (the link is defunct).
/// aya's `LinkInfo` does not expose it, so `bpf_link_info` is read here.
pub(super) fn link_ifindex(link: &OwnedFd) -> std::io::Result<u32> {
    /// `struct bpf_link_info`: type, id, prog_id, then a union aligned to 8 whose XDP member
    /// starts with the ifindex.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        link_type: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        union: [u64; 8],
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;
    let mut info = LinkInfo::default();
    let attr = InfoByFd {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if info.link_type != BPF_LINK_TYPE_XDP {
        return Err(std::io::Error::other("not an XDP link"));
    }
    Ok(info.union[0] as u32)
}

/// The ports of an instance's pinned links that still carry its program.
pub fn enforced_ports(dir: &Path) -> Vec<String> {
    let mut ports: Vec<String> = std::fs::read_dir(links_dir(dir))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    open_pinned(&e.path())
                        .and_then(|fd| link_ifindex(&fd))
                        .is_ok_and(|ifindex| ifindex != 0)
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ports.sort();
    ports
}

/// The otfw instance whose pinned link carries `port`, if any.
pub fn instance_enforcing(port: &str) -> Option<String> {
    let root = Path::new(BPFFS).join("otfw");
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| enforced_ports(&e.path()).iter().any(|p| p == port))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// What `remove` took away.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Ports whose link was live, i.e. where enforcement ended.
    pub ports: Vec<String>,
    pub programs: usize,
    pub maps: usize,
}

/// Removes every pin of an instance. Once no process holds them, links detach and programs and
/// maps are freed: with no controller running, enforcement ends here.
pub fn remove(dir: &Path) -> Result<Removed> {
    let mut removed = Removed {
        ports: enforced_ports(dir),
        ..Removed::default()
    };
    clear(&links_dir(dir))?;
    removed.programs = clear(&programs_dir(dir))?;
    removed.maps = clear(&maps_dir(dir))? + clear(&staged_maps_dir(dir))?;
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))?
        }
        _ => {}
    }
    Ok(removed)
}

/// The pinned maps `otfw learn --live` uses, opened from another process: the deadline, the
/// ring of learned frames and its counters (`firewall_common::observed`).
pub struct LearnMaps {
    pub until: Array<MapData, u64>,
    pub frames: aya::maps::RingBuf<MapData>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl LearnMaps {
    /// Opens the learning maps of the instance pinned in `dir`.
    pub fn open(dir: &Path) -> Result<LearnMaps> {
        let maps = maps_dir(dir);
        if !maps.join("ACTIVE").exists() {
            bail!(
                "no otfw instance is pinned in {}: start `otfw run` (with pinning, the default) \
                 first",
                dir.display()
            );
        }
        if !maps.join("LEARN_UNTIL").exists() {
            bail!(
                "the otfw running in {} cannot learn from the live datapath (an older version \
                 made its maps): restart `otfw run` with this version first",
                dir.display()
            );
        }
        Ok(LearnMaps {
            until: open(dir, "LEARN_UNTIL")?,
            frames: open(dir, "LEARN_FRAMES")?,
            stats: open(dir, "LEARN_STATS")?,
        })
    }

    /// Frames copied and frames the full ring refused, since the maps were made.
    pub fn counts(&self) -> Result<(u64, u64)> {
        use firewall_common::observed::{LEARN_COPIED, LEARN_RING_FULL};
        Ok((
            super::counters::sum(&self.stats, LEARN_COPIED, "LEARN_STATS")?,
            super::counters::sum(&self.stats, LEARN_RING_FULL, "LEARN_STATS")?,
        ))
    }
}

/// The pinned maps `otfw status` reads, opened from another process.
pub struct PinnedMaps {
    active: Array<MapData, u32>,
    reason_stats: PerCpuArray<MapData, u64>,
    conduit_stats: PerCpuArray<MapData, Traffic>,
    flow_stats: PerCpuArray<MapData, u64>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    event_stats: PerCpuArray<MapData, u64>,
    /// `None` for an instance of a version whose flow memo holds no counts.
    busy_flows: Option<PerCpuArray<MapData, FlowMemo>>,
    /// `None` for an instance of a version whose memo of recent denials holds no counts.
    recent_denials: Option<PerCpuArray<MapData, DenialMemo>>,
}

/// The pinned map `name`, or `None` where the instance's version has no such map.
fn open_if_pinned<T: TryFrom<Map, Error = aya::maps::MapError>>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>> {
    if maps_dir(dir).join(name).exists() {
        open(dir, name).map(Some)
    } else {
        Ok(None)
    }
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T> {
    let path = maps_dir(dir).join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data)
        .and_then(T::try_from)
        .with_context(|| format!("{} has an unexpected type or layout", path.display()))
}

impl PinnedMaps {
    pub fn open(dir: &Path) -> Result<PinnedMaps> {
        Ok(PinnedMaps {
            active: open(dir, "ACTIVE")?,
            reason_stats: open(dir, "REASON_STATS")?,
            conduit_stats: open(dir, "CONDUIT_STATS")?,
            flow_stats: open(dir, "FLOW_STATS")?,
            flows: open(dir, "FLOWS")?,
            event_stats: open(dir, "EVENT_STATS")?,
            busy_flows: open_if_pinned(dir, "BUSY_FLOWS")?,
            recent_denials: open_if_pinned(dir, "RECENT_DENIALS")?,
        })
    }

    fn memos(&self) -> Memos<'_> {
        Memos {
            flows: self.busy_flows.as_ref(),
            denials: self.recent_denials.as_ref(),
        }
    }

    pub fn active_epoch(&self) -> Result<u32> {
        self.active
            .get(&ACTIVE_INDEX, 0)
            .context("reading the active policy epoch")
    }

    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.reason_stats, &self.flow_stats, self.memos())
    }

    /// Traffic by conduit of the generation `epoch`.
    pub fn conduit_traffic(&self, epoch: u32, names: &[String]) -> Result<Vec<ConduitTraffic>> {
        read_conduit_traffic(&self.conduit_stats, self.memos(), epoch, names)
    }

    pub fn event_stats(&self) -> Result<[u64; EVENT_STATS_LEN as usize]> {
        read_event_stats(&self.event_stats)
    }

    pub fn flow_count(&self) -> usize {
        count_flows(&self.flows)
    }
}
