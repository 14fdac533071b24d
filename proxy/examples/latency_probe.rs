//! One-client latency of several Postgres endpoints, measured in turns.
//!
//! pgbench at one client measures one endpoint for seconds at a time, and on
//! a small shared host the machine drifts by more between two such runs
//! than a proxy adds. This client keeps one connection to each endpoint
//! and sends the same transaction as `pgbench -S -M extended` (Parse, Bind,
//! Describe, Execute, Sync of the unnamed statement) to each in turn, the
//! order rotated every round, so every endpoint sees the same machine.
//! Besides each endpoint's own percentiles it reports, for each endpoint
//! after the first, the median of its per-round difference to the first:
//! the overhead with the drift paired out.
//!
//!   latency_probe [--seconds N] [--scale N] direct=127.0.0.1:5432 pgshift=127.0.0.1:6432
//!
//! User, database and password come from PGUSER, PGDATABASE and PGPASSWORD
//! (defaults: the login name, the user name, none). Trust, cleartext, MD5
//! and SCRAM-SHA-256 logins are understood; TLS is not.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgshift_protocol::auth::{md5, scram};
use pgshift_protocol::backend::{self, Authentication};
use pgshift_protocol::encode;

type Error = Box<dyn std::error::Error>;

struct Endpoint {
    name: String,
    stream: TcpStream,
    /// Every transaction's latency, in nanoseconds.
    samples: Vec<u64>,
    /// Each turn's median latency: what the pairing compares.
    turns: Vec<u64>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("latency_probe: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let mut seconds = 10u64;
    let mut scale = 1u64;
    let mut turn_ms = 0u64;
    let mut targets = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().ok_or("--seconds needs a value")?.parse()?,
            "--scale" => scale = args.next().ok_or("--scale needs a value")?.parse()?,
            "--turn-ms" => turn_ms = args.next().ok_or("--turn-ms needs a value")?.parse()?,
            _ => {
                let (name, addr) = a.split_once('=').ok_or_else(|| {
                    format!("{a}: expected NAME=HOST:PORT (usage: latency_probe [--seconds N] [--scale N] NAME=HOST:PORT...)")
                })?;
                targets.push((name.to_owned(), addr.to_owned()));
            }
        }
    }
    if targets.is_empty() || scale == 0 {
        return Err("usage: latency_probe [--seconds N] [--scale N] NAME=HOST:PORT...".into());
    }
    let user = std::env::var("PGUSER")
        .or_else(|_| std::env::var("USER"))
        .map_err(|_| "set PGUSER")?;
    let database = std::env::var("PGDATABASE").unwrap_or_else(|_| user.clone());
    let password = std::env::var("PGPASSWORD").ok();

    let mut endpoints = Vec::with_capacity(targets.len());
    for (name, addr) in targets {
        let stream = connect(&addr, &user, &database, password.as_deref())
            .map_err(|e| format!("{name} ({addr}): {e}"))?;
        endpoints.push(Endpoint {
            name,
            stream,
            samples: Vec::new(),
            turns: Vec::new(),
        });
    }

    let accounts = 100_000 * scale;
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut request = BytesMut::with_capacity(256);
    let mut reply = Vec::with_capacity(4096);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let turn = Duration::from_millis(turn_ms);
    let mut round = 0usize;
    while Instant::now() < deadline {
        let n = endpoints.len();
        for k in 0..n {
            let ep = &mut endpoints[(round + k) % n];
            let first = ep.samples.len();
            let turn_start = Instant::now();
            loop {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                let aid = (rng_state % accounts + 1).to_string();
                request.clear();
                encode::parse(
                    &mut request,
                    "",
                    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
                    &[],
                );
                encode::bind(&mut request, "", "", &[Some(aid.as_bytes())], &[]);
                encode::frame(&mut request, b'D', |b| b.extend_from_slice(b"P\0"));
                encode::execute(&mut request, "", 0);
                encode::sync(&mut request);
                let start = Instant::now();
                ep.stream.write_all(&request)?;
                read_until_ready(&mut ep.stream, &mut reply)
                    .map_err(|e| format!("{}: {e}", ep.name))?;
                ep.samples.push(start.elapsed().as_nanos() as u64);
                if turn_start.elapsed() >= turn {
                    break;
                }
            }
            let mut this_turn = ep.samples[first..].to_vec();
            this_turn.sort_unstable();
            ep.turns.push(pct(&this_turn, 0.50));
        }
        round += 1;
    }
    report(&endpoints, round);
    Ok(())
}

