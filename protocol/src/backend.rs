//! Messages a server sends, as views over a frame. Only what routing,
//! comparison and startup need is decoded; everything else is forwarded.

use crate::error::ProtocolError;
use crate::reader::BodyReader;

/// Backend tag bytes.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// The transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

pub fn ready_for_query(body: &[u8]) -> Result<TransactionStatus, ProtocolError> {
    match body {
        [b] => TransactionStatus::from_byte(*b)
            .ok_or(ProtocolError::malformed("ReadyForQuery", "unknown status")),
        _ => Err(ProtocolError::malformed("ReadyForQuery", "wrong length")),
    }
}

/// CommandComplete's tag, e.g. `UPDATE 3`.
pub fn command_complete(body: &[u8]) -> Result<&[u8], ProtocolError> {
    let mut r = BodyReader::new(body, "CommandComplete");
    r.cstr()
}

/// Whether a command tag ends a transaction keeping its work: `COMMIT`
/// (also `COMMIT PREPARED`), or `PREPARE TRANSACTION`, which keeps it
/// for a later COMMIT PREPARED. A COMMIT or PREPARE TRANSACTION of a
/// failed transaction reports `ROLLBACK` instead.
pub fn keeps_transaction(tag: &[u8]) -> bool {
    tag.starts_with(b"COMMIT") || tag == b"PREPARE TRANSACTION"
}

/// The row count at the end of a command tag (`INSERT 0 5` → 5), if any.
pub fn command_rows(tag: &[u8]) -> Option<u64> {
    let last = tag.rsplit(|b| *b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterStatus<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

pub fn parameter_status(body: &[u8]) -> Result<ParameterStatus<'_>, ProtocolError> {
    let mut r = BodyReader::new(body, "ParameterStatus");
    let name = r.cstr_utf8()?;
    let value = r.cstr_utf8()?;
    Ok(ParameterStatus { name, value })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKeyData<'a> {
    pub pid: u32,
    /// Four bytes in protocol 3.0, up to 256 in 3.2.
    pub secret: &'a [u8],
}

pub fn backend_key_data(body: &[u8]) -> Result<BackendKeyData<'_>, ProtocolError> {
    let mut r = BodyReader::new(body, "BackendKeyData");
    let pid = r.u32()?;
    let secret = r.remaining();
    if secret.len() < 4 || secret.len() > 256 {
        return Err(ProtocolError::malformed("BackendKeyData", "bad key length"));
    }
    Ok(BackendKeyData { pid, secret })
}

/// The Authentication* family ('R').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// NUL-terminated mechanism names, ending with an empty one.
    Sasl {
        mechanisms: &'a [u8],
    },
    SaslContinue {
        data: &'a [u8],
    },
    SaslFinal {
        data: &'a [u8],
    },
    /// Kerberos, GSS, SSPI and anything newer: not something pgshift can answer.
    Unsupported {
        code: i32,
    },
}

pub fn authentication(body: &[u8]) -> Result<Authentication<'_>, ProtocolError> {
    let mut r = BodyReader::new(body, "Authentication");
    let code = r.i32()?;
    Ok(match code {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let s = r.bytes(4)?;
            Authentication::Md5Password {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => Authentication::Sasl {
            mechanisms: r.remaining(),
        },
        11 => Authentication::SaslContinue {
            data: r.remaining(),
        },
        12 => Authentication::SaslFinal {
            data: r.remaining(),
        },
        code => Authentication::Unsupported { code },
    })
}

/// Fields of an ErrorResponse or NoticeResponse, by their one-byte codes.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFields<'a> {
    body: &'a [u8],
}

impl<'a> ErrorFields<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        ErrorFields { body }
    }

    /// Iterates (code, value); stops at the terminator or at malformed input.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> {
        let mut r = BodyReader::new(self.body, "ErrorResponse");
        std::iter::from_fn(move || {
            let code = r.u8().ok()?;
            if code == 0 {
                return None;
            }
            r.cstr().ok().map(|v| (code, v))
        })
    }

    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    pub fn sqlstate(&self) -> Option<&'a [u8]> {
        self.get(b'C')
    }

    pub fn message(&self) -> Option<&'a [u8]> {
        self.get(b'M')
    }

    pub fn severity(&self) -> Option<&'a [u8]> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    pub name: &'a [u8],
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: i16,
}

pub fn row_description(body: &[u8]) -> Result<Vec<FieldDescription<'_>>, ProtocolError> {
    let mut r = BodyReader::new(body, "RowDescription");
    let n = r.count16()?;
    let mut fields = Vec::with_capacity(n.min(1600));
    for _ in 0..n {
        fields.push(FieldDescription {
            name: r.cstr()?,
            table_oid: r.u32()?,
            column: r.i16()?,
            type_oid: r.u32()?,
            type_size: r.i16()?,
            type_modifier: r.i32()?,
            format: r.i16()?,
        });
    }
    r.finish()?;
    Ok(fields)
}

/// A DataRow hands out its columns as slices; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct DataRow<'a> {
    count: usize,
    cols: &'a [u8],
}

impl<'a> DataRow<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "DataRow");
        let count = r.count16()?;
        Ok(DataRow {
            count,
            cols: r.remaining(),
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each column's value, `None` for NULL; an error item if the row lies
    /// about its own layout.
    pub fn columns(&self) -> impl Iterator<Item = Result<Option<&'a [u8]>, ProtocolError>> {
        let mut r = BodyReader::new(self.cols, "DataRow");
        (0..self.count).map(move |_| r.nullable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use bytes::BytesMut;

    #[test]
    fn error_fields() {
        let mut b = BytesMut::new();
        encode::error_response(&mut b, "ERROR", "42P01", "relation \"x\" does not exist");
        let f = ErrorFields::new(&b[5..]);
        assert_eq!(f.sqlstate(), Some(&b"42P01"[..]));
        assert_eq!(f.severity(), Some(&b"ERROR"[..]));
        assert_eq!(f.message(), Some(&b"relation \"x\" does not exist"[..]));
    }

    #[test]
    fn data_row_columns() {
        let body = b"\x00\x03\x00\x00\x00\x01a\xff\xff\xff\xff\x00\x00\x00\x00";
        let row = DataRow::parse(body).unwrap();
        let cols: Vec<_> = row.columns().collect::<Result<_, _>>().unwrap();
        assert_eq!(cols, vec![Some(&b"a"[..]), None, Some(&b""[..])]);
        let lying = DataRow::parse(b"\x00\x02\x00\x00\x00\x09a").unwrap();
        assert!(lying.columns().any(|c| c.is_err()));
    }

    #[test]
    fn command_rows_from_tags() {
        assert_eq!(command_rows(b"INSERT 0 5"), Some(5));
        assert_eq!(command_rows(b"UPDATE 3"), Some(3));
        assert_eq!(command_rows(b"BEGIN"), None);
    }

    #[test]
    fn tags_that_keep_a_transaction() {
        for kept in [&b"COMMIT"[..], b"COMMIT PREPARED", b"PREPARE TRANSACTION"] {
            assert!(keeps_transaction(kept), "{kept:?}");
        }
        for lost in [
            &b"ROLLBACK"[..],
            b"ROLLBACK PREPARED",
            b"PREPARE",
            b"SELECT 1",
        ] {
            assert!(!keeps_transaction(lost), "{lost:?}");
        }
    }
}
