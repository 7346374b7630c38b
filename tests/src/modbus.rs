//! Real Modbus/TCP peers in the lab: the pymodbus server of `tests/peers/modbus_server.py`,
//! and three clients with one result vocabulary: pymodbus (`tests/peers/modbus_client.py`),
//! mbpoll (Debian) and tokio-modbus (`otfw-modbus-client`). Every client call is bounded by
//! its timeout; the server exits by itself after its lifetime.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::binaries::{repo_root, target_binary, venv_python};
use crate::lab::Lab;
use crate::process::LabProcess;

/// How long the server may take to import pymodbus and listen.
const SERVER_READY: Duration = Duration::from_secs(20);
/// How long the server may take to answer SIGUSR1 with its datastore.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server lives at most (it exits by itself).
const SERVER_LIFETIME: Duration = Duration::from_secs(300);
/// Extra time a client process gets beyond its own timeouts (interpreter start) before it
/// is killed.
const MARGIN: Duration = Duration::from_secs(10);

/// The server's initial values, as `modbus_server.py` documents them.
pub mod initial {
    pub fn holding_register(address: u16) -> u16 {
        1000 + address
    }
    pub fn input_register(address: u16) -> u16 {
        2000 + address
    }
    pub fn coil(address: u16) -> bool {
        address.is_multiple_of(3)
    }
    pub fn discrete_input(address: u16) -> bool {
        address.is_multiple_of(2)
    }
}

/// A Modbus table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Coils,
    DiscreteInputs,
    HoldingRegisters,
    InputRegisters,
}

impl Table {
    /// The read op's name (also the pymodbus method).
    fn read_op(self) -> &'static str {
        match self {
            Table::Coils => "read_coils",
            Table::DiscreteInputs => "read_discrete_inputs",
            Table::HoldingRegisters => "read_holding_registers",
            Table::InputRegisters => "read_input_registers",
        }
    }

    /// mbpoll's `-t` type.
    fn mbpoll_type(self) -> &'static str {
        match self {
            Table::Coils => "0",
            Table::DiscreteInputs => "1",
            Table::InputRegisters => "3",
            Table::HoldingRegisters => "4",
        }
    }
}

/// One Modbus request (protocol addresses, 0-based as on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModbusOp {
    /// Function 1, 2, 3 or 4.
    Read(Table, u16, u16),
    /// Function 5.
    WriteCoil(u16, bool),
    /// Function 6.
    WriteRegister(u16, u16),
    /// Function 16.
    WriteRegisters(u16, Vec<u16>),
}

impl ModbusOp {
    /// The op as both client programs take it, e.g. `read_coils:0:8`.
    pub fn arg(&self) -> String {
        match self {
            ModbusOp::Read(table, address, count) => {
                format!("{}:{address}:{count}", table.read_op())
            }
            ModbusOp::WriteCoil(address, value) => format!("write_coil:{address}:{}", *value as u8),
            ModbusOp::WriteRegister(address, value) => format!("write_register:{address}:{value}"),
            ModbusOp::WriteRegisters(address, values) => format!(
                "write_registers:{address}:{}",
                values
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

impl fmt::Display for ModbusOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arg())
    }
}

/// What one request came to, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModbusResult {
    /// Answered; the values of a read (coils and inputs as 0/1).
    Ok(Vec<u16>),
    /// The server answered with this exception code.
    Exception(u8),
    /// No answer within the client's timeout.
    Timeout,
    /// The connection was reset.
    Reset,
    /// The peer closed the connection.
    Closed,
    /// No connection could be made.
    ConnectFailed,
    Error(String),
}

/// The three clients the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModbusClient {
    /// `tests/peers/modbus_client.py` with the venv's pymodbus.
    Pymodbus,
    /// Debian's mbpoll (libmodbus), one process per request.
    Mbpoll,
    /// `otfw-modbus-client` (tokio-modbus).
    TokioModbus,
}

impl ModbusClient {
    pub const ALL: [ModbusClient; 3] = [
        ModbusClient::Pymodbus,
        ModbusClient::Mbpoll,
        ModbusClient::TokioModbus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModbusClient::Pymodbus => "pymodbus",
            ModbusClient::Mbpoll => "mbpoll",
            ModbusClient::TokioModbus => "tokio-modbus",
        }
    }
}

