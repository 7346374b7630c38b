//! Real traffic between lab hosts, bounded in count and time: `otfw-peer` (TCP and UDP
//! endpoints) and `ping`, run inside the hosts' namespaces, with their results parsed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::lab::Lab;
use crate::process::{LabProcess, ProcessOutput};

/// How long to wait for a server to report that it is listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a client process gets beyond its own timeouts before it is killed.
const MARGIN: Duration = Duration::from_secs(5);

/// What one TCP connection attempt (and optional echoed line) came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpOutcome {
    Connected,
    /// Connected, sent a line and got it back.
    Echoed,
    Refused,
    TimedOut,
    Unreachable,
    Reset,
    /// Connected, then the peer closed before echoing.
    Closed,
    /// Connected, but the echo did not come in time.
    NoReply,
    Error(String),
}

/// What a round of UDP datagrams came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpOutcome {
    pub sent: u32,
    /// Datagrams whose echo came back.
    pub received: u32,
    /// ICMP port unreachable answers.
    pub refused: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingOutcome {
    pub transmitted: u32,
    pub received: u32,
}

/// The end of a `hold_tcp` session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldSummary {
    /// `completed` (held for the whole duration), `broken` (closed or reset), or the
    /// connect outcome (`refused`, `timeout`, ...) when it never connected.
    pub result: String,
    pub ok: u32,
    pub failed: u32,
}

impl HoldSummary {
    /// Parses the final line of a finished `hold_tcp` process.
    pub fn from_output(output: &ProcessOutput) -> Result<Self> {
        let line = result_line(output)?;
        Ok(Self {
            result: field(line, "result").unwrap_or_default().to_string(),
            ok: number(line, "ok").unwrap_or(0),
            failed: number(line, "failed").unwrap_or(0),
        })
    }

    /// Held for the whole duration with every exchange answered.
    pub fn unbroken(&self) -> bool {
        self.result == "completed" && self.failed == 0 && self.ok > 0
    }
}

impl Lab {
    fn peer_args(&self, args: &[String]) -> Result<Vec<String>> {
        let peer = self.peer_binary()?;
        let mut all = vec![peer.to_string_lossy().into_owned()];
        all.extend(args.iter().cloned());
        Ok(all)
    }

    fn run_peer(&self, host: &str, args: &[String], timeout: Duration) -> Result<ProcessOutput> {
        let output = self.exec_timeout(host, &self.peer_args(args)?, timeout + MARGIN)?;
        if !output.success() {
            bail!(
                "otfw-peer {} on host `{host}` failed ({}): {}{}",
                args.join(" "),
                output.status,
                output.stdout.trim_end(),
                output.stderr.trim_end()
            );
        }
        Ok(output)
    }

    fn spawn_server(&self, host: &str, args: &[String]) -> Result<LabProcess> {
        let mut server = self.spawn(host, &self.peer_args(args)?)?;
        server
            .wait_for_line(|line| line.starts_with("listening "), READY_TIMEOUT)
            .with_context(|| format!("otfw-peer {} on host `{host}`", args.join(" ")))?;
        Ok(server)
    }

    /// A TCP line-echo server on `port` (IPv4 and IPv6) in `host`, listening when this
    /// returns. It prints `accepted peer=ADDR` and `closed peer=ADDR lines=N end=WHY`.
    pub fn tcp_echo_server(&self, host: &str, port: u16) -> Result<LabProcess> {
        self.spawn_server(host, &["listen-tcp".into(), format!("[::]:{port}")])
    }

    /// A UDP echo server on `port` (IPv4 and IPv6) in `host`, listening when this returns.
    /// It prints `received peer=ADDR bytes=N` per datagram.
    pub fn udp_echo_server(&self, host: &str, port: u16) -> Result<LabProcess> {
        self.spawn_server(host, &["udp-echo".into(), format!("[::]:{port}")])
    }

    /// One TCP connection attempt from `from` to `to`.
    pub fn tcp_connect(&self, from: &str, to: SocketAddr, timeout: Duration) -> Result<TcpOutcome> {
        self.tcp_client(from, to, timeout, None)
    }

    /// Connects, sends `line` and waits for its echo (see [`Lab::tcp_echo_server`]).
    pub fn tcp_echo(
        &self,
        from: &str,
        to: SocketAddr,
        line: &str,
        timeout: Duration,
    ) -> Result<TcpOutcome> {
        self.tcp_client(from, to, timeout, Some(line))
    }

