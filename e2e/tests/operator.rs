//! The operator against the real kube-apiserver: policies become ConfigMaps and status, bad policies are refused
//! or reported, drift is repaired, and a standby replica takes over from a stopped leader.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kproxy_api::config::{SidecarConfig, config_hash};
use kproxy_e2e::operator::{Operator, OperatorOptions, create_namespace, get_json, install_crd, try_apply};
use kproxy_e2e::{Env, env, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn policy(ns: &str, name: &str, quota: u64, east_bootstrap: &str) -> String {
    format!(
        r#"apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: payments}}}}
  clusters:
    - name: dc-east
      bootstrapServers: ["{east_bootstrap}"]
      sasl: {{mechanism: SCRAM-SHA-512, secretRef: {{name: payments-kafka}}}}
    - name: dc-west
      bootstrapServers: ["127.0.0.1:9094"]
  defaultCluster: dc-east
  routes:
    - match: {{topicPrefix: "orders."}}
      cluster: dc-east
      failover: [dc-west]
    - match: {{topic: audit}}
      cluster: dc-west
  acls:
    defaultAction: Deny
    rules:
      - resource: {{type: Topic, name: "orders.", patternType: Prefixed}}
        operations: [Write, Describe]
        effect: Allow
  quotas: {{producerByteRate: {quota}}}
"#
    )
}

fn create_secret(env: &Env, ns: &str) -> Result<()> {
    env.kubectl(&[
        "create",
        "secret",
        "generic",
        "payments-kafka",
        "-n",
        ns,
        "--from-literal=username=kproxy",
        "--from-literal=password=secret",
    ])?;
    Ok(())
}

/// The policy's Ready condition: (status, reason, message).
fn ready(env: &Env, ns: &str, name: &str) -> Result<Option<(String, String, String)>> {
    let Some(p) = get_json(env, ns, "kafkaproxypolicy", name)? else { return Ok(None) };
    let conditions = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
    Ok(conditions.iter().find(|c| c["type"] == "Ready").map(|c| {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (s("status"), s("reason"), s("message"))
    }))
}

fn status(env: &Env, ns: &str, name: &str) -> Result<Value> {
    Ok(get_json(env, ns, "kafkaproxypolicy", name)?.map(|p| p["status"].clone()).unwrap_or(Value::Null))
}

/// The rendered config text in the policy's ConfigMap.
fn config_text(env: &Env, ns: &str, name: &str) -> Result<Option<String>> {
    Ok(get_json(env, ns, "configmap", &format!("{name}-kproxy"))?
        .and_then(|cm| cm["data"]["config.yaml"].as_str().map(str::to_string)))
}

/// Waits until the policy is Ready=True for `generation` and returns the ConfigMap's config text.
fn wait_ready(env: &Env, ns: &str, name: &str, generation: i64) -> Result<String> {
    wait_for(&format!("policy {ns}/{name} Ready at generation {generation}"), WAIT, || {
        let st = status(env, ns, name)?;
        let is_ready = ready(env, ns, name)?.is_some_and(|(s, _, _)| s == "True");
        if !is_ready || st["observedGeneration"] != generation {
            return Ok(None);
        }
        let Some(text) = config_text(env, ns, name)? else { return Ok(None) };
        Ok((st["configHash"].as_str() == Some(config_hash(&text).as_str())).then_some(text))
    })
}

fn setup(prefix: &str) -> Result<Option<(&'static Env, String, Cleanup)>> {
    let Some(env) = env() else { return Ok(None) };
    install_crd(env)?;
    let ns = create_namespace(env, prefix)?;
    Ok(Some((env, ns.clone(), Cleanup(env, ns))))
}

/// Deletes the test's namespace when the test ends, passed or failed.
struct Cleanup(&'static Env, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&["delete", "namespace", &self.1, "--wait=false"]);
    }
}

