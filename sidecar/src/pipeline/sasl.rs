//! Client SASL completed by the sidecar itself, so an application configured for `SASL_PLAINTEXT` keeps working
//! unchanged behind it: the sidecar answers SaslHandshake and SaslAuthenticate locally and authenticates upstream
//! with the credentials of the policy's cluster, never with the client's.
//!
//! What is accepted, exactly:
//! - Only on a connection that arrived on a loopback listener from a loopback peer: the listener is then
//!   reachable from inside the pod alone, whose processes already share the sidecar's network identity. When the
//!   sidecar listens on any other address, every SaslHandshake is answered UNSUPPORTED_SASL_MECHANISM with an
//!   empty mechanism list: no password from the network is ever accepted.
//! - `PLAIN`: any username and password (RFC 4616 message: authorization id, NUL, non-empty user, NUL, password).
//! - `OAUTHBEARER`: any well-formed RFC 7628 initial response carrying `auth=Bearer <b64token>`; the token is not
//!   verified (no issuer is configured for clients).
//! - `SCRAM-SHA-256` / `SCRAM-SHA-512`: offered only when the policy turns it on (`clientSasl.scram`) and the
//!   cluster's own SASL setting has a username and password (PLAIN or SCRAM upstream), and accepted only for
//!   exactly that username and password: the exchange is completed honestly (the server-final message proves the
//!   sidecar holds the same password). A client still configured with the credentials it used against the
//!   brokers therefore keeps working; an unknown user and a wrong password fail alike, with the same
//!   SASL_AUTHENTICATION_FAILED message after the same work. Off by default: it is the one local mechanism that
//!   checks a password, so it lets an application guess the cluster's.
//! - SaslHandshake v1 and SaslAuthenticate v0–v2; `session_lifetime_ms` is 0, so clients never re-authenticate.
//!   SaslHandshake v0 (raw, unframed tokens afterwards, Kafka clients before 1.0) is refused with
//!   UNSUPPORTED_VERSION; ApiVersions advertises v1 only.
//!
//! Failures answer with Kafka's own error codes (SASL_AUTHENTICATION_FAILED, ILLEGAL_SASL_STATE, ...), which
//! clients report as authentication errors instead of retrying forever. A failed authentication is answered late,
//! as Kafka's `connection.failed.authentication.delay.ms` does: `clientSasl.failedAuthenticationDelayMs`, doubled
//! for each further failure on the same connection (at most 30 s); the connection is not read meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kproxy_api::config::{ClientSasl, MAX_FAILED_AUTHENTICATION_DELAY_MS, SaslMechanism};

use kproxy_upstream::{ScramRefused, ScramServer};

use crate::protocol;
use crate::ratelog::Gate;
use crate::upstream::Endpoint as Upstream;

