//! Observing `otfw run` from outside: plain HTTP GETs on loopback (a scrape of `/metrics`), and
//! a real Prometheus server run as a child process with a generated configuration.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// A loopback address with a port nobody listens on right now.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(listener.local_addr()?)
}

/// `GET path` over HTTP/1.0; the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the answer of {addr}{path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header end in the answer of {addr}{path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The body of `http://addr/metrics`, failing on another status than 200.
pub fn scrape(addr: SocketAddr) -> Result<String> {
    let (status, body) = http_get(addr, "/metrics")?;
    if status != 200 {
        bail!("GET http://{addr}/metrics answered {status}: {body}");
    }
    Ok(body)
}

/// Percent-encodes a query parameter value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping one target every second, with its data in a temporary
/// directory. Stopped (by its PID) and the directory removed when dropped, also on panic.
pub struct PrometheusServer {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `target` as job `otfw`; returns once it is ready.
    pub fn start(target: SocketAddr) -> Result<PrometheusServer> {
        let binary = which("prometheus").context(
            "prometheus is not installed: run `cargo xtask setup` (Debian package prometheus)",
        )?;
        let addr = free_loopback_addr()?;
        let dir = std::env::temp_dir().join(format!("otfw-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: otfw\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let server = PrometheusServer { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(addr, "/-/ready") {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("prometheus did not get ready: {}", server.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Prometheus's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API: the `data.result` array, as JSON text.
    pub fn query(&self, promql: &str) -> Result<String> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = http_get(self.addr, &path)?;
        if status != 200 {
            bail!("query {promql:?} answered {status}: {body}");
        }
        Ok(body)
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the PID is our unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}
