//! SASL on a broker connection: SaslHandshake then SaslAuthenticate round trips for PLAIN, SCRAM-SHA-256/512 and
//! OAUTHBEARER, and the session lifetime the broker grants (KIP-368).

pub(crate) mod scram;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use kproxy_api::config::SaslMechanism;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::context::Credentials;
use crate::wire::Exchange;
use crate::{Error, Result};

/// An authenticated SASL session on one connection.
#[derive(Debug, Clone)]
pub struct Session {
    mechanism: SaslMechanism,
    lifetime: Option<Duration>,
    authenticated_at: Instant,
    versions: Versions,
}

/// Versions of the SASL requests the broker accepts, kept for re-authentication on the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Versions {
    handshake: i16,
    authenticate: i16,
}

impl Session {
    pub fn mechanism(&self) -> SaslMechanism {
        self.mechanism
    }

    /// How long the broker keeps the session; `None` when it does not expire sessions
    /// (`connections.max.reauth.ms` unset).
    pub fn lifetime(&self) -> Option<Duration> {
        self.lifetime
    }

    pub fn authenticated_at(&self) -> Instant {
        self.authenticated_at
    }

    /// When the broker will close the connection unless it was re-authenticated.
    pub fn expires_at(&self) -> Option<Instant> {
        self.lifetime.map(|l| self.authenticated_at + l)
    }

    /// When to re-authenticate: at 85% of the lifetime, as Kafka's own clients do at the earliest, which leaves
    /// time to wait for an idle moment on a busy connection.
    pub fn reauthenticate_at(&self) -> Option<Instant> {
        self.lifetime.map(|l| self.authenticated_at + l.mul_f64(0.85))
    }
}

pub(crate) fn mechanism_name(mechanism: SaslMechanism) -> &'static str {
    match mechanism {
        SaslMechanism::Plain => "PLAIN",
        SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        SaslMechanism::OauthBearer => "OAUTHBEARER",
    }
}

/// Asks the broker which SASL request versions it speaks. ApiVersions v0 is the one every broker answers.
pub(crate) async fn versions<S: AsyncRead + AsyncWrite + Unpin>(ex: &mut Exchange<'_, S>) -> Result<Versions> {
    let response = ex.call("ApiVersions", &ApiVersionsRequest::default(), 0).await?;
    if response.error_code != 0 {
        return Err(Error::Protocol { addr: ex.addr.into(), reason: describe("ApiVersions", response.error_code) });
    }
    let max = |key: ApiKey| response.api_keys.iter().find(|k| k.api_key == key as i16).map(|k| k.max_version);
    match (max(ApiKey::SaslHandshake), max(ApiKey::SaslAuthenticate)) {
        (Some(h), Some(a)) if h >= 1 && a >= 0 => Ok(Versions { handshake: 1, authenticate: a.min(2) }),
        _ => Err(Error::Protocol {
            addr: ex.addr.into(),
            reason: "the broker does not support SaslHandshake v1 and SaslAuthenticate (Kafka 1.0 or later)".into(),
        }),
    }
}

