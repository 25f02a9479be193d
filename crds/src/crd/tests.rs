//! Tests of the CRD: the checked-in YAML is current, the schema refuses bad values, the CEL rules say what is wrong.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;

fn policy(spec: Value) -> KafkaProxyPolicy {
    let spec: KafkaProxyPolicySpec = serde_json::from_value(spec).unwrap();
    KafkaProxyPolicy::new("payments", spec)
}

fn good_spec() -> Value {
    json!({
        "clusters": [
            {"name": "dc-east", "bootstrapServers": ["127.0.0.1:9093"],
             "tls": {"caSecretRef": {"name": "east-ca", "key": "ca.crt"}},
             "sasl": {"mechanism": "SCRAM-SHA-512", "secretRef": {"name": "payments-kafka"}}},
            {"name": "dc-west", "bootstrapServers": ["127.0.0.1:9094"]}
        ],
        "defaultCluster": "dc-east",
        "routes": [
            {"match": {"topicPrefix": "orders."}, "cluster": "dc-east", "failover": ["dc-west"]},
            {"match": {"topic": "audit"}, "cluster": "dc-west"}
        ]
    })
}

/// The CEL error text for a spec, or None when every rule passes.
fn cel_error(spec: Value) -> Option<String> {
    policy(spec).validate_cel().err().map(|e| e.to_string())
}

#[test]
fn checked_in_crd_yaml_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/kafkaproxypolicies.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == crd_yaml().unwrap(),
        "{path} is stale: regenerate it with `cargo run -p kproxy-api --bin crdgen > crds/kafkaproxypolicies.yaml`"
    );
}

#[test]
fn crd_identity_and_printer_columns() {
    let crd = KafkaProxyPolicy::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("kafkaproxypolicies.kproxy.dev"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["kpp".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Ready", "Reason", "Clusters", "Age", "Message"]);
    let message = version.additional_printer_columns.iter().flatten().find(|c| c.name == "Message").unwrap();
    assert_eq!(message.priority, Some(1), "Message shows with -o wide only");
    assert_eq!(crd.spec.names.categories, Some(vec!["kafka".to_string(), "kproxy".to_string()]));
}

/// `kubectl explain` shows each field's description: every property of every object in the schema needs one
/// (items of lists of plain values and map values are explained by their list's or map's own description).
#[test]
fn every_schema_field_is_documented() {
    let crd = serde_json::to_value(KafkaProxyPolicy::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
        if !path.is_empty() && node.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
            missing.push(path.to_string());
        }
        for (name, child) in node["properties"].as_object().into_iter().flatten() {
            walk(child, &format!("{path}.{name}"), missing);
        }
        for nested in [&node["items"], &node["additionalProperties"]] {
            if nested.get("properties").is_some() {
                walk(nested, &format!("{path}[]"), missing);
            }
        }
    }
    let mut missing = Vec::new();
    walk(schema, "", &mut missing);
    assert!(missing.is_empty(), "schema nodes without a description: {missing:#?}");
}

#[test]
fn schema_carries_minimums_enums_and_required_fields() {
    let yaml = crd_yaml().unwrap();
    let crd: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let quotas = &spec["properties"]["quotas"]["properties"];
    for rate in ["producerByteRate", "consumerByteRate", "requestRate"] {
        assert_eq!(quotas[rate]["minimum"].as_f64(), Some(1.0), "{rate}");
        assert_eq!(quotas["clientIdOverrides"]["items"]["properties"][rate]["minimum"].as_f64(), Some(1.0), "{rate}");
    }
    let rule = &spec["properties"]["acls"]["properties"]["rules"]["items"];
    let ops = rule["properties"]["operations"]["items"]["enum"].as_array().unwrap();
    assert!(ops.contains(&json!("Write")) && !ops.contains(&json!("Frobnicate")));
    assert_eq!(rule["properties"]["operations"]["minItems"], json!(1));
    assert!(rule["properties"]["effect"]["enum"].as_array().unwrap().contains(&json!("Allow")));
    let cluster = &spec["properties"]["clusters"]["items"];
    assert_eq!(cluster["required"], json!(["bootstrapServers", "name"]));
    let mechanisms = &cluster["properties"]["sasl"]["properties"]["mechanism"]["enum"];
    assert_eq!(mechanisms, &json!(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]));
    let secret_ref = &cluster["properties"]["sasl"]["properties"]["secretRef"]["properties"];
    assert_eq!(secret_ref["usernameKey"]["default"], json!("username"));
    assert_eq!(secret_ref["passwordKey"]["default"], json!("password"));
    assert_eq!(spec["required"], json!(["clusters"]));
}

