//! The fast path's mirror of the bridge: which ports forward, their MTUs, and the forwarding
//! database, read from the bridge's sysfs files (`brforward` is the kernel's binary FDB dump,
//! the same records `brctl showmacs` reads) and written into `FAST_TX`, `FDB` and `FAST_PATH`. The controller synchronises every `SYNC_INTERVAL`; the datapath trusts the
//! mirror for `VALIDITY` after each synchronisation, so a controller that stops leaves every
//! frame to the bridge (still filtered) within that time.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use firewall_common::{
    counters::PATH_FDB_MOVED,
    fastpath::{
        FastPathState, FdbEntry, ForwardMemo, MacKey, FDB_LOCAL, FORWARD_MEMO_SLOTS,
        GENERATION_CONTROLLER, GENERATION_DATAPATH, MAX_FDB,
    },
};

use super::{maps::next_generation, Datapath};

/// How often the controller copies the bridge's state into the mirror.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// How long the datapath trusts the mirror after a synchronisation.
pub const VALIDITY: Duration = Duration::from_secs(1);
/// Every this many synchronisations, the whole database is written again, whatever the
/// mirror's record says (a safety net: the mirror's record is only what was last written).
const FULL_WRITE_EVERY: u32 = 240;

/// `brif/<port>/state` values (`BR_STATE_*`).
const BR_STATE_FORWARDING: u8 = 3;
/// Size of one `struct __fdb_entry` record in `brforward`.
const FDB_RECORD: usize = 16;
/// The Ethernet header a port's MTU does not count.
const ETH_HLEN: u32 = 14;

/// Which ports the fast path may use (`otfw run --fast-path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FastPathChoice {
    /// Ports attached in generic mode: the kernel transmits their redirected frames through
    /// the normal transmit path, whatever the egress driver.
    Auto,
    /// Native-mode ports too: their drivers must implement ndo_xdp_xmit, or redirected frames
    /// are dropped.
    On,
    Off,
}

impl FastPathChoice {
    /// Native-mode veth ports `on` would use: a native veth delivers a redirected frame only
    /// when its peer runs XDP or has GRO on (NAPI), otherwise the kernel drops it. The
    /// controller cannot see the peer (another namespace), so it says so.
    pub fn risky_ports(self, attached: &super::Attached) -> Vec<String> {
        if self != FastPathChoice::On {
            return Vec::new();
        }
        attached
            .ports
            .iter()
            .filter(|p| p.mode == super::PortMode::Native)
            .filter(|p| super::ethtool::driver(&p.name).as_deref() == Some("veth"))
            .map(|p| p.name.clone())
            .collect()
    }

    /// The attached ports (by ifindex) the fast path may use.
    pub fn ports(self, attached: &super::Attached) -> Vec<u32> {
        attached
            .ports
            .iter()
            .filter(|p| match self {
                FastPathChoice::Auto => p.mode == super::PortMode::Generic,
                FastPathChoice::On => true,
                FastPathChoice::Off => false,
            })
            .map(|p| p.ifindex)
            .collect()
    }
}

/// One bridge port as the fast path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgePort {
    pub name: String,
    pub ifindex: u32,
    /// The bridge's port number (`brforward` names ports by it).
    pub port_no: u16,
    /// `BR_STATE_*`: only a forwarding port sends or receives redirected frames.
    pub state: u8,
    pub mtu: u32,
    /// Isolated or locked ports restrict who may talk to them: the bridge decides.
    pub restricted: bool,
}

/// An address in the bridge's forwarding database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learnt {
    pub mac: [u8; 6],
    pub port_no: u16,
    /// The bridge's own address (or a port's): frames to it are for the gateway.
    pub local: bool,
}

/// What the bridge's sysfs files say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeView {
    pub ports: Vec<BridgePort>,
    pub fdb: Vec<Learnt>,
    /// Why the bridge cannot have a fast path at all (it would skip something the bridge does).
    pub blocker: Option<String>,
}

/// Where the bridge's state is read from (`/sys/class/net` and `/proc/sys/net/bridge`;
/// replaceable for tests).
#[derive(Clone, Debug)]
pub struct Sysfs {
    pub net: PathBuf,
    pub bridge_sysctl: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            net: PathBuf::from("/sys/class/net"),
            bridge_sysctl: PathBuf::from("/proc/sys/net/bridge"),
        }
    }
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn read_number(path: &Path) -> Result<u64> {
    let text = read_trimmed(path)?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("{}: not a number: {text:?}", path.display()))
}

/// A flag file that may not exist on older kernels (absent means off).
fn read_flag(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    Ok(read_number(path)? != 0)
}

