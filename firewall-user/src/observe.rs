//! Everything `otfw run` exposes about itself besides enforcing: Prometheus metrics, datapath
//! events, the events file, and the pinned maps and state file `otfw status` reads. The
//! controller calls these hooks at each step of its life.

use std::{net::SocketAddr, path::PathBuf, time::SystemTime};

use anyhow::Result;
use tokio::sync::mpsc;

use crate::{
    datapath::{self, AttachedPort, Datapath},
    events::{self, DatapathEvents},
    metrics::{self, Metrics, ScrapeRequest},
    policy::{compiled::CompiledPolicy, git::PolicyCommit},
    status::{InstanceLock, PortState, State},
};

#[derive(Clone, Debug, Default)]
pub struct ObserveOptions {
    /// Where to serve `/metrics`; `None` disables.
    pub metrics: Option<SocketAddr>,
    pub events_file: Option<PathBuf>,
    /// Instance name for pins and state (default: the bridge or first port).
    pub instance: Option<String>,
    /// Pin maps and write the state file for `otfw status`.
    pub pin: bool,
    /// The inventory state file the controller keeps (from the datapath's observed frames)
    /// and exports as metrics; default with pinning: `/var/lib/otfw/<instance>.inventory.json`.
    pub inventory: Option<PathBuf>,
}

pub struct Observer {
    metrics: Metrics,
    events: DatapathEvents,
    /// Set when pinning: the state file's contents.
    state: Option<State>,
    /// The state file an earlier controller of the instance left (ports it attached).
    previous: Option<State>,
    /// Held while pinning: one controller per instance.
    lock: Option<InstanceLock>,
    metrics_addr: Option<SocketAddr>,
    inventory: Option<crate::inventory::exporter::Followed>,
}

impl Observer {
    /// Opens the events file and checks bpffs; `instance` is the default instance name.
    pub fn new(opts: &ObserveOptions, policy_file: &str, instance: &str) -> Result<Observer> {
        if let Some(path) = &opts.events_file {
            events::open_file(path)?;
        }
        let mut inventory = opts.inventory.clone();
        let (state, previous, lock) = if opts.pin {
            datapath::check_bpffs()?;
            let instance = opts
                .instance
                .clone()
                .unwrap_or_else(|| instance.to_string());
            let lock = InstanceLock::take(&instance)?;
            let dir = datapath::pin_dir(&instance);
            if dir.exists() && datapath::enforced_ports(&dir).is_empty() {
                // Nothing enforces through these pins (their ports are gone, or a start failed
                // before attaching): stale, so start afresh.
                let removed = datapath::remove_pins(&dir)?;
                log::info!(
                    "removed the stale pins of instance {instance} from {} ({} programs, {} \
                     maps; no port was enforced through them)",
                    dir.display(),
                    removed.programs,
                    removed.maps
                );
            }
            inventory.get_or_insert_with(|| crate::inventory::live::state_path(&instance));
            let previous = State::previous(&instance);
            // Ports still enforced through the pins stay on record (their GRO change included,
            // for `otfw stop`) even if this start fails before it attaches.
            let enforced = datapath::enforced_ports(&dir);
            let ports = previous
                .iter()
                .flat_map(|p| &p.ports)
                .filter(|p| enforced.contains(&p.name))
                .cloned()
                .collect();
            let state = State {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                policy_file: policy_file.to_string(),
                metrics: opts.metrics.map(|a| a.to_string()),
                events_file: opts.events_file.as_ref().map(|p| p.display().to_string()),
                pin_dir: datapath::pin_dir(&instance).display().to_string(),
                instance,
                ports,
                ..State::default()
            };
            (Some(state), previous, Some(lock))
        } else {
            (None, None, None)
        };
        Ok(Observer {
            metrics: Metrics::new()?,
            events: DatapathEvents::default(),
            state,
            previous,
            lock,
            metrics_addr: opts.metrics,
            inventory: inventory.map(|path| {
                crate::inventory::exporter::Followed::new(path, PathBuf::from(policy_file))
            }),
        })
    }

    /// The inventory state file the controller keeps, if any.
    pub fn inventory_path(&self) -> Option<PathBuf> {
        self.inventory.as_ref().map(|f| f.path().to_path_buf())
    }

    /// Where the datapath's maps are to be pinned, if anywhere.
    pub fn pin_dir(&self) -> Option<PathBuf> {
        self.state.as_ref().map(|s| PathBuf::from(&s.pin_dir))
    }

    /// Starts the metrics server; scrapes arrive on the returned channel.
    pub async fn serve_metrics(&self) -> Result<Option<mpsc::Receiver<ScrapeRequest>>> {
        let Some(addr) = self.metrics_addr else {
            return Ok(None);
        };
        let listener = metrics::bind(addr).await?;
        log::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(metrics::serve(listener, tx));
        Ok(Some(rx))
    }

