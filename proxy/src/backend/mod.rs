//! Connections from pgshift to the OLD and NEW databases.

pub mod cancel;
pub mod connect;
pub mod oneshot;
mod salted;

pub use connect::{connect, BackendConn, CancelKey, ConnectError, ConnectOptions};
