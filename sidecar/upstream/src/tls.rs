//! rustls client configuration for brokers: the cluster's CA only, TLS 1.2/1.3, optional client certificate, and
//! the hostname check with its explicit override.

use std::sync::Arc;

use kproxy_api::config::Tls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::context::{Context, file_error};
use crate::{Error, Result};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client config from the files the settings name, as they are on disk now.
pub(crate) fn client_config(settings: &Tls, ctx: &Context) -> Result<ClientConfig> {
    let ca_file = settings.ca_file.as_deref().ok_or_else(|| {
        Error::Config("tls.caFile is required: brokers are verified against the cluster's own CA only".into())
    })?;
    let mut roots = RootCertStore::empty();
    let ca_path = ctx.resolve(ca_file);
    let ca_pem = ctx.read(ca_file)?;
    let cas = certificates(&ca_pem, &ca_path)?;
    let (added, _ignored) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(Error::Config(format!("{}: no usable CA certificate", ca_path.display())));
    }
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("{}: {e}", ca_path.display())))?;
    let verifier: Arc<dyn ServerCertVerifier> =
        if settings.insecure_skip_hostname_verification { Arc::new(AnyName(webpki)) } else { webpki };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let cert_path = ctx.resolve(cert_file);
            let chain = certificates(&ctx.read(cert_file)?, &cert_path)?;
            if chain.is_empty() {
                return Err(Error::Config(format!("{}: no certificate", cert_path.display())));
            }
            let key_path = ctx.resolve(key_file);
            let key = PrivateKeyDer::from_pem_slice(&ctx.read(key_file)?)
                .map_err(|e| Error::Config(format!("{}: no usable private key: {e}", key_path.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("client certificate {}: {e}", cert_path.display())))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::Config("tls.certFile and tls.keyFile go together".into())),
    };
    Ok(config)
}

fn certificates(pem: &[u8], path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
        file_error(path, std::io::Error::new(std::io::ErrorKind::InvalidData, format!("invalid PEM: {e}")))
    })
}

/// The name the broker's certificate must carry: `tls.serverName`, else the host the broker advertised.
pub(crate) fn server_name(settings: &Tls, host: &str) -> Result<ServerName<'static>> {
    let name = settings.server_name.as_deref().unwrap_or(host);
    ServerName::try_from(name.to_string())
        .map_err(|_| Error::Config(format!("{name:?} is not a valid TLS server name")))
}

/// Turns a failed handshake into a message an operator can act on.
pub(crate) fn handshake_error(addr: &str, settings: &Tls, name: &ServerName<'_>, err: std::io::Error) -> Error {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            let reason = "the broker closed the connection during the TLS handshake (is this its TLS listener?)";
            return Error::Tls { addr: addr.to_string(), reason: reason.into() };
        }
        return Error::Io { addr: addr.to_string(), source: err };
    };
    let ca = settings.ca_file.as_deref().unwrap_or_default();
    let reason = match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            format!("untrusted CA: the broker's certificate is not signed by the CA in {ca}")
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the broker's certificate is not valid for {:?}; set tls.serverName to a name it carries, or \
             tls.insecureSkipHostnameVerification for brokers that advertise bare IPs",
            name.to_str()
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. } | CertificateError::NotValidYet,
        ) => format!("the broker's certificate is outside its validity period ({tls})"),
        rustls::Error::AlertReceived(alert) => {
            format!("the broker refused the handshake with alert {alert:?} (client certificate missing or untrusted?)")
        }
        other => other.to_string(),
    };
    Error::Tls { addr: addr.to_string(), reason }
}

/// Verifies the chain against the CA but accepts any name: the documented escape hatch for brokers that advertise
/// bare IP addresses their certificates do not list. Signatures and validity are still checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name last, after the chain, so a name error means the chain itself was accepted.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
