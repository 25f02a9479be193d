//! Shows the test environment is real: kcat against every Kafka cluster (also over SASL_SSL), kube-rs and
//! kubectl against the apiserver.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kproxy_e2e::{env, unique};
use kube::api::{Api, DeleteParams, PostParams};

fn round_trip(brokers: &str, extra: &[String]) {
    let Some(env) = env() else { return };
    let topic = unique("env-roundtrip");
    let records: Vec<String> = (0..5).map(|i| format!("{topic}-record-{i}")).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    env.kcat_produce(brokers, &topic, &records, &extra).unwrap();
    let got = env.kcat_consume(brokers, &topic, records.len(), &extra).unwrap();
    assert_eq!(got, records, "records read back from {brokers} differ from those written");
}

#[test]
fn kcat_round_trip_on_east_west_and_legacy() {
    let Some(env) = env() else { return };
    for brokers in [env.kafka_east(), env.kafka_west(), env.kafka_legacy()] {
        round_trip(brokers, &[]);
    }
}

#[test]
fn kcat_round_trip_over_sasl_ssl_scram() {
    let Some(env) = env() else { return };
    for var in ["KPROXY_KAFKA_EAST_SASL", "KPROXY_KAFKA_WEST_SASL", "KPROXY_KAFKA_LEGACY_SASL"] {
        round_trip(env.var(var), &env.kcat_sasl_options());
    }
}

#[test]
fn sasl_ssl_refuses_a_wrong_password() {
    let Some(env) = env() else { return };
    let mut options = env.kcat_sasl_options();
    for o in options.iter_mut() {
        if o.starts_with("sasl.password=") {
            *o = "sasl.password=not-the-password".into();
        }
    }
    let mut cmd = env.command("kcat");
    cmd.args(["-b", env.var("KPROXY_KAFKA_EAST_SASL"), "-L", "-m", "5"]).args(&options);
    let out = kproxy_e2e::run_with_timeout(&mut cmd, None, Duration::from_secs(30)).unwrap();
    assert!(!out.status.success(), "metadata with a wrong password must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uthentication"), "expected an authentication error, got: {stderr}");
}

#[tokio::test]
async fn kube_rs_writes_and_reads_a_configmap_and_a_crd() {
    let Some(env) = env() else { return };
    let client = env.kube_client().await.unwrap();
    let ns = unique("env-kube");
    env.kubectl(&["create", "namespace", &ns]).unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "probe"},
        "data": {"config.yaml": "clusters: []\n"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let back = cms.get("probe").await.unwrap();
    assert_eq!(back.data.unwrap().get("config.yaml").map(String::as_str), Some("clusters: []\n"));

    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let group = format!("{}.env.kproxy.dev", unique("g").replace('-', ""));
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"size": {"type": "integer", "minimum": 1}}}}}}}]
        }
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let back = crds.get(&format!("widgets.{group}")).await.unwrap();
    assert_eq!(back.spec.group, group);
    crds.delete(&format!("widgets.{group}"), &DeleteParams::default()).await.unwrap();
    env.kubectl(&["delete", "namespace", &ns, "--wait=false"]).unwrap();
}

#[test]
fn kubectl_applies_a_manifest() {
    let Some(env) = env() else { return };
    let ns = unique("env-kubectl");
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: {ns}\ndata:\n  key: value\n"
    );
    let out = env.kubectl_apply(&manifest).unwrap();
    assert!(out.contains("configmap/applied created"), "unexpected kubectl output: {out}");
    let value = env.kubectl(&["get", "configmap", "applied", "-n", &ns, "-o", "jsonpath={.data.key}"]).unwrap();
    assert_eq!(value, "value");
    env.kubectl(&["delete", "namespace", &ns, "--wait=false"]).unwrap();
}