#[test]
fn policy_becomes_configmap_and_status_and_follows_edits_and_deletion() -> Result<()> {
    let Some((env, ns, _cleanup)) = setup("op-life")? else { return Ok(()) };
    let operator = Operator::start(env, &OperatorOptions::new(&ns, "life"))?;

    // Applied before its Secret exists: the ConfigMap is written, status says which Secret is missing.
    env.kubectl_apply(&policy(&ns, "payments", 10_485_760, "127.0.0.1:9093"))?;
    let (_, reason, message) = wait_for("SecretNotFound", WAIT, || {
        Ok(ready(env, &ns, "payments")?.filter(|(s, r, _)| s == "False" && r == "SecretNotFound"))
    })?;
    assert!(message.contains("payments-kafka") && message.contains("spec.clusters[0].sasl.secretRef"), "{message}");
    assert_eq!(reason, "SecretNotFound");

    let started = Instant::now();
    create_secret(env, &ns)?;
    let text = wait_ready(env, &ns, "payments", 1)?;
    eprintln!("Ready after the Secret appeared: {:?}", started.elapsed());
    let config = SidecarConfig::parse(&text)?;
    assert_eq!(config.policy, format!("{ns}/payments"));
    assert_eq!(config.generation, 1);
    assert_eq!(config.clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["dc-east", "dc-west"]);
    let sasl = config.clusters[0].sasl.as_ref().unwrap();
    assert_eq!(sasl.username_file.as_deref(), Some("payments-kafka/username"));
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.quotas.producer_byte_rate, Some(10_485_760));
    let st = status(env, &ns, "payments")?;
    assert_eq!(st["configMapName"], "payments-kproxy");
    let cm = get_json(env, &ns, "configmap", "payments-kproxy")?.unwrap();
    assert_eq!(cm["metadata"]["annotations"]["kproxy.dev/config-hash"], st["configHash"]);
    let owner = &cm["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["controller"].as_bool()), (Some("KafkaProxyPolicy"), Some(true)));
    let table = env.kubectl(&["get", "kpp", "-n", &ns])?;
    assert!(table.contains("READY") && table.contains("True") && table.contains("dc-east,dc-west"), "{table}");

    // An edit: the ConfigMap and the hash follow.
    let old_hash = st["configHash"].clone();
    env.kubectl_apply(&policy(&ns, "payments", 2_000_000, "127.0.0.1:9093"))?;
    let text = wait_ready(env, &ns, "payments", 2)?;
    assert_eq!(SidecarConfig::parse(&text)?.quotas.producer_byte_rate, Some(2_000_000));
    assert_ne!(status(env, &ns, "payments")?["configHash"], old_hash);
    assert!(operator.metric("kproxy_operator_reconciles_total{result=\"ready\"}")? >= 2.0);
    assert_eq!(operator.metric("kproxy_operator_policies{ready=\"true\"}")?, 1.0);
    assert!(operator.metric("kproxy_operator_reconcile_duration_seconds_count")? >= 3.0);

    // `kubectl describe` tells the story: a warning naming the missing Secret, then the rendering (repeated
    // renderings are folded into one Event series by the recorder).
    let events = wait_for("Events on the policy", WAIT, || {
        let out = env.kubectl(&["get", "events", "-n", &ns, "--field-selector", "involvedObject.name=payments"])?;
        Ok((out.contains("SecretNotFound") && out.contains("Rendered")).then_some(out))
    })?;
    assert!(events.contains("Warning") && events.contains("payments-kafka"), "{events}");

    // Deletion: the ConfigMap goes with the policy (owner-reference garbage collection).
    env.kubectl(&["delete", "kpp", "payments", "-n", &ns])?;
    wait_for("the ConfigMap to be garbage-collected", Duration::from_secs(60), || {
        Ok(get_json(env, &ns, "configmap", "payments-kproxy")?.is_none().then_some(()))
    })?;
    wait_for("the policy gauge to drop", WAIT, || {
        Ok((operator.metric("kproxy_operator_policies{ready=\"true\"}")? == 0.0).then_some(()))
    })?;
    Ok(())
}

