//! Real EtherNet/IP peers in the lab: cpppo's Logix simulator (`tests/peers/enip_server.py`)
//! as the PLC, and two clients with one result vocabulary, cpppo's client and pycomm3
//! (`tests/peers/enip_client.py`). Every client call is bounded by its timeout; the server
//! exits by itself after its lifetime.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::binaries::{repo_root, venv_python};
use crate::lab::Lab;
use crate::process::LabProcess;

/// How long the simulator may take to import cpppo and listen.
const SERVER_READY: Duration = Duration::from_secs(20);
/// How long the server may take to answer SIGUSR1 with its tags.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server lives at most (it exits by itself).
const SERVER_LIFETIME: Duration = Duration::from_secs(300);
/// Extra time a client process gets beyond its own timeouts (interpreter start) before it
/// is killed.
const MARGIN: Duration = Duration::from_secs(10);

/// The server's tags and their initial values, as `tests/peers/enip_tags.py` defines them.
pub mod initial {
    pub const LINE1_SPEED: i64 = 1500;
    pub const LINE1_COUNT: i64 = 70000;
    pub const RECIPE_SETPOINT: i64 = 250000;
    pub const SECRET: [i64; 4] = [11, 22, 33, 44];
}

/// One request (on a connection of its own), as `enip_client.py` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnipOp {
    /// ListIdentity over TCP.
    ListIdentity,
    /// ListIdentity in a UDP datagram (cpppo only).
    ListIdentityUdp,
    /// Read Tag in SendRRData, straight to the Message Router.
    Read(String),
    /// Read Tag inside an Unconnected Send.
    ReadUcs(String),
    /// Forward Open, then Read Tag in SendUnitData.
    ReadConnected(String),
    /// A Multiple Service Packet of Read Tags.
    MultiRead(Vec<String>),
    /// Write Tag in SendRRData, straight to the Message Router.
    Write(String, i64),
    /// Write Tag inside an Unconnected Send.
    WriteUcs(String, i64),
    /// Forward Open, then Write Tag in SendUnitData.
    WriteConnected(String, i64),
    /// A Multiple Service Packet holding a Write Tag.
    WriteMsp(String, i64),
    /// One session: Write Tag, then Read Tag of the same tag, in SendRRData.
    WriteRead(String, i64),
    /// One session: Write Tag, then Read Tag, each inside an Unconnected Send.
    WriteUcsRead(String, i64),
    /// One session and one Forward Open connection: Write Tag, then Read Tag, in SendUnitData.
    WriteConnectedRead(String, i64),
    /// One session: a Multiple Service Packet of a Read Tag of `Line1_Speed` and the Write Tag
    /// (cpppo: SendRRData; pycomm3: connected), then the Read Tag alone.
    WriteMspRead(String, i64),
}

impl EnipOp {
    /// How many exchanges bounded by the client's timeout the op may wait for: the connection,
    /// RegisterSession, and the request (session ops: a Forward Open and two requests).
    fn exchanges(&self) -> u32 {
        match self {
            EnipOp::WriteRead(..)
            | EnipOp::WriteUcsRead(..)
            | EnipOp::WriteConnectedRead(..)
            | EnipOp::WriteMspRead(..) => 5,
            _ => 3,
        }
    }

    fn arg(&self) -> String {
        match self {
            EnipOp::ListIdentity => "list_identity".into(),
            EnipOp::ListIdentityUdp => "list_identity_udp".into(),
            EnipOp::Read(tag) => format!("read:{tag}"),
            EnipOp::ReadUcs(tag) => format!("read_ucs:{tag}"),
            EnipOp::ReadConnected(tag) => format!("read_connected:{tag}"),
            EnipOp::MultiRead(tags) => format!("multi_read:{}", tags.join(",")),
            EnipOp::Write(tag, value) => format!("write:{tag}:{value}"),
            EnipOp::WriteUcs(tag, value) => format!("write_ucs:{tag}:{value}"),
            EnipOp::WriteConnected(tag, value) => format!("write_connected:{tag}:{value}"),
            EnipOp::WriteMsp(tag, value) => format!("write_msp:{tag}:{value}"),
            EnipOp::WriteRead(tag, value) => format!("write_read:{tag}:{value}"),
            EnipOp::WriteUcsRead(tag, value) => format!("write_ucs_read:{tag}:{value}"),
            EnipOp::WriteConnectedRead(tag, value) => {
                format!("write_connected_read:{tag}:{value}")
            }
            EnipOp::WriteMspRead(tag, value) => format!("write_msp_read:{tag}:{value}"),
        }
    }
}

