//! The HTTPS admission endpoint: `POST /mutate` answers Pod CREATE reviews with the injection patch or a refusal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Client, ResourceExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::inject::{self, InjectConfig};
use crate::metrics::{Metrics, Outcome};
use crate::policies::PolicyCache;
use crate::tls::{self, Resolver, TlsSource};
use crate::{Error, Refusal, Result, annotation, select};

/// Everything `serve` needs besides the API client.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Where to listen, e.g. `0.0.0.0:8443` in a cluster or `127.0.0.1:<port>` in tests.
    pub listen: SocketAddr,
    /// Path of the mutation endpoint; must match the webhook configuration's `clientConfig`.
    pub path: String,
    pub inject: InjectConfig,
    pub tls: TlsSource,
    /// Where to count reviews; `None` counts nothing.
    pub metrics: Option<Metrics>,
    /// Namespaces whose policies are watched (the operator's); empty: every namespace.
    pub namespaces: Vec<String>,
    /// Connections served at once; more wait in the listen backlog. Idle and slow ones are closed by the
    /// handshake and header-read timeouts, so the cap bounds memory without starving the API server for long.
    pub max_connections: usize,
    /// A policy cache the process already keeps (the operator's, which its controller follows); `None`: the
    /// webhook watches `namespaces` itself.
    pub policies: Option<Arc<PolicyCache>>,
}

impl WebhookConfig {
    /// A config serving `/mutate` without metrics.
    pub fn new(listen: SocketAddr, inject: InjectConfig, tls: TlsSource) -> WebhookConfig {
        WebhookConfig {
            listen,
            path: "/mutate".into(),
            inject,
            tls,
            metrics: None,
            namespaces: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            policies: None,
        }
    }
}

/// A TLS handshake slower than this is dropped, so idle sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that has not sent a whole request head this long after it was opened (or after its previous
/// response) is closed: the API server sends its reviews at once, only a stalled or hostile client is slower.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`WebhookConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// In-flight reviews get this long to finish after shutdown is requested.
const DRAIN: Duration = Duration::from_secs(5);

struct AppState {
    policies: Arc<PolicyCache>,
    inject: InjectConfig,
    metrics: Option<Metrics>,
}

/// Serves the webhook until `shutdown` completes, then drains in-flight reviews. Startup failures (invalid
/// config, port taken, no certificate obtainable) are returned at once, so a misconfigured operator exits visibly.
pub async fn serve(
    client: Client,
    cfg: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| Error::io(format!("binding {}", cfg.listen), e))?;
    serve_on(listener, client, cfg, shutdown).await
}

/// Like [`serve`], on a listener the caller bound (tests bind port 0 and read the port first).
pub async fn serve_on(
    listener: TcpListener,
    client: Client,
    cfg: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    cfg.inject.validate().map_err(|problems| Error::Config(problems.join("; ")))?;
    if cfg.max_connections == 0 {
        return Err(Error::Config("the webhook's connection cap must be at least 1".into()));
    }
    if !cfg.path.starts_with('/') || cfg.path == "/healthz" {
        return Err(Error::Config(format!("webhook path {:?} must start with / and not be /healthz", cfg.path)));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let resolver = Arc::new(match &cfg.metrics {
        Some(metrics) => Resolver::with_expiry_gauge(metrics.certificate_expiry.clone()),
        None => Resolver::default(),
    });
    let mut certs = tokio::task::JoinSet::new();
    match cfg.tls.clone() {
        TlsSource::Directory(dir) => {
            tls::load_dir(&dir, &resolver)?;
            certs.spawn(tls::watch_dir(dir, resolver.clone(), stopped(stop_rx.clone())));
        }
        TlsSource::Generated(generated) => {
            // Without a certificate there is nothing to serve; a caBundle not yet published (the webhook
            // configuration may be created after the operator starts) is retried in the background.
            let first_wait = match tls::sync_once(&client, &generated, &resolver).await {
                Ok(_) => generated.check_interval,
                Err(e) if resolver.is_ready() => {
                    tracing::warn!(error = %e, "serving the webhook certificate, but publishing its CA failed");
                    generated.check_interval.min(tls::RETRY)
                }
                Err(e) => return Err(e),
            };
            let (client, resolver, stop) = (client.clone(), resolver.clone(), stopped(stop_rx.clone()));
            certs.spawn(async move {
                tls::maintain_secret(client, generated, resolver, first_wait, stop).await;
                Ok(())
            });
        }
    }
    let acceptor = TlsAcceptor::from(tls::server_config(resolver)?);
    let app = Router::new()
        .route(&cfg.path, post(mutate))
        .route(&namespace_path(&cfg.path), post(mutate_namespace))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(AppState {
            policies: cfg.policies.unwrap_or_else(|| Arc::new(PolicyCache::start(client, &cfg.namespaces))),
            inject: cfg.inject,
            metrics: cfg.metrics,
        }));
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    tracing::info!(addr = ?listener.local_addr().ok(), "admission webhook listening");

    let mut connections = tokio::task::JoinSet::new();
    let stop = stopped(stop_rx.clone());
    tokio::pin!(stop);
    loop {
        // At the cap, new connections wait in the listen backlog until a served one ends.
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a webhook connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // A response written in more than one piece must not wait for the API server's delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stopped(stop_rx.clone()));
        connections.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "webhook TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
    while let Some(done) = certs.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "certificate watcher stopped with an error");
        }
    }
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The endpoint for pods of namespaces labelled `kproxy.dev/injection: enabled`: `<path>-namespace`.
pub fn namespace_path(path: &str) -> String {
    format!("{path}-namespace")
}