#[test]
fn good_policy_passes_every_rule() {
    assert_eq!(cel_error(good_spec()), None);
}

#[test]
fn duplicate_cluster_names_are_named() {
    let mut spec = good_spec();
    spec["clusters"][1]["name"] = json!("dc-east");
    spec["routes"] = json!([]);
    let err = cel_error(spec).unwrap();
    assert!(err.contains("cluster names must be unique"), "{err}");
}

#[test]
fn unknown_default_cluster_is_named() {
    let mut spec = good_spec();
    spec["defaultCluster"] = json!("dc-north");
    let err = cel_error(spec).unwrap();
    assert!(err.contains("defaultCluster dc-north is not the name of any entry in spec.clusters"), "{err}");
}

#[test]
fn routes_to_unknown_clusters_are_named() {
    let mut spec = good_spec();
    spec["routes"][1]["cluster"] = json!("dc-south");
    let err = cel_error(spec).unwrap();
    assert!(err.contains("every route's cluster must be the name of an entry in spec.clusters"), "{err}");
}

#[test]
fn unknown_failover_clusters_are_named() {
    let mut spec = good_spec();
    spec["routes"][0]["failover"] = json!(["dc-west", "dc-moon"]);
    let err = cel_error(spec).unwrap();
    assert!(
        err.contains("every cluster in a route's failover list must be the name of an entry in spec.clusters"),
        "{err}"
    );
}

#[test]
fn failover_to_the_route_own_cluster_is_refused() {
    let mut spec = good_spec();
    spec["routes"][0]["failover"] = json!(["dc-east"]);
    let err = cel_error(spec).unwrap();
    assert!(err.contains("must not contain the route's own cluster"), "{err}");
}

#[test]
fn route_match_needs_exactly_one_field() {
    for matches in [json!({}), json!({"topic": "a", "group": "b"})] {
        let mut spec = good_spec();
        spec["routes"][0]["match"] = matches;
        let err = cel_error(spec).unwrap();
        assert!(err.contains("exactly one of topic, topicPrefix"), "{err}");
    }
}

#[test]
fn tls_client_certificate_rules() {
    let mut spec = good_spec();
    spec["clusters"][0]["tls"]["certSecretRef"] = json!({"name": "c", "key": "tls.crt"});
    assert!(cel_error(spec.clone()).unwrap().contains("certSecretRef and keySecretRef go together"));
    spec["clusters"][0]["tls"]["keySecretRef"] = json!({"name": "c", "key": "tls.key"});
    assert_eq!(cel_error(spec.clone()), None);
    spec["clusters"][0]["tls"]["clientSecretRef"] = json!({"name": "c"});
    assert!(cel_error(spec).unwrap().contains("either clientSecretRef or certSecretRef"));
}

#[test]
fn referenced_secrets_lists_each_secret_once() {
    let mut spec = good_spec();
    spec["clusters"][1]["tls"] = json!({
        "caSecretRef": {"name": "east-ca", "key": "ca.crt"},
        "clientSecretRef": {"name": "west-client"}
    });
    spec["clusters"][1]["sasl"] = json!({"mechanism": "OAUTHBEARER", "secretRef": {"name": "west-token"}});
    let spec: KafkaProxyPolicySpec = serde_json::from_value(spec).unwrap();
    assert_eq!(referenced_secrets(&spec), ["east-ca", "payments-kafka", "west-client", "west-token"]);
    let keys: Vec<_> = spec.secret_keys().into_iter().map(|u| format!("{}/{} {}", u.secret, u.key, u.field)).collect();
    assert_eq!(
        keys,
        [
            "east-ca/ca.crt spec.clusters[0].tls.caSecretRef",
            "payments-kafka/username spec.clusters[0].sasl.secretRef",
            "payments-kafka/password spec.clusters[0].sasl.secretRef",
            "east-ca/ca.crt spec.clusters[1].tls.caSecretRef",
            "west-client/tls.crt spec.clusters[1].tls.clientSecretRef",
            "west-client/tls.key spec.clusters[1].tls.clientSecretRef",
            "west-token/token spec.clusters[1].sasl.secretRef",
        ]
    );
    assert_eq!(secret_file("east-ca", "ca.crt"), "east-ca/ca.crt");
}
