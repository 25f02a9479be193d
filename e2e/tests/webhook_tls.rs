//! The webhook's certificates end to end: replicas sharing the generated Secret, renewal and a rotated cert-manager
//! style directory served without a restart, each checked by the real kube-apiserver still calling the webhook and
//! by an independent TLS client (openssl) verifying what is served against the published caBundle.

#[path = "webhook/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kproxy_e2e::{Env, env, run_with_timeout, wait_for};
use support::*;

/// The leaf certificate the server on `port` presents, as PEM.
fn served_leaf(port: u16) -> Result<String> {
    let connect = format!("127.0.0.1:{port}");
    let out = run_with_timeout(
        Command::new("openssl").args(["s_client", "-connect", &connect, "-showcerts"]),
        None,
        Duration::from_secs(20),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----").context("no certificate served")?;
    let end = text[begin..].find("-----END CERTIFICATE-----").context("truncated certificate")? + begin;
    Ok(text[begin..end + "-----END CERTIFICATE-----".len()].to_string())
}

/// Whether openssl, trusting only `ca_file`, accepts the server on `port` for the IP address 127.0.0.1.
fn verifies(port: u16, ca_file: &Path) -> Result<bool> {
    let connect = format!("127.0.0.1:{port}");
    let ca = ca_file.to_string_lossy();
    let args = ["s_client", "-connect", &connect, "-CAfile", &ca, "-verify_return_error", "-verify_ip", "127.0.0.1"];
    let out = run_with_timeout(Command::new("openssl").args(args), None, Duration::from_secs(20))?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verify return code: 0 (ok)"))
}

fn same_pem(a: &str, b: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    squash(a) == squash(b)
}

/// The caBundle the API server uses for the webhook, written to a file for openssl.
fn published_ca_bundle(env: &Env, configuration: &str, dir: &Path) -> Result<std::path::PathBuf> {
    let b64 = env.kubectl(&[
        "get",
        "mutatingwebhookconfiguration",
        configuration,
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle}",
    ])?;
    if b64.trim().is_empty() {
        bail!("{configuration} has no caBundle");
    }
    let path = dir.join("ca-bundle.pem");
    std::fs::write(&path, STANDARD.decode(b64.trim())?)?;
    Ok(path)
}

#[test]
fn replicas_share_one_generated_certificate() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-replicas");
    // Started together, so both race to create the Secret.
    let mut first = Webhook::spawn(env, &ns.name, Launch::default()).unwrap();
    let second = Webhook::spawn(env, &ns.name, Launch { register: false, ..Launch::default() }).unwrap();
    first.wait_injecting(&ns.name).unwrap();
    let leaf = |port| wait_for("a served certificate", Duration::from_secs(60), || Ok(served_leaf(port).ok()));
    let (a, b) = (leaf(first.port).unwrap(), leaf(second.port).unwrap());
    assert!(same_pem(&a, &b), "both replicas must serve the certificate from the shared Secret");

    let dir = tempfile::tempdir().unwrap();
    let bundle = published_ca_bundle(env, &first.configuration, dir.path()).unwrap();
    assert!(verifies(first.port, &bundle).unwrap() && verifies(second.port, &bundle).unwrap());
    let secrets = env.kubectl(&["get", "secrets", "-n", &ns.name, "-o", "name"]).unwrap();
    assert_eq!(secrets.matches("secret/kproxy-webhook-tls").count(), 1, "{secrets}");

    // The API server switched to the second replica keeps injecting once the first is gone.
    let url = format!("https://127.0.0.1:{}/mutate", second.port);
    let patch = format!(r#"[{{"op":"replace","path":"/webhooks/0/clientConfig/url","value":"{url}"}}]"#);
    env.kubectl(&["patch", "mutatingwebhookconfiguration", &first.configuration, "--type=json", "-p", &patch]).unwrap();
    first.stop();
    second.wait_injecting(&ns.name).unwrap();
    ns.apply_pod(&pod_manifest("via-second", &[("kproxy.dev/inject", "true")])).unwrap();
    assert_injected(&ns.get("pod", "via-second"), "payments");
}

#[test]
fn a_generated_certificate_is_renewed_without_a_restart() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-renew");
    // Certificates live two minutes and are renewed once less than 110 s are left: every ~10 s.
    let extra = [
        "--webhook-cert-validity-seconds=120",
        "--webhook-renew-before-seconds=110",
        "--webhook-check-interval-seconds=2",
    ];
    let extra = extra.map(String::from).to_vec();
    let mut webhook = Webhook::spawn(env, &ns.name, Launch { extra, ..Launch::default() }).unwrap();
    webhook.wait_injecting(&ns.name).unwrap();
    let before = served_leaf(webhook.port).unwrap();
    let after = wait_for("a renewed certificate", Duration::from_secs(90), || {
        let now = served_leaf(webhook.port)?;
        Ok((!same_pem(&now, &before)).then_some(now))
    })
    .unwrap();
    assert!(webhook.is_running(), "renewal must not restart the process (log: {})", webhook.log.display());
    let dir = tempfile::tempdir().unwrap();
    let bundle = published_ca_bundle(env, &webhook.configuration, dir.path()).unwrap();
    assert!(verifies(webhook.port, &bundle).unwrap(), "renewed certificate {after} is not trusted");
    ns.apply_pod(&pod_manifest("after-renewal", &[("kproxy.dev/inject", "true")])).unwrap();
    assert_injected(&ns.get("pod", "after-renewal"), "payments");
}

/// A CA and a way to issue serving certificates for 127.0.0.1 from it, as cert-manager would.
struct TestCa {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "e2e cert-manager CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { key, params, pem }
    }

    /// Writes a fresh certificate and key into `dir` the way a Secret update lands: new files renamed in place.
    fn issue_into(&self, dir: &Path) -> String {
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        for (name, content) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
        cert.pem()
    }
}

#[test]
fn a_mounted_certificate_directory_is_reloaded_without_a_restart() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-certdir");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    std::fs::create_dir(&certs).unwrap();
    let ca = TestCa::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let first = ca.issue_into(&certs);

    // The standalone binary registers itself here, with the CA it is given.
    let launch = Launch {
        operator: false,
        ca_bundle: Some(ca.pem.clone()),
        extra: vec![format!("--webhook-cert-dir={}", certs.display())],
        ..Launch::default()
    };
    let mut webhook = Webhook::spawn(env, &ns.name, launch).unwrap();
    webhook.wait_injecting(&ns.name).unwrap();
    assert!(same_pem(&served_leaf(webhook.port).unwrap(), &first));

    let second = ca.issue_into(&certs);
    wait_for("the rotated certificate to be served", Duration::from_secs(90), || {
        Ok(same_pem(&served_leaf(webhook.port)?, &second).then_some(()))
    })
    .unwrap();
    assert!(webhook.is_running(), "reload must not restart the process (log: {})", webhook.log.display());
    assert!(verifies(webhook.port, &ca_file).unwrap());
    ns.apply_pod(&pod_manifest("after-rotation", &[("kproxy.dev/inject", "true")])).unwrap();
    assert_injected(&ns.get("pod", "after-rotation"), "payments");
}
