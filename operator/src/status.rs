//! The policy's status: the `Ready` condition with a reason and a message that says what to fix, written with
//! server-side apply on the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicyStatus, READY};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

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
}

/// Builds the full status, keeping the condition's transition time when its truth did not change, so an
/// unchanged outcome is a no-op write that wakes no watcher.
pub fn build(policy: &KafkaProxyPolicy, desired: &Desired) -> KafkaProxyPolicyStatus {
    let generation = policy.metadata.generation;
    let status = if desired.reason == Reason::Rendered { "True" } else { "False" };
    let previous = policy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    KafkaProxyPolicyStatus {
        observed_generation: generation,
        config_map_name: desired.config_map_name.clone(),
        config_hash: desired.config_hash.clone(),
        clusters: Some(policy.spec.clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(",")),
        conditions: vec![Condition {
            type_: READY.to_string(),
            status: status.to_string(),
            reason: desired.reason.as_str().to_string(),
            message: desired.message.clone(),
            observed_generation: generation,
            last_transition_time,
        }],
    }
}

/// Writes the status unless the policy already shows it.
pub async fn write(
    api: &Api<KafkaProxyPolicy>,
    policy: &KafkaProxyPolicy,
    status: KafkaProxyPolicyStatus,
) -> Result<()> {
    if policy.status.as_ref() == Some(&status) {
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
