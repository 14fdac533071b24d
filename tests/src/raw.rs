//! A client speaking the wire protocol by hand, for tests that must see
//! exactly which messages arrive (or send what no driver would).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pgshift_protocol::auth::scram::ScramClient;
use pgshift_protocol::{backend, encode, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Logs in as [`crate::APP_USER`] (SCRAM with [`crate::APP_PASSWORD`], or
/// trust) and returns the stream after ReadyForQuery, with the pid from
/// BackendKeyData.
pub async fn login(addr: SocketAddr, db: &str) -> (TcpStream, u32) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, [("user", crate::APP_USER), ("database", db)]);
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut scram: Option<ScramClient> = None;
    let mut pid = None;
    loop {
        let f = read_frame(&mut s, &mut buf).await;
        match f.tag() {
            b'R' => match backend::authentication(f.body()).unwrap() {
                backend::Authentication::Sasl { .. } => {
                    let c = ScramClient::new(crate::APP_PASSWORD.as_bytes());
                    out.clear();
                    encode::sasl_initial_response(&mut out, "SCRAM-SHA-256", c.client_first());
                    s.write_all(&out).await.unwrap();
                    scram = Some(c);
                }
                backend::Authentication::SaslContinue { data } => {
                    let reply = scram.as_mut().unwrap().server_first(data).unwrap();
                    out.clear();
                    encode::sasl_response(&mut out, &reply);
                    s.write_all(&out).await.unwrap();
                }
                backend::Authentication::SaslFinal { data } => {
                    scram.as_mut().unwrap().server_final(data).unwrap()
                }
                backend::Authentication::Ok => {}
                other => panic!("unexpected {other:?}"),
            },
            b'K' => pid = Some(backend::backend_key_data(f.body()).unwrap().pid),
            b'Z' => return (s, pid.expect("BackendKeyData before ReadyForQuery")),
            b'E' => panic!("login failed: {:?}", String::from_utf8_lossy(f.body())),
            _ => {}
        }
    }
}

/// The next message, waiting at most 10 s for it; panics if the connection
/// closes first.
pub async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Frame {
    loop {
        if let Some(f) = pgshift_protocol::decode_frame(buf, 1 << 30).unwrap() {
            return f;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "connection closed");
    }
}

/// One message of a hand-written exchange.
pub enum Msg {
    Parse(&'static str),
    Bind,
    Execute,
    Flush,
    Query(&'static str),
    /// A FunctionCall of the function with this OID, no arguments, text
    /// result.
    Call(u32),
    CopyData(&'static str),
    CopyDone,
    CopyFail,
    Sync,
    /// Not a message: wait for a message with this tag before sending on.
    Await(u8),
}

/// Sends `msgs`, then a marker Query, and returns what came back up to the
/// marker's ReadyForQuery: each message's tag, with CommandComplete's tag,
/// ErrorResponse's SQLSTATE, a DataRow's (single) value and
/// ReadyForQuery's transaction status; notices and parameter changes left
/// out. At [`Msg::Await`] it stops sending until a message with that tag
/// has come.
pub async fn transcript(s: &mut TcpStream, msgs: &[Msg]) -> Vec<String> {
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    send_awaiting(s, &mut buf, &mut seen, msgs).await;
    let mut out = BytesMut::new();
    encode::query(&mut out, "SELECT 'marker'");
    s.write_all(&out).await.unwrap();
    read_until(s, &mut buf, &mut seen, None).await;
    seen
}

/// [`transcript`] without the marker Query: nothing is sent after `msgs`,
/// and what comes after their last [`Msg::Await`] is left unread.
pub async fn transcript_unmarked(s: &mut TcpStream, msgs: &[Msg]) -> Vec<String> {
    let mut seen = Vec::new();
    send_awaiting(s, &mut BytesMut::new(), &mut seen, msgs).await;
    seen
}

async fn send_awaiting(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    seen: &mut Vec<String>,
    msgs: &[Msg],
) {
    for chunk in msgs.split_inclusive(|m| matches!(m, Msg::Await(_))) {
        let mut out = BytesMut::new();
        for m in chunk {
            encode_msg(&mut out, m);
        }
        s.write_all(&out).await.unwrap();
        if let Some(Msg::Await(tag)) = chunk.last() {
            read_until(s, buf, seen, Some(*tag)).await;
        }
    }
}

/// Reads and records (see [`transcript`]) up to a message tagged `until`,
/// or with `None`, up to the marker's ReadyForQuery (not recorded).
async fn read_until(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    seen: &mut Vec<String>,
    until: Option<u8>,
) {
    let mut marker = false;
    loop {
        let f = read_frame(s, buf).await;
        let body = f.body();
        match f.tag() {
            b'N' | b'S' => continue,
            b'C' => seen.push(format!(
                "C:{}",
                String::from_utf8_lossy(&body[..body.len() - 1])
            )),
            b'E' => {
                let code = backend::ErrorFields::new(body)
                    .sqlstate()
                    .map(|c| String::from_utf8_lossy(c).into_owned());
                seen.push(format!("E:{}", code.unwrap_or_default()));
            }
            b'D' => {
                // Every row here has one column.
                let value = String::from_utf8_lossy(body.get(6..).unwrap_or_default());
                marker |= value == "marker";
                seen.push(format!("D:{value}"));
            }
            b'Z' if marker && until.is_none() => return,
            b'Z' => seen.push(format!("Z:{}", body.first().map_or('?', |&c| c as char))),
            t => seen.push((t as char).to_string()),
        }
        if until == Some(f.tag()) {
            return;
        }
    }
}

fn encode_msg(out: &mut BytesMut, m: &Msg) {
    match m {
        Msg::Parse(sql) => encode::parse(out, "", sql, &[]),
        Msg::Bind => encode::bind(out, "", "", &[], &[]),
        Msg::Execute => encode::execute(out, "", 0),
        Msg::Flush => encode::frame(out, b'H', |_| {}),
        Msg::Query(sql) => encode::query(out, sql),
        Msg::CopyData(data) => encode::frame(out, b'd', |b| {
            b.extend_from_slice(data.as_bytes());
        }),
        Msg::CopyDone => encode::frame(out, b'c', |_| {}),
        Msg::CopyFail => encode::frame(out, b'f', |b| {
            b.extend_from_slice(b"given up\0");
        }),
        Msg::Call(oid) => encode::frame(out, b'F', |b| {
            b.extend_from_slice(&oid.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }),
        Msg::Sync => encode::sync(out),
        Msg::Await(_) => {}
    }
}
