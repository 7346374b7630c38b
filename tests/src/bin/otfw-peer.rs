//! `otfw-peer`: small TCP/UDP endpoints for the lab, run inside a host's namespace with
//! `ip netns exec`. Every mode is bounded in count and time and prints one
//! `key=value` line per event; the final line of a client starts with `result=`.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "TCP/UDP test endpoints for the otfw lab")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// TCP line echo server; prints `listening addr=..` once bound, then `accepted` and
    /// `closed` lines per connection.
    ListenTcp {
        /// Address to bind, e.g. `[::]:5020` (IPv4 and IPv6) or `192.0.2.1:5020`.
        bind: SocketAddr,
        /// Exit after this long.
        #[arg(long, default_value_t = 600_000)]
        duration_ms: u64,
    },
    /// One TCP connection attempt; with --send, also one echoed line.
    /// Prints `result=connected|echoed|refused|timeout|unreachable|reset|closed|no-reply|error`.
    ConnectTcp {
        to: SocketAddr,
        #[arg(long, default_value_t = 2_000)]
        timeout_ms: u64,
        /// A line to send after connecting; the peer must echo it.
        #[arg(long)]
        send: Option<String>,
    },
    /// UDP echo server; prints `listening addr=..`, then one `received` line per datagram.
    UdpEcho {
        bind: SocketAddr,
        #[arg(long, default_value_t = 600_000)]
        duration_ms: u64,
    },
    /// Sends `count` datagrams, each waiting up to the timeout for its echo.
    /// Prints `result=done sent=N received=N refused=N`.
    UdpSend {
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 1_000)]
        timeout_ms: u64,
    },
    /// Holds one TCP connection open, exchanging a numbered line every interval; prints
    /// `exchange seq=N result=ok|timeout|closed|reset|error` per exchange and finally
    /// `result=completed|broken|<connect outcome> ok=N failed=N`.
    HoldTcp {
        to: SocketAddr,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 5_000)]
        duration_ms: u64,
        /// How long each exchange waits for its echo.
        #[arg(long, default_value_t = 1_000)]
        timeout_ms: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.mode {
        Mode::ListenTcp { bind, duration_ms } => listen_tcp(bind, ms(duration_ms)),
        Mode::ConnectTcp {
            to,
            timeout_ms,
            send,
        } => connect_tcp(to, ms(timeout_ms), send.as_deref()),
        Mode::UdpEcho { bind, duration_ms } => udp_echo(bind, ms(duration_ms)),
        Mode::UdpSend {
            to,
            count,
            timeout_ms,
        } => udp_send(to, count, ms(timeout_ms)),
        Mode::HoldTcp {
            to,
            interval_ms,
            duration_ms,
            timeout_ms,
        } => hold_tcp(to, ms(interval_ms), ms(duration_ms), ms(timeout_ms)),
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Exits with status 2 after a setup failure (bind, socket), which is not an outcome.
fn fail(what: &str, error: std::io::Error) -> ! {
    println!("result=error msg={what}: {error}");
    std::process::exit(2);
}

/// The outcome word for a socket error.
fn outcome(error: &std::io::Error) -> &'static str {
    match error.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout",
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset"
        }
        ErrorKind::UnexpectedEof => "closed",
        _ => "error",
    }
}

fn print_error(prefix: &str, error: &std::io::Error) {
    match outcome(error) {
        "error" => println!("{prefix}result=error msg={error}"),
        word => println!("{prefix}result={word}"),
    }
}

fn listen_tcp(bind: SocketAddr, duration: Duration) {
    let listener = TcpListener::bind(bind).unwrap_or_else(|e| fail("bind", e));
    let deadline = Instant::now() + duration;
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| fail("set_nonblocking", e));
    println!("listening addr={}", listener.local_addr().unwrap_or(bind));
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, peer)) => {
                println!("accepted peer={peer}");
                thread::spawn(move || echo_lines(stream, peer, deadline));
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(error) => println!("accept-error msg={error}"),
        }
    }
}

fn echo_lines(stream: TcpStream, peer: SocketAddr, deadline: Instant) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut lines = 0u64;
    let end = loop {
        if Instant::now() >= deadline {
            break "deadline";
        }
        match reader.read_line(&mut line) {
            Ok(0) => break "eof",
            Ok(_) if line.ends_with('\n') => {
                if writer.write_all(line.as_bytes()).is_err() {
                    break "write-error";
                }
                lines += 1;
                line.clear();
            }
            // A partial line: keep what was read and wait for the rest.
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => break outcome(&error),
        }
    };
    println!("closed peer={peer} lines={lines} end={end}");
}

