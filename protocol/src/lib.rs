//! The Postgres v3 wire protocol as a proxy needs it, without IO.
//!
//! Frames are `Bytes` views of the bytes that arrived; typed views decode a
//! field only when asked, so forwarding a message costs a header check and
//! nothing else. Decoders return `Ok(None)` for "need more bytes" and `Err`
//! for "this peer is broken".

pub mod auth;
pub mod backend;
pub mod encode;
mod error;
pub mod extended;
pub mod frame;
pub mod frontend;
mod reader;
pub mod scan;
pub mod startup;

pub use error::ProtocolError;
pub use frame::{decode_frame, peek_header, Frame, Header, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};
pub use reader::BodyReader;
