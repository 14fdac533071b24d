//! The floor a tokio relay stands on: `benches/pgbench.sh` runs this next
//! to pgshift to tell what the runtime and the sockets cost on a machine
//! from what pgshift's own work costs.
//!
//! It has pgshift's shape and none of its logic: one single-threaded
//! runtime per CPU (or `PGSHIFT_THREADS`), connections dealt out in turn,
//! one task per connection moving bytes both ways with no parsing, no
//! authentication and no statistics. Not a proxy to use.
//!
//!   cargo run --release --example relay_floor -- 127.0.0.1:6433 127.0.0.1:5432
//!   cargo run --release --example relay_floor -- 127.0.0.1:6433 /tmp/.s.PGSQL.5432

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::runtime::{Builder, Handle};

/// Postgres over TCP, or its Unix socket (a path starting with `/`).
enum Upstream {
    Tcp(SocketAddr),
    Unix(String),
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: relay_floor LISTEN_ADDR UPSTREAM_ADDR|SOCKET_PATH");
        std::process::exit(2);
    };
    let parse = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{a}: {e}")))
    };
    let listen = parse(&listen)?;
    let upstream = Arc::new(if upstream.starts_with('/') {
        Upstream::Unix(upstream)
    } else {
        Upstream::Tcp(parse(&upstream)?)
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = std::env::var("PGSHIFT_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(cpus);
    let mut threads: Vec<Handle> = Vec::with_capacity(n);
    for i in 0..n {
        let rt = Builder::new_current_thread().enable_all().build()?;
        threads.push(rt.handle().clone());
        std::thread::Builder::new()
            .name(format!("relay-{i}"))
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    }
    let rt = Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let mut next = 0;
        loop {
            let (client, _) = listener.accept().await?;
            let client = client.into_std()?;
            let upstream = Arc::clone(&upstream);
            threads[next % threads.len()].spawn(async move {
                if let Err(e) = relay(client, &upstream).await {
                    eprintln!("relay_floor: {e}");
                }
            });
            next += 1;
        }
    })
}

async fn relay(client: std::net::TcpStream, upstream: &Upstream) -> std::io::Result<()> {
    let client = TcpStream::from_std(client)?;
    client.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    match upstream {
        Upstream::Tcp(addr) => {
            let server = TcpStream::connect(addr).await?;
            server.set_nodelay(true)?;
            let (sr, sw) = server.into_split();
            tokio::try_join!(pipe(cr, sw), pipe(sr, cw)).map(|_| ())
        }
        Upstream::Unix(path) => {
            let (sr, sw) = UnixStream::connect(path).await?.into_split();
            tokio::try_join!(pipe(cr, sw), pipe(sr, cw)).map(|_| ())
        }
    }
}

/// Copies until `from` ends, then closes the write side of `to`.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
