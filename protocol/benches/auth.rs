//! Costs of the startup/authentication path as pgshift pays them.
//!
//! * `scram/server_exchange`: one SCRAM-SHA-256 login seen from the server
//!   side (`ScramServer::client_first` + `client_final`). The client's
//!   messages are computed once outside the timed loop: the client's PBKDF2
//!   is the client's cost, not the proxy's. A fixed server nonce makes the
//!   precomputed proof valid on every iteration.
//! * `scram/server_random_nonce`: what drawing the random server nonce adds.
//! * `scram/verifier_generate`: `ScramVerifier::generate`, a 4096-iteration
//!   PBKDF2 that config load pays once per plain-text password.
//! * `scram/verifier_parse`: loading a stored `SCRAM-SHA-256$...` verifier.
//! * `md5/verify_*`: checking an MD5 password response, from a plain-text
//!   password and from a stored `md5...` hash.
//!
//! Run with `cargo bench -p pgshift-protocol --bench auth`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgshift_protocol::auth::md5::{self, Md5Secret};
use pgshift_protocol::auth::scram::{ScramClient, ScramServer, ScramVerifier};

const USER: &str = "app";
const PASSWORD: &str = "correct horse battery staple";
const SCRAM: &str = "SCRAM-SHA-256";
const SERVER_NONCE: [u8; 18] = *b"0123456789abcdefgh";

fn scram(c: &mut Criterion) {
    let verifier = ScramVerifier::generate(PASSWORD);

    // Client side, once: client-first, then client-final for our fixed nonce.
    let mut client = ScramClient::new(PASSWORD.as_bytes());
    let client_first = client.client_first().to_vec();
    let mut server = ScramServer::new(verifier.clone(), &SERVER_NONCE);
    let server_first = server.client_first(SCRAM, &client_first).unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    let server_final = server.client_final(&client_final).unwrap();
    client.server_final(&server_final).unwrap();

    let mut g = c.benchmark_group("scram");
    g.throughput(Throughput::Elements(1));
    g.bench_function("server_exchange", |b| {
        b.iter(|| {
            let mut server = ScramServer::new(verifier.clone(), &SERVER_NONCE);
            let first = server
                .client_first(SCRAM, black_box(&client_first))
                .unwrap();
            black_box(&first);
            server.client_final(black_box(&client_final)).unwrap()
        })
    });
    g.bench_function("server_random_nonce", |b| {
        b.iter(|| ScramServer::with_random_nonce(verifier.clone()))
    });
    let stored = verifier.to_string();
    g.bench_function("verifier_parse", |b| {
        b.iter(|| ScramVerifier::parse(black_box(&stored)).unwrap())
    });
    g.sample_size(20);
    g.bench_function("verifier_generate", |b| {
        b.iter(|| ScramVerifier::generate(black_box(PASSWORD)))
    });
    g.finish();
}

fn md5_verify(c: &mut Criterion) {
    let salt = [0x5a, 0x11, 0xc3, 0x07];
    // The PasswordMessage payload arrives NUL-terminated.
    let mut response = md5::client_response(USER, PASSWORD, salt).into_bytes();
    response.push(0);
    let plain = Md5Secret::Plaintext(PASSWORD.to_owned());
    let stored = Md5Secret::from_stored(&md5::stored_hash(USER, PASSWORD)).unwrap();
    assert!(md5::verify(&plain, USER, salt, &response));
    assert!(md5::verify(&stored, USER, salt, &response));

    let mut g = c.benchmark_group("md5");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_plaintext", |b| {
        b.iter(|| md5::verify(&plain, USER, black_box(salt), black_box(&response)))
    });
    g.bench_function("verify_stored", |b| {
        b.iter(|| md5::verify(&stored, USER, black_box(salt), black_box(&response)))
    });
    g.finish();
}

criterion_group!(benches, scram, md5_verify);
criterion_main!(benches);
