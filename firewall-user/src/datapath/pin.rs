//! Pinning the maps `otfw status` reads under bpffs (`/sys/fs/bpf/otfw/<instance>/`), and opening
//! them again from another process. Only maps are pinned, not the XDP links: enforcement ends
//! with the controller (as before), and the pins only make a running instance observable.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    Ebpf,
};
use firewall_common::{
    config::ACTIVE_INDEX,
    counters::Traffic,
    event::EVENT_STATS_LEN,
    flow::{FlowKey, FlowState},
};

use super::counters::{
    count_flows, read_conduit_traffic, read_counters, read_event_stats, ConduitTraffic, Counters,
};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The maps `otfw status` needs.
const PINNED: [&str; 6] = [
    "ACTIVE",
    "REASON_STATS",
    "CONDUIT_STATS",
    "FLOW_STATS",
    "FLOWS",
    "EVENT_STATS",
];

/// The pin directory of an instance.
pub fn pin_dir(instance: &str) -> PathBuf {
    Path::new(BPFFS).join("otfw").join(instance)
}

/// Fails with what to do when bpffs is not mounted.
pub fn check_bpffs() -> Result<()> {
    // SAFETY: statfs on a valid NUL-terminated path into an initialised struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let path = std::ffi::CString::new(BPFFS).expect("no NUL");
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

/// Pins the status maps of a freshly loaded object into `dir` (created; stale pins of a
/// controller that died are replaced).
pub(super) fn pin_maps(ebpf: &Ebpf, dir: &Path) -> Result<()> {
    check_bpffs()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in PINNED {
        let map: &Map = ebpf
            .map(name)
            .with_context(|| format!("map {name} is missing from the XDP object"))?;
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale pin {}", path.display()))?;
        }
        map.pin(&path)
            .with_context(|| format!("pinning {name} at {}", path.display()))?;
    }
    Ok(())
}

/// Removes an instance's pins (clean shutdown). The maps live on only while a process holds them.
pub fn unpin(dir: &Path) {
    for name in PINNED {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
}

/// The pinned maps of a running instance, opened from another process.
pub struct PinnedMaps {
    active: Array<MapData, u32>,
    reason_stats: PerCpuArray<MapData, u64>,
    conduit_stats: PerCpuArray<MapData, Traffic>,
    flow_stats: PerCpuArray<MapData, u64>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    event_stats: PerCpuArray<MapData, u64>,
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(name);
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
        })
    }

    pub fn active_epoch(&self) -> Result<u32> {
        self.active
            .get(&ACTIVE_INDEX, 0)
            .context("reading the active policy epoch")
    }

    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.reason_stats, &self.flow_stats)
    }

    pub fn conduit_traffic(&self, slot: u32, names: &[String]) -> Result<Vec<ConduitTraffic>> {
        read_conduit_traffic(&self.conduit_stats, slot, names)
    }

    pub fn event_stats(&self) -> Result<[u64; EVENT_STATS_LEN as usize]> {
        read_event_stats(&self.event_stats)
    }

    pub fn flow_count(&self) -> usize {
        count_flows(&self.flows)
    }
}