/// Fails, saying how to fix it, unless every Modbus peer is installed: the venv with
/// pymodbus, mbpoll and the `otfw-modbus-client` binary.
pub fn require_modbus_peers() -> Result<()> {
    let python = venv_python()?;
    let imports = Command::new(&python)
        .args(["-c", "import pymodbus"])
        .output()
        .with_context(|| format!("could not run {}", python.display()))?;
    if !imports.status.success() {
        bail!(
            "the venv's python cannot import pymodbus ({}): run `cargo xtask setup`",
            String::from_utf8_lossy(&imports.stderr).trim_end()
        );
    }
    mbpoll()?;
    target_binary("otfw-modbus-client")?;
    Ok(())
}

fn mbpoll() -> Result<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("mbpoll"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    found.context("mbpoll is not installed: run `cargo xtask setup` (Debian package mbpoll)")
}

fn peer_script(name: &str) -> PathBuf {
    repo_root().join("tests").join("peers").join(name)
}

/// The server's values by table, read from its own memory (not through the firewall).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datastore {
    pub coils: Vec<bool>,
    pub discrete_inputs: Vec<bool>,
    pub holding_registers: Vec<u16>,
    pub input_registers: Vec<u16>,
}

impl Datastore {
    fn parse(line: &str) -> Result<Self> {
        let event: Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        let bits = |name: &str| -> Result<Vec<bool>> {
            event[name]
                .as_array()
                .with_context(|| format!("no `{name}` in {line}"))?
                .iter()
                .map(|v| v.as_bool().context("not a bool"))
                .collect()
        };
        let words = |name: &str| -> Result<Vec<u16>> {
            event[name]
                .as_array()
                .with_context(|| format!("no `{name}` in {line}"))?
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|v| u16::try_from(v).ok())
                        .context("not a register value")
                })
                .collect()
        };
        Ok(Self {
            coils: bits("coils")?,
            discrete_inputs: bits("discrete_inputs")?,
            holding_registers: words("holding_registers")?,
            input_registers: words("input_registers")?,
        })
    }

    /// The datastore `modbus_server.py` starts with.
    pub fn initial() -> Self {
        Self {
            coils: (0..64).map(initial::coil).collect(),
            discrete_inputs: (0..64).map(initial::discrete_input).collect(),
            holding_registers: (0..100).map(initial::holding_register).collect(),
            input_registers: (0..100).map(initial::input_register).collect(),
        }
    }
}

/// A running pymodbus server in a lab host.
pub struct ModbusServer {
    pub process: LabProcess,
    pub addr: SocketAddr,
}

