//! Local SASL answers across every version advertised, and what is accepted or refused.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use std::sync::Arc;

use kproxy_api::config::{ClientSasl, Cluster, Sasl, SaslMechanism};

use super::*;
use crate::buffer::Pool;
use crate::metrics::Metrics;
use crate::settings::Limits;
use crate::upstream::Upstream;

/// A cluster without SASL, or with SCRAM-SHA-512 as `kproxy`/`pw` from files in the returned directory.
fn upstream(sasl: bool) -> (tempfile::TempDir, Arc<Upstream>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("username"), "kproxy\n").unwrap();
    std::fs::write(dir.path().join("password"), "pw").unwrap();
    let sasl = sasl.then(|| Sasl {
        mechanism: SaslMechanism::ScramSha512,
        username_file: Some("username".into()),
        password_file: Some("password".into()),
        token_file: None,
    });
    let cluster = Cluster { name: "east".into(), bootstrap_servers: vec!["127.0.0.1:9".into()], tls: None, sasl };
    let metrics = Arc::new(Metrics::new().unwrap());
    let up =
        Upstream::new(cluster, Limits::default(), metrics, Pool::new(1 << 16), dir.path().into(), Default::default());
    (dir, up)
}

thread_local! {
    static PLAIN_UPSTREAM: (tempfile::TempDir, Arc<Upstream>) = upstream(false);
}

fn answer(local: &mut Local, api: ApiKey, version: i16, frame: &[u8]) -> Option<Result<(i16, BytesMut), String>> {
    PLAIN_UPSTREAM.with(|(_, up)| local.answer(up, &ClientSasl::default(), api, version, frame))
}

const ERR_UNSUPPORTED_MECHANISM: i16 = 33;
const ERR_ILLEGAL_STATE: i16 = 34;
const ERR_UNSUPPORTED_VERSION: i16 = 35;
const ERR_AUTH_FAILED: i16 = 58;

fn loopback() -> Local {
    Local::new("127.0.0.1:9092".parse().unwrap(), "127.0.0.1:40000".parse().unwrap())
}

fn frame<R: Request>(request: &R, version: i16) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(5)
        .with_client_id(Some(StrBytes::from_static_str("app")));
    header.encode(&mut out, R::header_version(version)).unwrap();
    request.encode(&mut out, version).unwrap();
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn handshake(local: &mut Local, mechanism: &'static str, version: i16) -> SaslHandshakeResponse {
    let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let (v, body) = answer(local, ApiKey::SaslHandshake, version, &frame(&request, version)).unwrap().unwrap();
    assert_eq!(v, version);
    SaslHandshakeResponse::decode(&mut body.freeze(), version).unwrap()
}

fn authenticate(local: &mut Local, token: &[u8], version: i16) -> SaslAuthenticateResponse {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
    let (v, body) = answer(local, ApiKey::SaslAuthenticate, version, &frame(&request, version)).unwrap().unwrap();
    assert_eq!(v, version);
    SaslAuthenticateResponse::decode(&mut body.freeze(), version).unwrap()
}

#[test]
fn plain_accepts_any_user_and_password_at_every_version() {
    for version in 0..=2 {
        let mut local = loopback();
        let h = handshake(&mut local, "PLAIN", 1);
        assert_eq!(h.error_code, 0);
        assert_eq!(h.mechanisms, vec![StrBytes::from_static_str("PLAIN"), StrBytes::from_static_str("OAUTHBEARER")]);
        let a = authenticate(&mut local, b"\0x\0y", version);
        assert_eq!((a.error_code, a.session_lifetime_ms), (0, 0), "v{version}");
        // Authenticated: a second SaslAuthenticate is out of place.
        assert_eq!(authenticate(&mut local, b"\0x\0y", version).error_code, ERR_ILLEGAL_STATE);
    }
    let mut local = loopback();
    handshake(&mut local, "PLAIN", 1);
    assert_eq!(authenticate(&mut local, b"admin\0alice\0", 2).error_code, 0, "an empty password is still a password");
}

