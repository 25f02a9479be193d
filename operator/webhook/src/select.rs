//! Which KafkaProxyPolicy an injected pod uses: the one its annotation names, else the one whose podSelector matches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kproxy_api::crd::KafkaProxyPolicy;
use kube::ResourceExt;

use crate::{Refusal, annotation, selector};

/// Picks the policy for `pod` among `policies` (all policies of the pod's namespace `namespace`).
///
/// The `kproxy.dev/policy` annotation wins; without it exactly one podSelector must match. Zero or several matches
/// refuse the pod rather than guess, because a wrong policy would silently apply the wrong ACLs.
pub fn policy_for<'a>(
    pod: &Pod,
    namespace: &str,
    policies: &'a [KafkaProxyPolicy],
) -> Result<&'a KafkaProxyPolicy, Refusal> {
    if let Some(name) = pod.annotations().get(annotation::POLICY) {
        return policies.iter().find(|p| p.name_any() == *name).ok_or_else(|| Refusal::UnknownPolicy {
            namespace: namespace.to_string(),
            name: name.clone(),
            existing: sorted_names(policies.iter()),
        });
    }
    let labels = pod.labels();
    let mut matched = Vec::new();
    for policy in policies {
        let selects = selector::matches(pod_selector(policy), labels)
            .map_err(|reason| Refusal::BadSelector { policy: policy.name_any(), reason })?;
        if selects {
            matched.push(policy);
        }
    }
    match matched.as_slice() {
        [one] => Ok(one),
        [] => Err(Refusal::NoPolicy { namespace: namespace.to_string(), labels: show_labels(labels) }),
        several => Err(Refusal::AmbiguousPolicy {
            namespace: namespace.to_string(),
            matched: sorted_names(several.iter().copied()),
        }),
    }
}

fn pod_selector(policy: &KafkaProxyPolicy) -> &LabelSelector {
    &policy.spec.pod_selector
}

fn sorted_names<'a>(policies: impl Iterator<Item = &'a KafkaProxyPolicy>) -> Vec<String> {
    let mut names: Vec<String> = policies.map(|p| p.name_any()).collect();
    names.sort();
    names
}

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}
