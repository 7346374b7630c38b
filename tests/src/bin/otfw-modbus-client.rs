//! `otfw-modbus-client`: a Modbus/TCP client built on tokio-modbus, for the end-to-end tests.
//! Run it inside a client's namespace with `ip netns exec`. It takes the same ops as
//! `tests/peers/modbus_client.py` and prints the same JSON lines, one per op:
//!
//! ```text
//! {"op":"read_holding_registers","address":0,"result":"ok","values":[1000,1001]}
//! {"op":"write_register","address":5,"result":"timeout"}
//! ```
//!
//! Results: `ok`, `exception` (with `code`), `timeout` (no answer within --timeout-ms),
//! `reset`, `closed`, `connect_failed`, `error` (with `detail`). The ops run in order on one
//! connection, which is reopened after a failure. Every wait is bounded by the timeout. After
//! a timeout the connection is aborted (RST) instead of closed: a firewall that drops the rest
//! of a refused connection drops a FIN too, and the kernel would retransmit it for minutes.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Map, Value};
use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::Slave;

#[derive(Parser)]
#[command(about = "Modbus/TCP client (tokio-modbus) for the otfw lab")]
struct Cli {
    /// The server, e.g. `198.51.100.30:502`.
    server: SocketAddr,
    /// The unit identifier of every request.
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// How long a connection attempt and each request may take.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
    /// `read_coils:ADDR:COUNT`, `read_discrete_inputs:..`, `read_holding_registers:..`,
    /// `read_input_registers:..`, `write_coil:ADDR:0|1`, `write_register:ADDR:VALUE`,
    /// `write_coils:ADDR:V,V,..`, `write_registers:ADDR:V,V,..` (0-based protocol addresses).
    #[arg(required = true)]
    ops: Vec<Op>,
}

#[derive(Clone, Debug)]
enum Op {
    ReadCoils(u16, u16),
    ReadDiscreteInputs(u16, u16),
    ReadHoldingRegisters(u16, u16),
    ReadInputRegisters(u16, u16),
    WriteCoil(u16, bool),
    WriteRegister(u16, u16),
    WriteCoils(u16, Vec<bool>),
    WriteRegisters(u16, Vec<u16>),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::ReadCoils(..) => "read_coils",
            Op::ReadDiscreteInputs(..) => "read_discrete_inputs",
            Op::ReadHoldingRegisters(..) => "read_holding_registers",
            Op::ReadInputRegisters(..) => "read_input_registers",
            Op::WriteCoil(..) => "write_coil",
            Op::WriteRegister(..) => "write_register",
            Op::WriteCoils(..) => "write_coils",
            Op::WriteRegisters(..) => "write_registers",
        }
    }

    fn address(&self) -> u16 {
        match self {
            Op::ReadCoils(address, _)
            | Op::ReadDiscreteInputs(address, _)
            | Op::ReadHoldingRegisters(address, _)
            | Op::ReadInputRegisters(address, _)
            | Op::WriteCoil(address, _)
            | Op::WriteRegister(address, _)
            | Op::WriteCoils(address, _)
            | Op::WriteRegisters(address, _) => *address,
        }
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &dyn std::fmt::Display| format!("bad op `{text}`: {why}");
        let mut parts = text.split(':');
        let (Some(name), Some(address), Some(arg), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(&"expected NAME:ADDRESS:ARGUMENT"));
        };
        let address: u16 = address.parse().map_err(|e| bad(&e))?;
        let number = |text: &str| text.parse::<u16>().map_err(|e| bad(&e));
        let bit = |text: &str| match text {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(bad(&"a coil value is 0 or 1")),
        };
        let list = |text: &str| text.split(',').map(number).collect::<Result<Vec<_>, _>>();
        Ok(match name {
            "read_coils" => Op::ReadCoils(address, number(arg)?),
            "read_discrete_inputs" => Op::ReadDiscreteInputs(address, number(arg)?),
            "read_holding_registers" => Op::ReadHoldingRegisters(address, number(arg)?),
            "read_input_registers" => Op::ReadInputRegisters(address, number(arg)?),
            "write_coil" => Op::WriteCoil(address, bit(arg)?),
            "write_register" => Op::WriteRegister(address, number(arg)?),
            "write_coils" => Op::WriteCoils(
                address,
                arg.split(',').map(bit).collect::<Result<Vec<_>, _>>()?,
            ),
            "write_registers" => Op::WriteRegisters(address, list(arg)?),
            _ => return Err(bad(&"unknown op")),
        })
    }
}

