//! `cargo xtask bench-peer` (hidden): the two ends of the latency measurement, run inside the
//! lab's namespaces. A Modbus/TCP-shaped ping-pong: the client sends one Read Holding Registers
//! request (12 bytes), the server answers with a 29-byte response, and the client times each
//! round trip. Bounded: the client sends `--count` requests and gives up on a silent peer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

const REQUEST_LEN: usize = 12;
const RESPONSE_LEN: usize = 29;
/// A reply later than this counts as lost (TCP's minimum retransmission timeout is 200 ms, so
/// a dropped segment shows up as a round trip above 200 ms well before this).
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct PeerArgs {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Answer every request on every connection until killed (the lab stops it).
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send `count` requests, one at a time, and print the round trips as JSON.
    Ping {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        /// Pause between requests (a paced stream instead of back-to-back ping-pong).
        #[arg(long, default_value_t = 0)]
        interval_us: u64,
    },
}

/// What a `ping` run prints.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct PingResult {
    /// Round-trip times in nanoseconds, in order.
    pub rtt_ns: Vec<u64>,
    /// Requests that got no full answer (the run stops at the first).
    pub errors: u32,
    pub error: Option<String>,
}

pub fn run(args: &PeerArgs) -> Result<()> {
    match &args.role {
        Role::Serve { listen } => serve(*listen),
        Role::Ping {
            to,
            count,
            interval_us,
        } => {
            let result = ping(*to, *count, Duration::from_micros(*interval_us));
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
    }
}

fn serve(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("listening on {listen}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut request = [0u8; REQUEST_LEN];
            let mut response = [0u8; RESPONSE_LEN];
            while stream.read_exact(&mut request).is_ok() {
                // MBAP header: same transaction and unit, length 23; function 3, 20 bytes.
                response[..4].copy_from_slice(&request[..4]);
                response[4..6].copy_from_slice(&23u16.to_be_bytes());
                response[6] = request[6];
                response[7] = request[7];
                response[8] = 20;
                if stream.write_all(&response).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn ping(to: SocketAddr, count: u32, interval: Duration) -> PingResult {
    let mut result = PingResult::default();
    let mut stream = match TcpStream::connect_timeout(&to, REPLY_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => {
            result.errors = count;
            result.error = Some(format!("connect {to}: {e}"));
            return result;
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    let mut request = [0, 0, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10];
    let mut response = [0u8; RESPONSE_LEN];
    for i in 0..count {
        request[..2].copy_from_slice(&(i as u16).to_be_bytes());
        let start = Instant::now();
        let outcome = stream
            .write_all(&request)
            .and_then(|_| stream.read_exact(&mut response));
        if let Err(e) = outcome {
            result.errors = count - i;
            result.error = Some(format!("request {i}: {e}"));
            break;
        }
        result.rtt_ns.push(start.elapsed().as_nanos() as u64);
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    result
}