/// Mechanisms offered to every loopback client, in the order clients see them.
pub const MECHANISMS: [&str; 2] = ["PLAIN", "OAUTHBEARER"];
/// Offered besides when the cluster's configured credentials are a username and password.
pub const SCRAM: [&str; 2] = ["SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Versions advertised in ApiVersions for the two SASL APIs answered here.
const ADVERTISED: [(ApiKey, i16, i16); 2] = [(ApiKey::SaslHandshake, 1, 1), (ApiKey::SaslAuthenticate, 0, 2)];

static REFUSED: Gate = Gate::every_ms(60_000);

enum State {
    Start,
    Plain,
    OauthBearer,
    /// Waiting for the client-first message, then (`true`) for the client-final message; the mechanism's name.
    Scram(Box<ScramServer>, bool, &'static str),
    Authenticated,
}

/// One client connection's SASL state.
pub struct Local {
    /// Whether this connection may authenticate locally at all (loopback listener and peer).
    allowed: bool,
    state: State,
    /// Failed authentications on this connection: each one is answered later than the one before.
    failures: u32,
    /// How long the answer just decided waits before it is written; taken by [`Local::take_delay`].
    delay: Duration,
}

impl Local {
    pub fn new(listen: SocketAddr, peer: SocketAddr) -> Local {
        let allowed = listen.ip().is_loopback() && peer.ip().is_loopback();
        Local { allowed, state: State::Start, failures: 0, delay: Duration::ZERO }
    }

    /// The wait owed by the answer just given (a failed authentication); zero otherwise.
    pub fn take_delay(&mut self) -> Duration {
        std::mem::take(&mut self.delay)
    }

    /// The local answer (version, response body) to a SASL request; `None` for every other API. `Err` closes the
    /// connection: a request that cannot even be read.
    pub fn answer(
        &mut self,
        up: &Upstream,
        settings: &ClientSasl,
        api: ApiKey,
        version: i16,
        frame: &[u8],
    ) -> Option<Result<(i16, BytesMut), String>> {
        let (_, min, max) = ADVERTISED.iter().find(|(a, ..)| *a == api)?;
        let body = protocol::request_body_offset(frame, api, version)
            .map(|at| Bytes::copy_from_slice(&frame[at..]))
            .ok_or_else(|| format!("{api:?} v{version} request header is truncated"));
        Some(body.and_then(|mut body| match api {
            ApiKey::SaslHandshake if version == 0 => {
                refused("SaslHandshake v0 (raw SASL tokens, Kafka clients before 1.0) is not supported");
                let response = SaslHandshakeResponse::default()
                    .with_error_code(ResponseError::UnsupportedVersion.code())
                    .with_mechanisms(offered(self.allowed, up, settings));
                encode(&response, 0)
            }
            _ if !(*min..=*max).contains(&version) => Err(format!("{api:?} v{version} is not supported")),
            ApiKey::SaslHandshake => {
                let request = SaslHandshakeRequest::decode(&mut body, version).map_err(|e| e.to_string())?;
                encode(&self.handshake(request.mechanism.as_str(), up, settings), version)
            }
            _ => {
                let request = SaslAuthenticateRequest::decode(&mut body, version).map_err(|e| e.to_string())?;
                encode(&self.authenticate(&request.auth_bytes, settings), version)
            }
        }))
    }

    fn handshake(&mut self, mechanism: &str, up: &Upstream, settings: &ClientSasl) -> SaslHandshakeResponse {
        let response = SaslHandshakeResponse::default().with_mechanisms(offered(self.allowed, up, settings));
        let unsupported = |r: SaslHandshakeResponse| r.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
        if !self.allowed {
            refused("client SASL is answered only on a loopback listener; this one is not");
            return unsupported(response);
        }
        self.state = match mechanism {
            "PLAIN" => State::Plain,
            "OAUTHBEARER" => State::OauthBearer,
            _ if !settings.scram => return unsupported(response),
            _ => match ScramServer::for_cluster(&up.cluster, &up.connector, mechanism) {
                Ok(Some(server)) => State::Scram(Box::new(server), false, scram_name(mechanism)),
                Ok(None) => return unsupported(response),
                Err(e) => {
                    tracing::warn!(cluster = up.name(), error = %e, "cannot read the cluster's credentials for SCRAM");
                    return unsupported(response);
                }
            },
        };
        response
    }

    fn authenticate(&mut self, token: &[u8], settings: &ClientSasl) -> SaslAuthenticateResponse {
        let checked = match std::mem::replace(&mut self.state, State::Start) {
            State::Plain => plain(token).map(|()| Vec::new()).map_err(str::to_string),
            State::OauthBearer => oauthbearer(token).map(|()| Vec::new()).map_err(str::to_string),
            State::Scram(mut server, false, mechanism) => {
                // The server-first message; the exchange is not complete yet.
                return match server.first(token) {
                    Ok(server_first) => {
                        self.state = State::Scram(server, true, mechanism);
                        SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(server_first))
                    }
                    Err(refused) => self.failed(settings, scram_failure(refused, mechanism)),
                };
            }
            State::Scram(mut server, true, mechanism) => {
                server.last(token).map_err(|refused| scram_failure(refused, mechanism))
            }
            state @ (State::Start | State::Authenticated) => {
                self.state = state;
                return failure(ResponseError::IllegalSaslState, "SaslAuthenticate without a SaslHandshake before it");
            }
        };
        match checked {
            Ok(last) => {
                self.state = State::Authenticated;
                // Lifetime 0: the session never expires, so the client never re-authenticates.
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(last)).with_session_lifetime_ms(0)
            }
            Err(reason) => self.failed(settings, reason),
        }
    }

    /// SASL_AUTHENTICATION_FAILED, owing the failure delay: the configured one, doubled for each earlier failure
    /// on this connection, at most [`MAX_FAILED_AUTHENTICATION_DELAY_MS`].
    fn failed(&mut self, settings: &ClientSasl, reason: String) -> SaslAuthenticateResponse {
        self.failures = self.failures.saturating_add(1);
        let doubling = 1u64 << (self.failures - 1).min(20);
        let ms =
            settings.failed_authentication_delay_ms.saturating_mul(doubling).min(MAX_FAILED_AUTHENTICATION_DELAY_MS);
        self.delay = Duration::from_millis(ms);
        failure(ResponseError::SaslAuthenticationFailed, &reason)
    }
}

