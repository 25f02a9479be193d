//! kproxy-webhook binary: the injection webhook on its own, for out-of-cluster runs and end-to-end tests.
//!
//! In a cluster the operator serves the same webhook with the same flags; this binary adds the option to register
//! the MutatingWebhookConfiguration itself, pointing the API server at a URL.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kproxy_webhook::cli::WebhookArgs;
use kproxy_webhook::registration::{Endpoint, Registration, register};
use kproxy_webhook::serve;

#[derive(Parser, Debug)]
#[command(version, about = "kproxy sidecar injection webhook")]
struct Args {
    #[command(flatten)]
    webhook: WebhookArgs,
    /// Create or update the MutatingWebhookConfiguration, pointing at this URL (e.g. https://127.0.0.1:9443/mutate).
    #[arg(long)]
    register_url: Option<String>,
    /// failurePolicy of the registered webhook: Fail or Ignore.
    #[arg(long, default_value = "Fail")]
    failure_policy: String,
    /// Limit the registered webhook to these namespaces (default: all but kube-system and kube-node-lease).
    #[arg(long = "only-namespace")]
    only_namespaces: Vec<String>,
    /// PEM CA to register as caBundle (with --webhook-cert-dir; generated certificates publish their own CA).
    #[arg(long)]
    ca_bundle_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let client = kube::Client::try_default().await.context("connecting to the API server")?;
    let Some(mut cfg) = args.webhook.config(client.default_namespace(), None)? else {
        bail!("--webhook-addr is required");
    };

    // Policies are watched where pods are admitted: the registered namespaces, or all of them.
    cfg.namespaces = args.only_namespaces.clone();
    if let Some(url) = &args.register_url {
        let mut registration = Registration::new(&args.webhook.webhook_configuration, Endpoint::Url(url.clone()));
        registration.failure_policy = args.failure_policy.clone();
        if let Some(path) = &args.ca_bundle_file {
            let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            registration.ca_bundle = Some(pem);
        }
        if !args.only_namespaces.is_empty() {
            registration.namespace_selector = Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "In".into(),
                    values: Some(args.only_namespaces.clone()),
                }]),
                ..Default::default()
            });
        }
        register(&client, &registration).await.context("registering the webhook")?;
    }

    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    serve(client, cfg, shutdown).await.context("serving the webhook")?;
    Ok(())
}