fn connect_tcp(to: SocketAddr, timeout: Duration, send: Option<&str>) {
    let stream = match TcpStream::connect_timeout(&to, timeout) {
        Ok(stream) => stream,
        Err(error) => return print_error("", &error),
    };
    let Some(text) = send else {
        println!("result=connected");
        return;
    };
    match exchange(&stream, &mut BufReader::new(&stream), text, timeout) {
        Ok(()) => println!("result=echoed"),
        Err(error) if outcome(&error) == "timeout" => println!("result=no-reply"),
        Err(error) => print_error("", &error),
    }
}

/// Sends `text` as a line and reads lines until its echo arrives (skipping late echoes of
/// earlier lines).
fn exchange(
    mut stream: &TcpStream,
    reader: &mut BufReader<&TcpStream>,
    text: &str,
    timeout: Duration,
) -> std::io::Result<()> {
    stream.write_all(format!("{text}\n").as_bytes())?;
    let deadline = Instant::now() + timeout;
    let mut line = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        if line.trim_end() == text {
            return Ok(());
        }
    }
}

fn udp_echo(bind: SocketAddr, duration: Duration) {
    let socket = UdpSocket::bind(bind).unwrap_or_else(|e| fail("bind", e));
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap_or_else(|e| fail("set_read_timeout", e));
    println!("listening addr={}", socket.local_addr().unwrap_or(bind));
    let deadline = Instant::now() + duration;
    let mut buffer = [0u8; 2048];
    while Instant::now() < deadline {
        match socket.recv_from(&mut buffer) {
            Ok((length, peer)) => {
                println!("received peer={peer} bytes={length}");
                let _ = socket.send_to(&buffer[..length], peer);
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => println!("recv-error msg={error}"),
        }
    }
}

fn udp_send(to: SocketAddr, count: u32, timeout: Duration) {
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let socket = UdpSocket::bind(local).unwrap_or_else(|e| fail("bind", e));
    // Connected, so that an ICMP port unreachable surfaces as ECONNREFUSED.
    socket.connect(to).unwrap_or_else(|e| fail("connect", e));
    let (mut sent, mut received, mut refused) = (0u32, 0u32, 0u32);
    let mut buffer = [0u8; 2048];
    for seq in 0..count {
        let payload = format!("otfw-peer seq={seq}");
        match socket.send(payload.as_bytes()) {
            Ok(_) => sent += 1,
            Err(error) if outcome(&error) == "refused" => refused += 1,
            Err(error) => println!("send-error seq={seq} msg={error}"),
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = socket.set_read_timeout(Some(left));
            match socket.recv(&mut buffer) {
                Ok(length) if buffer[..length] == *payload.as_bytes() => {
                    received += 1;
                    break;
                }
                // A late echo of an earlier datagram.
                Ok(_) => {}
                Err(error) if outcome(&error) == "refused" => {
                    refused += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    println!("result=done sent={sent} received={received} refused={refused}");
}

fn hold_tcp(to: SocketAddr, interval: Duration, duration: Duration, timeout: Duration) {
    let stream = match TcpStream::connect_timeout(&to, timeout) {
        Ok(stream) => stream,
        Err(error) => return print_error("", &error),
    };
    println!(
        "connected local={}",
        stream
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    );
    let mut reader = BufReader::new(&stream);
    let deadline = Instant::now() + duration;
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut seq = 0u64;
    let end = loop {
        if Instant::now() >= deadline {
            break "completed";
        }
        match exchange(&stream, &mut reader, &format!("seq {seq}"), timeout) {
            Ok(()) => {
                ok += 1;
                println!("exchange seq={seq} result=ok");
            }
            Err(error) => {
                failed += 1;
                let word = outcome(&error);
                println!("exchange seq={seq} result={word}");
                // A lost reply may still come; a closed or reset connection will not.
                if word != "timeout" {
                    break "broken";
                }
            }
        }
        seq += 1;
        thread::sleep(interval);
    };
    println!("result={end} ok={ok} failed={failed}");
}