/// The message of a failed SCRAM exchange: Kafka's own for credentials (the same for an unknown user and a
/// wrong password), the reason for a malformed exchange.
fn scram_failure(refused: ScramRefused, mechanism: &str) -> String {
    match refused {
        ScramRefused::Credentials => format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
        ),
        ScramRefused::Malformed(reason) => format!("SCRAM: {reason}"),
    }
}

/// The offered name of a SCRAM mechanism the client asked for.
fn scram_name(mechanism: &str) -> &'static str {
    SCRAM.iter().find(|m| **m == mechanism).copied().unwrap_or("SCRAM")
}

/// Adds the SASL APIs answered here to an ApiVersions response body encoded at `version`.
pub fn advertise(body: BytesMut, version: i16) -> Result<BytesMut, String> {
    let mut response =
        ApiVersionsResponse::decode(&mut body.freeze(), version).map_err(|e| format!("ApiVersions: {e}"))?;
    response.api_keys.retain(|k| ADVERTISED.iter().all(|(api, ..)| *api as i16 != k.api_key));
    for (api, min, max) in ADVERTISED {
        response
            .api_keys
            .push(ApiVersion::default().with_api_key(api as i16).with_min_version(min).with_max_version(max));
    }
    response.api_keys.sort_by_key(|k| k.api_key);
    let mut out = BytesMut::new();
    response.encode(&mut out, version).map_err(|e| format!("ApiVersions: {e}"))?;
    Ok(out)
}

fn offered(allowed: bool, up: &Upstream, settings: &ClientSasl) -> Vec<StrBytes> {
    if !allowed {
        return Vec::new();
    }
    let password =
        settings.scram && up.cluster.sasl.as_ref().is_some_and(|s| s.mechanism != SaslMechanism::OauthBearer);
    let scram = SCRAM.iter().filter(|_| password);
    MECHANISMS.iter().chain(scram).map(|m| StrBytes::from_static_str(m)).collect()
}

fn refused(reason: &str) {
    if let Some(suppressed) = REFUSED.allow() {
        tracing::warn!(reason, suppressed, "client SASL handshake refused");
    }
}

fn failure(error: ResponseError, message: &str) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message.to_string())))
}

fn encode<M: Encodable>(message: &M, version: i16) -> Result<(i16, BytesMut), String> {
    let mut out = BytesMut::new();
    message.encode(&mut out, version).map_err(|e| e.to_string())?;
    Ok((version, out))
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`; any user and password are accepted, the shape is not.
fn plain(message: &[u8]) -> Result<(), &'static str> {
    let mut parts = message.split(|b| *b == 0);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(user), Some(_), None) if !user.is_empty() => Ok(()),
        _ => Err("malformed PLAIN message: expected [authzid] NUL username NUL password"),
    }
}

/// RFC 7628 initial client response: `gs2-header ^A *(key=value ^A) ^A` with `auth=Bearer <b64token>`.
fn oauthbearer(message: &[u8]) -> Result<(), &'static str> {
    const MALFORMED: &str = "malformed OAUTHBEARER message: expected n,[a=authzid,]^Aauth=Bearer <token>^A^A";
    let text = std::str::from_utf8(message).map_err(|_| MALFORMED)?;
    let (gs2, pairs) = text.split_once('\x01').ok_or(MALFORMED)?;
    let mut gs2 = gs2.split(',');
    let gs2_ok = matches!(gs2.next(), Some("n" | "y"))
        && gs2.next().is_some_and(|a| a.is_empty() || a.starts_with("a="))
        && gs2.next() == Some("")
        && gs2.next().is_none();
    let pairs = pairs.strip_suffix("\x01\x01").ok_or(MALFORMED)?;
    if !gs2_ok || pairs.is_empty() {
        return Err(MALFORMED);
    }
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (key, value) = pair.split_once('=').ok_or(MALFORMED)?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(MALFORMED);
        }
        if key == "auth" {
            let (scheme, t) = value.split_once(' ').ok_or(MALFORMED)?;
            token = scheme.eq_ignore_ascii_case("bearer").then_some(t);
        }
    }
    match token {
        Some(t) if b64token(t) => Ok(()),
        _ => Err("OAUTHBEARER message without an auth=Bearer token"),
    }
}

/// RFC 6750 b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests;
