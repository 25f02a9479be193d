//! Sidecars' read access to their policies' ConfigMaps through the API: in each namespace with policies, one Role
//! allowing `get` and `watch` on exactly those ConfigMaps (`resourceNames`) and one RoleBinding granting it to the
//! namespace's ServiceAccounts (the group `system:serviceaccounts:<ns>`). Application pods get no cluster-wide
//! permission and nothing outside their namespace; what they can read is what their volume already shows them.
//!
//! The operator can only grant what it holds itself (RBAC's escalation check): it reads those ConfigMaps anyway.
//! Both objects are owned by the namespace's oldest policies (at most [`OWNERS`]), so they are garbage-collected
//! with the last one: an object owned by each of 10,000 policies is larger than etcd takes. When owners go while
//! other policies stay, the next reconcile in the namespace names new owners (or creates the objects again if the
//! collector was faster).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kproxy_api::crd::KafkaProxyPolicy;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use crate::{FIELD_MANAGER, Result, configmap};

/// Name of the Role and the RoleBinding in each namespace with policies.
pub const NAME: &str = "kproxy-sidecar-config";

/// Most owner references on each object.
const OWNERS: usize = 16;

/// What was last applied per namespace (the policies' `name/uid`), so an unchanged namespace costs no API call.
#[derive(Default)]
pub struct Applied {
    last: Mutex<BTreeMap<String, HashSet<String>>>,
    /// One write at a time: the reconciles of a new namespace's policies, running together, would otherwise each
    /// write the same two objects.
    writing: tokio::sync::Mutex<()>,
}

/// A policy as [`Applied`] remembers it: a policy deleted and created again under its name is another one.
fn key(policy: &KafkaProxyPolicy) -> String {
    format!("{}/{}", policy.name_any(), policy.uid().unwrap_or_default())
}

/// The Role for `policies` (all in `ns`), owned by each of them.
pub fn role(ns: &str, policies: &[&KafkaProxyPolicy]) -> Role {
    let mut names: Vec<String> = policies.iter().map(|p| configmap::name(&p.name_any())).collect();
    names.sort();
    names.dedup();
    Role {
        metadata: metadata(ns, policies),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(names),
            verbs: vec!["get".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    }
}

/// The RoleBinding granting [`role`] to every ServiceAccount of `ns`.
pub fn binding(ns: &str, policies: &[&KafkaProxyPolicy]) -> RoleBinding {
    RoleBinding {
        metadata: metadata(ns, policies),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: NAME.into() },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: format!("system:serviceaccounts:{ns}"),
            namespace: None,
        }]),
    }
}

fn metadata(ns: &str, policies: &[&KafkaProxyPolicy]) -> ObjectMeta {
    let mut oldest = policies.to_vec();
    oldest.sort_by_key(|p| (p.metadata.creation_timestamp.clone().map(|t| t.0), p.uid()));
    let owners: Vec<OwnerReference> = oldest
        .iter()
        .take(OWNERS)
        .filter_map(|p| {
            let mut owner = p.controller_owner_ref(&())?;
            // Not the controller: several policies own it, and none may block its collection.
            owner.controller = None;
            owner.block_owner_deletion = None;
            Some(owner)
        })
        .collect();
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(ns.into()),
        labels: Some(BTreeMap::from([
            (configmap::MANAGED_BY.0.to_string(), configmap::MANAGED_BY.1.to_string()),
            ("app.kubernetes.io/name".to_string(), "kproxy".to_string()),
        ])),
        owner_references: Some(owners),
        ..ObjectMeta::default()
    }
}