#[test]
fn apiserver_refuses_policies_the_schema_can_judge() -> Result<()> {
    let Some((env, ns, _cleanup)) = setup("op-schema")? else { return Ok(()) };
    let good = policy(&ns, "p", 100, "127.0.0.1:9093");
    let cases: [(&str, String, &[&str]); 5] = [
        ("negative quota", good.replace("producerByteRate: 100", "producerByteRate: -5"), &["producerByteRate"]),
        ("zero quota", good.replace("producerByteRate: 100", "producerByteRate: 0"), &["producerByteRate", "1"]),
        (
            "unknown operation",
            good.replace("[Write, Describe]", "[Write, Frobnicate]"),
            &["Frobnicate", "Unsupported value"],
        ),
        (
            "route to an undefined cluster",
            good.replace("cluster: dc-west\n", "cluster: dc-moon\n"),
            &["every route's cluster must be the name of an entry in spec.clusters"],
        ),
        (
            "route matching two things",
            good.replace("{topic: audit}", "{topic: audit, group: audit}"),
            &["exactly one of topic, topicPrefix"],
        ),
    ];
    for (what, manifest, needles) in cases {
        match try_apply(env, &manifest)? {
            Ok(out) => bail!("the apiserver accepted a policy with a {what}: {out}"),
            Err(err) => {
                for needle in needles {
                    assert!(err.contains(needle), "refusal of {what} does not mention {needle:?}: {err}");
                }
                eprintln!("{what}: {}", err.trim());
            }
        }
    }
    let dup = good.replace("name: dc-west\n      bootstrapServers", "name: dc-east\n      bootstrapServers");
    let err = try_apply(env, &dup)?.expect_err("duplicate cluster names must be refused");
    assert!(err.contains("cluster names must be unique"), "{err}");
    assert!(try_apply(env, &good)?.is_ok(), "the good policy itself is accepted");
    Ok(())
}

#[test]
fn invalid_edit_keeps_the_last_good_configmap() -> Result<()> {
    let Some((env, ns, _cleanup)) = setup("op-invalid")? else { return Ok(()) };
    create_secret(env, &ns)?;
    let _operator = Operator::start(env, &OperatorOptions::new(&ns, "invalid"))?;
    env.kubectl_apply(&policy(&ns, "payments", 1000, "127.0.0.1:9093"))?;
    let good_text = wait_ready(env, &ns, "payments", 1)?;
    let good_hash = status(env, &ns, "payments")?["configHash"].clone();

    // Passes the schema (host:port shape) but no sidecar could use it: port out of range.
    env.kubectl_apply(&policy(&ns, "payments", 1000, "127.0.0.1:99999"))?;
    let (_, _, message) = wait_for("Ready=False InvalidPolicy", WAIT, || {
        Ok(ready(env, &ns, "payments")?.filter(|(s, r, _)| s == "False" && r == "InvalidPolicy"))
    })?;
    eprintln!("InvalidPolicy message: {message}");
    assert!(message.contains("spec.clusters[0].bootstrapServers[0]"), "{message}");
    assert!(message.contains("payments-kproxy keeps the last good config"), "{message}");
    let st = status(env, &ns, "payments")?;
    assert_eq!(st["observedGeneration"], 2);
    assert_eq!(st["configHash"], good_hash);
    assert_eq!(config_text(env, &ns, "payments")?.as_deref(), Some(good_text.as_str()));

    env.kubectl_apply(&policy(&ns, "payments", 1000, "127.0.0.1:9095"))?;
    let text = wait_ready(env, &ns, "payments", 3)?;
    assert!(text.contains("127.0.0.1:9095"));
    Ok(())
}

