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
    Sync,
}

/// Sends `msgs`, then a marker Query, and returns what came back up to the
/// marker's ReadyForQuery: each message's tag, with CommandComplete's tag,
/// ErrorResponse's SQLSTATE, a DataRow's (single) value and
/// ReadyForQuery's transaction status; notices and parameter changes left
/// out.
pub async fn transcript(s: &mut TcpStream, msgs: &[Msg]) -> Vec<String> {
    let mut out = BytesMut::new();
    for m in msgs {
        match m {
            Msg::Parse(sql) => encode::parse(&mut out, "", sql, &[]),
            Msg::Bind => encode::bind(&mut out, "", "", &[], &[]),
            Msg::Execute => encode::execute(&mut out, "", 0),
            Msg::Flush => encode::frame(&mut out, b'H', |_| {}),
            Msg::Query(sql) => encode::query(&mut out, sql),
            Msg::CopyData(data) => encode::frame(&mut out, b'd', |b| {
                b.extend_from_slice(data.as_bytes());
            }),
            Msg::CopyDone => encode::frame(&mut out, b'c', |_| {}),
            Msg::Call(oid) => encode::frame(&mut out, b'F', |b| {
                b.extend_from_slice(&oid.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            }),
            Msg::Sync => encode::sync(&mut out),
        }
    }
    encode::query(&mut out, "SELECT 'marker'");
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let mut marker = false;
    loop {
        let f = read_frame(s, &mut buf).await;
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
            b'Z' if marker => return seen,
            b'Z' => seen.push(format!("Z:{}", body.first().map_or('?', |&c| c as char))),
            t => seen.push((t as char).to_string()),
        }
    }
}