#[test]
fn malformed_messages_fail_authentication() {
    for bad in [&b"alice"[..], b"\0\0pw", b"\0a\0b\0c", b""] {
        let mut local = loopback();
        handshake(&mut local, "PLAIN", 1);
        let a = authenticate(&mut local, bad, 1);
        assert_eq!(a.error_code, ERR_AUTH_FAILED, "{bad:?}");
        assert!(a.error_message.unwrap().contains("PLAIN"));
    }
    let mut local = loopback();
    assert_eq!(authenticate(&mut local, b"\0x\0y", 1).error_code, ERR_ILLEGAL_STATE, "no handshake first");
}

#[test]
fn oauthbearer_accepts_any_well_formed_token() {
    let good: [&[u8]; 3] = [
        b"n,,\x01auth=Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.\x01\x01",
        b"n,a=app,\x01host=localhost\x01auth=bearer abc-._~+/==\x01\x01",
        b"y,,\x01auth=Bearer t\x01\x01",
    ];
    for token in good {
        let mut local = loopback();
        assert_eq!(handshake(&mut local, "OAUTHBEARER", 1).error_code, 0);
        assert_eq!(authenticate(&mut local, token, 2).error_code, 0, "{}", String::from_utf8_lossy(token));
    }
    let bad: [&[u8]; 6] = [
        b"n,,\x01auth=Bearer \x01\x01",
        b"n,,\x01auth=Basic abc\x01\x01",
        b"n,,\x01auth=Bearer a b\x01\x01",
        b"n,,\x01auth=Bearer abc\x01",
        b"p=x,,\x01auth=Bearer abc\x01\x01",
        b"n,,\x01\x01",
    ];
    for token in bad {
        let mut local = loopback();
        handshake(&mut local, "OAUTHBEARER", 1);
        assert_eq!(
            authenticate(&mut local, token, 0).error_code,
            ERR_AUTH_FAILED,
            "{}",
            String::from_utf8_lossy(token)
        );
    }
}

#[test]
fn unknown_mechanisms_v0_handshakes_and_network_listeners_are_refused() {
    let mut local = loopback();
    let h = handshake(&mut local, "SCRAM-SHA-512", 1);
    assert_eq!(h.error_code, ERR_UNSUPPORTED_MECHANISM);
    assert_eq!(h.mechanisms.len(), 2, "the client is told what is offered");
    assert_eq!(handshake(&mut local, "PLAIN", 0).error_code, ERR_UNSUPPORTED_VERSION);

    for (listen, peer) in
        [("0.0.0.0:9092", "127.0.0.1:1"), ("10.0.0.5:9092", "10.0.0.9:1"), ("127.0.0.1:9092", "10.0.0.9:1")]
    {
        let mut remote = Local::new(listen.parse().unwrap(), peer.parse().unwrap());
        let h = handshake(&mut remote, "PLAIN", 1);
        assert_eq!((h.error_code, h.mechanisms.len()), (ERR_UNSUPPORTED_MECHANISM, 0), "{listen} from {peer}");
        assert_eq!(authenticate(&mut remote, b"\0x\0y", 1).error_code, ERR_ILLEGAL_STATE);
    }
    // SaslAuthenticate beyond v2 is not advertised: the connection is closed rather than guessed at.
    let request = SaslAuthenticateRequest::default();
    assert!(answer(&mut loopback(), ApiKey::SaslAuthenticate, 3, &frame(&request, 2)).unwrap().is_err());
    assert!(answer(&mut loopback(), ApiKey::Metadata, 12, &[]).is_none());
}

#[test]
fn api_versions_advertise_the_local_sasl_apis_in_key_order() {
    for version in 0..=3 {
        let broker = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default().with_api_key(0).with_min_version(3).with_max_version(11),
            ApiVersion::default().with_api_key(18).with_max_version(4),
            ApiVersion::default().with_api_key(60).with_max_version(1),
        ]);
        let mut body = BytesMut::new();
        broker.encode(&mut body, version).unwrap();
        let out = advertise(body, version).unwrap();
        let r = ApiVersionsResponse::decode(&mut out.freeze(), version).unwrap();
        let keys: Vec<(i16, i16, i16)> = r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        assert_eq!(keys, vec![(0, 3, 11), (17, 1, 1), (18, 0, 4), (36, 0, 2), (60, 0, 1)], "v{version}");
    }
}

