//! pgshift authenticating its clients, as the `auth:` section says.
//!
//! Secrets are prepared once per config load: a plain password becomes a
//! SCRAM verifier, so the per-login cost is one exchange, not a PBKDF2 of
//! the stored password.

use std::collections::HashMap;

use bytes::BytesMut;
use pgshift_protocol::auth::{md5, scram, SCRAM_SHA_256};
use pgshift_protocol::{encode, frontend, BodyReader};
use pgshift_rules::config::{Auth, AuthMethod, Secret};

use crate::stream::Stream;
use crate::wire::{read_frame, send, WireError};

enum UserSecret {
    Scram(scram::ScramVerifier),
    Md5(md5::Md5Secret),
}

pub struct ClientAuth {
    method: AuthMethod,
    users: HashMap<String, UserSecret>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("password authentication failed for user \"{0}\"")]
    BadPassword(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Wire(#[from] WireError),
}

impl AuthFailure {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthFailure::BadPassword(_) => "28P01",
            _ => "08P01",
        }
    }
}

impl ClientAuth {
    pub fn new(auth: &Auth) -> anyhow::Result<Self> {
        let mut users = HashMap::new();
        for u in &auth.users {
            let secret = match (&auth.method, &u.secret) {
                (AuthMethod::Trust, _) | (_, None) => continue,
                (AuthMethod::ScramSha256, Some(Secret::Plain(p))) => {
                    UserSecret::Scram(scram::ScramVerifier::generate(p))
                }
                (AuthMethod::ScramSha256, Some(Secret::ScramVerifier(v))) => UserSecret::Scram(
                    scram::ScramVerifier::parse(v)
                        .map_err(|e| anyhow::anyhow!("auth.users {}: {e}", u.name))?,
                ),
                (AuthMethod::Md5, Some(Secret::Plain(p))) => {
                    UserSecret::Md5(md5::Md5Secret::Plaintext(p.clone()))
                }
                (AuthMethod::Md5, Some(Secret::Md5Hash(h))) => UserSecret::Md5(
                    md5::Md5Secret::from_stored(h)
                        .map_err(|e| anyhow::anyhow!("auth.users {}: {e}", u.name))?,
                ),
                (method, Some(_)) => anyhow::bail!(
                    "auth.users {}: this kind of secret cannot be used with {method:?}",
                    u.name
                ),
            };
            users.insert(u.name.clone(), secret);
        }
        Ok(ClientAuth {
            method: auth.method,
            users,
        })
    }

    /// Runs the exchange; on success the caller sends AuthenticationOk.
    pub async fn authenticate(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        user: &str,
        max: usize,
    ) -> Result<(), AuthFailure> {
        match self.method {
            AuthMethod::Trust => Ok(()),
            AuthMethod::ScramSha256 => {
                // An unknown user still goes through a full exchange against
                // a throwaway verifier, so a probe cannot tell users apart.
                let verifier = match self.users.get(user) {
                    Some(UserSecret::Scram(v)) => Some(v.clone()),
                    _ => None,
                };
                let known = verifier.is_some();
                let verifier =
                    verifier.unwrap_or_else(|| scram::ScramVerifier::generate(&random_password()));
                scram_exchange(stream, buf, verifier, max)
                    .await
                    .map_err(|e| match e {
                        AuthFailure::BadPassword(_) => AuthFailure::BadPassword(user.to_owned()),
                        e => e,
                    })?;
                if known {
                    Ok(())
                } else {
                    Err(AuthFailure::BadPassword(user.to_owned()))
                }
            }
            AuthMethod::Md5 => {
                let salt: [u8; 4] = rand::random();
                let mut out = BytesMut::new();
                encode::authentication_md5(&mut out, salt);
                send(stream, &mut out).await.map_err(WireError::Io)?;
                let frame = read_frame(stream, buf, max).await?;
                let response = password_body(&frame)?;
                match self.users.get(user) {
                    Some(UserSecret::Md5(secret)) if md5::verify(secret, user, salt, response) => {
                        Ok(())
                    }
                    _ => Err(AuthFailure::BadPassword(user.to_owned())),
                }
            }
        }
    }
}

fn random_password() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn password_body(frame: &pgshift_protocol::Frame) -> Result<&[u8], AuthFailure> {
    if frame.tag() != frontend::tag::PASSWORD {
        return Err(AuthFailure::Protocol(format!(
            "expected password response, got message type {:?}",
            frame.tag() as char
        )));
    }
    Ok(frame.body())
}

async fn scram_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    verifier: scram::ScramVerifier,
    max: usize,
) -> Result<(), AuthFailure> {
    let bad = |e: pgshift_protocol::auth::AuthError| match e {
        pgshift_protocol::auth::AuthError::WrongPassword => AuthFailure::BadPassword(String::new()),
        e => AuthFailure::Protocol(e.to_string()),
    };
    let mut out = BytesMut::new();
    encode::authentication_sasl(&mut out, &[SCRAM_SHA_256]);
    send(stream, &mut out).await.map_err(WireError::Io)?;

    let frame = read_frame(stream, buf, max).await?;
    let mut r = BodyReader::new(password_body(&frame)?, "SASLInitialResponse");
    let proto = |e: pgshift_protocol::ProtocolError| AuthFailure::Protocol(e.to_string());
    let mechanism = r.cstr_utf8().map_err(proto)?;
    let data = r.nullable().map_err(proto)?.unwrap_or_default();
    let mut server = scram::ScramServer::with_random_nonce(verifier);
    let first = server.client_first(mechanism, data).map_err(bad)?;
    encode::authentication_sasl_continue(&mut out, &first);
    send(stream, &mut out).await.map_err(WireError::Io)?;

    let frame = read_frame(stream, buf, max).await?;
    let last = server.client_final(password_body(&frame)?).map_err(bad)?;
    encode::authentication_sasl_final(&mut out, &last);
    send(stream, &mut out).await.map_err(WireError::Io)?;
    Ok(())
}
