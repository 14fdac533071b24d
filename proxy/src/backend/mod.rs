//! Connections from pgshift to the OLD and NEW databases.

pub mod cancel;
pub mod connect;
mod salted;

pub use connect::{connect, BackendConn, CancelKey, ConnectError, ConnectOptions};
