//! The webhook's serving certificate: where it comes from, and a rustls resolver that swaps it without a restart.

mod dir;
mod secret;
mod validity;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use dir::{load_dir, watch_dir};
pub(crate) use secret::RETRY;
pub use secret::{GeneratedTls, maintain_secret, sync_once};
pub use validity::not_after;

use crate::cert::Lifetimes;
use crate::{Error, Result};

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// The webhook makes its own CA and certificate, shares them through a Secret and publishes the CA.
    Generated(GeneratedTls),
    /// `tls.crt` and `tls.key` in a directory (a mounted cert-manager Secret), re-read when they change.
    Directory(PathBuf),
}

impl TlsSource {
    /// Generated certificates for a webhook Service `service` in `namespace`, stored in Secret `secret`, with the CA
    /// published into the MutatingWebhookConfiguration `webhook_configuration`. Defaults: 10-year CA, 1-year
    /// certificate renewed 30 days before expiry, Secret re-read every 10 minutes.
    pub fn generated(namespace: &str, service: &str, secret: &str, webhook_configuration: &str) -> TlsSource {
        TlsSource::Generated(GeneratedTls {
            namespace: namespace.into(),
            secret_name: secret.into(),
            sans: service_dns_names(service, namespace),
            webhook_configuration: Some(webhook_configuration.into()),
            lifetimes: Lifetimes::default(),
            check_interval: std::time::Duration::from_secs(600),
        })
    }
}

/// The DNS names the API server may use for a Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Hands out the current certificate to every new TLS handshake; replaced in place on rotation.
#[derive(Debug, Default)]
pub struct Resolver {
    current: ArcSwapOption<CertifiedKey>,
    /// Set to the served certificate's notAfter on every change.
    expiry: Option<prometheus::Gauge>,
}

impl Resolver {
    /// A resolver that reports the served certificate's expiry on `gauge`.
    pub fn with_expiry_gauge(gauge: prometheus::Gauge) -> Resolver {
        Resolver { current: ArcSwapOption::empty(), expiry: Some(gauge) }
    }

    /// Installs a new certificate; connections already established keep theirs.
    pub fn set(&self, key: CertifiedKey) {
        if let (Some(gauge), Some(expiry)) = (&self.expiry, key.cert.first().and_then(|c| not_after(c))) {
            gauge.set(expiry.unix_timestamp() as f64);
        }
        self.current.store(Some(Arc::new(key)));
    }

    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// The end-entity certificate currently served (DER), to tell whether a reload changed anything.
    pub fn current_der(&self) -> Option<Vec<u8>> {
        self.current.load().as_ref().and_then(|k| k.cert.first().map(|c| c.as_ref().to_vec()))
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// The process-independent crypto provider: picked explicitly because kube's own TLS stack may link another one.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config that asks `resolver` for its certificate on every handshake.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Parses a PEM certificate chain and private key into what rustls serves.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCert(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::BadCert("no certificate in the PEM data".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::BadCert(format!("private key PEM: {e}")))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}
