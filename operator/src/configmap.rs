//! The ConfigMap a policy renders into, and the check that the Secrets it names exist.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_api::config::CONFIG_FILE;
use kproxy_api::crd::KafkaProxyPolicy;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use crate::status::Reason;
use crate::{Error, FIELD_MANAGER, Result};

/// Label on every ConfigMap the operator owns; the controller watches ConfigMaps through it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kproxy-operator");
/// Label naming the policy a ConfigMap was rendered from.
pub const POLICY_LABEL: &str = "kproxy.dev/policy";
/// Annotation with the rendered config's hash, as the policy's status shows it.
pub const HASH_ANNOTATION: &str = "kproxy.dev/config-hash";

/// `<policy>-kproxy`: the ConfigMap the webhook mounts into the policy's pods.
pub fn name(policy: &str) -> String {
    format!("{policy}-kproxy")
}

/// The ConfigMap holding `yaml`, owned by (and garbage-collected with) the policy.
pub fn build(policy: &KafkaProxyPolicy, yaml: &str, hash: &str) -> Result<ConfigMap> {
    let owner = policy.controller_owner_ref(&()).ok_or(Error::Missing("metadata.uid"))?;
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("app.kubernetes.io/name".to_string(), "kproxy".to_string()),
        (POLICY_LABEL.to_string(), policy.name_any()),
    ]);
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name(&policy.name_any())),
            namespace: policy.namespace(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(HASH_ANNOTATION.to_string(), hash.to_string())])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), yaml.to_string())])),
        ..ConfigMap::default()
    })
}

/// Server-side applies the ConfigMap, forcing ownership so hand edits of our fields are undone. Returns the
/// resourceVersion the ConfigMap has now.
pub async fn apply(api: &Api<ConfigMap>, cm: &ConfigMap) -> Result<Option<String>> {
    let name = cm.metadata.name.as_deref().ok_or(Error::Missing("metadata.name"))?;
    let mut cm = cm.clone();
    cm.metadata.managed_fields = None;
    let patch = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": cm.metadata, "data": cm.data});
    let applied = api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(applied.metadata.resource_version)
}

/// Finds the first kind of Secret problem and describes every instance of it; `None` when all is there.
pub async fn check_secrets(api: &Api<Secret>, policy: &KafkaProxyPolicy) -> Result<Option<(Reason, String)>> {
    let mut missing = Vec::new();
    let mut missing_keys = Vec::new();
    let mut cache: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    for use_ in policy.spec.secret_keys() {
        if !cache.contains_key(&use_.secret) {
            cache.insert(use_.secret.clone(), api.get_opt(&use_.secret).await?);
        }
        match cache.get(&use_.secret).and_then(Option::as_ref) {
            None => {
                let line = format!("{} (named by {})", use_.secret, use_.field);
                if !missing.contains(&line) {
                    missing.push(line);
                }
            }
            Some(secret) => {
                let has = secret.data.as_ref().is_some_and(|d| d.contains_key(&use_.key))
                    || secret.string_data.as_ref().is_some_and(|d| d.contains_key(&use_.key));
                if !has {
                    missing_keys.push(format!("{} has no key {:?} (named by {})", use_.secret, use_.key, use_.field));
                }
            }
        }
    }
    let namespace = policy.namespace().unwrap_or_default();
    Ok(if !missing.is_empty() {
        Some((
            Reason::SecretNotFound,
            format!(
                "Secrets not found in namespace {namespace}: {}. Create them or fix the references; pods using this \
                 policy cannot start until they exist",
                missing.join(", ")
            ),
        ))
    } else if !missing_keys.is_empty() {
        Some((
            Reason::SecretKeyNotFound,
            format!("Secret {}. Add the keys or fix the references", missing_keys.join("; Secret ")),
        ))
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use kproxy_api::crd::KafkaProxyPolicySpec;

    use super::*;

    #[test]
    fn configmap_is_named_labelled_annotated_and_owned_by_its_policy() {
        let spec: KafkaProxyPolicySpec =
            serde_json::from_value(serde_json::json!({"clusters": [{"name": "e", "bootstrapServers": ["h:1"]}]}))
                .unwrap();
        let mut policy = KafkaProxyPolicy::new("payments", spec);
        policy.metadata.namespace = Some("shop".into());
        assert!(build(&policy, "x", "h").is_err(), "an object without a uid cannot own anything");
        policy.metadata.uid = Some("1234".into());
        let cm = build(&policy, "clusters: []\n", "sha256:ab").unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("payments-kproxy"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("shop"));
        let labels = cm.metadata.labels.unwrap();
        assert_eq!(labels.get(MANAGED_BY.0).map(String::as_str), Some(MANAGED_BY.1));
        assert_eq!(labels.get(POLICY_LABEL).map(String::as_str), Some("payments"));
        assert_eq!(cm.metadata.annotations.unwrap().get(HASH_ANNOTATION).map(String::as_str), Some("sha256:ab"));
        let owner = &cm.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("KafkaProxyPolicy", "payments", "1234")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(cm.data.unwrap().get(CONFIG_FILE).map(String::as_str), Some("clusters: []\n"));
    }
}
