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
    policy::compiled::CompiledPolicy,
    status::{PortState, State},
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
    /// An inventory state file whose assets are exported as metrics.
    pub inventory: Option<PathBuf>,
}

pub struct Observer {
    metrics: Metrics,
    events: DatapathEvents,
    /// Set when pinning: the state file's contents.
    state: Option<State>,
    metrics_addr: Option<SocketAddr>,
    inventory: Option<crate::inventory::exporter::Followed>,
}

impl Observer {
    /// Opens the events file and checks bpffs; `instance` is the default instance name.
    pub fn new(opts: &ObserveOptions, policy_file: &str, instance: &str) -> Result<Observer> {
        if let Some(path) = &opts.events_file {
            events::open_file(path)?;
        }
        let state = if opts.pin {
            datapath::check_bpffs()?;
            let instance = opts
                .instance
                .clone()
                .unwrap_or_else(|| instance.to_string());
            Some(State {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                policy_file: policy_file.to_string(),
                metrics: opts.metrics.map(|a| a.to_string()),
                events_file: opts.events_file.as_ref().map(|p| p.display().to_string()),
                pin_dir: datapath::pin_dir(&instance).display().to_string(),
                instance,
                ..State::default()
            })
        } else {
            None
        };
        Ok(Observer {
            metrics: Metrics::new()?,
            events: DatapathEvents::default(),
            state,
            metrics_addr: opts.metrics,
            inventory: opts.inventory.clone().map(|path| {
                crate::inventory::exporter::Followed::new(path, PathBuf::from(policy_file))
            }),
        })
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

    pub fn loaded(&mut self, epoch: u32, policy: &CompiledPolicy) {
        self.metrics.policy_loaded(epoch, SystemTime::now());
        self.events.generation(epoch, policy);
        if let Some(state) = self.state.as_mut() {
            state.generation(epoch, &policy.names.conduits);
        }
        self.save();
    }

    pub fn rejected(&mut self) {
        self.metrics.policy_rejected();
    }

    pub fn attached(&mut self, ports: &[AttachedPort]) {
        for port in ports {
            let mode = port.mode.to_string();
            self.metrics.port(&port.name, &mode, true);
            self.events.port(port.ifindex, &port.name);
            if let Some(state) = self.state.as_mut() {
                state.ports.push(PortState {
                    name: port.name.clone(),
                    ifindex: port.ifindex,
                    mode,
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

    /// One record of the datapath's event ring.
    pub fn datapath_event(&self, record: &[u8]) {
        match self.events.decode(record) {
            Some(event) => events::emit(&event),
            None => log::debug!("unknown datapath event record ({} bytes)", record.len()),
        }
    }

    /// Clean shutdown: the pins and the state file go.
    pub fn shutdown(&mut self) {
        if let Some(state) = self.state.take() {
            datapath::unpin(std::path::Path::new(&state.pin_dir));
            State::remove(&state.instance);
        }
    }

    fn save(&self) {
        if let Some(state) = &self.state {
            if let Err(e) = state.save() {
                log::warn!("otfw status will not see this instance: {e:#}");
            }
        }
    }
}
