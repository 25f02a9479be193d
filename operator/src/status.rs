//! The policy's status: the `Ready` condition with a reason and a message that says what to fix, written with
//! server-side apply on the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicyStatus, PODS_NEED_RESTART, READY};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::pods::Stale;
use crate::{FIELD_MANAGER, Result};

/// Why a policy is or is not ready: the condition's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The ConfigMap holds this generation and every referenced Secret exists.
    Rendered,
    /// The spec cannot be rendered; the last good ConfigMap is kept.
    InvalidPolicy,
    /// A referenced Secret does not exist.
    SecretNotFound,
    /// A referenced Secret exists but lacks a key the policy names.
    SecretKeyNotFound,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rendered => "Rendered",
            Reason::InvalidPolicy => "InvalidPolicy",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyNotFound => "SecretKeyNotFound",
        }
    }
}

/// The status the operator wants the policy to show.
#[derive(Clone, Debug)]
pub struct Desired {
    pub reason: Reason,
    pub message: String,
    /// Name and hash of the ConfigMap now in place (after an invalid edit: the last good one, if any).
    pub config_map_name: Option<String>,
    pub config_hash: Option<String>,
    /// When that config was rendered, in milliseconds since the Unix epoch.
    pub rendered_at_ms: Option<u64>,
    /// Injected pods that run without a Secret the policy names.
    pub stale: Stale,
}

/// A render time as the status shows it.
pub(crate) fn micro_time(ms: u64) -> Option<MicroTime> {
    Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok().map(MicroTime)
}

/// The render time a status shows, in milliseconds since the Unix epoch.
pub fn rendered_at_ms(status: &KafkaProxyPolicyStatus) -> Option<u64> {
    status.rendered_at.as_ref().and_then(|t| u64::try_from(t.0.as_millisecond()).ok())
}

/// Builds the full status, keeping each condition's transition time when its truth did not change, so an
/// unchanged outcome is a no-op write that wakes no watcher.
pub fn build(policy: &KafkaProxyPolicy, desired: &Desired) -> KafkaProxyPolicyStatus {
    let ready = desired.reason == Reason::Rendered;
    let stale = &desired.stale;
    let restart = if stale.pods == 0 {
        (false, "PodsCurrent", "every injected pod mounts the Secrets the policy names".to_string())
    } else {
        let s = if stale.pods == 1 { "" } else { "s" };
        (
            true,
            "SecretsNotMounted",
            format!(
                "{} injected pod{s} started before the policy named Secret {} and cannot read it (Secret volumes \
                 are fixed at pod creation); restart them, e.g. kubectl rollout restart",
                stale.pods,
                stale.secrets.join(", ")
            ),
        )
    };
    KafkaProxyPolicyStatus {
        observed_generation: policy.metadata.generation,
        config_map_name: desired.config_map_name.clone(),
        config_hash: desired.config_hash.clone(),
        rendered_at: desired.rendered_at_ms.and_then(micro_time),
        clusters: Some(policy.spec.clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(",")),
        conditions: vec![
            condition(policy, READY, ready, desired.reason.as_str(), &desired.message),
            condition(policy, PODS_NEED_RESTART, restart.0, restart.1, &restart.2),
        ],
    }
}

fn condition(policy: &KafkaProxyPolicy, type_: &str, truth: bool, reason: &str, message: &str) -> Condition {
    let status = if truth { "True" } else { "False" };
    let previous = policy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: policy.metadata.generation,
        last_transition_time,
    }
}

/// Writes the status unless the policy already shows it.
pub async fn write(
    api: &Api<KafkaProxyPolicy>,
    policy: &KafkaProxyPolicy,
    status: &KafkaProxyPolicyStatus,
) -> Result<()> {
    if policy.status.as_ref() == Some(status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "kproxy.dev/v1alpha1",
        "kind": "KafkaProxyPolicy",
        "status": status,
    });
    api.patch_status(&policy.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use kproxy_api::crd::KafkaProxyPolicySpec;

    use super::*;

    fn policy() -> KafkaProxyPolicy {
        let spec: KafkaProxyPolicySpec = serde_json::from_value(json!({"clusters": [
            {"name": "east", "bootstrapServers": ["127.0.0.1:9092"]},
            {"name": "west", "bootstrapServers": ["127.0.0.1:9093"]}
        ]}))
        .unwrap();
        let mut p = KafkaProxyPolicy::new("p", spec);
        p.metadata.generation = Some(4);
        p
    }

    fn desired(reason: Reason) -> Desired {
        Desired {
            reason,
            message: "m".into(),
            config_map_name: Some("p-kproxy".into()),
            config_hash: Some("sha256:00".into()),
            rendered_at_ms: Some(1_700_000_000_123),
            stale: Stale::default(),
        }
    }

    #[test]
    fn ready_status_carries_generation_configmap_hash_and_clusters() {
        let status = build(&policy(), &desired(Reason::Rendered));
        assert_eq!(rendered_at_ms(&status), Some(1_700_000_000_123), "the render time, to the millisecond");
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.config_map_name.as_deref(), Some("p-kproxy"));
        assert_eq!(status.config_hash.as_deref(), Some("sha256:00"));
        assert_eq!(status.clusters.as_deref(), Some("east,west"));
        let c = &status.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str(), c.reason.as_str()), ("Ready", "True", "Rendered"));
        assert_eq!(c.observed_generation, Some(4));
    }

    #[test]
    fn transition_time_moves_only_when_readiness_flips() {
        let mut p = policy();
        let mut old = build(&p, &desired(Reason::Rendered));
        let long_ago = Time(Timestamp::UNIX_EPOCH);
        old.conditions[0].last_transition_time = long_ago.clone();
        p.status = Some(old);
        let same = build(&p, &desired(Reason::Rendered));
        assert_eq!(same.conditions[0].last_transition_time, long_ago, "unchanged truth keeps its time");
        assert_eq!(Some(&same), p.status.as_ref(), "an unchanged outcome is an unchanged status");
        let flipped = build(&p, &desired(Reason::SecretNotFound));
        assert_ne!(flipped.conditions[0].last_transition_time, long_ago);
        assert_eq!(flipped.conditions[0].status, "False");
        assert_eq!(flipped.conditions[0].reason, "SecretNotFound");
    }

    #[test]
    fn pods_need_restart_counts_the_pods_and_names_the_secrets() {
        let p = policy();
        let current = build(&p, &desired(Reason::Rendered));
        assert_eq!(current.conditions[1].type_, "PodsNeedRestart");
        assert_eq!(current.conditions[1].status, "False");
        let mut d = desired(Reason::Rendered);
        d.stale = Stale { pods: 3, secrets: vec!["west-kafka".into()] };
        let stale = build(&p, &d);
        let c = &stale.conditions[1];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "SecretsNotMounted"));
        assert!(c.message.starts_with("3 injected pods") && c.message.contains("west-kafka"), "{}", c.message);
        assert_eq!(stale.conditions[0].status, "True", "the policy itself is still Ready");
    }
}