fn connect(
    addr: &str,
    user: &str,
    database: &str,
    password: Option<&str>,
) -> Result<TcpStream, Error> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, [("user", user), ("database", database)]);
    stream.write_all(&out)?;
    let password = || password.ok_or("the server asks for a password: set PGPASSWORD");
    let mut scram = None;
    let mut body = Vec::new();
    loop {
        let tag = read_message(&mut stream, &mut body)?;
        match tag {
            b'R' => {}
            b'E' => return Err(format!("login refused: {}", String::from_utf8_lossy(&body)).into()),
            b'Z' => return Ok(stream),
            _ => continue, // ParameterStatus, BackendKeyData, notices
        }
        out.clear();
        match backend::authentication(&body)? {
            Authentication::Ok => continue,
            Authentication::CleartextPassword => {
                encode::password_message(&mut out, password()?.as_bytes())
            }
            Authentication::Md5Password { salt } => {
                let resp = md5::client_response(user, password()?, salt);
                encode::password_message(&mut out, resp.as_bytes());
            }
            Authentication::Sasl { mechanisms } => {
                let mech = scram::choose_mechanism(mechanisms)?;
                let client = scram::ScramClient::new(password()?.as_bytes());
                encode::sasl_initial_response(&mut out, mech, client.client_first());
                scram = Some(client);
            }
            Authentication::SaslContinue { data } => {
                let reply = scram
                    .as_mut()
                    .ok_or("SASL continue before SASL start")?
                    .server_first(data)?;
                encode::sasl_response(&mut out, &reply);
            }
            Authentication::SaslFinal { data } => {
                scram
                    .as_mut()
                    .ok_or("SASL final before SASL start")?
                    .server_final(data)?;
                continue;
            }
            Authentication::Unsupported { code } => {
                return Err(format!("unsupported authentication request {code}").into())
            }
        }
        stream.write_all(&out)?;
    }
}

/// Reads one message into `body` (without its header) and returns its tag.
fn read_message(stream: &mut TcpStream, body: &mut Vec<u8>) -> Result<u8, Error> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=16 << 20).contains(&len) {
        return Err(format!("message length {len} out of bounds").into());
    }
    body.resize(len - 4, 0);
    stream.read_exact(body)?;
    Ok(header[0])
}

fn read_until_ready(stream: &mut TcpStream, body: &mut Vec<u8>) -> Result<(), Error> {
    loop {
        match read_message(stream, body)? {
            b'Z' => return Ok(()),
            b'E' => return Err(format!("query failed: {}", String::from_utf8_lossy(body)).into()),
            _ => {}
        }
    }
}

fn report(endpoints: &[Endpoint], rounds: usize) {
    let us = |ns: u64| ns as f64 / 1000.0;
    println!("{rounds} rounds, each endpoint one turn per round in rotating order; microseconds");
    println!(
        "  {:<10} {:>9} {:>8} {:>8} {:>8} {:>8}   overhead vs first, paired by round: median [p25, p75]",
        "endpoint", "txns", "p50", "p90", "p99", "mean"
    );
    let first = &endpoints[0].turns;
    for ep in endpoints {
        let mut sorted = ep.samples.clone();
        sorted.sort_unstable();
        let mean = sorted.iter().sum::<u64>() as f64 / sorted.len().max(1) as f64;
        let paired = if std::ptr::eq(ep.turns.as_ptr(), first.as_ptr()) {
            "-".to_owned()
        } else {
            let mut d: Vec<i64> = ep
                .turns
                .iter()
                .zip(first)
                .map(|(&a, &b)| a as i64 - b as i64)
                .collect();
            d.sort_unstable();
            format!(
                "{:+.1} [{:+.1}, {:+.1}]",
                pct(&d, 0.50) as f64 / 1000.0,
                pct(&d, 0.25) as f64 / 1000.0,
                pct(&d, 0.75) as f64 / 1000.0
            )
        };
        println!(
            "  {:<10} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.1}   {}",
            ep.name,
            sorted.len(),
            us(pct(&sorted, 0.50)),
            us(pct(&sorted, 0.90)),
            us(pct(&sorted, 0.99)),
            mean / 1000.0,
            paired
        );
    }
}

/// The nearest-rank percentile of sorted values.
fn pct<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