impl fmt::Display for EnipOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arg())
    }
}

/// What one request came to, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnipResult {
    /// Answered: the values of a read (a list per tag for a multi-read), `[]` otherwise.
    Ok(Value),
    /// The server answered with this CIP general status.
    Status(u64),
    /// No answer within the client's timeout.
    Timeout,
    /// The connection was reset.
    Reset,
    /// The peer closed the connection.
    Closed,
    /// No connection could be made.
    ConnectFailed,
    Error(String),
    /// The CIP replies to one request (a Multiple Service Packet's: one per entry), as the
    /// client decoded them: one step of a session op.
    Replies(Vec<CipReply>),
    /// A session op: its requests in order, up to the first that got no reply.
    Session(Vec<EnipStep>),
}

/// A CIP reply (or a Multiple Service Packet reply's entry) as the client decoded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CipReply {
    /// The reply's service code (the request's | 0x80).
    pub service: u8,
    /// Its general status.
    pub status: u8,
    /// The values of a Read Tag answered with status 0.
    pub values: Option<Vec<i64>>,
}

impl CipReply {
    /// A successful Read Tag reply carrying `values`.
    pub fn read(values: impl IntoIterator<Item = i64>) -> Self {
        CipReply {
            service: 0x80 | 0x4C,
            status: 0,
            values: Some(values.into_iter().collect()),
        }
    }

    /// An error reply to `service` with general `status`.
    pub fn error(service: u8, status: u8) -> Self {
        CipReply {
            service: 0x80 | service,
            status,
            values: None,
        }
    }
}

/// One request of a session op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnipStep {
    /// `Replies`, or what came instead (`Timeout`, `Reset`, ...).
    pub result: EnipResult,
    /// The session handle and the client's TCP port the request went out on (with replies).
    pub session: Option<u64>,
    pub port: Option<u64>,
    /// How long the request took, as the client measured it.
    pub elapsed: Duration,
}

impl EnipResult {
    /// A read's values, e.g. `EnipResult::values([1500])`.
    pub fn values<T: Into<Value>>(values: impl IntoIterator<Item = T>) -> Self {
        EnipResult::Ok(Value::Array(values.into_iter().map(Into::into).collect()))
    }

    /// A write or ListIdentity that was answered.
    pub fn done() -> Self {
        EnipResult::Ok(Value::Array(Vec::new()))
    }
}

/// The two clients the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnipClient {
    /// cpppo's client API (`cpppo.server.enip.client`).
    Cpppo,
    /// pycomm3's LogixDriver / CIPDriver.
    Pycomm3,
}

impl EnipClient {
    pub const ALL: [EnipClient; 2] = [EnipClient::Cpppo, EnipClient::Pycomm3];

    pub fn name(self) -> &'static str {
        match self {
            EnipClient::Cpppo => "cpppo",
            EnipClient::Pycomm3 => "pycomm3",
        }
    }
}

/// Fails, saying how to fix it, unless the venv can import cpppo and pycomm3.
pub fn require_enip_peers() -> Result<()> {
    let python = venv_python()?;
    let imports = Command::new(&python)
        .args(["-c", "import cpppo.server.enip.client, pycomm3"])
        .output()
        .with_context(|| format!("could not run {}", python.display()))?;
    if !imports.status.success() {
        bail!(
            "the venv's python cannot import cpppo and pycomm3 ({}): run `cargo xtask setup`",
            String::from_utf8_lossy(&imports.stderr).trim_end()
        );
    }
    Ok(())
}

fn peer_script(name: &str) -> PathBuf {
    repo_root().join("tests").join("peers").join(name)
}

/// A running cpppo Logix simulator in a lab host.
pub struct EnipServer {
    pub process: LabProcess,
    pub addr: SocketAddr,
}