impl ModbusServer {
    /// The server's current values, dumped on SIGUSR1.
    pub fn datastore(&mut self) -> Result<Datastore> {
        let pid = libc::pid_t::try_from(self.process.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is the server this lab
        // started (`ip netns exec` execs it), not yet reaped.
        if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
            bail!(
                "could not signal the Modbus server: {}",
                std::io::Error::last_os_error()
            );
        }
        let line = self
            .process
            .wait_for_line(|l| l.contains(r#""event": "datastore""#), DUMP_TIMEOUT)?;
        Datastore::parse(&line)
    }
}

impl Lab {
    /// The pymodbus server of `tests/peers/modbus_server.py` in `host`, bound to the host's
    /// IPv4 address and `port`, listening when this returns.
    pub fn modbus_server(&self, host: &str, port: u16) -> Result<ModbusServer> {
        let python = venv_python()?;
        let address = self.host(host).ipv4_addr();
        let args = [
            python.to_string_lossy().into_owned(),
            peer_script("modbus_server.py")
                .to_string_lossy()
                .into_owned(),
            "--host".into(),
            address.to_string(),
            "--port".into(),
            port.to_string(),
            "--lifetime".into(),
            SERVER_LIFETIME.as_secs().to_string(),
        ];
        let mut process = self.spawn(host, &args)?;
        process
            .wait_for_line(|l| l.contains(r#""event": "ready""#), SERVER_READY)
            .with_context(|| format!("the Modbus server in host `{host}` did not start"))?;
        Ok(ModbusServer {
            process,
            addr: SocketAddr::new(address.into(), port),
        })
    }

    /// Sends `ops` from `from` to `server` with `client`, each request to `unit`, each bounded
    /// by `timeout`, and returns one result per op. pymodbus and tokio-modbus send them on one
    /// connection (reopened after a failure), mbpoll opens one per op.
    pub fn modbus(
        &self,
        client: ModbusClient,
        from: &str,
        server: SocketAddr,
        unit: u8,
        timeout: Duration,
        ops: &[ModbusOp],
    ) -> Result<Vec<ModbusResult>> {
        match client {
            ModbusClient::Pymodbus => {
                let mut args = vec![
                    venv_python()?.to_string_lossy().into_owned(),
                    peer_script("modbus_client.py")
                        .to_string_lossy()
                        .into_owned(),
                    "--host".into(),
                    server.ip().to_string(),
                    "--port".into(),
                    server.port().to_string(),
                    "--unit".into(),
                    unit.to_string(),
                    "--timeout".into(),
                    format!("{:.3}", timeout.as_secs_f64()),
                ];
                args.extend(ops.iter().map(ModbusOp::arg));
                self.json_client(from, &args, ops, timeout)
            }
            ModbusClient::TokioModbus => {
                let mut args = vec![
                    target_binary("otfw-modbus-client")?
                        .to_string_lossy()
                        .into_owned(),
                    server.to_string(),
                    "--unit".into(),
                    unit.to_string(),
                    "--timeout-ms".into(),
                    timeout.as_millis().to_string(),
                ];
                args.extend(ops.iter().map(ModbusOp::arg));
                self.json_client(from, &args, ops, timeout)
            }
            ModbusClient::Mbpoll => ops
                .iter()
                .map(|op| self.mbpoll(from, server, unit, timeout, op))
                .collect(),
        }
    }

    /// Runs a client that prints one JSON line per op.
    fn json_client(
        &self,
        from: &str,
        args: &[String],
        ops: &[ModbusOp],
        timeout: Duration,
    ) -> Result<Vec<ModbusResult>> {
        // Each op may wait for its connection and its answer.
        let limit = timeout * 2 * u32::try_from(ops.len()).unwrap_or(u32::MAX) + MARGIN;
        let output = self.exec_timeout(from, args, limit)?;
        let results: Vec<ModbusResult> = output
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

    /// One request with mbpoll: `-0` makes its references protocol addresses.
    fn mbpoll(
        &self,
        from: &str,
        server: SocketAddr,
        unit: u8,
        timeout: Duration,
        op: &ModbusOp,
    ) -> Result<ModbusResult> {
        let mut args = vec![
            mbpoll()?.to_string_lossy().into_owned(),
            "-m".into(),
            "tcp".into(),
            "-p".into(),
            server.port().to_string(),
            "-a".into(),
            unit.to_string(),
            "-0".into(),
            "-1".into(),
            "-q".into(),
            "-o".into(),
            format!("{:.2}", timeout.as_secs_f64()),
        ];
        let (table, address, values, count) = match op {
            ModbusOp::Read(table, address, count) => (*table, *address, Vec::new(), *count),
            ModbusOp::WriteCoil(address, value) => {
                (Table::Coils, *address, vec![u16::from(*value)], 1)
            }
            ModbusOp::WriteRegister(address, value) => {
                (Table::HoldingRegisters, *address, vec![*value], 1)
            }
            ModbusOp::WriteRegisters(address, values) => {
                if values.len() < 2 {
                    // mbpoll sends function 6 for one value.
                    bail!("mbpoll writes one register with function 6, not 16");
                }
                let count = u16::try_from(values.len()).context("too many values")?;
                (Table::HoldingRegisters, *address, values.clone(), count)
            }
        };
        args.extend([
            "-t".into(),
            table.mbpoll_type().into(),
            "-r".into(),
            address.to_string(),
        ]);
        if values.is_empty() {
            // A write takes its count from the values.
            args.extend(["-c".into(), count.to_string()]);
        }
        args.push(server.ip().to_string());
        args.extend(values.iter().map(u16::to_string));
        // mbpoll's timeout covers the answer; the connection attempt may take as long.
        let output = self.exec_timeout(from, &args, timeout * 2 + MARGIN)?;
        let text = format!("{}\n{}", output.stdout, output.stderr);
        if output.success() {
            if values.is_empty() {
                let read: Vec<u16> = output
                    .stdout
                    .lines()
                    .filter_map(|line| {
                        let (reference, value) = line.split_once("]:")?;
                        reference.strip_prefix('[')?;
                        value.trim().parse().ok()
                    })
                    .collect();
                if read.len() != usize::from(count) {
                    bail!("mbpoll printed {} values of {count}: {text}", read.len());
                }
                return Ok(ModbusResult::Ok(read));
            }
            if text.contains("Written") {
                return Ok(ModbusResult::Ok(Vec::new()));
            }
            bail!("mbpoll succeeded without saying so: {text}");
        }
        Ok(classify_mbpoll_failure(&text))
    }
}

/// libmodbus's error texts, as mbpoll prints them.
fn classify_mbpoll_failure(text: &str) -> ModbusResult {
    let exceptions = [
        ("Illegal function", 1),
        ("Illegal data address", 2),
        ("Illegal data value", 3),
        ("Slave device or server failure", 4),
        ("Acknowledge", 5),
        ("Slave device or server is busy", 6),
        ("Gateway path unavailable", 10),
        ("Target device failed to respond", 11),
    ];
    if let Some((_, code)) = exceptions.iter().find(|(name, _)| text.contains(name)) {
        return ModbusResult::Exception(*code);
    }
    if text.contains("Connection timed out") {
        ModbusResult::Timeout
    } else if text.contains("Connection reset by peer") {
        ModbusResult::Reset
    } else if text.contains("Connection failed") || text.contains("Connection refused") {
        ModbusResult::ConnectFailed
    } else if text.contains("Broken pipe") || text.contains("closed") {
        ModbusResult::Closed
    } else {
        ModbusResult::Error(text.trim().to_string())
    }
}

fn parse_json_result(line: &str) -> Result<ModbusResult> {
    let value: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    let result = value["result"].as_str().unwrap_or_default();
    Ok(match result {
        "ok" => ModbusResult::Ok(
            value["values"]
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .filter_map(|v| v.as_u64().and_then(|v| u16::try_from(v).ok()))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "exception" => ModbusResult::Exception(
            value["code"]
                .as_u64()
                .and_then(|code| u8::try_from(code).ok())
                .unwrap_or(0),
        ),
        "timeout" => ModbusResult::Timeout,
        "reset" => ModbusResult::Reset,
        "closed" => ModbusResult::Closed,
        "connect_failed" => ModbusResult::ConnectFailed,
        _ => ModbusResult::Error(line.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_format_as_the_clients_take_them() {
        assert_eq!(
            ModbusOp::Read(Table::HoldingRegisters, 0, 5).to_string(),
            "read_holding_registers:0:5"
        );
        assert_eq!(ModbusOp::WriteCoil(3, true).to_string(), "write_coil:3:1");
        assert_eq!(
            ModbusOp::WriteRegisters(10, vec![1, 2]).to_string(),
            "write_registers:10:1,2"
        );
    }

    #[test]
    fn results_parse() {
        assert_eq!(
            parse_json_result(r#"{"op": "x", "result": "ok", "values": [1, 2]}"#).unwrap(),
            ModbusResult::Ok(vec![1, 2])
        );
        assert_eq!(
            parse_json_result(r#"{"result":"exception","code":2}"#).unwrap(),
            ModbusResult::Exception(2)
        );
        assert_eq!(
            parse_json_result(r#"{"result": "reset"}"#).unwrap(),
            ModbusResult::Reset
        );
        assert_eq!(
            classify_mbpoll_failure("Read output (holding) register failed: Illegal data address"),
            ModbusResult::Exception(2)
        );
        assert_eq!(
            classify_mbpoll_failure("Write output (holding) register failed: Connection timed out"),
            ModbusResult::Timeout
        );
    }

    #[test]
    fn datastore_parses_the_server_dump() {
        let line = r#"{"event": "datastore", "coils": [true], "discrete_inputs": [false], "holding_registers": [1000], "input_registers": [2000]}"#;
        let store = Datastore::parse(line).unwrap();
        assert_eq!(store.holding_registers, vec![1000]);
        assert_eq!(store.coils, vec![true]);
        assert_eq!(Datastore::initial().holding_registers[5], 1005);
    }
}
