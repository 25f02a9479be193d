//! Kubernetes Events on the policy when its readiness, reason or message changes, so `kubectl describe kpp`
//! tells the story of each edit.

use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicyStatus, READY};
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

/// The API server refuses Event notes longer than this.
const MAX_NOTE: usize = 1024;

/// Publishes an Event when `new` changes the policy's Ready condition; a failure is logged, never fatal. Returns
/// whether an Event was written.
pub async fn announce(recorder: &Recorder, policy: &KafkaProxyPolicy, new: &KafkaProxyPolicyStatus) -> bool {
    let Some(event) = event_for(policy, new) else { return false };
    match recorder.publish(&event, &policy.object_ref(&())).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "cannot publish an Event");
            false
        }
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
        assert!(event.note.unwrap().len() <= MAX_NOTE);
    }
}
