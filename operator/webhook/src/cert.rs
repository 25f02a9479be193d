//! The webhook's own CA and serving certificate (rcgen): generation, renewal and the decision when to renew.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::Result;

/// How long certificates live and how early they are replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: Duration,
    pub cert: Duration,
    /// Renew when less than this is left, so a missed check or two never lets a certificate lapse.
    pub renew_before: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Lifetimes {
            ca: Duration::from_secs(10 * 365 * DAY),
            cert: Duration::from_secs(365 * DAY),
            renew_before: Duration::from_secs(30 * DAY),
        }
    }
}

/// Everything the webhook keeps about its certificates, as stored in the shared Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// PEM CA certificates to trust: the current CA first, then the one it replaced (if any), so the API server
    /// keeps trusting serving certificates of replicas that have not yet picked up a rotated CA.
    pub ca_bundle: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    pub ca_not_after: OffsetDateTime,
    pub cert_not_after: OffsetDateTime,
    /// The subject alternative names the serving certificate was issued for.
    pub sans: Vec<String>,
}

/// What has to be regenerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    Nothing,
    /// A new serving certificate from the same CA: the caBundle stays valid.
    Cert,
    /// A new CA and serving certificate.
    All,
}

/// The CA's fixed name: renewal rebuilds the issuer from it and the stored key, so the CA certificate never has to
/// be parsed back.
const CA_NAME: &str = "kproxy-webhook-ca";
/// Tolerated clock skew between this process and the API server.
const SKEW: time::Duration = time::Duration::minutes(5);

impl Material {
    /// A fresh CA and serving certificate for `sans` (DNS names or IP addresses).
    pub fn generate(sans: &[String], lifetimes: Lifetimes, now: OffsetDateTime) -> Result<Material> {
        let ca_key = KeyPair::generate()?;
        let mut params = ca_params();
        params.not_before = now - SKEW;
        params.not_after = now + lifetimes.ca;
        let ca_cert = params.self_signed(&ca_key)?;
        let ca_not_after = params.not_after;
        let (cert, key, cert_not_after) = issue(&ca_key, sans, (now + lifetimes.cert).min(ca_not_after), now)?;
        Ok(Material {
            ca_bundle: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            cert,
            key,
            ca_not_after,
            cert_not_after,
            sans: sans.to_vec(),
        })
    }

    /// A new CA whose bundle still trusts the current one.
    pub fn rotate_ca(&self, sans: &[String], lifetimes: Lifetimes, now: OffsetDateTime) -> Result<Material> {
        let mut next = Material::generate(sans, lifetimes, now)?;
        if self.ca_not_after > now {
            let current = first_pem_block(&self.ca_bundle);
            next.ca_bundle = format!("{}{current}\n", next.ca_bundle);
        }
        Ok(next)
    }

    /// A new serving certificate from the existing CA.
    pub fn renew_cert(&self, sans: &[String], lifetimes: Lifetimes, now: OffsetDateTime) -> Result<Material> {
        let ca_key = KeyPair::from_pem(&self.ca_key)?;
        let (cert, key, cert_not_after) = issue(&ca_key, sans, (now + lifetimes.cert).min(self.ca_not_after), now)?;
        Ok(Material { cert, key, cert_not_after, sans: sans.to_vec(), ..self.clone() })
    }

    /// What must be regenerated at `now` for a certificate covering `sans`.
    pub fn renewal(&self, sans: &[String], lifetimes: Lifetimes, now: OffsetDateTime) -> Renewal {
        if self.ca_not_after - lifetimes.renew_before <= now {
            Renewal::All
        } else if self.cert_not_after - lifetimes.renew_before <= now || self.sans != sans {
            Renewal::Cert
        } else {
            Renewal::Nothing
        }
    }

    /// Renews what [`Material::renewal`] asks for; `None` when nothing is due.
    pub fn renewed(&self, sans: &[String], lifetimes: Lifetimes, now: OffsetDateTime) -> Result<Option<Material>> {
        Ok(match self.renewal(sans, lifetimes, now) {
            Renewal::Nothing => None,
            Renewal::Cert => Some(self.renew_cert(sans, lifetimes, now)?),
            Renewal::All => Some(self.rotate_ca(sans, lifetimes, now)?),
        })
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Issues a serving certificate signed by the CA key, valid until `not_after` (never past the CA's own expiry);
/// returns (cert PEM, key PEM, notAfter).
fn issue(
    ca_key: &KeyPair,
    sans: &[String],
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(String, String, OffsetDateTime)> {
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, sans.first().map(String::as_str).unwrap_or("kproxy-webhook"));
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - SKEW;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), params.not_after))
}

fn first_pem_block(bundle: &str) -> &str {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(i) => bundle[..i + END.len()].trim_start().trim_end_matches('\n'),
        None => bundle,
    }
}

#[cfg(test)]
mod tests;
