//! The lab of the fast-path case: the forwarder redirects only a frame whose source the mirror
//! of the bridge has learnt on the port it arrives on and whose destination on another port.
//! Test-run frames arrive on the loopback device; the other port is a veth. Both live in a
//! network namespace of the benchmark's own thread (`unshare`), which goes away with the
//! process: the host's interfaces are never touched, and nothing is sent (a test run returns
//! `XDP_REDIRECT` without transmitting).

use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _, Result};

use crate::datapath::{ifindex, BridgePort, BridgeView, Datapath, FastPathStatus, Learnt, Mirror};

use super::frames::{CLIENT_MAC, SERVER_MAC};

/// The other bridge port of the lab.
const PORT: &str = "otfwfwd0";
/// `BR_STATE_FORWARDING`.
const FORWARDING: u8 = 3;

pub struct ForwardingLab {
    view: BridgeView,
    attached: [u32; 2],
    /// What each datapath's mirror holds, by the benchmark's index of the datapath.
    mirrors: Vec<Mirror>,
}

impl ForwardingLab {
    /// Moves the calling thread into a network namespace of its own and makes the lab's ports
    /// there, for `datapaths` datapaths.
    pub fn new(datapaths: usize) -> Result<ForwardingLab> {
        // SAFETY: unshare takes flags only; it moves the calling thread, which every later
        // step of the benchmark runs on.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            bail!(
                "the fast-path case needs a network namespace of its own (unshare): {}; run \
                 the benchmark as root",
                std::io::Error::last_os_error()
            );
        }
        // A child process inherits the namespace of the thread that starts it.
        let status = Command::new("ip")
            .args([
                "link", "add", PORT, "type", "veth", "peer", "name", "otfwfwd1",
            ])
            .stdin(Stdio::null())
            .status()
            .context("starting `ip link add` (iproute2) for the fast-path case")?;
        ensure!(
            status.success(),
            "`ip link add {PORT} type veth` failed ({status}): the fast-path case needs veth links"
        );
        let (lo, other) = (ifindex("lo")?, ifindex(PORT)?);
        let port = |name: &str, ifindex, port_no| BridgePort {
            name: name.into(),
            ifindex,
            port_no,
            state: FORWARDING,
            mtu: 1500,
            restricted: false,
        };
        let learnt = |mac, port_no| Learnt {
            mac,
            port_no,
            local: false,
        };
        Ok(ForwardingLab {
            view: BridgeView {
                ports: vec![port("lo", lo, 1), port(PORT, other, 2)],
                fdb: vec![learnt(CLIENT_MAC, 1), learnt(SERVER_MAC, 2)],
                blocker: None,
            },
            attached: [lo, other],
            mirrors: (0..datapaths).map(|_| Mirror::default()).collect(),
        })
    }

    /// `measure` on datapath `index`, with its fast path on if `fast_path` (and this lab
    /// there); off again afterwards, so that the other cases measure the bridge's path.
    pub fn run<T>(
        lab: Option<&mut ForwardingLab>,
        fast_path: bool,
        datapath: &mut Datapath,
        index: usize,
        measure: impl FnOnce(&mut Datapath) -> Result<T>,
    ) -> Result<T> {
        let Some(lab) = lab.filter(|_| fast_path) else {
            return measure(datapath);
        };
        lab.on(datapath, index)?;
        let out = measure(datapath)?;
        lab.off(datapath, index)?;
        Ok(out)
    }

    /// Switches the fast path of datapath `index` on (its validity renewed: it lasts a
    /// second).
    fn on(&mut self, datapath: &mut Datapath, index: usize) -> Result<()> {
        let status =
            datapath.sync_fast_path(&mut self.mirrors[index], Some(&self.view), &self.attached)?;
        ensure!(
            matches!(status, FastPathStatus::On { .. }),
            "the fast path of the benchmark lab did not come on: {status:?}"
        );
        Ok(())
    }

    /// Switches it off again.
    fn off(&mut self, datapath: &mut Datapath, index: usize) -> Result<()> {
        datapath.stop_fast_path(&mut self.mirrors[index])
    }
}
