//! `otfw run`: load a policy, attach to the bridge ports, enforce; reload on SIGHUP and when the
//! policy file changes; print the datapath counters as a `stats` event on SIGUSR1; exit on
//! SIGINT/SIGTERM. A policy that fails to load is reported and the generation in force stays.
//!
//! Fail secure: the program, its links and maps are pinned (`datapath::pin`), so enforcement
//! goes on with the policy in force when the controller exits, however it exits; the next
//! controller of the instance takes the pinned state over. Only with `--no-pin` are the links
//! the controller's own, detached when it exits.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash as _, Hasher as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::{AsyncFd, AsyncFdReadyMutGuard};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    datapath::{
        bridge_nftables, bridge_ports, common_bridge, enforced_ports, finish_replacement,
        links_dir, remove_pins, Datapath, EnipDenied, FastPathChoice, FastPathStatus, LayoutChange,
        Mirror, ModbusDenied, ModeChoice, Sysfs, SYNC_INTERVAL,
    },
    events::{self, Event},
    inventory::{self, live::LiveInventory},
    lockdown,
    observe::Observer,
    policy::{
        compiled::{Attachment, CompiledPolicy},
        git::commit_of,
        permissions::{self, OVERRIDE_FLAG},
    },
    rollout,
};

use firewall_common::counters::PATH_STAT_NAMES;

pub use crate::observe::ObserveOptions;

pub struct RunOptions {
    pub policy: PathBuf,
    /// Attach to every port of this bridge (overrides the policy's `gateway`).
    pub bridge: Option<String>,
    /// Attach to these interfaces (overrides the policy's `gateway`).
    pub interfaces: Vec<String>,
    /// How often the policy file is checked for changes.
    pub watch_interval: Duration,
    pub xdp_mode: ModeChoice,
    /// Which ports forward allowed frames port to port (`datapath::fastpath`).
    pub fast_path: FastPathChoice,
    /// Load a policy file that users other than root can change (`policy::permissions`).
    pub allow_insecure_policy_permissions: bool,
    /// Pinned maps of another layout (an upgrade that changed them) are replaced by fresh ones
    /// instead of refusing to start (`datapath::LayoutChange`).
    pub replace_incompatible_maps: bool,
    pub observe: ObserveOptions,
}

/// Reads and compiles a policy file; `Err` holds one message per problem (`file:line:col: ...`).
pub type PolicyLoader = fn(&std::path::Path) -> std::result::Result<CompiledPolicy, Vec<String>>;