#[test]
fn configmap_edits_and_deletion_are_undone() -> Result<()> {
    let Some((env, ns, _cleanup)) = setup("op-drift")? else { return Ok(()) };
    create_secret(env, &ns)?;
    let _operator = Operator::start(env, &OperatorOptions::new(&ns, "drift"))?;
    env.kubectl_apply(&policy(&ns, "payments", 1000, "127.0.0.1:9093"))?;
    let good = wait_ready(env, &ns, "payments", 1)?;

    let patch = r#"{"data":{"config.yaml":"clusters: []\n"}}"#;
    env.kubectl(&["patch", "configmap", "payments-kproxy", "-n", &ns, "--type=merge", "-p", patch])?;
    let started = Instant::now();
    wait_for("the hand edit to be undone", WAIT, || {
        Ok((config_text(env, &ns, "payments")?.as_deref() == Some(good.as_str())).then_some(()))
    })?;
    eprintln!("hand edit undone after {:?}", started.elapsed());

    env.kubectl(&["delete", "configmap", "payments-kproxy", "-n", &ns])?;
    let started = Instant::now();
    wait_for("the deleted ConfigMap to come back", WAIT, || {
        Ok((config_text(env, &ns, "payments")?.as_deref() == Some(good.as_str())).then_some(()))
    })?;
    eprintln!("deleted ConfigMap recreated after {:?}", started.elapsed());
    Ok(())
}

#[test]
fn standby_takes_over_when_the_leader_stops() -> Result<()> {
    let Some((env, ns, _cleanup)) = setup("op-leader")? else { return Ok(()) };
    create_secret(env, &ns)?;
    let a = Operator::start(env, &OperatorOptions::new(&ns, "replica-a"))?;
    let b = Operator::start(env, &OperatorOptions::new(&ns, "replica-b"))?;
    wait_for("one leader", WAIT, || Ok((a.is_leader() || b.is_leader()).then_some(())))?;
    let (mut leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };
    env.kubectl_apply(&policy(&ns, "payments", 1000, "127.0.0.1:9093"))?;
    wait_ready(env, &ns, "payments", 1)?;
    assert!(!standby.is_leader(), "both replicas claim the Lease");
    assert_eq!(standby.reconciles(), 0.0, "the standby reconciled");
    assert!(leader.reconciles() >= 1.0);

    // A crash: the Lease must expire (4 s here) before the standby may take over.
    let killed = Instant::now();
    leader.kill();
    wait_for("the standby to take over after a crash", WAIT, || Ok(standby.is_leader().then_some(())))?;
    let crash_takeover = killed.elapsed();
    env.kubectl_apply(&policy(&ns, "payments", 2000, "127.0.0.1:9093"))?;
    wait_ready(env, &ns, "payments", 2)?;
    assert!(standby.reconciles() >= 1.0);

    // A graceful stop: the leader releases the Lease, so a new standby takes over at its next retry.
    let third = Operator::start(env, &OperatorOptions::new(&ns, "replica-c"))?;
    std::thread::sleep(Duration::from_secs(2));
    assert!(!third.is_leader() && standby.is_leader(), "a newcomer must not take a held Lease");
    let mut old = standby;
    let stopped = Instant::now();
    let exit = old.terminate()?;
    assert!(exit.success(), "SIGTERM exit: {exit}; {}", old.log_text());
    wait_for("the newcomer to take over after SIGTERM", WAIT, || Ok(third.is_leader().then_some(())))?;
    let graceful_takeover = stopped.elapsed();
    eprintln!(
        "takeover after SIGKILL: {crash_takeover:?} (lease 4 s, renew 1 s); after SIGTERM: {graceful_takeover:?}"
    );
    assert!(old.log_text().contains("released the leader Lease"), "{}", old.log_text());
    env.kubectl_apply(&policy(&ns, "payments", 3000, "127.0.0.1:9093"))?;
    wait_ready(env, &ns, "payments", 3)?;
    Ok(())
}