    pub fn before_install(&mut self, datapath: &Datapath) {
        self.metrics.before_install(datapath);
    }

    pub fn loaded(&mut self, epoch: u32, policy: &CompiledPolicy, git: Option<&PolicyCommit>) {
        self.metrics.policy_loaded(epoch, SystemTime::now(), git);
        self.events.generation(epoch, policy);
        if let Some(state) = self.state.as_mut() {
            state.generation(epoch, &policy.names.conduits);
            state.policy_git = git.cloned();
        }
        self.save();
    }

    /// A generation restricted by a new lockdown order (or by none, on release) is in force:
    /// the policy file's is unchanged, so only the epoch moves.
    pub fn relocked(&mut self, epoch: u32, policy: &CompiledPolicy) {
        self.metrics.policy_epoch(epoch);
        self.events.generation(epoch, policy);
        if let Some(state) = self.state.as_mut() {
            state.generation(epoch, &policy.names.conduits);
        }
    }

    /// The lockdown in force from now on (`None`: none).
    pub fn lockdown(&mut self, lockdown: Option<crate::lockdown::InForce>) {
        self.metrics
            .lockdown(lockdown.as_ref().map(|l| &l.order.lockdown));
        if let Some(state) = self.state.as_mut() {
            state.lockdown = lockdown;
            state.lockdown_refused = None;
        }
        self.save();
    }

    pub fn lockdown_refused(&mut self, error: &str) {
        if let Some(state) = self.state.as_mut() {
            state.lockdown_refused = Some(error.to_string());
        }
        self.save();
    }

    pub fn rejected(&mut self) {
        self.metrics.policy_rejected();
    }

    /// Ports taken over from an earlier controller run in the mode it chose, with GRO as it
    /// left it: both come from its state file.
    pub fn adopt(&self, ports: &mut [AttachedPort]) {
        let known = self.previous.as_ref().map_or(&[][..], |s| &s.ports[..]);
        for port in ports.iter_mut().filter(|p| p.taken_over) {
            if let Some(before) = known.iter().find(|k| k.name == port.name) {
                if before.mode == datapath::PortMode::Native.to_string() {
                    port.mode = datapath::PortMode::Native;
                } else if before.mode == datapath::PortMode::Generic.to_string() {
                    port.mode = datapath::PortMode::Generic;
                }
                port.gro_switched_off = before.gro_switched_off;
            }
        }
    }

    pub fn attached(&mut self, ports: &[AttachedPort]) {
        for port in ports {
            let mode = port.mode.to_string();
            self.metrics.port(&port.name, &mode, true);
            self.events.port(port.ifindex, &port.name);
            if let Some(state) = self.state.as_mut() {
                state.ports.retain(|p| p.name != port.name);
                state.ports.push(PortState {
                    name: port.name.clone(),
                    ifindex: port.ifindex,
                    mode,
                    gro_switched_off: port.gro_switched_off,
                });
            }
        }
        self.save();
    }

    pub fn fast_path(&mut self, status: &crate::datapath::FastPathStatus) {
        self.metrics
            .fast_path(matches!(status, crate::datapath::FastPathStatus::On { .. }));
        if let Some(state) = self.state.as_mut() {
            state.fast_path = Some(status.to_string());
        }
        self.save();
    }

    pub fn scrape(&mut self, datapath: &Datapath, reply: ScrapeRequest) {
        if let Some(records) = self.inventory.as_mut().and_then(|i| i.changed()) {
            self.metrics.assets.set(&records);
        }
        match self.metrics.scrape(datapath) {
            Ok(body) => {
                let _ = reply.send(body);
            }
            // Dropping `reply` answers the scrape with an error.
            Err(e) => log::error!("metrics: reading the datapath failed: {e:#}"),
        }
    }

    /// Flows the controller's sweep removed.
    pub fn flows_swept(&self, n: u64) {
        self.metrics.flows_swept(n);
    }

    /// One record of the datapath's event ring.
    pub fn datapath_event(&self, record: &[u8]) {
        match self.events.decode(record) {
            Some(event) => events::emit(&event),
            None => log::debug!("unknown datapath event record ({} bytes)", record.len()),
        }
    }

    /// A start that failed with nothing enforced: no state file stays behind.
    pub fn abandon(&mut self) {
        if let Some(state) = self.state.take() {
            State::remove(&state.instance);
        }
        if let Some(lock) = self.lock.take() {
            lock.remove();
        }
    }

    /// Where the instance's enforcement is pinned, for the message at exit.
    pub fn instance(&self) -> Option<&str> {
        self.state.as_ref().map(|s| s.instance.as_str())
    }

    fn save(&self) {
        if let Some(state) = &self.state {
            if let Err(e) = state.save() {
                log::warn!("otfw status will not see this instance: {e:#}");
            }
        }
    }
}
