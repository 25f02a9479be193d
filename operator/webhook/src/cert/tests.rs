//! Certificate generation checked by real TLS handshakes: a client trusting only the published bundle must accept
//! the served certificate for every name the API server may dial, before and after renewal.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::tls::{Resolver, certified_key, provider, server_config};

fn sans() -> Vec<String> {
    vec!["kproxy-webhook.kproxy.svc".into(), "127.0.0.1".into()]
}

/// Handshakes a client trusting `bundle` with a server serving `m`, for `name`; Err carries the TLS error.
async fn handshake(bundle: &str, m: &Material, name: &str) -> Result<(), String> {
    let resolver = Arc::new(Resolver::default());
    resolver.set(certified_key(m.cert.as_bytes(), m.key.as_bytes()).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(resolver).unwrap());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut tls = acceptor.accept(b).await.map_err(|e| e.to_string())?;
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = connector.connect(name, a).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    server.await.unwrap()?;
    Ok(())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[tokio::test]
async fn generated_certificate_is_trusted_for_every_san_and_nothing_else() {
    let m = Material::generate(&sans(), Lifetimes::default(), now()).unwrap();
    handshake(&m.ca_bundle, &m, "kproxy-webhook.kproxy.svc").await.unwrap();
    handshake(&m.ca_bundle, &m, "127.0.0.1").await.unwrap();
    let wrong = handshake(&m.ca_bundle, &m, "other.kproxy.svc").await.unwrap_err();
    assert!(wrong.contains("NotValidForName") || wrong.contains("not valid for name"), "{wrong}");
    let other = Material::generate(&sans(), Lifetimes::default(), now()).unwrap();
    assert!(handshake(&other.ca_bundle, &m, "127.0.0.1").await.is_err(), "a foreign CA must not be trusted");
}

#[tokio::test]
async fn renewed_certificate_keeps_the_ca_and_rotated_ca_bundle_trusts_both() {
    let m = Material::generate(&sans(), Lifetimes::default(), now()).unwrap();
    let renewed = m.renew_cert(&sans(), Lifetimes::default(), now()).unwrap();
    assert_ne!(renewed.cert, m.cert);
    assert_eq!(renewed.ca_bundle, m.ca_bundle);
    handshake(&m.ca_bundle, &renewed, "127.0.0.1").await.unwrap();

    let rotated = m.rotate_ca(&sans(), Lifetimes::default(), now()).unwrap();
    assert_eq!(rotated.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
    // Replicas still serving the old certificate and those serving the new one are both trusted.
    handshake(&rotated.ca_bundle, &rotated, "127.0.0.1").await.unwrap();
    handshake(&rotated.ca_bundle, &m, "127.0.0.1").await.unwrap();
    // A second rotation keeps only the previous CA, so the bundle does not grow forever.
    let again = rotated.rotate_ca(&sans(), Lifetimes::default(), now()).unwrap();
    assert_eq!(again.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
    handshake(&again.ca_bundle, &rotated, "127.0.0.1").await.unwrap();
}

#[test]
fn renewal_is_due_before_expiry_or_when_names_change() {
    const DAY: u64 = 24 * 3600;
    let lifetimes = Lifetimes {
        ca: Duration::from_secs(100 * DAY),
        cert: Duration::from_secs(60 * DAY),
        renew_before: Duration::from_secs(30 * DAY),
    };
    let t0 = now();
    let m = Material::generate(&sans(), lifetimes, t0).unwrap();
    let day = |d: i64| t0 + time::Duration::days(d);
    assert_eq!(m.renewal(&sans(), lifetimes, day(1)), Renewal::Nothing);
    assert_eq!(m.renewal(&sans(), lifetimes, day(29)), Renewal::Nothing);
    assert_eq!(m.renewal(&sans(), lifetimes, day(31)), Renewal::Cert);
    assert_eq!(m.renewal(&sans(), lifetimes, day(71)), Renewal::All);
    assert_eq!(m.renewal(&["new.name".to_string()], lifetimes, day(1)), Renewal::Cert);
    let renewed = m.renewed(&sans(), lifetimes, day(31)).unwrap().unwrap();
    assert_eq!(renewed.renewal(&sans(), lifetimes, day(31)), Renewal::Nothing);
    // A certificate never outlives its CA.
    let late = m.renew_cert(&sans(), lifetimes, day(65)).unwrap();
    assert_eq!(late.cert_not_after, m.ca_not_after);
}