    fn tcp_client(
        &self,
        from: &str,
        to: SocketAddr,
        timeout: Duration,
        line: Option<&str>,
    ) -> Result<TcpOutcome> {
        let mut args = vec![
            "connect-tcp".into(),
            to.to_string(),
            "--timeout-ms".into(),
            timeout.as_millis().to_string(),
        ];
        if let Some(line) = line {
            args.extend(["--send".into(), line.into()]);
        }
        let output = self.run_peer(from, &args, timeout * 2)?;
        let line = result_line(&output)?;
        Ok(match field(line, "result").unwrap_or_default() {
            "connected" => TcpOutcome::Connected,
            "echoed" => TcpOutcome::Echoed,
            "refused" => TcpOutcome::Refused,
            "timeout" => TcpOutcome::TimedOut,
            "unreachable" => TcpOutcome::Unreachable,
            "reset" => TcpOutcome::Reset,
            "closed" => TcpOutcome::Closed,
            "no-reply" => TcpOutcome::NoReply,
            _ => TcpOutcome::Error(line.to_string()),
        })
    }

    /// Sends `count` datagrams from `from` to `to`, each waiting up to `timeout` for its
    /// echo (see [`Lab::udp_echo_server`]).
    pub fn udp_exchange(
        &self,
        from: &str,
        to: SocketAddr,
        count: u32,
        timeout: Duration,
    ) -> Result<UdpOutcome> {
        let args = vec![
            "udp-send".into(),
            to.to_string(),
            "--count".into(),
            count.to_string(),
            "--timeout-ms".into(),
            timeout.as_millis().to_string(),
        ];
        let output = self.run_peer(from, &args, timeout * count)?;
        let line = result_line(&output)?;
        Ok(UdpOutcome {
            sent: number(line, "sent").context("udp-send printed no sent=")?,
            received: number(line, "received").context("udp-send printed no received=")?,
            refused: number(line, "refused").context("udp-send printed no refused=")?,
        })
    }

    /// `count` ICMP echo requests from `from` to `to`, 200 ms apart, each waiting at most
    /// one second for its reply.
    pub fn ping(&self, from: &str, to: IpAddr, count: u32) -> Result<PingOutcome> {
        let count_text = count.to_string();
        let to_text = to.to_string();
        let args = [
            "ping",
            "-n",
            "-q",
            "-c",
            &count_text,
            "-i",
            "0.2",
            "-W",
            "1",
            &to_text,
        ];
        let timeout = Duration::from_secs(u64::from(count) + 1) + MARGIN;
        // ping exits 1 when replies are missing; the summary line tells how many.
        let output = self.exec_timeout(from, &args, timeout)?;
        let summary = output
            .stdout
            .lines()
            .find(|line| line.contains("packets transmitted"))
            .with_context(|| {
                format!(
                    "ping printed no summary: {}{}",
                    output.stdout.trim_end(),
                    output.stderr.trim_end()
                )
            })?;
        // "3 packets transmitted, 3 received, 0% packet loss, time 401ms"
        let leading_number = |part: &str| -> Option<u32> {
            part.split_whitespace().next().and_then(|n| n.parse().ok())
        };
        let mut parts = summary.split(", ");
        let transmitted = parts.next().and_then(leading_number);
        let received = parts.next().and_then(leading_number);
        match (transmitted, received) {
            (Some(transmitted), Some(received)) => Ok(PingOutcome {
                transmitted,
                received,
            }),
            _ => bail!("cannot read ping's summary `{summary}`"),
        }
    }

    /// Holds one TCP connection from `from` to `to` (an echo server) for `duration`,
    /// exchanging a numbered line every `interval`. Read progress with
    /// [`LabProcess::wait_for_line`] (`exchange seq=N result=ok`), and the end with
    /// [`HoldSummary::from_output`] after [`LabProcess::wait`].
    pub fn hold_tcp(
        &self,
        from: &str,
        to: SocketAddr,
        interval: Duration,
        duration: Duration,
    ) -> Result<LabProcess> {
        let args = vec![
            "hold-tcp".into(),
            to.to_string(),
            "--interval-ms".into(),
            interval.as_millis().to_string(),
            "--duration-ms".into(),
            duration.as_millis().to_string(),
        ];
        self.spawn(from, &self.peer_args(&args)?)
    }
}

/// The last `result=` line of a peer's output.
fn result_line(output: &ProcessOutput) -> Result<&str> {
    output
        .stdout
        .lines()
        .rev()
        .find(|line| line.starts_with("result="))
        .with_context(|| {
            format!(
                "otfw-peer printed no result line; stdout: {} stderr: {}",
                output.stdout.trim_end(),
                output.stderr.trim_end()
            )
        })
}

/// The value of `key=` in a line of `key=value` fields.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value)
}

fn number(line: &str, key: &str) -> Option<u32> {
    field(line, key)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields() {
        let line = "result=done sent=3 received=2 refused=1";
        assert_eq!(field(line, "result"), Some("done"));
        assert_eq!(number(line, "received"), Some(2));
        assert_eq!(number(line, "lost"), None);
    }
}