pub async fn run(opts: RunOptions, load: PolicyLoader) -> Result<()> {
    let file = opts.policy.display().to_string();
    // Taken before the first load: a change made while the controller starts (after the
    // file was read) is seen by the first check of the watch below.
    let mut fingerprint = file_fingerprint(&opts.policy);
    let load = TrustedLoader {
        load,
        allow_insecure: opts.allow_insecure_policy_permissions,
    };
    let mut policy = match load.load(&opts.policy) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                log::error!("{e}");
            }
            events::emit(&Event::PolicyRejected {
                file: &file,
                errors: &errors,
                kept_epoch: None,
            });
            bail!("policy {file} has errors; nothing was attached");
        }
    };
    let ports = match (&opts.bridge, opts.interfaces.is_empty(), &policy.attachment) {
        (Some(bridge), _, _) => bridge_ports(bridge)?,
        (None, false, _) => opts.interfaces.clone(),
        (None, true, Attachment::Bridge(bridge)) => bridge_ports(bridge)?,
        (None, true, Attachment::Interfaces(ifaces)) => ifaces.clone(),
    };

    let bridge = opts.bridge.clone().or_else(|| match &policy.attachment {
        Attachment::Bridge(bridge) if opts.interfaces.is_empty() => Some(bridge.clone()),
        _ => None,
    });
    let instance = bridge
        .clone()
        .unwrap_or_else(|| ports.first().cloned().unwrap_or_default());
    let mut observer = Observer::new(&opts.observe, &file, &instance)?;
    let pin_dir = observer.pin_dir();
    let mut lockdown = lockdown::Control::open(observer.instance());
    // `otfw apply` waiting for `otfw confirm`: rolled back at its deadline.
    let mut rollout = rollout::Watch::new(observer.instance());
    let enforced_before = pin_dir.as_deref().map(enforced_ports).unwrap_or_default();
    if !enforced_before.is_empty() {
        log::info!(
            "taking over the pinned enforcement of {} from {}",
            enforced_before.join(", "),
            pin_dir
                .as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        );
    }
    // A start that fails before any port is enforced leaves no pins behind; with ports already
    // enforced (a takeover), whatever is pinned keeps enforcing.
    let start = async {
        let layout = if opts.replace_incompatible_maps {
            LayoutChange::Replace
        } else {
            LayoutChange::Refuse
        };
        let mut datapath = Datapath::load_pinned(pin_dir.as_deref(), layout)?;
        let epoch = datapath.install(&lockdown.restrict(&policy)?)?.epoch;
        in_force(&mut observer, &opts.policy, &file, epoch, &policy);
        lockdown.started(epoch, &mut observer);
        let scrapes = observer.serve_metrics().await?;
        let links = pin_dir.as_deref().map(links_dir);
        let attached = datapath.attach(&ports, opts.xdp_mode, links.as_deref())?;
        anyhow::Ok((datapath, scrapes, attached))
    };
    let (mut datapath, mut scrapes, mut attached) = match start.await {
        Ok(started) => started,
        Err(e) => {
            if let (Some(dir), true) = (&pin_dir, enforced_before.is_empty()) {
                if enforced_ports(dir).is_empty() {
                    let _ = remove_pins(dir);
                    observer.abandon();
                }
            }
            return Err(e);
        }
    };
    for port in enforced_before
        .iter()
        .filter(|p| !attached.ports.iter().any(|a| &a.name == *p))
    {
        log::warn!(
            "{port} is no longer among the ports to enforce, but its pinned link stays (with \
             the previous program, on the shared maps); only `otfw stop` removes enforcement, \
             for the whole instance"
        );
    }
    if let (Some(differences), Some(dir)) = (datapath.replacing_maps(), &pin_dir) {
        // Every port runs the new program now (attach is all or nothing): the old maps are
        // only held by programs no port runs any more.
        finish_replacement(dir)?;
        log::info!(
            "replaced the pinned maps of another layout ({}); every port runs this version on \
             fresh maps",
            differences.join("; ")
        );
        events::emit(&Event::MapsReplaced { differences });
    }
    observer.adopt(&mut attached.ports);
    observer.attached(&attached.ports);
    for port in &attached.ports {
        if port.taken_over {
            log::info!(
                "took over {} ({} XDP): the new program replaced the old one on its pinned \
                 link atomically",
                port.name,
                port.mode
            );
        } else {
            log::info!("attached to {} ({} XDP)", port.name, port.mode);
        }
        events::emit(&Event::Attached {
            port: &port.name,
            ifindex: port.ifindex,
            mode: port.mode.to_string(),
            pinned: port.pinned(),
            taken_over: port.taken_over,
        });
    }
    // Handlers first: whoever waits for `ready` may signal at once (SIGUSR1 would otherwise
    // terminate the process).
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    // `otfw lockdown` changed the instance's lockdown order.
    let mut user2 = signal(SignalKind::user_defined2())?;
    events::emit(&Event::Ready {
        ports: attached.ports.len(),
    });

    // Ports named one by one may still be the ports of one bridge.
    let bridge = bridge.or_else(|| common_bridge(&ports));
    let risky = opts.fast_path.risky_ports(&attached);
    if !risky.is_empty() {
        log::warn!(
            "--fast-path on with native XDP on veth ports ({}): frames redirected to them are \
             dropped unless the peer runs XDP or has GRO on; use --fast-path auto otherwise",
            risky.join(", ")
        );
    }
    let mut fast_path = FastPath::new(opts.fast_path, bridge, &attached);
    fast_path.sync(&mut datapath, &mut observer);
    let mut fast_path_sync = tokio::time::interval(SYNC_INTERVAL);
    let mut watch = tokio::time::interval(opts.watch_interval);
    // Flows idle past their timeout that no packet found expired (`Datapath::sweep_flows`).
    let mut flow_sweep = tokio::time::interval(FLOW_SWEEP_INTERVAL);
    // The program's own log messages (aya-log), forwarded to stderr as they arrive.
    let mut kernel_log = watch_fd(datapath.take_logger())?;
    // Denied packets and adopted flows, rate-limited by the datapath.
    let mut datapath_events = watch_fd(datapath.take_events())?;
    // Denied Modbus and EtherNet/IP requests, from the inspectors' ring buffers.
    let mut modbus_events = watch_fd(datapath.take_modbus_events())?;
    let mut enip_events = watch_fd(datapath.take_enip_events())?;
    // Flow answers and identity answers copied by the datapath, kept as the instance's
    // inventory (`inventory::live`).
    let mut observed = watch_fd(datapath.take_observed())?;
    // The inspectors' first-use copies: what each connection's client uses.
    let mut observed_uses = watch_fd(datapath.take_observed_uses())?;
    let mut live_inventory = observer.inventory_path().map(LiveInventory::open);
    if let Some(live) = &live_inventory {
        log::info!(
            "keeping the inventory of the live datapath in {}",
            live.path().display()
        );
    }
    let mut inventory_save = tokio::time::interval(inventory::live::SAVE_INTERVAL);
    let mut events_lost = 0;
    let mut enip_events_lost = 0;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                log::info!("SIGHUP: reloading {file}");
                fingerprint = file_fingerprint(&opts.policy);
                reload(&mut datapath, &mut observer, &opts.policy, &file, load, &mut policy, &lockdown);
            }
            _ = user2.recv() => lockdown.reread(&mut datapath, &mut observer, &policy),
            _ = watch.tick() => {
                lockdown.reread(&mut datapath, &mut observer, &policy);
                // A rollback writes the old policy into the file: the check below reloads it.
                rollout.tick();
                let lost = datapath.modbus_events_lost().unwrap_or(events_lost);
                if lost != events_lost {
                    events_lost = lost;
                    events::emit(&Event::ModbusEventsLost { total: lost });
                }
                let lost = datapath.enip_counts().map_or(enip_events_lost, |c| c.0);
                if lost != enip_events_lost {
                    enip_events_lost = lost;
                    events::emit(&Event::EnipEventsLost { total: lost });
                }
                let now = file_fingerprint(&opts.policy);
                if now != fingerprint {
                    fingerprint = now;
                    if fingerprint.is_some() {
                        log::info!("{file} changed: reloading");
                        reload(&mut datapath, &mut observer, &opts.policy, &file, load, &mut policy, &lockdown);
                    } else {
                        log::warn!("{file} cannot be read; the policy in force stays");
                    }
                }
            }
            ready = readable(&mut kernel_log) => {
                let mut guard = ready?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            ready = readable(&mut observed) => feed_inventory(ready?, &mut live_inventory),
            ready = readable(&mut observed_uses) => feed_inventory(ready?, &mut live_inventory),
            _ = inventory_save.tick() => save_inventory(&mut live_inventory),
            ready = readable(&mut datapath_events) => {
                let mut guard = ready?;
                let ring = guard.get_inner_mut();
                while let Some(record) = ring.next() {
                    observer.datapath_event(&record);
                }
                guard.clear_ready();
            }
            Some(reply) = async {
                match scrapes.as_mut() {
                    Some(scrapes) => scrapes.recv().await,
                    None => std::future::pending().await,
                }
            } => observer.scrape(&datapath, reply),
            _ = user1.recv() => emit_stats(&datapath),
            _ = fast_path_sync.tick() => fast_path.sync(&mut datapath, &mut observer),
            _ = flow_sweep.tick() => match datapath.sweep_flows() {
                Ok(sweep) => observer.flows_swept(sweep.swept),
                Err(e) => log::warn!("sweeping idle flows failed: {e:#}"),
            },
            ready = readable(&mut modbus_events) => {
                let names = datapath.active().map(|g| &g.names);
                drain(ready?, |bytes| {
                    ModbusDenied::decode(bytes, names).map(Event::ModbusDenied)
                });
            }
            ready = readable(&mut enip_events) => {
                let names = datapath.active().map(|g| &g.names);
                drain(ready?, |bytes| EnipDenied::decode(bytes, names).map(Event::EnipDenied));
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    save_inventory(&mut live_inventory);
    // Every frame back to the bridge: the mirror is not kept without the controller (a pinned
    // program keeps enforcing on the slow path).
    fast_path.stop(&mut datapath);
    let pinned: Vec<String> = attached
        .ports
        .iter()
        .filter(|p| p.pinned())
        .map(|p| p.name.clone())
        .collect();
    for port in &datapath.detach(attached) {
        log::info!("detached from {port}");
        events::emit(&Event::Detached { port });
    }
    if let (false, Some(instance)) = (pinned.is_empty(), observer.instance()) {
        log::info!(
            "exiting; the pinned program goes on enforcing the policy in force on {} (`otfw \
             stop --instance {instance}` removes it)",
            pinned.join(", ")
        );
    }
    Ok(())
}

/// Adds what the datapath showed since the last save to the inventory state file.
fn save_inventory(inventory: &mut Option<LiveInventory>) {
    if let Some(live) = inventory.as_mut() {
        if let Err(e) = live.save() {
            log::warn!("keeping the inventory in {}: {e:#}", live.path().display());
        }
    }
}

/// The controller's side of the fast path: reads the bridge, writes the mirror, reports changes.
struct FastPath {
    choice: FastPathChoice,
    bridge: Option<String>,
    ports: Vec<u32>,
    sysfs: Sysfs,
    mirror: Mirror,
    /// The last status reported (only changes are).
    status: Option<FastPathStatus>,
    /// Bridge-family nftables tables, checked every `NFT_CHECK` (it runs a program).
    nftables: Option<String>,
    nft_checked: Option<Instant>,
}

/// How often idle flows are swept out of the flow table: a flow expired a little late only
/// holds its zone's share that much longer.
const FLOW_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

const NFT_CHECK: Duration = Duration::from_secs(5);

impl FastPath {
    fn new(
        choice: FastPathChoice,
        bridge: Option<String>,
        attached: &crate::datapath::Attached,
    ) -> Self {
        FastPath {
            choice,
            bridge,
            ports: choice.ports(attached),
            sysfs: Sysfs::default(),
            mirror: Mirror::default(),
            status: None,
            nftables: None,
            nft_checked: None,
        }
    }

    fn sync(&mut self, datapath: &mut Datapath, observer: &mut Observer) {
        let status = match (self.choice, &self.bridge) {
            (FastPathChoice::Off, _) => {
                Ok(FastPathStatus::Off("switched off (--fast-path off)".into()))
            }
            (_, None) => Ok(FastPathStatus::Off(
                "no bridge (attached to interfaces by name)".into(),
            )),
            _ if self.ports.len() < 2 => Ok(FastPathStatus::Off(
                "fewer than two ports in generic XDP mode (--fast-path on includes native ports)"
                    .into(),
            )),
            (_, Some(bridge)) => match self.sysfs.read(bridge) {
                Ok(mut view) => {
                    if self.nft_checked.is_none_or(|at| at.elapsed() >= NFT_CHECK) {
                        self.nftables = bridge_nftables();
                        self.nft_checked = Some(Instant::now());
                    }
                    if view.blocker.is_none() {
                        view.blocker = self.nftables.clone();
                    }
                    datapath.sync_fast_path(&mut self.mirror, Some(&view), &self.ports)
                }
                Err(e) => Ok(FastPathStatus::Off(format!("reading the bridge: {e:#}"))),
            },
        };
        let status = status.unwrap_or_else(|e| {
            // A map write failed: stop redirecting rather than trust a half-written mirror.
            let _ = datapath.stop_fast_path(&mut self.mirror);
            FastPathStatus::Off(format!("updating the mirror failed: {e:#}"))
        });
        if let FastPathStatus::Off(_) = status {
            if let Err(e) = datapath.stop_fast_path(&mut self.mirror) {
                log::warn!("switching the fast path off: {e:#}");
            }
        }
        if self.status.as_ref() != Some(&status) {
            self.report(&status, observer);
            self.status = Some(status);
        }
    }

    fn report(&self, status: &FastPathStatus, observer: &mut Observer) {
        // The address count changes all the time; only the state and the ports are news.
        let (enabled, ports, reason) = match status {
            FastPathStatus::On { ports, .. } => (true, ports.as_slice(), None),
            FastPathStatus::Off(why) => (false, &[][..], Some(why.as_str())),
        };
        let same = match (&self.status, status) {
            (Some(FastPathStatus::On { ports: a, .. }), FastPathStatus::On { ports: b, .. }) => {
                a == b
            }
            _ => false,
        };
        if same {
            return;
        }
        log::info!("fast path {status}");
        observer.fast_path(status);
        events::emit(&Event::FastPath {
            enabled,
            ports,
            reason,
        });
    }

    fn stop(&mut self, datapath: &mut Datapath) {
        if let Err(e) = datapath.stop_fast_path(&mut self.mirror) {
            log::warn!("switching the fast path off: {e:#}");
        }
    }
}

fn emit_stats(datapath: &Datapath) {
    let counters = datapath.counters();
    let conduits = datapath.conduit_traffic();
    let requests = crate::metrics::inspector_requests(datapath);
    match (counters, conduits, requests) {
        (Ok(counters), Ok(conduits), Ok(requests)) => {
            let epoch = datapath.active().map(|g| g.epoch);
            let mut event = Event::stats(epoch, &counters, &conduits, &requests);
            if let (Event::Stats { paths, .. }, Ok(counts)) = (&mut event, datapath.path_stats()) {
                paths.extend(
                    PATH_STAT_NAMES
                        .iter()
                        .zip(counts)
                        .filter(|(_, n)| *n != 0)
                        .map(|(&name, n)| (name, n)),
                );
            }
            events::emit(&event);
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            log::error!("SIGUSR1: reading the counters failed: {e:#}")
        }
    }
}

/// Loads the policy file again into `base` and installs it, restricted by the lockdown in force.
fn reload(
    datapath: &mut Datapath,
    observer: &mut Observer,
    path: &std::path::Path,
    file: &str,
    load: TrustedLoader,
    base: &mut CompiledPolicy,
    lockdown: &lockdown::Control,
) {
    let kept = datapath.active().map(|g| g.epoch);
    let loaded = load.load(path);
    if loaded.is_ok() {
        observer.before_install(datapath);
    }
    match loaded {
        Ok(policy) => match lockdown
            .restrict(&policy)
            .and_then(|restricted| Ok(datapath.install(&restricted)?.epoch))
        {
            Ok(epoch) => {
                in_force(observer, path, file, epoch, &policy);
                lockdown.installed(epoch, observer);
                *base = policy;
            }
            Err(e) => {
                observer.rejected();
                let errors = vec![format!("{e:#}")];
                log::error!("installing {file} failed, the previous policy stays: {e:#}");
                events::emit(&Event::PolicyRejected {
                    file,
                    errors: &errors,
                    kept_epoch: kept,
                });
            }
        },
        Err(errors) => {
            observer.rejected();
            for e in &errors {
                log::error!("{e}");
            }
            log::error!("{file} rejected; the policy in force (epoch {kept:?}) stays");
            events::emit(&Event::PolicyRejected {
                file,
                errors: &errors,
                kept_epoch: kept,
            });
        }
    }
}

/// How the controller reads its policy file, at start and at every reload.
#[derive(Clone, Copy)]
struct TrustedLoader {
    load: PolicyLoader,
    /// `--allow-insecure-policy-permissions`.
    allow_insecure: bool,
}

impl TrustedLoader {
    /// Loads the policy file if only root (or otfw's user) can change it, or if the operator
    /// accepted that others can (then with a warning each time).
    fn load(&self, path: &std::path::Path) -> std::result::Result<CompiledPolicy, Vec<String>> {
        if let Err(insecure) = permissions::check(path) {
            if !self.allow_insecure {
                return Err(vec![insecure.to_string()]);
            }
            log::warn!("{} (accepted: {OVERRIDE_FLAG})", insecure.0);
        }
        (self.load)(path)
    }
}

/// A generation was installed: logged, recorded (with the git commit of the policy file, if
/// any) and announced as `policy_loaded`.
fn in_force(
    observer: &mut Observer,
    path: &std::path::Path,
    file: &str,
    epoch: u32,
    policy: &CompiledPolicy,
) {
    let git = commit_of(path);
    match &git {
        Some(g) => log::info!(
            "policy {file} in force (epoch {epoch}, commit {}{})",
            g.commit,
            if g.dirty { ", work tree dirty" } else { "" }
        ),
        None => log::info!("policy {file} in force (epoch {epoch})"),
    }
    observer.loaded(epoch, policy, git.as_ref());
    events::emit(&Event::PolicyLoaded {
        file,
        epoch,
        zones: policy.zone_info.len(),
        conduits: policy
            .names
            .conduits
            .len()
            .saturating_sub(firewall_common::conduit::FIRST_CONDUIT as usize),
        git: git.as_ref(),
    });
}

/// A hash of the file's contents, and the mode and owner of the file and its directory (None
/// if unreadable): editors replace files in ways mtime alone does not reliably show, and a
/// touch without change should not reload; a `chmod go-w` of a file (or directory) refused
/// for its permissions should.
fn file_fingerprint(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    (meta.mode(), meta.uid()).hash(&mut h);
    let dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|real| std::fs::metadata(real.parent()?).ok());
    dir.map(|d| (d.mode(), d.uid())).hash(&mut h);
    Some(h.finish())
}

