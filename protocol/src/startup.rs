//! The startup phase: packets with a length but no tag, identified by a code.

use bytes::BytesMut;

use crate::error::ProtocolError;
use crate::reader::BodyReader;

pub const PROTOCOL_3_0: u32 = 196_608;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;

/// Postgres' own MAX_STARTUP_PACKET_LENGTH: a startup packet is small, so a
/// larger one is hostile or not Postgres at all.
pub const MAX_STARTUP_PACKET: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: u32, secret: Vec<u8> },
    Startup(StartupMessage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    /// In the order the client sent them; `user` and `database` included.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Protocol extension options (`_pq_.*`) the client asked for.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

/// Takes one startup-phase packet off the front of `buf`.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(ProtocolError::BadStartupLength(len));
    }
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let mut r = BodyReader::new(&packet[4..], "startup");
    let code = r.u32()?;
    let pkt = match code {
        SSL_REQUEST_CODE if len == 8 => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE if len == 8 => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            let pid = r.u32()?;
            let secret = r.remaining();
            if secret.len() < 4 || secret.len() > 256 {
                return Err(ProtocolError::malformed("CancelRequest", "bad key length"));
            }
            StartupPacket::Cancel {
                pid,
                secret: secret.to_vec(),
            }
        }
        code => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params: parse_params(&mut r)?,
            })
        }
    };
    Ok(Some(pkt))
}

fn parse_params(r: &mut BodyReader<'_>) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let key = r.cstr_utf8()?;
        if key.is_empty() {
            break;
        }
        let value = r.cstr_utf8()?;
        if params.iter().any(|(k, _): &(String, String)| k == key) {
            return Err(ProtocolError::malformed("startup", "duplicate parameter"));
        }
        params.push((key.to_owned(), value.to_owned()));
    }
    r.finish()?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn startup_round_trip() {
        let mut b = BytesMut::new();
        encode::startup_message(
            &mut b,
            [("user", "app"), ("database", "db"), ("options", "-c x=1")],
        );
        let Some(StartupPacket::Startup(m)) = decode_startup(&mut b).unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!((m.major, m.minor), (3, 0));
        assert_eq!(m.get("user"), Some("app"));
        assert_eq!(m.get("options"), Some("-c x=1"));
        assert!(b.is_empty());
    }

    #[test]
    fn ssl_and_cancel() {
        let mut b = BytesMut::new();
        encode::ssl_request(&mut b);
        encode::cancel_request(&mut b, 42, &[1, 2, 3, 4]);
        assert_eq!(
            decode_startup(&mut b).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            decode_startup(&mut b).unwrap(),
            Some(StartupPacket::Cancel {
                pid: 42,
                secret: vec![1, 2, 3, 4]
            })
        );
    }

    #[test]
    fn hostile_packets() {
        let mut b = BytesMut::from(&b"\x7f\xff\xff\xff"[..]);
        assert!(decode_startup(&mut b).is_err());
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(decode_startup(&mut b).is_err());
        let mut b = BytesMut::from(&b"\x00\x00\x00\x0c\x00\x02\x00\x00ab\x00\x00"[..]);
        assert!(matches!(
            decode_startup(&mut b),
            Err(ProtocolError::UnsupportedVersion { major: 2, .. })
        ));
        // Key without a value.
        let mut b = BytesMut::from(&b"\x00\x00\x00\x0d\x00\x03\x00\x00user\x00"[..]);
        assert!(decode_startup(&mut b).is_err());
    }
}
