//! Injected pods that cannot read a Secret their policy now names.
//!
//! Secret volumes are fixed when a pod is created, so a policy edit that adds a `secretRef` reaches running pods
//! only through a restart. The webhook records on each pod the Secrets it mounted (annotation
//! `kproxy.dev/secrets`) and labels it `kproxy.dev/injected=true`; the operator watches the metadata of those pods
//! only (read-only, no pod contents) and counts the ones lacking a Secret.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kproxy_api::crd::{KafkaProxyPolicy, referenced_secrets};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;

/// Label the webhook puts on every injected pod.
pub const INJECTED_SELECTOR: &str = "kproxy.dev/injected=true";
/// Annotation naming the policy a pod was injected with.
pub const POLICY_ANNOTATION: &str = "kproxy.dev/injected";
/// Annotation listing the Secrets a pod mounts, comma-separated.
pub const SECRETS_ANNOTATION: &str = "kproxy.dev/secrets";

/// Pods of a policy that lack Secrets it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stale {
    /// How many pods need a restart.
    pub pods: usize,
    /// The Secrets at least one of them lacks, sorted.
    pub secrets: Vec<String>,
}

/// The pods injected with `policy` (from the watch cache) that do not mount every Secret it names now. Pods being
/// deleted are left out; pods injected before the webhook recorded their Secrets cannot be judged and are skipped.
pub fn stale(pods: &Store<PartialObjectMeta<Pod>>, policy: &KafkaProxyPolicy) -> Stale {
    let wanted: BTreeSet<String> = referenced_secrets(&policy.spec).into_iter().collect();
    if wanted.is_empty() {
        return Stale::default();
    }
    let (name, namespace) = (policy.name_any(), policy.namespace());
    let mut out = Stale::default();
    let mut lacking_any = BTreeSet::new();
    for pod in pods.state() {
        if pod.namespace() != namespace || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(lacking) = lacking(pod.annotations(), &name, &wanted) {
            out.pods += 1;
            lacking_any.extend(lacking);
        }
    }
    out.secrets = lacking_any.into_iter().collect();
    out
}

/// The wanted Secrets a pod with these annotations lacks, or `None` when it is not the policy's, is up to date,
/// or cannot be judged.
fn lacking(
    annotations: &std::collections::BTreeMap<String, String>,
    policy: &str,
    wanted: &BTreeSet<String>,
) -> Option<Vec<String>> {
    if annotations.get(POLICY_ANNOTATION).map(String::as_str) != Some(policy) {
        return None;
    }
    let mounted: BTreeSet<&str> = annotations.get(SECRETS_ANNOTATION)?.split(',').filter(|s| !s.is_empty()).collect();
    let missing: Vec<String> = wanted.iter().filter(|s| !mounted.contains(s.as_str())).cloned().collect();
    (!missing.is_empty()).then_some(missing)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_pod_lacks_what_the_policy_names_and_it_does_not_mount() {
        let wanted: BTreeSet<String> = ["east", "west"].map(String::from).into();
        let pod = annotations(&[(POLICY_ANNOTATION, "payments"), (SECRETS_ANNOTATION, "east")]);
        assert_eq!(lacking(&pod, "payments", &wanted), Some(vec!["west".to_string()]));
        let current = annotations(&[(POLICY_ANNOTATION, "payments"), (SECRETS_ANNOTATION, "east,west,old")]);
        assert_eq!(lacking(&current, "payments", &wanted), None, "a Secret no longer named does no harm");
        let none = annotations(&[(POLICY_ANNOTATION, "payments"), (SECRETS_ANNOTATION, "")]);
        assert_eq!(lacking(&none, "payments", &wanted), Some(vec!["east".to_string(), "west".to_string()]));
        assert_eq!(lacking(&pod, "orders", &wanted), None, "another policy's pod");
        let unknown = annotations(&[(POLICY_ANNOTATION, "payments")]);
        assert_eq!(lacking(&unknown, "payments", &wanted), None, "injected before the webhook recorded Secrets");
    }
}
