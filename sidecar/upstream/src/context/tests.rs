//! Tests of secret file caching, TLS config building and the TLS handshake against an in-process server.

use std::path::Path;
use std::sync::Arc;

use kproxy_api::config::{Cluster, Sasl, SaslMechanism, Tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::connect;

/// A CA and a leaf it signed, as PEM.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Self { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// (certificate PEM, key PEM) for the given names.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        (params.signed_by(&key, &self.ca).unwrap().pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

/// Serves TLS on loopback for one connection and echoes what the client sends.
async fn tls_server(config: rustls::ServerConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4];
                    if tls.read_exact(&mut buf).await.is_ok() {
                        let _ = tls.write_all(&buf).await;
                    }
                }
            });
        }
    });
    addr
}

fn server_config(pki: &Pki, names: &[&str], client_ca: Option<&Pki>) -> rustls::ServerConfig {
    let (cert, key) = pki.leaf(names);
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions();
    let builder = builder.unwrap();
    match client_ca {
        None => builder.with_no_client_auth().with_single_cert(chain, key).unwrap(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.ca.der().clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap()
        }
    }
}

fn cluster(tls: Tls) -> Cluster {
    Cluster { name: "east".into(), bootstrap_servers: vec![], tls: Some(tls), sasl: None }
}

/// Connects and proves the stream carries bytes both ways.
async fn round_trip(cluster: &Cluster, addr: &str, ctx: &Context) -> crate::Result<()> {
    let mut stream = connect(cluster, addr, ctx).await?;
    assert!(stream.is_tls());
    stream.write_all(b"ping").await.map_err(|source| Error::Io { addr: addr.into(), source })?;
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.map_err(|source| Error::Io { addr: addr.into(), source })?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

#[tokio::test]
async fn tls_verifies_the_chain_and_the_name_with_a_documented_override() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, other) = (Pki::new("east CA"), Pki::new("someone else"));
    write(dir.path(), "ca.crt", &pki.ca_pem());
    write(dir.path(), "other.crt", &other.ca_pem());
    let ctx = Context::new(dir.path());
    let addr = tls_server(server_config(&pki, &["broker-0.east.test"], None)).await;
    let tls = Tls { ca_file: Some("ca.crt".into()), ..Tls::default() };

    // The broker advertises 127.0.0.1, which its certificate does not name.
    let err = round_trip(&cluster(tls.clone()), &addr, &ctx).await.unwrap_err().to_string();
    assert!(err.contains(&addr) && err.contains("not valid for") && err.contains("serverName"), "{err}");

    let named = Tls { server_name: Some("broker-0.east.test".into()), ..tls.clone() };
    round_trip(&cluster(named), &addr, &ctx).await.unwrap();
    let skip = Tls { insecure_skip_hostname_verification: true, ..tls.clone() };
    round_trip(&cluster(skip.clone()), &addr, &ctx).await.unwrap();

    // Skipping the name never skips the chain.
    let untrusted = Tls { ca_file: Some("other.crt".into()), ..skip };
    let err = round_trip(&cluster(untrusted), &addr, &ctx).await.unwrap_err().to_string();
    assert!(err.contains(&addr) && err.contains("untrusted CA") && err.contains("other.crt"), "{err}");
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, clients) = (Pki::new("east CA"), Pki::new("client CA"));
    write(dir.path(), "ca.crt", &pki.ca_pem());
    let (cert, key) = clients.leaf(&["payments"]);
    write(dir.path(), "tls.crt", &cert);
    write(dir.path(), "tls.key", &key);
    let ctx = Context::new(dir.path());
    let addr = tls_server(server_config(&pki, &["127.0.0.1"], Some(&clients))).await;

    let with_cert = Tls {
        ca_file: Some("ca.crt".into()),
        cert_file: Some("tls.crt".into()),
        key_file: Some("tls.key".into()),
        ..Tls::default()
    };
    round_trip(&cluster(with_cert), &addr, &ctx).await.unwrap();
    // Under TLS 1.3 the refusal arrives after the client's handshake, on the first read.
    let without = Tls { ca_file: Some("ca.crt".into()), ..Tls::default() };
    let err = round_trip(&cluster(without), &addr, &ctx).await.unwrap_err().to_string();
    assert!(err.contains(&addr) && err.contains("CertificateRequired"), "{err}");
}

