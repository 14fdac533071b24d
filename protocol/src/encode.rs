//! Encoders for the messages pgshift writes itself (everything else it
//! forwards as received). Each appends one whole frame to `buf`.

use bytes::{BufMut, BytesMut};

use crate::backend::TransactionStatus;
use crate::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};

/// Writes `tag`, a length placeholder, the body, then patches the length.
#[inline]
pub fn frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    untagged(buf, body);
}

/// Startup-phase packets have a length but no tag.
fn untagged(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

// ---- backend messages (pgshift as a server) ----

fn error_like(buf: &mut BytesMut, tag: u8, severity: &str, code: &str, message: &str) {
    frame(buf, tag, |b| {
        b.put_u8(b'S');
        cstr(b, severity.as_bytes());
        b.put_u8(b'V');
        cstr(b, severity.as_bytes());
        b.put_u8(b'C');
        cstr(b, code.as_bytes());
        b.put_u8(b'M');
        cstr(b, message.as_bytes());
        b.put_u8(0);
    });
}

pub fn error_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    error_like(buf, b'E', severity, code, message);
}

pub fn notice_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    error_like(buf, b'N', severity, code, message);
}

fn auth(buf: &mut BytesMut, code: i32, rest: &[u8]) {
    frame(buf, b'R', |b| {
        b.put_i32(code);
        b.put_slice(rest);
    });
}

pub fn authentication_ok(buf: &mut BytesMut) {
    auth(buf, 0, &[]);
}

pub fn authentication_cleartext(buf: &mut BytesMut) {
    auth(buf, 3, &[]);
}

pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    auth(buf, 5, &salt);
}

pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    frame(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 11, data);
}

pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 12, data);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    frame(buf, b'S', |b| {
        cstr(b, name.as_bytes());
        cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: u32, secret: &[u8]) {
    frame(buf, b'K', |b| {
        b.put_u32(pid);
        b.put_slice(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    frame(buf, b'Z', |b| b.put_u8(status.as_byte()));
}

/// Tells a client that asked for a newer minor version (or `_pq_.` options)
/// which version and options the session will use instead.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u16, unsupported: &[&str]) {
    frame(buf, b'v', |b| {
        b.put_u32(u32::from(minor));
        b.put_u32(unsupported.len() as u32);
        for o in unsupported {
            cstr(b, o.as_bytes());
        }
    });
}

// ---- frontend messages (pgshift as a client of a backend) ----

pub fn startup_message<'a>(
    buf: &mut BytesMut,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    untagged(buf, |b| {
        b.put_u32(PROTOCOL_3_0);
        for (k, v) in params {
            cstr(b, k.as_bytes());
            cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn ssl_request(buf: &mut BytesMut) {
    untagged(buf, |b| b.put_u32(SSL_REQUEST_CODE));
}

pub fn cancel_request(buf: &mut BytesMut, pid: u32, secret: &[u8]) {
    untagged(buf, |b| {
        b.put_u32(CANCEL_REQUEST_CODE);
        b.put_u32(pid);
        b.put_slice(secret);
    });
}

pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    frame(buf, b'p', |b| cstr(b, password));
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    frame(buf, b'p', |b| {
        cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    frame(buf, b'p', |b| b.put_slice(data));
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    frame(buf, b'Q', |b| cstr(b, sql.as_bytes()));
}

pub fn parse(buf: &mut BytesMut, name: &str, sql: &str, param_types: &[u32]) {
    frame(buf, b'P', |b| {
        cstr(b, name.as_bytes());
        cstr(b, sql.as_bytes());
        b.put_i16(param_types.len() as i16);
        for t in param_types {
            b.put_u32(*t);
        }
    });
}

/// Bind with text parameters and the given result formats.
pub fn bind(
    buf: &mut BytesMut,
    portal: &str,
    statement: &str,
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) {
    frame(buf, b'B', |b| {
        cstr(b, portal.as_bytes());
        cstr(b, statement.as_bytes());
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(result_formats.len() as i16);
        for f in result_formats {
            b.put_i16(*f);
        }
    });
}

pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: i32) {
    frame(buf, b'E', |b| {
        cstr(b, portal.as_bytes());
        b.put_i32(max_rows);
    });
}

pub fn sync(buf: &mut BytesMut) {
    frame(buf, b'S', |_| {});
}

pub fn terminate(buf: &mut BytesMut) {
    frame(buf, b'X', |_| {});
}
