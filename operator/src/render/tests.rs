//! Rendering tests: a policy in, the sidecar config out, field by field.

use kproxy_api::config::{ClientSasl, Cluster, FailoverSettings, Sasl, SaslMechanism, SidecarConfig, Tls};
use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicySpec};
use kproxy_api::policy::{
    Acls, Action, ClientQuota, Operation, PatternType, Quotas, Resource, ResourceType, Route, RouteMatch, Rule,
};
use serde_json::{Value, json};

use super::render;

fn policy(spec: Value) -> KafkaProxyPolicy {
    let spec: KafkaProxyPolicySpec = serde_json::from_value(spec).unwrap();
    let mut p = KafkaProxyPolicy::new("payments", spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.generation = Some(7);
    p
}

fn full_spec() -> Value {
    json!({
        "podSelector": {"matchLabels": {"app": "payments"}},
        "clusters": [
            {"name": "dc-east", "bootstrapServers": ["kafka-east:9093", "kafka-east-2:9093"],
             "tls": {"caSecretRef": {"name": "east-ca", "key": "ca.crt"},
                     "certSecretRef": {"name": "east-client", "key": "client.pem"},
                     "keySecretRef": {"name": "east-client-key", "key": "client.key"},
                     "serverName": "kafka.east.example", "insecureSkipHostnameVerification": true},
             "sasl": {"mechanism": "SCRAM-SHA-512",
                      "secretRef": {"name": "payments-kafka", "usernameKey": "user", "passwordKey": "pass"}}},
            {"name": "dc-west", "bootstrapServers": ["kafka-west:9093"],
             "tls": {"caSecretRef": {"name": "west-ca", "key": "ca.crt"}, "clientSecretRef": {"name": "west-tls"}},
             "sasl": {"mechanism": "OAUTHBEARER", "secretRef": {"name": "west-token", "tokenKey": "jwt"}}},
            {"name": "legacy", "bootstrapServers": ["kafka-legacy:9092"],
             "sasl": {"mechanism": "PLAIN", "secretRef": {"name": "legacy-creds"}}}
        ],
        "defaultCluster": "dc-west",
        "routes": [
            {"match": {"topicPrefix": "orders."}, "cluster": "dc-east", "failover": ["dc-west"]},
            {"match": {"group": "audit-readers"}, "cluster": "legacy"}
        ],
        "acls": {"defaultAction": "Deny", "rules": [
            {"resource": {"type": "Topic", "name": "orders.", "patternType": "Prefixed"},
             "operations": ["Write", "Describe"], "effect": "Allow"}
        ]},
        "quotas": {"producerByteRate": 10485760, "consumerByteRate": 20971520, "requestRate": 500,
                   "clientIdOverrides": [{"clientId": "batch-loader", "producerByteRate": 52428800}]},
        "failover": {"unreachableAfterMs": 3000, "probeIntervalMs": 500},
        "clientSasl": {"scram": true, "failedAuthenticationDelayMs": 250}
    })
}

#[test]
fn every_field_is_rendered() {
    let config = render(&policy(full_spec())).unwrap();
    let expected = SidecarConfig {
        schema_version: kproxy_api::config::SCHEMA_VERSION.to_string(),
        policy: "shop/payments".into(),
        generation: 7,
        policy_uid: String::new(),
        rendered_at_ms: 0,
        clusters: vec![
            Cluster {
                name: "dc-east".into(),
                bootstrap_servers: vec!["kafka-east:9093".into(), "kafka-east-2:9093".into()],
                tls: Some(Tls {
                    ca_file: Some("east-ca/ca.crt".into()),
                    cert_file: Some("east-client/client.pem".into()),
                    key_file: Some("east-client-key/client.key".into()),
                    server_name: Some("kafka.east.example".into()),
                    insecure_skip_hostname_verification: true,
                }),
                sasl: Some(Sasl {
                    mechanism: SaslMechanism::ScramSha512,
                    username_file: Some("payments-kafka/user".into()),
                    password_file: Some("payments-kafka/pass".into()),
                    token_file: None,
                }),
            },
            Cluster {
                name: "dc-west".into(),
                bootstrap_servers: vec!["kafka-west:9093".into()],
                tls: Some(Tls {
                    ca_file: Some("west-ca/ca.crt".into()),
                    cert_file: Some("west-tls/tls.crt".into()),
                    key_file: Some("west-tls/tls.key".into()),
                    server_name: None,
                    insecure_skip_hostname_verification: false,
                }),
                sasl: Some(Sasl {
                    mechanism: SaslMechanism::OauthBearer,
                    username_file: None,
                    password_file: None,
                    token_file: Some("west-token/jwt".into()),
                }),
            },
            Cluster {
                name: "legacy".into(),
                bootstrap_servers: vec!["kafka-legacy:9092".into()],
                tls: None,
                sasl: Some(Sasl {
                    mechanism: SaslMechanism::Plain,
                    username_file: Some("legacy-creds/username".into()),
                    password_file: Some("legacy-creds/password".into()),
                    token_file: None,
                }),
            },
        ],
        default_cluster: Some("dc-west".into()),
        routes: vec![
            Route {
                matches: RouteMatch { topic_prefix: Some("orders.".into()), ..RouteMatch::default() },
                cluster: "dc-east".into(),
                failover: vec!["dc-west".into()],
            },
            Route {
                matches: RouteMatch { group: Some("audit-readers".into()), ..RouteMatch::default() },
                cluster: "legacy".into(),
                failover: vec![],
            },
        ],
        acls: Some(Acls {
            default_action: Action::Deny,
            rules: vec![Rule {
                resource: Resource {
                    kind: ResourceType::Topic,
                    name: "orders.".into(),
                    pattern_type: PatternType::Prefixed,
                },
                operations: vec![Operation::Write, Operation::Describe],
                effect: Action::Allow,
            }],
        }),
        quotas: Quotas {
            producer_byte_rate: Some(10_485_760),
            consumer_byte_rate: Some(20_971_520),
            request_rate: Some(500),
            client_id_overrides: vec![ClientQuota {
                client_id: "batch-loader".into(),
                producer_byte_rate: Some(52_428_800),
                consumer_byte_rate: None,
                request_rate: None,
            }],
        },
        failover: FailoverSettings { unreachable_after_ms: 3000, probe_interval_ms: 500 },
        client_sasl: ClientSasl { scram: true, failed_authentication_delay_ms: 250 },
    };
    assert_eq!(config, expected);
}

#[test]
fn rendered_yaml_is_what_the_sidecar_parses() {
    let config = render(&policy(full_spec())).unwrap();
    let yaml = config.to_yaml().unwrap();
    assert_eq!(SidecarConfig::parse(&yaml).unwrap(), config);
}

#[test]
fn minimal_policy_takes_defaults() {
    let config =
        render(&policy(json!({"clusters": [{"name": "east", "bootstrapServers": ["127.0.0.1:9092"]}]}))).unwrap();
    assert_eq!(config.default_cluster, None);
    assert_eq!(config.default_cluster_name(), "east");
    assert!(config.routes.is_empty());
    assert_eq!(config.acls, None, "no ACLs means everything is allowed");
    assert_eq!(config.quotas, Quotas::default());
    assert_eq!(config.failover, FailoverSettings::default());
    assert_eq!(config.clusters[0].tls, None);
    assert_eq!(config.clusters[0].sasl, None);
    assert_eq!(config.client_sasl, ClientSasl::default(), "local SCRAM off, Kafka's 100 ms failure delay");
    assert!(!config.client_sasl.scram);
    assert!(!config.to_yaml().unwrap().contains("clientSasl"), "defaults leave the rendering unchanged");
}

#[test]
fn oauthbearer_without_token_key_reads_token() {
    let mut spec = full_spec();
    spec["clusters"][1]["sasl"]["secretRef"] = json!({"name": "west-token"});
    let config = render(&policy(spec)).unwrap();
    assert_eq!(config.clusters[1].sasl.as_ref().unwrap().token_file.as_deref(), Some("west-token/token"));
}

#[test]
fn partial_failover_settings_keep_the_other_default() {
    let mut spec = full_spec();
    spec["failover"] = json!({"probeIntervalMs": 250});
    let config = render(&policy(spec)).unwrap();
    let defaults = FailoverSettings::default();
    assert_eq!(config.failover.unreachable_after_ms, defaults.unreachable_after_ms);
    assert_eq!(config.failover.probe_interval_ms, 250);
}

#[test]
fn every_problem_is_reported_with_its_spec_path() {
    let mut spec = full_spec();
    spec["clusters"][2]["bootstrapServers"] = json!(["kafka-legacy:99999"]);
    spec["routes"][1]["cluster"] = json!("dc-moon");
    spec["defaultCluster"] = json!("dc-sun");
    spec["quotas"]["clientIdOverrides"] =
        json!([{"clientId": "a", "requestRate": 1}, {"clientId": "a", "requestRate": 2}]);
    let problems = render(&policy(spec)).unwrap_err();
    let all = problems.join("\n");
    for needle in [
        "spec.clusters[2].bootstrapServers[0]: \"kafka-legacy:99999\" is not host:port",
        "spec.routes[1].cluster: \"dc-moon\" is not one of the clusters",
        "spec.defaultCluster: \"dc-sun\" is not one of the clusters",
        "spec.quotas.clientIdOverrides[1].clientId: duplicate \"a\"",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in\n{all}");
    }
}
