//! Which KafkaProxyPolicy an injected pod uses: the one its annotation names, else the one whose podSelector matches.
//!
//! Refusals name only what the pod asked for (its own annotation, its labels): a pod author may not be allowed to
//! read the namespace's policies, so the webhook does not list them for him.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kproxy_api::crd::KafkaProxyPolicy;
use kube::ResourceExt;

use crate::{Refusal, annotation, selector};

/// Picks the policy for `pod` among `policies` (all policies of the pod's namespace `namespace`).
///
/// The `kproxy.dev/policy` annotation wins; without it exactly one podSelector must match. Zero or several matches
/// refuse the pod rather than guess, because a wrong policy would silently apply the wrong ACLs. A policy whose
/// podSelector is malformed selects nothing (it is logged): it must not block pods that other policies select.
pub fn policy_for<'a>(
    pod: &Pod,
    namespace: &str,
    policies: impl IntoIterator<Item = &'a KafkaProxyPolicy>,
) -> Result<&'a KafkaProxyPolicy, Refusal> {
    let mut policies = policies.into_iter();
    if let Some(name) = pod.annotations().get(annotation::POLICY) {
        return policies
            .find(|p| p.name_any() == *name)
            .ok_or_else(|| Refusal::UnknownPolicy { namespace: namespace.to_string(), name: name.clone() });
    }
    let labels = pod.labels();
    let mut matched = Vec::new();
    for policy in policies {
        match selector::matches(&policy.spec.pod_selector, labels) {
            Ok(true) => matched.push(policy),
            Ok(false) => {}
            Err(reason) => {
                tracing::warn!(%namespace, policy = %policy.name_any(), %reason, "skipping a malformed podSelector")
            }
        }
    }
    match matched.as_slice() {
        [one] => Ok(one),
        [] => Err(Refusal::NoPolicy { namespace: namespace.to_string(), labels: show_labels(labels) }),
        several => Err(Refusal::AmbiguousPolicy { namespace: namespace.to_string(), count: several.len() }),
    }
}

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}
