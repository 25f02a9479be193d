//! Kubernetes Events on the policy when its readiness, reason or message changes, so `kubectl describe kpp`
//! tells the story of each edit.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as Object;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicyStatus, READY};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

/// The API server refuses Event notes longer than this.
const MAX_NOTE: usize = 1024;

/// Writes the Events (events.k8s.io/v1) straight to the API server. Not kube-runtime's `Recorder`: it keeps a copy of
/// every Event for six minutes to count repeats, so 10,000 policies becoming Ready at once would hold 10,000 Events
/// in memory for counts this operator never needs (it announces changes only).
pub struct Publisher {
    client: Client,
    /// `reportingController` of every Event.
    controller: String,
    /// `reportingInstance`: this replica.
    instance: String,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Publisher { client, controller: controller.to_string(), instance: instance.to_string() }
    }

    /// Publishes an Event when `new` changes the policy's Ready condition; a failure is logged, never fatal.
    /// Returns whether an Event was written.
    pub async fn announce(&self, policy: &KafkaProxyPolicy, new: &KafkaProxyPolicyStatus) -> bool {
        let Some(event) = event_for(policy, new) else { return false };
        let object = object(&event, policy.object_ref(&()), (&self.controller, &self.instance), Timestamp::now());
        let api: Api<Object> = Api::namespaced(self.client.clone(), &policy.namespace().unwrap_or_default());
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "cannot publish an Event");
                false
            }
        }
    }
}

/// The Event object as kube-runtime's recorder writes a first occurrence, reported by `(controller, instance)`.
fn object(event: &Event, regarding: ObjectReference, (controller, instance): (&str, &str), now: Timestamp) -> Object {
    Object {
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        event_time: Some(MicroTime(now)),
        note: event.note.clone(),
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!("{}.{:x}", regarding.name.as_deref().unwrap_or(controller), now.as_nanosecond())),
            ..ObjectMeta::default()
        },
        regarding: Some(regarding),
        reporting_controller: Some(controller.to_string()),
        reporting_instance: Some(instance.to_string()),
        type_: Some(match event.type_ {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        related: event.secondary.clone(),
        ..Object::default()
    }
}

/// The Event for a status change, or `None` when the Ready condition says what it already said.
fn event_for(policy: &KafkaProxyPolicy, new: &KafkaProxyPolicyStatus) -> Option<Event> {
    let ready = |s: &KafkaProxyPolicyStatus| {
        s.conditions.iter().find(|c| c.type_ == READY).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (status, reason, message) = ready(new)?;
    if policy.status.as_ref().and_then(ready) == Some((status.clone(), reason.clone(), message.clone())) {
        return None;
    }
    let mut note = message;
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Some(Event {
        type_: if status == "True" { EventType::Normal } else { EventType::Warning },
        reason,
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    })
}

#[cfg(test)]
mod tests {
    use kproxy_api::crd::KafkaProxyPolicySpec;

    use super::*;
    use crate::status::{Desired, Reason, build};

    #[test]
    fn only_a_changed_condition_is_announced() {
        let spec: KafkaProxyPolicySpec =
            serde_json::from_value(serde_json::json!({"clusters": [{"name": "e", "bootstrapServers": ["h:1"]}]}))
                .unwrap();
        let mut policy = KafkaProxyPolicy::new("p", spec);
        let desired = |reason, message: &str| Desired {
            reason,
            message: message.into(),
            config_map_name: None,
            config_hash: None,
            rendered_at_ms: None,
            stale: Default::default(),
        };
        let rendered = build(&policy, &desired(Reason::Rendered, "gen 1"));
        let event = event_for(&policy, &rendered).unwrap();
        assert_eq!((event.type_, event.reason.as_str()), (EventType::Normal, "Rendered"));
        policy.status = Some(rendered.clone());
        assert!(event_for(&policy, &rendered).is_none(), "the same condition again is not news");
        let invalid = build(&policy, &desired(Reason::InvalidPolicy, &"x".repeat(5000)));
        let event = event_for(&policy, &invalid).unwrap();
        assert_eq!((event.type_, event.reason.as_str()), (EventType::Warning, "InvalidPolicy"));
        assert!(event.note.as_ref().unwrap().len() <= MAX_NOTE);

        policy.metadata.namespace = Some("shop".into());
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let written = object(&event, policy.object_ref(&()), ("kproxy-operator", "replica-1"), now);
        assert_eq!(written.metadata.namespace.as_deref(), Some("shop"));
        assert!(written.metadata.name.as_deref().unwrap().starts_with("p."), "named after the policy, unique in time");
        let regarding = written.regarding.as_ref().unwrap();
        assert_eq!((regarding.kind.as_deref(), regarding.name.as_deref()), (Some("KafkaProxyPolicy"), Some("p")));
        assert_eq!((written.type_.as_deref(), written.reason.as_deref()), (Some("Warning"), Some("InvalidPolicy")));
        assert_eq!((written.action.as_deref(), written.note), (Some("Reconcile"), event.note));
        assert_eq!(written.reporting_controller.as_deref(), Some("kproxy-operator"));
        assert_eq!(written.reporting_instance.as_deref(), Some("replica-1"));
        assert_eq!(written.event_time, Some(MicroTime(now)));
    }
}