#[test]
fn scram_is_offered_only_when_turned_on_with_the_clusters_password_and_fails_alike_for_any_other_credentials() {
    let (_dir, up) = upstream(true);
    let on = ClientSasl { scram: true, failed_authentication_delay_ms: 100 };
    let handshake = |local: &mut Local, settings: &ClientSasl, mechanism: &'static str| {
        let (_, body) =
            local.answer(&up, settings, ApiKey::SaslHandshake, 1, &frame(&request_for(mechanism), 1)).unwrap().unwrap();
        SaslHandshakeResponse::decode(&mut body.freeze(), 1).unwrap()
    };
    let off = handshake(&mut loopback(), &ClientSasl::default(), "SCRAM-SHA-512");
    assert_eq!(off.error_code, ERR_UNSUPPORTED_MECHANISM, "off unless the policy turns it on");
    assert_eq!(off.mechanisms.len(), 2, "{:?}", off.mechanisms);

    let send = |local: &mut Local, message: Vec<u8>| {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
        let (_, body) = local.answer(&up, &on, ApiKey::SaslAuthenticate, 2, &frame(&request, 2)).unwrap().unwrap();
        SaslAuthenticateResponse::decode(&mut body.freeze(), 2).unwrap()
    };
    // The whole exchange with a proof that is not the password's, for the configured user and for another one.
    let guess = |local: &mut Local, user: &str| {
        let h = handshake(local, &on, "SCRAM-SHA-512");
        assert_eq!(h.error_code, 0);
        let offered: Vec<&str> = h.mechanisms.iter().map(|m| m.as_str()).collect();
        assert_eq!(offered, ["PLAIN", "OAUTHBEARER", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
        let server_first = send(local, format!("n,,n={user},r=abc").into_bytes());
        assert_eq!(server_first.error_code, 0, "every user gets a server-first message");
        assert!(server_first.auth_bytes.starts_with(b"r=abc"), "{:?}", server_first.auth_bytes);
        assert!(local.take_delay().is_zero(), "nothing failed yet");
        let nonce = String::from_utf8(server_first.auth_bytes.to_vec()).unwrap();
        let nonce = nonce.split(',').next().unwrap().to_string();
        let r = send(local, format!("c=biws,{nonce},p=AAAA").into_bytes());
        (r.error_code, r.error_message.map(|m| m.to_string()), local.take_delay())
    };
    let mut local = loopback();
    let wrong_password = guess(&mut local, "kproxy");
    let unknown_user = guess(&mut loopback(), "someone");
    assert_eq!(wrong_password.0, ERR_AUTH_FAILED);
    assert_eq!((wrong_password.0, &wrong_password.1), (unknown_user.0, &unknown_user.1), "the same failure");
    let message = wrong_password.1.clone().unwrap_or_default();
    assert!(message.contains("invalid credentials with SASL mechanism SCRAM-SHA-512"), "{message}");
    // Each failure on a connection waits twice as long as the one before.
    let delays: Vec<u64> = std::iter::once(wrong_password.2)
        .chain((0..3).map(|_| guess(&mut local, "kproxy").2))
        .map(|d| d.as_millis() as u64)
        .collect();
    assert_eq!(delays, [100, 200, 400, 800]);
    assert_eq!(unknown_user.2.as_millis(), 100, "a new connection starts at the configured delay");

    // Without a password upstream there is nothing to compare with: SCRAM is neither offered nor accepted.
    PLAIN_UPSTREAM.with(|(_, plain)| {
        let request = frame(&request_for("SCRAM-SHA-512"), 1);
        let (_, body) = loopback().answer(plain, &on, ApiKey::SaslHandshake, 1, &request).unwrap().unwrap();
        assert_eq!(SaslHandshakeResponse::decode(&mut body.freeze(), 1).unwrap().error_code, ERR_UNSUPPORTED_MECHANISM);
    });
}

#[test]
fn failure_delays_stop_growing_at_their_cap() {
    let mut local = loopback();
    let settings = ClientSasl { scram: false, failed_authentication_delay_ms: 5_000 };
    let mut last = std::time::Duration::ZERO;
    for _ in 0..40 {
        local.failed(&settings, "x".into());
        last = local.take_delay();
    }
    assert_eq!(last.as_millis() as u64, MAX_FAILED_AUTHENTICATION_DELAY_MS);
}

fn request_for(mechanism: &'static str) -> SaslHandshakeRequest {
    SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism))
}
