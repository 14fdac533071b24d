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

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Handle};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: relay_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let parse = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{a}: {e}")))
    };
    let (listen, upstream) = (parse(&listen)?, parse(&upstream)?);
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
            threads[next % threads.len()].spawn(async move {
                if let Err(e) = relay(client, upstream).await {
                    eprintln!("relay_floor: {e}");
                }
            });
            next += 1;
        }
    })
}

async fn relay(client: std::net::TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let client = TcpStream::from_std(client)?;
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::try_join!(pipe(cr, sw), pipe(sr, cw)).map(|_| ())
}

/// Copies until `from` ends, then closes the write side of `to`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
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