/// What one op came to.
enum Outcome {
    Ok(Option<Vec<u16>>),
    Exception(u8),
    Failed(&'static str, Option<String>),
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(cli));
}

async fn run(cli: Cli) {
    let timeout = Duration::from_millis(cli.timeout_ms);
    // The client context and its socket's descriptor (owned by the context).
    let mut connection: Option<(Context, RawFd)> = None;
    for op in &cli.ops {
        if connection.is_none() {
            let connect = tokio::net::TcpStream::connect(cli.server);
            connection = match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(stream)) => {
                    let fd = stream.as_raw_fd();
                    Some((tcp::attach_slave(stream, Slave(cli.unit)), fd))
                }
                Ok(Err(_)) | Err(_) => None,
            };
        }
        let outcome = match connection.as_mut() {
            None => Outcome::Failed("connect_failed", None),
            Some((context, fd)) => {
                match tokio::time::timeout(timeout, execute(context, op)).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        abort_on_close(*fd);
                        Outcome::Failed("timeout", None)
                    }
                }
            }
        };
        if !matches!(outcome, Outcome::Ok(_) | Outcome::Exception(_)) {
            // The connection is unusable (or in an unknown state): the next op reconnects.
            connection = None;
        }
        print(op, outcome);
    }
}

/// Makes closing the socket send a RST (SO_LINGER with a zero timeout) instead of a FIN.
fn abort_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the open socket of the context the caller still holds; setsockopt reads
    // `size_of::<linger>()` bytes from a valid `linger`.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

async fn execute(context: &mut Context, op: &Op) -> Outcome {
    let bits = |bits: Vec<bool>| bits.into_iter().map(u16::from).collect::<Vec<u16>>();
    let result = match op.clone() {
        Op::ReadCoils(address, count) => context
            .read_coils(address, count)
            .await
            .map(|r| r.map(|v| Some(bits(v)))),
        Op::ReadDiscreteInputs(address, count) => context
            .read_discrete_inputs(address, count)
            .await
            .map(|r| r.map(|v| Some(bits(v)))),
        Op::ReadHoldingRegisters(address, count) => context
            .read_holding_registers(address, count)
            .await
            .map(|r| r.map(Some)),
        Op::ReadInputRegisters(address, count) => context
            .read_input_registers(address, count)
            .await
            .map(|r| r.map(Some)),
        Op::WriteCoil(address, value) => context
            .write_single_coil(address, value)
            .await
            .map(|r| r.map(|()| None)),
        Op::WriteRegister(address, value) => context
            .write_single_register(address, value)
            .await
            .map(|r| r.map(|()| None)),
        Op::WriteCoils(address, values) => context
            .write_multiple_coils(address, &values)
            .await
            .map(|r| r.map(|()| None)),
        Op::WriteRegisters(address, values) => context
            .write_multiple_registers(address, &values)
            .await
            .map(|r| r.map(|()| None)),
    };
    match result {
        Ok(Ok(values)) => Outcome::Ok(values),
        Ok(Err(code)) => Outcome::Exception(u8::from(code)),
        Err(tokio_modbus::Error::Transport(error)) => transport_failure(&error),
        Err(tokio_modbus::Error::Protocol(error)) => {
            Outcome::Failed("error", Some(error.to_string()))
        }
    }
}

fn transport_failure(error: &io::Error) -> Outcome {
    match error.kind() {
        ErrorKind::ConnectionReset => Outcome::Failed("reset", None),
        ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Outcome::Failed("closed", Some(error.to_string()))
        }
        ErrorKind::TimedOut => Outcome::Failed("timeout", None),
        _ => Outcome::Failed("error", Some(error.to_string())),
    }
}

fn print(op: &Op, outcome: Outcome) {
    let mut line = Map::new();
    line.insert("op".into(), json!(op.name()));
    line.insert("address".into(), json!(op.address()));
    match outcome {
        Outcome::Ok(values) => {
            line.insert("result".into(), json!("ok"));
            if let Some(values) = values {
                line.insert("values".into(), json!(values));
            }
        }
        Outcome::Exception(code) => {
            line.insert("result".into(), json!("exception"));
            line.insert("code".into(), json!(code));
        }
        Outcome::Failed(result, detail) => {
            line.insert("result".into(), json!(result));
            if let Some(detail) = detail {
                line.insert("detail".into(), json!(detail));
            }
        }
    }
    println!("{}", Value::Object(line));
}
