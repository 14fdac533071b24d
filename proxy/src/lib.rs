//! pgshift: the IO shell around `pgshift-protocol` and `pgshift-rules`.
//!
//! `server` accepts clients, `session` runs one client from startup to the
//! end, `backend` opens and cancels backend connections. Everything that can
//! be decided without a socket lives in the two library crates.

pub mod admin;
pub mod backend;
pub mod bounded;
pub mod catalog;
pub mod cluster;
pub mod compare;
pub mod config_file;
pub mod demo;
mod gate;
pub mod logging;
pub mod mirror;
pub mod prepared;
pub mod reload;
pub mod rewrites;
pub mod server;
pub mod session;
pub mod stats;
pub mod stream;
pub mod telemetry;
pub mod tls;
mod wire;
pub mod workers;

pub use server::{start, Proxy};
