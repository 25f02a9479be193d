//! The skip rules: a write or a reconcile is skipped only while the cache shows exactly what this process wrote.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kproxy_api::crd::KafkaProxyPolicySpec;
use kube::runtime::{reflector, watcher};

use super::*;

fn policy(uid: &str, version: &str, generation: i64) -> KafkaProxyPolicy {
    let spec: KafkaProxyPolicySpec =
        serde_json::from_value(serde_json::json!({"clusters": [{"name": "e", "bootstrapServers": ["h:1"]}]})).unwrap();
    let mut p = KafkaProxyPolicy::new("p", spec);
    p.metadata.uid = Some(uid.into());
    p.metadata.resource_version = Some(version.into());
    p.metadata.generation = Some(generation);
    p
}

/// The policy cache, holding policies `u1` and `u2` (entries of policies it no longer holds are pruned).
fn live() -> Store<KafkaProxyPolicy> {
    let (store, mut writer) = reflector::store::<KafkaProxyPolicy>();
    for (i, uid) in ["u1", "u2"].into_iter().enumerate() {
        let mut p = policy(uid, "1", 1);
        p.metadata.name = Some(format!("p{i}"));
        writer.apply_watcher_event(&watcher::Event::Apply(p));
    }
    store
}

fn status(hash: &str) -> KafkaProxyPolicyStatus {
    KafkaProxyPolicyStatus { config_hash: Some(hash.into()), ..Default::default() }
}

fn configmap(owner: &str, version: &str) -> PartialObjectMeta<ConfigMap> {
    let mut cm = PartialObjectMeta::<ConfigMap>::default();
    cm.metadata.resource_version = Some(version.into());
    cm.metadata.owner_references =
        Some(vec![OwnerReference { uid: owner.into(), controller: Some(true), ..Default::default() }]);
    cm
}

#[test]
fn the_configmap_apply_is_skipped_only_while_the_cache_holds_the_version_applied() {
    let live = live();
    let ledger = Ledger::default();
    assert!(!ledger.configmap_current("u1", "sha256:a", Some("10")), "never applied by this process: apply");
    ledger.rendered("u1", "sha256:a", 5, Some(Some("10".into())), &live);
    assert!(ledger.configmap_current("u1", "sha256:a", Some("10")), "unchanged since the apply: skip");
    assert!(!ledger.configmap_current("u1", "sha256:a", Some("11")), "edited by hand: apply again");
    assert!(!ledger.configmap_current("u1", "sha256:a", None), "deleted: apply again");
    assert!(!ledger.configmap_current("u1", "sha256:b", Some("10")), "the policy renders differently: apply");
    assert!(!ledger.configmap_current("u2", "sha256:a", Some("10")), "another policy (a recreated one too)");
    ledger.rendered("u1", "sha256:a", 5, None, &live);
    assert!(ledger.configmap_current("u1", "sha256:a", Some("10")), "a skipped apply keeps the version");
    ledger.rendered("u1", "sha256:b", 6, None, &live);
    assert!(!ledger.configmap_current("u1", "sha256:b", Some("10")), "a new rendering was never applied");
    assert!(!configmap_current(Some(&Entry::default()), "", None), "no version recorded: apply");
}

#[test]
fn only_the_configmap_version_this_process_applied_is_its_own_event() {
    let live = live();
    let ledger = Ledger::default();
    assert!(!ledger.own_configmap(&configmap("u1", "10")));
    ledger.rendered("u1", "sha256:a", 5, Some(Some("10".into())), &live);
    assert!(ledger.own_configmap(&configmap("u1", "10")));
    assert!(!ledger.own_configmap(&configmap("u1", "11")), "a later version (a hand edit) is news");
    assert!(!ledger.own_configmap(&configmap("u2", "10")), "another owner");
    let mut unowned = configmap("u1", "10");
    unowned.metadata.owner_references = None;
    assert!(!ledger.own_configmap(&unowned));
}

#[test]
fn a_status_is_written_once_even_while_the_cache_lags_behind_the_write() {
    let ledger = Ledger::default();
    let p = policy("u1", "100", 1);
    let ready = status("sha256:a");
    assert_eq!(ledger.status_step(&p, &ready), StatusStep::Write);
    ledger.status(&p, &ready, true);
    // The ConfigMap's own event runs a reconcile before the cache sees the status write.
    assert_eq!(ledger.status_step(&p, &ready), StatusStep::Skip, "already written: no second write or Event");
    assert_eq!(ledger.status_step(&p, &status("sha256:b")), StatusStep::Defer, "changed again: decide when current");
    let mut caught_up = policy("u1", "101", 1);
    caught_up.status = Some(ready.clone());
    assert_eq!(ledger.status_step(&caught_up, &ready), StatusStep::Skip);
    assert_eq!(ledger.status_step(&caught_up, &status("sha256:b")), StatusStep::Write);
    let mut overwritten = policy("u1", "102", 1);
    overwritten.status = Some(status("by hand"));
    assert_eq!(ledger.status_step(&overwritten, &ready), StatusStep::Write, "someone else wrote after us");
    ledger.forget_status("u1");
    assert_eq!(ledger.status_step(&p, &ready), StatusStep::Write, "a failed write is written again");
}

#[test]
fn a_policy_event_is_skipped_only_when_it_brings_back_exactly_the_status_written() {
    let ledger = Ledger::default();
    let p = policy("u1", "100", 1);
    let ready = status("sha256:a");
    let mut echo = policy("u1", "101", 1);
    echo.status = Some(ready.clone());
    assert!(!ledger.own_status(&echo), "nothing written yet");
    ledger.status(&p, &ready, true);
    assert!(ledger.own_status(&echo));
    let mut edited = echo.clone();
    edited.metadata.generation = Some(2);
    assert!(!ledger.own_status(&edited), "a spec edit");
    let mut other = echo.clone();
    other.status = Some(status("by hand"));
    assert!(!ledger.own_status(&other), "a status someone else wrote");
    let mut deleting = echo.clone();
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    assert!(!ledger.own_status(&deleting), "being deleted");
    assert!(!ledger.own_status(&policy("u2", "5", 1)), "another policy");
}

#[test]
fn entries_of_deleted_policies_are_pruned() {
    let live = live();
    let ledger = Ledger::default();
    for uid in (0..40).map(|i| format!("gone{i}")).chain(["u1".to_string()]) {
        ledger.rendered(&uid, "sha256:a", 5, Some(Some("10".into())), &live);
    }
    assert!(ledger.get("u1").is_some());
    assert!(ledger.lock().by_uid.len() < 40, "bounded by the policies the cache holds");
}
