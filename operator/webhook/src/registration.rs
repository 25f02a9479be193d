//! Creates or updates the MutatingWebhookConfiguration that sends Pod CREATEs to the webhook.
//!
//! Which pods reach the webhook: `objectSelector` can only match labels, but users opt in with an annotation, so
//! the default filter is a CEL `matchCondition` on the annotation (GA since Kubernetes 1.30). The API server
//! evaluates it before calling out, so pods without `kproxy.dev/inject` never wait on the webhook, whatever the
//! `failurePolicy`. Pods already carrying `kproxy.dev/injected` (re-applied manifests) are skipped the same way.
//! Values other than "false" do reach the webhook so that a typo such as "yes" is refused with a message instead of
//! being silently ignored. Selectors remain available to narrow the scope further (e.g. exclude system namespaces).

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::annotation;
use crate::{Error, Result};

/// Name of the single webhook inside the configuration (must be a qualified name).
pub const WEBHOOK_NAME: &str = "inject.kproxy.dev";

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// In a cluster: the operator's Service.
    Service { namespace: String, name: String, port: i32 },
    /// Out of cluster and in tests: e.g. `https://127.0.0.1:9443/mutate`.
    Url(String),
}

/// The webhook configuration to register.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    pub name: String,
    pub endpoint: Endpoint,
    /// PEM CA the API server trusts for the webhook; `None` leaves it to the certificate maintainer.
    pub ca_bundle: Option<String>,
    /// `Fail` (default) keeps annotated pods out while the webhook is down rather than starting them without the
    /// policy their owners asked for; `Ignore` prefers availability.
    pub failure_policy: String,
    pub namespace_selector: Option<LabelSelector>,
    pub object_selector: Option<LabelSelector>,
    pub timeout_seconds: i32,
}

impl Registration {
    /// Defaults for a webhook behind `endpoint`: fail closed, system namespaces excluded.
    pub fn new(name: impl Into<String>, endpoint: Endpoint) -> Registration {
        Registration {
            name: name.into(),
            endpoint,
            ca_bundle: None,
            failure_policy: "Fail".into(),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["kube-system".into(), "kube-node-lease".into()]),
                }]),
                ..Default::default()
            }),
            object_selector: None,
            timeout_seconds: 10,
        }
    }

    /// The object as it is sent to the API server.
    pub fn to_object(&self) -> Result<MutatingWebhookConfiguration> {
        if !matches!(self.failure_policy.as_str(), "Fail" | "Ignore") {
            return Err(Error::Config(format!("failurePolicy must be Fail or Ignore, not {:?}", self.failure_policy)));
        }
        let mut client_config = WebhookClientConfig {
            ca_bundle: self.ca_bundle.as_ref().map(|pem| ByteString(pem.as_bytes().to_vec())),
            ..Default::default()
        };
        match &self.endpoint {
            Endpoint::Url(url) => client_config.url = Some(url.clone()),
            Endpoint::Service { namespace, name, port } => {
                client_config.service = Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some("/mutate".into()),
                    port: Some(*port),
                })
            }
        }
        let webhook = MutatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            failure_policy: Some(self.failure_policy.clone()),
            match_policy: Some("Equivalent".into()),
            match_conditions: Some(match_conditions()),
            namespace_selector: self.namespace_selector.clone(),
            object_selector: self.object_selector.clone(),
            // Injection is idempotent, but a second pass cannot add anything: the marker annotation stops it.
            reinvocation_policy: Some("Never".into()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            side_effects: "None".into(),
            timeout_seconds: Some(self.timeout_seconds),
        };
        Ok(MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some([("app.kubernetes.io/name".to_string(), "kproxy".to_string())].into()),
                ..Default::default()
            },
            webhooks: Some(vec![webhook]),
        })
    }
}

/// The CEL filters that keep pods which did not opt in from ever reaching the webhook.
pub fn match_conditions() -> Vec<MatchCondition> {
    let annotations = "object.metadata.annotations";
    vec![
        MatchCondition {
            name: "asks-for-kproxy".into(),
            expression: format!(
                "has({annotations}) && '{inject}' in {annotations} && {annotations}['{inject}'] != 'false'",
                inject = annotation::INJECT
            ),
        },
        MatchCondition {
            name: "not-yet-injected".into(),
            expression: format!("!has({annotations}) || !('{}' in {annotations})", annotation::INJECTED),
        },
    ]
}

/// Creates the configuration, or replaces an existing one with the same name (keeping its caBundle when this
/// registration has none, so the certificate maintainer's work is not undone).
pub async fn register(client: &Client, registration: &Registration) -> Result<MutatingWebhookConfiguration> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut wanted = registration.to_object()?;
    for _ in 0..5 {
        let Some(existing) = api.get_opt(&registration.name).await? else {
            match api.create(&PostParams::default(), &wanted).await {
                Ok(created) => return Ok(created),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if registration.ca_bundle.is_none() {
            let kept = existing.webhooks.iter().flatten().find_map(|w| w.client_config.ca_bundle.clone());
            for webhook in wanted.webhooks.iter_mut().flatten() {
                webhook.client_config.ca_bundle = kept.clone();
            }
        }
        wanted.metadata.resource_version = existing.metadata.resource_version.clone();
        match api.replace(&registration.name, &PostParams::default(), &wanted).await {
            Ok(replaced) => return Ok(replaced),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Config(format!("MutatingWebhookConfiguration {} kept changing", registration.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fail_closed_for_opted_in_pod_creates_only() {
        let endpoint = Endpoint::Service { namespace: "kproxy".into(), name: "kproxy-webhook".into(), port: 8443 };
        let object = Registration::new("kproxy", endpoint).to_object().unwrap();
        let webhook = &object.webhooks.as_ref().unwrap()[0];
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(webhook.side_effects, "None");
        let rule = &webhook.rules.as_ref().unwrap()[0];
        assert_eq!(rule.operations.as_deref(), Some(&["CREATE".to_string()][..]));
        assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
        let service = webhook.client_config.service.as_ref().unwrap();
        assert_eq!((service.path.as_deref(), service.port), (Some("/mutate"), Some(8443)));
        let conditions = webhook.match_conditions.as_ref().unwrap();
        assert!(conditions[0].expression.contains("'kproxy.dev/inject' in object.metadata.annotations"));
        assert!(conditions[1].expression.contains("kproxy.dev/injected"));
    }

    #[test]
    fn url_endpoint_and_ca_bundle_and_bad_failure_policy() {
        let mut registration = Registration::new("t", Endpoint::Url("https://127.0.0.1:9443/mutate".into()));
        registration.ca_bundle = Some("PEM".into());
        let object = registration.to_object().unwrap();
        let config = &object.webhooks.as_ref().unwrap()[0].client_config;
        assert_eq!(config.url.as_deref(), Some("https://127.0.0.1:9443/mutate"));
        assert_eq!(config.ca_bundle.as_ref().map(|b| b.0.as_slice()), Some(&b"PEM"[..]));
        registration.failure_policy = "Sometimes".into();
        assert!(registration.to_object().is_err());
    }
}