impl EnipServer {
    /// The tags' current values, read from the simulator's memory (never through the
    /// firewall): numbers for scalars, arrays for arrays.
    pub fn tags(&mut self) -> Result<BTreeMap<String, Value>> {
        let pid = libc::pid_t::try_from(self.process.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is the server this lab
        // started (`ip netns exec` execs it), not yet reaped.
        if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
            bail!(
                "could not signal the EtherNet/IP server: {}",
                std::io::Error::last_os_error()
            );
        }
        let line = self
            .process
            .wait_for_line(|l| l.contains(r#""event": "tags""#), DUMP_TIMEOUT)?;
        parse_tags(&line)
    }

    /// The values the simulator starts with.
    pub fn initial_tags() -> BTreeMap<String, Value> {
        [
            ("Line1_Speed", Value::from(initial::LINE1_SPEED)),
            ("Line1_Count", Value::from(initial::LINE1_COUNT)),
            ("Recipe_Setpoint", Value::from(initial::RECIPE_SETPOINT)),
            ("Secret", Value::from(initial::SECRET.to_vec())),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }
}

fn parse_tags(line: &str) -> Result<BTreeMap<String, Value>> {
    let event: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    let tags = event["tags"]
        .as_object()
        .with_context(|| format!("no `tags` in {line}"))?;
    Ok(tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

impl Lab {
    /// cpppo's Logix simulator (`tests/peers/enip_server.py`) in `host`, bound to the host's
    /// IPv4 address and `port` (TCP and UDP), listening when this returns. It answers a service
    /// it does not implement with a CIP error, as a controller does.
    pub fn enip_server(&self, host: &str, port: u16) -> Result<EnipServer> {
        self.enip_server_with(host, port, &[])
    }

    /// As [`Lab::enip_server`], with more of `enip_server.py`'s options (`--as-shipped`).
    pub fn enip_server_with(&self, host: &str, port: u16, options: &[&str]) -> Result<EnipServer> {
        let python = venv_python()?;
        let address = self.host(host).ipv4_addr();
        let mut args = vec![
            python.to_string_lossy().into_owned(),
            peer_script("enip_server.py").to_string_lossy().into_owned(),
            "--host".into(),
            address.to_string(),
            "--port".into(),
            port.to_string(),
            "--lifetime".into(),
            SERVER_LIFETIME.as_secs().to_string(),
        ];
        args.extend(options.iter().map(|option| option.to_string()));
        let mut process = self.spawn(host, &args)?;
        process
            .wait_for_line(|l| l.contains(r#""event": "ready""#), SERVER_READY)
            .with_context(|| format!("the EtherNet/IP server in host `{host}` did not start"))?;
        Ok(EnipServer {
            process,
            addr: SocketAddr::new(address.into(), port),
        })
    }

    /// Sends `ops` from `from` to `server` with `client`, each on a connection of its own and
    /// bounded by `timeout` per exchange, and returns one result per op.
    pub fn enip(
        &self,
        client: EnipClient,
        from: &str,
        server: SocketAddr,
        timeout: Duration,
        ops: &[EnipOp],
    ) -> Result<Vec<EnipResult>> {
        let mut args = vec![
            venv_python()?.to_string_lossy().into_owned(),
            peer_script("enip_client.py").to_string_lossy().into_owned(),
            "--client".into(),
            client.name().into(),
            "--host".into(),
            server.ip().to_string(),
            "--port".into(),
            server.port().to_string(),
            "--timeout".into(),
            format!("{:.3}", timeout.as_secs_f64()),
        ];
        args.extend(ops.iter().map(EnipOp::arg));
        // Each op may wait for its connection, its session and its answers.
        let exchanges = ops.iter().map(EnipOp::exchanges).sum::<u32>();
        let limit = timeout * exchanges + MARGIN;
        let output = self.exec_timeout(from, &args, limit)?;
        let results: Vec<EnipResult> = output
            .stdout
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(parse_json_result)
            .collect::<Result<_>>()?;
        if !output.success() || results.len() != ops.len() {
            bail!(
                "`{}` in host `{from}` failed ({}): stdout: {}; stderr: {}",
                args.join(" "),
                output.status,
                output.stdout.trim_end(),
                output.stderr.trim_end()
            );
        }
        Ok(results)
    }
}

fn parse_json_result(line: &str) -> Result<EnipResult> {
    let value: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    parse_result(&value)
}

/// A result line's (or a session step's) fields.
fn parse_result(value: &Value) -> Result<EnipResult> {
    Ok(match value["result"].as_str().unwrap_or_default() {
        "ok" => EnipResult::Ok(value["values"].clone()),
        "status" => EnipResult::Status(value["status"].as_u64().unwrap_or(0)),
        "timeout" => EnipResult::Timeout,
        "reset" => EnipResult::Reset,
        "closed" => EnipResult::Closed,
        "connect_failed" => EnipResult::ConnectFailed,
        "replies" => EnipResult::Replies(
            array(value, "replies")?
                .iter()
                .map(parse_reply)
                .collect::<Result<_>>()?,
        ),
        "session" => EnipResult::Session(
            array(value, "steps")?
                .iter()
                .map(parse_step)
                .collect::<Result<_>>()?,
        ),
        _ => EnipResult::Error(value.to_string()),
    })
}

fn array<'a>(value: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    value[key]
        .as_array()
        .with_context(|| format!("no `{key}` list in {value}"))
}

fn byte(value: &Value, key: &str) -> Result<u8> {
    value[key]
        .as_u64()
        .and_then(|n| u8::try_from(n).ok())
        .with_context(|| format!("no byte `{key}` in {value}"))
}

fn parse_reply(value: &Value) -> Result<CipReply> {
    let values = match value.get("values") {
        None => None,
        Some(list) => Some(
            list.as_array()
                .and_then(|list| list.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                .with_context(|| format!("`values` are not numbers in {value}"))?,
        ),
    };
    Ok(CipReply {
        service: byte(value, "service")?,
        status: byte(value, "status")?,
        values,
    })
}

fn parse_step(value: &Value) -> Result<EnipStep> {
    let ms = value["ms"]
        .as_f64()
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .with_context(|| format!("no `ms` in {value}"))?;
    Ok(EnipStep {
        result: parse_result(value)?,
        session: value["session"].as_u64(),
        port: value["port"].as_u64(),
        elapsed: Duration::from_secs_f64(ms / 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_format_as_the_client_takes_them() {
        assert_eq!(
            EnipOp::Read("Secret[2]".into()).to_string(),
            "read:Secret[2]"
        );
        assert_eq!(
            EnipOp::MultiRead(vec!["A".into(), "B".into()]).to_string(),
            "multi_read:A,B"
        );
        assert_eq!(
            EnipOp::WriteMsp("Line1_Speed".into(), -5).to_string(),
            "write_msp:Line1_Speed:-5"
        );
        assert_eq!(
            EnipOp::WriteConnectedRead("Line1_Speed".into(), 3).to_string(),
            "write_connected_read:Line1_Speed:3"
        );
    }

    #[test]
    fn results_and_tags_parse() {
        assert_eq!(
            parse_json_result(r#"{"op": "read", "result": "ok", "values": [1500]}"#).unwrap(),
            EnipResult::values([1500])
        );
        assert_eq!(
            parse_json_result(r#"{"op": "write", "result": "status", "status": 5}"#).unwrap(),
            EnipResult::Status(5)
        );
        assert_eq!(
            parse_json_result(r#"{"result": "timeout"}"#).unwrap(),
            EnipResult::Timeout
        );
        let session = parse_json_result(
            r#"{"op": "write_msp_read", "result": "session", "steps": [
                {"result": "replies", "replies": [{"service": 204, "status": 0, "values": [1500]},
                 {"service": 205, "status": 15}], "session": 7, "port": 40000, "ms": 2.5},
                {"result": "timeout", "ms": 2000.0}]}"#,
        )
        .unwrap();
        assert_eq!(
            session,
            EnipResult::Session(vec![
                EnipStep {
                    result: EnipResult::Replies(vec![
                        CipReply::read([1500]),
                        CipReply::error(0x4D, 0x0F)
                    ]),
                    session: Some(7),
                    port: Some(40000),
                    elapsed: Duration::from_micros(2500),
                },
                EnipStep {
                    result: EnipResult::Timeout,
                    session: None,
                    port: None,
                    elapsed: Duration::from_secs(2),
                },
            ])
        );
        let tags = parse_tags(
            r#"{"event": "tags", "tags": {"Line1_Speed": 1500, "Line1_Count": 70000, "Recipe_Setpoint": 250000, "Secret": [11, 22, 33, 44]}}"#,
        )
        .unwrap();
        assert_eq!(tags, EnipServer::initial_tags());
    }
}
