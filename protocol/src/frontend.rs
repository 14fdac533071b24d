//! Messages a client sends once the session is up, as views over a frame.

use crate::error::ProtocolError;
use crate::frame::Frame;
use crate::reader::BodyReader;

/// Frontend tag bytes.
pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this tag;
    /// which one it is depends on the authentication state.
    pub const PASSWORD: u8 = b'p';
    pub const FUNCTION_CALL: u8 = b'F';
}

/// A decoded frontend message borrowing from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    Query(Query<'a>),
    Parse(Parse<'a>),
    Bind(Bind<'a>),
    Execute(Execute<'a>),
    Describe(Target<'a>),
    Close(Target<'a>),
    Sync,
    Flush,
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail(&'a [u8]),
    Terminate,
    Password(&'a [u8]),
    FunctionCall(&'a [u8]),
}

impl<'a> FrontendMessage<'a> {
    pub fn parse(frame: &'a Frame) -> Result<Self, ProtocolError> {
        let body = frame.body();
        Ok(match frame.tag() {
            tag::QUERY => FrontendMessage::Query(Query::decode(body)?),
            tag::PARSE => FrontendMessage::Parse(Parse::decode(body)?),
            tag::BIND => FrontendMessage::Bind(Bind::decode(body)?),
            tag::EXECUTE => FrontendMessage::Execute(Execute::decode(body)?),
            tag::DESCRIBE => FrontendMessage::Describe(Target::parse(body, "Describe")?),
            tag::CLOSE => FrontendMessage::Close(Target::parse(body, "Close")?),
            tag::SYNC => FrontendMessage::Sync,
            tag::FLUSH => FrontendMessage::Flush,
            tag::COPY_DATA => FrontendMessage::CopyData(body),
            tag::COPY_DONE => FrontendMessage::CopyDone,
            tag::COPY_FAIL => FrontendMessage::CopyFail(body),
            tag::TERMINATE => FrontendMessage::Terminate,
            tag::PASSWORD => FrontendMessage::Password(body),
            tag::FUNCTION_CALL => FrontendMessage::FunctionCall(body),
            _ => return Err(ProtocolError::malformed("frontend", "unknown message type")),
        })
    }
}

/// Whether a tag is one a client may send after startup.
pub fn is_known_tag(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::EXECUTE
            | tag::DESCRIBE
            | tag::CLOSE
            | tag::SYNC
            | tag::FLUSH
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_FAIL
            | tag::TERMINATE
            | tag::PASSWORD
            | tag::FUNCTION_CALL
    )
}

/// Simple-protocol query: one string that may hold several statements.
/// The text is in the client's encoding, so it stays bytes until asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub sql: &'a [u8],
}

impl<'a> Query<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "Query");
        let sql = r.cstr()?;
        r.finish()?;
        Ok(Query { sql })
    }

    pub fn sql_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.sql).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Empty for the unnamed statement.
    pub name: &'a [u8],
    pub sql: &'a [u8],
    /// The parameter type OIDs, still encoded (4 bytes each).
    pub param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "Parse");
        let name = r.cstr()?;
        let sql = r.cstr()?;
        let n = r.count16()?;
        let param_types = r.bytes(n * 4)?;
        r.finish()?;
        Ok(Parse {
            name,
            sql,
            param_types,
        })
    }

    pub fn sql_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.sql).ok()
    }

    pub fn param_count(&self) -> usize {
        self.param_types.len() / 4
    }
}

/// Routing needs only the names; parameter values stay opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Parameter formats, values and result formats, undecoded.
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "Bind");
        let portal = r.cstr()?;
        let statement = r.cstr()?;
        Ok(Bind {
            portal,
            statement,
            rest: r.remaining(),
        })
    }

    /// Result-column format codes (0 text, 1 binary), decoded on demand.
    pub fn result_formats(&self) -> Result<Vec<i16>, ProtocolError> {
        let mut r = BodyReader::new(self.rest, "Bind");
        let nfmt = r.count16()?;
        r.bytes(nfmt * 2)?;
        let nparams = r.count16()?;
        for _ in 0..nparams {
            r.nullable()?;
        }
        let nres = r.count16()?;
        (0..nres).map(|_| r.i16()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a [u8],
    /// 0 means no limit.
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "Execute");
        let portal = r.cstr()?;
        let max_rows = r.i32()?;
        r.finish()?;
        Ok(Execute { portal, max_rows })
    }
}

/// Describe and Close name a statement ('S') or a portal ('P').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub kind: TargetKind,
    pub name: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Statement,
    Portal,
}

impl<'a> Target<'a> {
    fn parse(body: &'a [u8], what: &'static str) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, what);
        let kind = match r.u8()? {
            b'S' => TargetKind::Statement,
            b'P' => TargetKind::Portal,
            _ => return Err(ProtocolError::malformed(what, "target must be 'S' or 'P'")),
        };
        let name = r.cstr()?;
        r.finish()?;
        Ok(Target { kind, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use bytes::BytesMut;

    fn frame(b: BytesMut) -> Frame {
        Frame::from_bytes_unchecked(b.freeze())
    }

    #[test]
    fn parse_and_bind_round_trip() {
        let mut b = BytesMut::new();
        encode::parse(&mut b, "s1", "SELECT $1::int", &[23]);
        let f = frame(b);
        let FrontendMessage::Parse(p) = FrontendMessage::parse(&f).unwrap() else {
            panic!("not a Parse")
        };
        assert_eq!(p.name, b"s1");
        assert_eq!(p.sql_str(), Some("SELECT $1::int"));
        assert_eq!(p.param_count(), 1);

        let mut b = BytesMut::new();
        encode::bind(&mut b, "", "s1", &[Some(b"42")], &[1]);
        let f = frame(b);
        let FrontendMessage::Bind(bind) = FrontendMessage::parse(&f).unwrap() else {
            panic!("not a Bind")
        };
        assert_eq!(bind.statement, b"s1");
        assert_eq!(bind.result_formats().unwrap(), vec![1]);
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let f = Frame::from_bytes_unchecked(bytes::Bytes::from_static(b"P\x00\x00\x00\x06s1"));
        assert!(FrontendMessage::parse(&f).is_err());
        let f = Frame::from_bytes_unchecked(bytes::Bytes::from_static(b"D\x00\x00\x00\x06Xa\x00"));
        assert!(FrontendMessage::parse(&f).is_err());
    }
}
