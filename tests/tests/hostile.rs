//! Malformed and hostile clients get an ErrorResponse or a closed
//! connection; other sessions keep being served (SPEC guarantee 11).

use std::time::Duration;

use bytes::BytesMut;
use pgshift_protocol::{backend, encode, startup};
use pgshift_tests::{fresh_db, proxy_with, raw, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the proxy says until it closes (or 5 s of silence).
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection neither answered nor closed within 5s; got {out:?}"),
        }
    }
}

/// The proxy closed the connection, having sent nothing or an ErrorResponse.
fn assert_refused(reply: &[u8]) {
    if !reply.is_empty() {
        assert_eq!(reply[0], b'E', "expected an ErrorResponse, got {reply:?}");
    }
}

async fn still_serving(proxy: &TestProxy) {
    let c = proxy.client().await;
    let v: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 1);
}

async fn raw_login(proxy: &TestProxy) -> (TcpStream, u32) {
    raw::login(proxy.addr, &proxy.db).await
}

#[tokio::test]
async fn garbage_first_packet() {
    let db = fresh_db("garbage");
    let proxy = proxy_with(&db, "").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_refused(&read_until_closed(&mut s).await);
    still_serving(&proxy).await;
}

#[tokio::test]
async fn huge_length_in_startup_and_after_login() {
    let db = fresh_db("hugelen");
    let proxy = proxy_with(&db, "").await;
    // Startup packet claiming 2^31-1 bytes.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0])
        .await
        .unwrap();
    assert_refused(&read_until_closed(&mut s).await);

    // A Query message claiming 2^31-1 bytes after a good login.
    let (mut s, _) = raw_login(&proxy).await;
    s.write_all(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b'S'])
        .await
        .unwrap();
    assert_refused(&read_until_closed(&mut s).await);
    still_serving(&proxy).await;
}

#[tokio::test]
async fn message_size_limit_is_enforced() {
    let db = fresh_db("sizelimit");
    let proxy = proxy_with(&db, "limits: { max_message_size: 1MiB }\n").await;
    let (mut s, _) = raw_login(&proxy).await;
    let mut out = BytesMut::new();
    encode::query(&mut out, &format!("SELECT '{}'", "x".repeat(2 << 20)));
    let _ = s.write_all(&out).await;
    let reply = read_until_closed(&mut s).await;
    assert_eq!(reply.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&reply).contains("exceeds the limit"));
    still_serving(&proxy).await;
}

#[tokio::test]
async fn truncated_message_then_close() {
    let db = fresh_db("truncated");
    let proxy = proxy_with(&db, "").await;
    let (mut s, _) = raw_login(&proxy).await;
    // Half a Query, then the client goes away.
    s.write_all(b"Q\x00\x00\x00\x20SELECT").await.unwrap();
    drop(s);
    // Half a startup packet, then silence: closed by the startup timeout
    // in another test; here the client closes.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
    s.shutdown().await.unwrap();
    assert_refused(&read_until_closed(&mut s).await);
    still_serving(&proxy).await;
}

#[tokio::test]
async fn unknown_message_type() {
    let db = fresh_db("unknowntag");
    let proxy = proxy_with(&db, "").await;
    let (mut s, _) = raw_login(&proxy).await;
    s.write_all(b"!\x00\x00\x00\x04").await.unwrap();
    let reply = read_until_closed(&mut s).await;
    assert_refused(&reply);
    assert!(!reply.is_empty(), "an ErrorResponse names the problem");
    still_serving(&proxy).await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user() {
    let db = fresh_db("badpw");
    let proxy = proxy_with(&db, "").await;
    for (user, pw) in [("app", "nope"), ("mallory", "app-secret")] {
        let err = pgshift_tests::try_connect(&proxy.url_as(user, pw))
            .await
            .expect_err("login refused");
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("expected a server error, got {err}"));
        assert_eq!(
            db_err.code(),
            &tokio_postgres::error::SqlState::INVALID_PASSWORD
        );
        assert_eq!(
            db_err.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    still_serving(&proxy).await;
}

#[tokio::test]
async fn silent_client_is_closed_after_startup_timeout() {
    let db = fresh_db("silent");
    let proxy = proxy_with(&db, "limits: { startup_timeout: 300ms }\n").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let started = std::time::Instant::now();
    let reply = read_until_closed(&mut s).await;
    assert_refused(&reply);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    still_serving(&proxy).await;
}

#[tokio::test]
async fn connection_limit() {
    let db = fresh_db("maxclients");
    let proxy = proxy_with(&db, "limits: { max_clients: 2 }\n").await;
    let a = proxy.client().await;
    let b = proxy.client().await;
    let err = pgshift_tests::try_connect(&proxy.url())
        .await
        .expect_err("third client refused");
    assert_eq!(
        err.as_db_error().map(|e| e.code().clone()),
        Some(tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
    );
    drop(a);
    // The slot frees when the first session ends.
    let mut ok = false;
    for _ in 0..50 {
        if pgshift_tests::try_connect(&proxy.url()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a slot frees up after a client leaves");
    drop(b);
}

#[tokio::test]
async fn backend_key_data_carries_the_real_pid() {
    let db = fresh_db("pid");
    let proxy = proxy_with(&db, "").await;
    let (mut s, pid) = raw_login(&proxy).await;
    let mut out = BytesMut::new();
    encode::query(&mut out, "SELECT pg_backend_pid()");
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut seen = None;
    loop {
        let f = raw::read_frame(&mut s, &mut buf).await;
        match f.tag() {
            b'D' => {
                let row = backend::DataRow::parse(f.body()).unwrap();
                let v = row.columns().next().unwrap().unwrap().unwrap();
                seen = Some(std::str::from_utf8(v).unwrap().parse::<u32>().unwrap());
            }
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(seen, Some(pid));
}

#[tokio::test]
async fn ssl_request_is_declined_without_tls_config() {
    let db = fresh_db("nossl");
    let proxy = proxy_with(&db, "").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut out = BytesMut::new();
    encode::ssl_request(&mut out);
    s.write_all(&out).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    // GSSENC too, then a normal startup continues on the same socket.
    out.clear();
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&startup::GSSENC_REQUEST_CODE.to_be_bytes());
    s.write_all(&out).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
}