/// Runs one SASL exchange on the connection: at connect time or again to re-authenticate it.
pub(crate) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    ex: &mut Exchange<'_, S>,
    mechanism: SaslMechanism,
    credentials: &Credentials,
    versions: Versions,
) -> Result<Session> {
    let name = mechanism_name(mechanism);
    let fail = |ex: &Exchange<'_, S>, reason: String| Error::Auth { addr: ex.addr.into(), mechanism: name, reason };
    let handshake = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(name));
    let response = ex.call("SaslHandshake", &handshake, versions.handshake).await?;
    match ResponseError::try_from_code(response.error_code) {
        None => {}
        Some(ResponseError::UnsupportedSaslMechanism) => {
            let offered: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(ex, format!("the broker does not enable it on this listener; it offers {offered:?}")));
        }
        Some(_) => return Err(fail(ex, describe("SaslHandshake", response.error_code))),
    }

    let last = match (mechanism, credentials) {
        (SaslMechanism::Plain, Credentials::Password { username, password }) => {
            let response = step(ex, versions, plain_message(username, password)).await?;
            check(ex, mechanism, &response)?;
            response
        }
        (SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512, Credentials::Password { username, password }) => {
            let hash = if mechanism == SaslMechanism::ScramSha256 { scram::Hash::Sha256 } else { scram::Hash::Sha512 };
            let mut client = scram::Client::with_random_nonce(hash, username, password).map_err(|r| fail(ex, r))?;
            let first = step(ex, versions, client.first()).await?;
            check(ex, mechanism, &first)?;
            let reply = client.respond(&first.auth_bytes).map_err(|r| fail(ex, r))?;
            let last = step(ex, versions, reply).await?;
            check(ex, mechanism, &last)?;
            client.verify(&last.auth_bytes).map_err(|r| fail(ex, r))?;
            last
        }
        (SaslMechanism::OauthBearer, Credentials::Token(token)) => {
            let response = step(ex, versions, oauthbearer_message(token)).await?;
            check(ex, mechanism, &response)?;
            if !response.auth_bytes.is_empty() {
                // A JSON error challenge: RFC 7628 §3.2.3 says to answer ^A so the server can fail the exchange.
                let challenge = String::from_utf8_lossy(&response.auth_bytes).into_owned();
                let closing = step(ex, versions, vec![0x01]).await?;
                check(ex, mechanism, &closing)?;
                return Err(fail(ex, format!("the broker rejected the token: {challenge}")));
            }
            response
        }
        _ => return Err(fail(ex, "credentials do not match the mechanism".into())),
    };
    let lifetime = u64::try_from(last.session_lifetime_ms).ok().filter(|ms| *ms > 0).map(Duration::from_millis);
    Ok(Session { mechanism, lifetime, authenticated_at: Instant::now(), versions })
}

impl Session {
    pub(crate) fn versions(&self) -> Versions {
        self.versions
    }
}

/// RFC 4616: authorization id (empty: the same as the user), user, password, separated by NUL.
fn plain_message(username: &str, password: &str) -> Vec<u8> {
    format!("\0{username}\0{password}").into_bytes()
}

/// RFC 7628 initial client response: GS2 header without authorization id, then `auth=Bearer` between ^A separators.
fn oauthbearer_message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

async fn step<S: AsyncRead + AsyncWrite + Unpin>(
    ex: &mut Exchange<'_, S>,
    versions: Versions,
    message: Vec<u8>,
) -> Result<SaslAuthenticateResponse> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
    ex.call("SaslAuthenticate", &request, versions.authenticate).await
}

/// Fails with the broker's own explanation when a SaslAuthenticate round trip failed.
fn check<S>(ex: &Exchange<'_, S>, mechanism: SaslMechanism, response: &SaslAuthenticateResponse) -> Result<()> {
    if response.error_code == 0 {
        return Ok(());
    }
    let said = response.error_message.as_ref().map(|m| m.as_str().to_string()).unwrap_or_default();
    let reason = match ResponseError::try_from_code(response.error_code) {
        Some(ResponseError::SaslAuthenticationFailed) if mechanism == SaslMechanism::OauthBearer => {
            format!("the broker rejected the token ({said})")
        }
        Some(ResponseError::SaslAuthenticationFailed) => format!("wrong username or password ({said})"),
        _ => format!("{} ({said})", describe("SaslAuthenticate", response.error_code)),
    };
    Err(Error::Auth { addr: ex.addr.into(), mechanism: mechanism_name(mechanism), reason })
}

fn describe(what: &str, code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{what} failed: {e}"),
        None => format!("{what} failed with error code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_oauthbearer_messages_follow_their_rfcs() {
        assert_eq!(plain_message("alice", "s3cr=t,"), b"\0alice\0s3cr=t,");
        assert_eq!(oauthbearer_message("eyJ.x.y"), b"n,,\x01auth=Bearer eyJ.x.y\x01\x01");
    }

    #[test]
    fn reauthentication_is_due_before_the_session_ends() {
        let versions = Versions { handshake: 1, authenticate: 2 };
        let now = Instant::now();
        let s = Session { mechanism: SaslMechanism::Plain, lifetime: None, authenticated_at: now, versions };
        assert!(s.reauthenticate_at().is_none() && s.expires_at().is_none());
        let s = Session { lifetime: Some(Duration::from_secs(100)), ..s };
        assert_eq!(s.reauthenticate_at(), Some(now + Duration::from_secs(85)));
        assert_eq!(s.expires_at(), Some(now + Duration::from_secs(100)));
    }
}