#[test]
fn tls_settings_problems_are_reported_before_dialing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "empty.crt", "");
    write(dir.path(), "ca.crt", &Pki::new("ca").ca_pem());
    write(dir.path(), "garbage.key", "not a key");
    let ctx = Context::new(dir.path());
    for (tls, needle) in [
        (Tls::default(), "caFile is required"),
        (Tls { ca_file: Some("missing.crt".into()), ..Tls::default() }, "missing.crt"),
        (Tls { ca_file: Some("empty.crt".into()), ..Tls::default() }, "no usable CA"),
        (Tls { ca_file: Some("ca.crt".into()), cert_file: Some("ca.crt".into()), ..Tls::default() }, "go together"),
        (
            Tls {
                ca_file: Some("ca.crt".into()),
                cert_file: Some("ca.crt".into()),
                key_file: Some("garbage.key".into()),
                ..Tls::default()
            },
            "no usable private key",
        ),
    ] {
        let err = ctx.tls_config(&tls).unwrap_err().to_string();
        assert!(err.contains(needle), "{tls:?}: {err}");
    }
}

#[test]
fn tls_config_is_rebuilt_only_when_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.crt", &Pki::new("one").ca_pem());
    let ctx = Context::new(dir.path());
    let tls = Tls { ca_file: Some("ca.crt".into()), ..Tls::default() };
    let first = ctx.tls_config(&tls).unwrap();
    assert!(Arc::ptr_eq(&first, &ctx.tls_config(&tls).unwrap()));
    // A rotation replaces the file (kubelet swaps a symlink to new files).
    write(dir.path(), "ca.new", &Pki::new("two").ca_pem());
    std::fs::rename(dir.path().join("ca.new"), dir.path().join("ca.crt")).unwrap();
    assert!(!Arc::ptr_eq(&first, &ctx.tls_config(&tls).unwrap()));
}

/// Lays out files as kubelet does for a Secret volume: `key -> ..data/key`, `..data -> ..<timestamp>`.
fn kubelet_secret(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    for (name, content) in files {
        std::fs::write(versioned.join(name), content).unwrap();
        let link = dir.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(tmp, dir.join("..data")).unwrap();
}

#[test]
fn rotated_credentials_are_read_again_and_unchanged_ones_are_not() {
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("payments-kafka");
    std::fs::create_dir(&secret).unwrap();
    kubelet_secret(&secret, "2026_01", &[("username", "payments\n"), ("password", "old-pass")]);
    let ctx = Context::new(root.path());
    let sasl = Sasl {
        mechanism: SaslMechanism::ScramSha512,
        username_file: Some("payments-kafka/username".into()),
        password_file: Some("payments-kafka/password".into()),
        token_file: None,
    };
    let expect = |password: &str| Credentials::Password { username: "payments".into(), password: password.into() };
    assert_eq!(ctx.credentials(&sasl).unwrap(), expect("old-pass"));
    let cached = ctx.read("payments-kafka/password").unwrap();
    assert!(Arc::ptr_eq(&cached, &ctx.read("payments-kafka/password").unwrap()));

    // Same length, same second: only the file's identity tells them apart.
    kubelet_secret(&secret, "2026_02", &[("username", "payments\n"), ("password", "new-pass")]);
    assert_eq!(ctx.credentials(&sasl).unwrap(), expect("new-pass"));
    assert!(format!("{:?}", ctx.credentials(&sasl).unwrap()).contains("payments"));
    assert!(!format!("{:?}", ctx.credentials(&sasl).unwrap()).contains("new-pass"));

    let missing = Sasl { password_file: None, ..sasl.clone() };
    assert!(ctx.credentials(&missing).unwrap_err().to_string().contains("passwordFile"));
    let token = Sasl { mechanism: SaslMechanism::OauthBearer, token_file: Some("/nonexistent/token".into()), ..sasl };
    assert!(ctx.credentials(&token).unwrap_err().to_string().contains("/nonexistent/token"));
}