impl Sysfs {
    /// Reads the state of `bridge` that the fast path must honour.
    pub fn read(&self, bridge: &str) -> Result<BridgeView> {
        let dev = self.net.join(bridge);
        let mut view = BridgeView::default();
        if read_flag(&dev.join("bridge/vlan_filtering"))? {
            view.blocker =
                Some("the bridge filters VLANs (membership and tagging are not mirrored)".into());
        }
        for table in ["iptables", "ip6tables", "arptables"] {
            // The global switch, and the bridge's own (`ip link set BR type bridge
            // nf_call_iptables 1`).
            let sysctl = self.bridge_sysctl.join(format!("bridge-nf-call-{table}"));
            let own = dev.join(format!("bridge/nf_call_{table}"));
            if view.blocker.is_none() && (read_flag(&sysctl)? || read_flag(&own)?) {
                view.blocker = Some(format!(
                    "br_netfilter passes this bridge's frames to {table}, which redirected \
                     frames would skip"
                ));
            }
        }
        let brif = dev.join("brif");
        let mut names: Vec<String> = std::fs::read_dir(&brif)
            .with_context(|| format!("listing {}", brif.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        for name in names {
            let port = brif.join(&name);
            let restricted = read_flag(&port.join("isolated"))? || read_flag(&port.join("locked"))?;
            view.ports.push(BridgePort {
                ifindex: read_number(&self.net.join(&name).join("ifindex"))? as u32,
                port_no: read_number(&port.join("port_no"))? as u16,
                state: read_number(&port.join("state"))? as u8,
                mtu: read_number(&self.net.join(&name).join("mtu"))? as u32,
                restricted,
                name,
            });
        }
        let raw = std::fs::read(dev.join("brforward"))
            .with_context(|| format!("reading {}/brforward", dev.display()))?;
        view.fdb = parse_brforward(&raw);
        Ok(view)
    }
}

/// The bridge-family nftables tables, if the `nft` tool is there to list them: their chains
/// see bridged frames, which redirected frames would skip. `None` when there are none (or no
/// `nft`: tables made without it are not seen).
pub fn bridge_nftables() -> Option<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "tables", "bridge"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tables: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table bridge "))
        .collect();
    (!tables.is_empty()).then(|| {
        format!(
            "nftables bridge-family tables ({}) filter bridged frames, which redirected frames \
             would skip",
            tables.join(", ")
        )
    })
}

/// `struct __fdb_entry` records: MAC, port number (low byte), is_local, ageing timer (u32),
/// port number (high byte), padding. A trailing partial record is ignored.
pub fn parse_brforward(raw: &[u8]) -> Vec<Learnt> {
    raw.chunks_exact(FDB_RECORD)
        .map(|r| Learnt {
            mac: [r[0], r[1], r[2], r[3], r[4], r[5]],
            port_no: u16::from(r[12]) << 8 | u16::from(r[6]),
            local: r[7] != 0,
        })
        .collect()
}

/// Whether the fast path runs, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FastPathStatus {
    On {
        /// The ports that currently forward (in the forwarding state, not restricted).
        ports: Vec<String>,
        addresses: usize,
    },
    Off(String),
}

impl fmt::Display for FastPathStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FastPathStatus::On { ports, addresses } => write!(
                f,
                "on ({} of the ports: {}; {addresses} addresses)",
                ports.len(),
                ports.join(", ")
            ),
            FastPathStatus::Off(why) => write!(f, "off: {why}"),
        }
    }
}

/// The controller's side of the mirror: what it last wrote.
#[derive(Default)]
pub struct Mirror {
    /// The ports in `FAST_TX`, by ifindex, with the largest frame each transmits.
    ports: HashMap<u32, u32>,
    fdb: HashMap<MacKey, FdbEntry>,
    syncs: u32,
    /// `PATH_FDB_MOVED` when last written: the datapath drops entries of addresses that moved,
    /// and a change means the map no longer holds what was written.
    moved: u64,
}

pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Datapath {
    /// Copies `view` into the fast path's maps for the ports otfw is attached to (`attached`,
    /// by ifindex) and renews the mirror's validity; `None` (or a view with a blocker) turns
    /// the fast path off.
    pub fn sync_fast_path(
        &mut self,
        mirror: &mut Mirror,
        view: Option<&BridgeView>,
        attached: &[u32],
    ) -> Result<FastPathStatus> {
        let view = match view {
            Some(v) if v.blocker.is_none() => v,
            other => {
                self.stop_fast_path(mirror)?;
                let why = other
                    .and_then(|v| v.blocker.clone())
                    .unwrap_or_else(|| "switched off".into());
                return Ok(FastPathStatus::Off(why));
            }
        };
        let by_number: HashMap<u16, &BridgePort> =
            view.ports.iter().map(|p| (p.port_no, p)).collect();
        let mut ports = HashMap::new();
        let mut names = Vec::new();
        for p in &view.ports {
            if attached.contains(&p.ifindex) && p.state == BR_STATE_FORWARDING && !p.restricted {
                ports.insert(p.ifindex, p.mtu + ETH_HLEN);
                names.push(p.name.clone());
            }
        }
        let mut fdb = HashMap::new();
        for learnt in &view.fdb {
            let Some(port) = by_number.get(&learnt.port_no) else {
                continue;
            };
            // Local addresses are kept whatever the port, so frames to the gateway are known
            // as such; others only on ports the fast path may use: the datapath takes a source
            // or destination found in the mirror as being on such a port.
            let max_frame = ports.get(&port.ifindex).copied();
            if !learnt.local && max_frame.is_none() {
                continue;
            }
            if fdb.len() >= MAX_FDB as usize {
                break;
            }
            let key = MacKey {
                mac: learnt.mac,
                _pad: [0; 2],
            };
            let entry = FdbEntry {
                ifindex: port.ifindex,
                flags: if learnt.local { FDB_LOCAL } else { 0 },
                max_frame: max_frame.unwrap_or(0),
                _pad: 0,
            };
            // A MAC the bridge lists twice (local on one port, learnt on another) is local.
            fdb.entry(key)
                .and_modify(|e: &mut FdbEntry| {
                    if learnt.local {
                        *e = entry;
                    }
                })
                .or_insert(entry);
        }
        if mirror.syncs == 0 {
            // Maps taken over from an earlier controller may hold its mirror: record what is
            // there, so that whatever the bridge no longer says is removed below.
            for key in self.maps.fdb.keys().filter_map(Result::ok) {
                mirror.fdb.insert(key, FdbEntry::default());
            }
            for ifindex in self.maps.fast_tx.keys().filter_map(Result::ok) {
                mirror.ports.insert(ifindex, 0);
            }
        }
        let moved = self.path_stats()?[PATH_FDB_MOVED as usize];
        let full = mirror.syncs.is_multiple_of(FULL_WRITE_EVERY) || moved != mirror.moved;
        mirror.syncs = mirror.syncs.wrapping_add(1);
        mirror.moved = moved;
        let mut changed = false;
        // The addresses decide which ports frames are redirected to: those that go away (or
        // whose port stopped forwarding) leave first, before their port leaves `FAST_TX`;
        // ports come before the addresses learnt on them.
        for key in mirror.fdb.keys().copied().collect::<Vec<_>>() {
            if !fdb.contains_key(&key) {
                let _ = self.maps.fdb.remove(&key);
                mirror.fdb.remove(&key);
                changed = true;
            }
        }
        // Memos forwarding to addresses just removed end here, not after the writes below.
        if changed {
            self.next_fdb_generation()?;
            changed = false;
        }
        for ifindex in mirror.ports.keys().copied().collect::<Vec<_>>() {
            if !ports.contains_key(&ifindex) {
                let _ = self.maps.fast_tx.remove(ifindex);
                mirror.ports.remove(&ifindex);
                changed = true;
            }
        }
        for (ifindex, max_frame) in &ports {
            if full || !mirror.ports.contains_key(ifindex) {
                self.maps
                    .fast_tx
                    .insert(*ifindex, *ifindex, None, 0)
                    .context("writing FAST_TX")?;
                changed = true;
            }
            mirror.ports.insert(*ifindex, *max_frame);
        }
        // An entry whose port changed state or MTU differs from what was written: rewritten.
        for (key, entry) in &fdb {
            if full || mirror.fdb.get(key) != Some(entry) {
                self.maps
                    .fdb
                    .insert(key, entry, 0)
                    .context("writing the fast path's FDB")?;
                mirror.fdb.insert(*key, *entry);
                changed = true;
            }
        }
        // After the writes: a frame that read the generation before them made its memo under
        // a number this makes stale. (Memos are made of what the mirror answers, so an entry
        // added or changed only matters to frames that have none yet: a memo of the old
        // value must not outlive it.)
        if changed {
            self.next_fdb_generation()?;
        }
        let state = FastPathState {
            valid_until_ns: monotonic_ns() + VALIDITY.as_nanos() as u64,
        };
        self.maps
            .fast_path
            .set(0, state, 0)
            .context("renewing the fast path")?;
        names.sort();
        Ok(FastPathStatus::On {
            ports: names,
            addresses: fdb.len(),
        })
    }

    /// Turns the fast path off at once (every frame to the bridge) and empties the mirror.
    pub fn stop_fast_path(&mut self, mirror: &mut Mirror) -> Result<()> {
        self.maps
            .fast_path
            .set(0, FastPathState::default(), 0)
            .context("switching the fast path off")?;
        for key in mirror.fdb.keys() {
            let _ = self.maps.fdb.remove(key);
        }
        for ifindex in mirror.ports.keys() {
            let _ = self.maps.fast_tx.remove(*ifindex);
        }
        *mirror = Mirror::default();
        self.next_fdb_generation()
    }

    /// The mirror's generation as the datapath sees it (`FDB_GENERATION`'s sum).
    pub fn fdb_generation(&self) -> Result<u64> {
        let mut sum = 0u64;
        for index in [GENERATION_CONTROLLER, GENERATION_DATAPATH] {
            let count = self
                .maps
                .fdb_generation
                .get(&index, 0)
                .context("reading FDB_GENERATION")?;
            sum = sum.wrapping_add(count);
        }
        Ok(sum)
    }

    /// The forwarder's memos on every CPU (`FORWARD_MEMO`), entries never written left out;
    /// those of another generation than `fdb_generation` are stale (never used).
    pub fn forward_memos(&self) -> Result<Vec<ForwardMemo>> {
        let mut memos = Vec::new();
        for slot in 0..FORWARD_MEMO_SLOTS {
            let per_cpu = self
                .maps
                .forward_memo
                .get(&slot, 0)
                .context("reading FORWARD_MEMO")?;
            memos.extend(per_cpu.iter().filter(|m| m.ingress != 0).copied());
        }
        Ok(memos)
    }

    /// Tells the datapath that the mirror changed, so that the forwarder's memos of its
    /// earlier answers (`FORWARD_MEMO`) are no longer used. The controller is this entry's
    /// only writer; the datapath counts its own changes in another.
    pub fn next_fdb_generation(&mut self) -> Result<()> {
        next_generation(&mut self.maps.fdb_generation, "FDB_GENERATION")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brforward_records() {
        let mut raw = Vec::new();
        // 02:00:00:00:00:0a on port 1, learnt; the bridge's own address on port 0x102, local.
        raw.extend_from_slice(&[2, 0, 0, 0, 0, 0x0a, 1, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        raw.extend_from_slice(&[2, 0, 0, 0, 0, 0xbb, 2, 1, 0, 0, 0, 0, 1, 0, 0, 0]);
        raw.extend_from_slice(&[1, 2, 3]);
        let fdb = parse_brforward(&raw);
        assert_eq!(
            fdb,
            vec![
                Learnt {
                    mac: [2, 0, 0, 0, 0, 0x0a],
                    port_no: 1,
                    local: false
                },
                Learnt {
                    mac: [2, 0, 0, 0, 0, 0xbb],
                    port_no: 0x102,
                    local: true
                },
            ]
        );
    }

    fn fake_bridge(root: &Path, vlan_filtering: &str, nf_call: Option<&str>) -> Sysfs {
        let net = root.join("net");
        let br = net.join("br9");
        std::fs::create_dir_all(br.join("bridge")).unwrap();
        std::fs::write(br.join("bridge/vlan_filtering"), vlan_filtering).unwrap();
        let mut raw = Vec::new();
        raw.extend_from_slice(&[2, 0, 0, 0, 0, 0x0a, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        std::fs::write(br.join("brforward"), raw).unwrap();
        for (i, (name, state)) in [("p1", "3"), ("p2", "4")].iter().enumerate() {
            let port = br.join("brif").join(name);
            std::fs::create_dir_all(&port).unwrap();
            std::fs::write(port.join("port_no"), format!("0x{}\n", i + 1)).unwrap();
            std::fs::write(port.join("state"), format!("{state}\n")).unwrap();
            std::fs::write(port.join("isolated"), "0\n").unwrap();
            let dev = net.join(name);
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join("ifindex"), format!("{}\n", 10 + i)).unwrap();
            std::fs::write(dev.join("mtu"), "1500\n").unwrap();
        }
        let sysctl = root.join("sysctl");
        std::fs::create_dir_all(&sysctl).unwrap();
        if let Some(v) = nf_call {
            std::fs::write(sysctl.join("bridge-nf-call-iptables"), v).unwrap();
        }
        Sysfs {
            net,
            bridge_sysctl: sysctl,
        }
    }

    #[test]
    fn bridge_view_from_sysfs() {
        let dir = std::env::temp_dir().join(format!("otfw-fastpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let view = fake_bridge(&dir.join("a"), "0\n", None)
            .read("br9")
            .unwrap();
        assert_eq!(view.blocker, None);
        assert_eq!(view.ports.len(), 2);
        assert_eq!(
            view.ports[1],
            BridgePort {
                name: "p2".into(),
                ifindex: 11,
                port_no: 2,
                state: 4,
                mtu: 1500,
                restricted: false
            }
        );
        assert_eq!(view.fdb.len(), 1);
        let filtering = fake_bridge(&dir.join("b"), "1\n", None)
            .read("br9")
            .unwrap();
        assert!(filtering.blocker.unwrap().contains("VLAN"));
        let netfilter = fake_bridge(&dir.join("c"), "0\n", Some("1\n"))
            .read("br9")
            .unwrap();
        assert!(netfilter.blocker.unwrap().contains("iptables"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