impl Applied {
    /// Brings the Role and RoleBinding of `policy`'s namespace in line with the policies the cache holds there.
    /// Called before a policy's ConfigMap is written, so a sidecar may read the ConfigMap as soon as it exists.
    /// Returns whether they were written.
    ///
    /// Unchanged when the last apply covered this policy and as many policies as the namespace has now: every
    /// policy added since is reconciled and finds itself missing, every one removed changes the count. Checking that
    /// costs a count, not a sorted list of the namespace's policies on every reconcile.
    pub async fn ensure(
        &self,
        client: &Client,
        policy: &KafkaProxyPolicy,
        store: &Store<KafkaProxyPolicy>,
    ) -> Result<bool> {
        let ns = policy.namespace().unwrap_or_default();
        let ns = ns.as_str();
        let live = |p: &&KafkaProxyPolicy| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.deletion_timestamp.is_none()
        };
        let own = key(policy);
        let covered = |state: &[Arc<KafkaProxyPolicy>]| {
            let count = state.iter().map(AsRef::as_ref).filter(live).count();
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            last.get(ns).is_some_and(|set| set.len() == count && set.contains(&own))
        };
        if covered(&store.state()) {
            return Ok(false);
        }
        let _writing = self.writing.lock().await;
        // Another reconcile may have written them while this one waited.
        let state = store.state();
        if covered(&state) {
            return Ok(false);
        }
        let policies: Vec<&KafkaProxyPolicy> = state.iter().map(AsRef::as_ref).filter(live).collect();
        let key: HashSet<String> = policies.iter().map(|p| key(p)).collect();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let role = role(ns, &policies);
        let roles: Api<Role> = Api::namespaced(client.clone(), ns);
        roles.patch(NAME, &params, &Patch::Apply(&typed(&role, "Role")?)).await?;
        let binding = binding(ns, &policies);
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
        bindings.patch(NAME, &params, &Patch::Apply(&typed(&binding, "RoleBinding")?)).await?;
        self.last.lock().unwrap_or_else(|p| p.into_inner()).insert(ns.to_string(), key);
        Ok(true)
    }
}

/// The object with its apiVersion and kind, as server-side apply needs them.
fn typed<T: serde::Serialize>(object: &T, kind: &str) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(object)?;
    value["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
    value["kind"] = kind.into();
    Ok(value)
}

#[cfg(test)]
mod tests {
    use kproxy_api::crd::KafkaProxyPolicySpec;

    use super::*;

    fn policy(name: &str, uid: &str) -> KafkaProxyPolicy {
        let spec: KafkaProxyPolicySpec =
            serde_json::from_value(serde_json::json!({"clusters": [{"name": "e", "bootstrapServers": ["h:1"]}]}))
                .unwrap();
        let mut p = KafkaProxyPolicy::new(name, spec);
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some(uid.into());
        p
    }

    #[test]
    fn the_role_reads_exactly_the_policies_configmaps_and_is_bound_to_the_namespaces_service_accounts() {
        let (a, b) = (policy("payments", "u1"), policy("audit", "u2"));
        let role = role("shop", &[&a, &b]);
        let rule = &role.rules.as_ref().unwrap()[0];
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(rule.resources.as_deref(), Some(&["configmaps".to_string()][..]));
        assert_eq!(rule.resource_names.as_deref(), Some(&["audit-kproxy".to_string(), "payments-kproxy".into()][..]));
        assert_eq!(rule.verbs, ["get", "watch"], "read-only: no list (resourceNames cannot limit it), no writes");
        let binding = binding("shop", &[&a, &b]);
        assert_eq!(binding.role_ref.name, NAME);
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!((subject.kind.as_str(), subject.name.as_str()), ("Group", "system:serviceaccounts:shop"));
        for meta in [&role.metadata, &binding.metadata] {
            let owners = meta.owner_references.as_ref().unwrap();
            let uids: Vec<&str> = owners.iter().map(|o| o.uid.as_str()).collect();
            assert_eq!(uids, ["u1", "u2"], "collected with the last policy");
            assert!(owners.iter().all(|o| o.controller.is_none() && o.block_owner_deletion.is_none()));
        }
        let many: Vec<KafkaProxyPolicy> = (0..40).map(|i| policy(&format!("p{i}"), &format!("u{i:02}"))).collect();
        let big = super::role("shop", &many.iter().collect::<Vec<_>>());
        let owners = big.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), OWNERS, "bounded: etcd refuses an object with thousands of owners");
        assert_eq!(big.rules.as_ref().unwrap()[0].resource_names.as_ref().map(Vec::len), Some(40));
        let value = typed(&role, "Role").unwrap();
        assert_eq!(
            (value["apiVersion"].as_str(), value["kind"].as_str()),
            (Some("rbac.authorization.k8s.io/v1"), Some("Role"))
        );
    }
}