/// Pods that opted in with the annotation.
async fn mutate(State(state): State<Arc<AppState>>, Json(review): Json<AdmissionReview<Pod>>) -> Response {
    review_pod(&state, review, false).await
}

/// Pods of an opted-in namespace (the webhook configuration's namespaceSelector decides which namespaces): they
/// are injected unless they opt out with `kproxy.dev/inject: "false"`, which the configuration's matchConditions
/// already filter out.
async fn mutate_namespace(State(state): State<Arc<AppState>>, Json(review): Json<AdmissionReview<Pod>>) -> Response {
    review_pod(&state, review, true).await
}

/// Failures to reach the API server become HTTP 500, so the API server applies the configured `failurePolicy`
/// exactly as if the webhook were down; refusals are a normal review answer.
async fn review_pod(state: &AppState, review: AdmissionReview<Pod>, namespace_opt_in: bool) -> Response {
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return Json(AdmissionResponse::invalid(e.to_string()).into_review()).into_response(),
    };
    let started = Instant::now();
    let (outcome, response) = match admit(state, &request, namespace_opt_in).await {
        Ok(response) => {
            let outcome = match (response.allowed, response.patch.is_some()) {
                (false, _) => Outcome::Refused,
                (true, true) => Outcome::Injected,
                (true, false) => Outcome::Skipped,
            };
            (outcome, Json(response.into_review()).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, uid = %request.uid, "admission review failed");
            (Outcome::Error, (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
        }
    };
    if let Some(metrics) = &state.metrics {
        metrics.reviews.with_label_values(&[outcome.label()]).inc();
        metrics.review_duration.observe(started.elapsed().as_secs_f64());
    }
    response
}

async fn admit(state: &AppState, request: &AdmissionRequest<Pod>, namespace_opt_in: bool) -> Result<AdmissionResponse> {
    let response = AdmissionResponse::from(request);
    let Some(original) = request.object.as_ref().filter(|_| request.operation == Operation::Create) else {
        return Ok(response);
    };
    let mut asked = original.clone();
    if namespace_opt_in {
        // The namespace asks for every pod that did not opt out; the patch records the annotation on the pod, so
        // it reads like any opted-in one.
        asked.annotations_mut().entry(annotation::INJECT.into()).or_insert_with(|| "true".into());
    }
    let pod = &asked;
    let namespace = request.namespace.clone().or_else(|| pod.namespace()).unwrap_or_else(|| "default".into());
    let pod_name = pod.metadata.name.clone().or_else(|| pod.metadata.generate_name.clone()).unwrap_or_default();
    match inject::requested(pod) {
        Ok(false) => return Ok(response),
        Ok(true) => {}
        Err(refusal) => return Ok(refused(response, &namespace, &pod_name, &refusal)),
    }
    let Some(mut policies) = state.policies.in_namespace(&namespace).await? else {
        let refusal = Refusal::NotWatched { namespace: namespace.clone() };
        return Ok(refused(response, &namespace, &pod_name, &refusal));
    };
    if let Err(Refusal::NoPolicy { .. } | Refusal::UnknownPolicy { .. }) =
        select::policy_for(pod, &namespace, policies.iter().map(Arc::as_ref))
    {
        // A policy applied a moment ago may not have reached the cache: a refusal is confirmed against the API.
        policies = state.policies.list(&namespace).await?;
    }
    let policy = match select::policy_for(pod, &namespace, policies.iter().map(Arc::as_ref)) {
        Ok(policy) => policy,
        Err(refusal) => return Ok(refused(response, &namespace, &pod_name, &refusal)),
    };
    match inject::inject(pod, policy, &state.inject) {
        Ok(None) => Ok(response),
        Ok(Some(injected)) => {
            let patch = inject::patch(original, &injected)?;
            tracing::info!(%namespace, pod = %pod_name, policy = %policy.name_any(), "injecting kproxy sidecar");
            let mut response = response.with_patch(patch).map_err(|e| Error::Config(e.to_string()))?;
            let warnings = inject::warnings(pod, policy);
            response.warnings = (!warnings.is_empty()).then_some(warnings);
            Ok(response)
        }
        Err(Error::Refused(refusal)) => Ok(refused(response, &namespace, &pod_name, &refusal)),
        Err(e) => Err(e),
    }
}

fn refused(response: AdmissionResponse, namespace: &str, pod: &str, refusal: &crate::Refusal) -> AdmissionResponse {
    tracing::info!(%namespace, %pod, reason = %refusal, "refusing pod");
    response.deny(refusal)
}