/// Registers a ring buffer (or the kernel log reader, which owns one) with the runtime.
fn watch_fd<T: std::os::fd::AsRawFd>(inner: Option<T>) -> std::io::Result<Option<AsyncFd<T>>> {
    inner
        .map(|inner| {
            // SAFETY: `inner` owns its file descriptor and is moved into the AsyncFd, which
            // deregisters it before dropping it.
            unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
        })
        .transpose()
}

/// Waits until `fd` is readable; never completes when there is no `fd`.
async fn readable<T: std::os::fd::AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
) -> std::io::Result<AsyncFdReadyMutGuard<'_, T>> {
    match fd.as_mut() {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// Adds every frame waiting in a copying ring buffer to the live inventory (if it is kept).
fn feed_inventory(
    mut guard: AsyncFdReadyMutGuard<'_, RingBuf<MapData>>,
    live_inventory: &mut Option<LiveInventory>,
) {
    let ring = guard.get_inner_mut();
    let clock = inventory::live::Clock::now();
    while let Some(record) = ring.next() {
        if let Some(live) = live_inventory.as_mut() {
            live.record(&record, &clock);
        }
    }
    guard.clear_ready();
}

/// Emits an event for every record waiting in an inspector's ring buffer.
fn drain<'e>(
    mut guard: AsyncFdReadyMutGuard<'_, RingBuf<MapData>>,
    decode: impl Fn(&[u8]) -> Option<Event<'e>>,
) {
    let ring = guard.get_inner_mut();
    while let Some(item) = ring.next() {
        if let Some(event) = decode(&item) {
            events::emit(&event);
        }
    }
    guard.clear_ready();
}
