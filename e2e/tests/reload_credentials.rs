//! A policy edit naming a Secret the pod does not mount (Secret volumes are fixed when a pod starts): the sidecar
//! refuses the new config, keeps serving the last good one (records still flow), counts the refusal and logs the
//! Secret and that the pod must be restarted; once the Secret's files are there (as after a restart) the same
//! config is taken and traffic goes through the SASL_SSL listener it names.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use kproxy_e2e::sidecar::{Sidecar, config};
use kproxy_e2e::{env, kubelet, unique, wait_for};

#[test]
fn a_config_naming_a_secret_the_pod_lacks_is_refused_until_it_is_mounted() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let started = std::time::Instant::now();
    let secrets = tempfile::tempdir()?;
    let dir = secrets.path().display().to_string();
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--secrets-dir", &dir])?;
    let secret = unique("added-secret");
    let with_sasl = format!(
        "clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\n  tls: {{caFile: \"{}\"}}\n  sasl: \
         {{mechanism: SCRAM-SHA-512, usernameFile: {secret}/username, passwordFile: {secret}/password}}\n",
        env.var("KPROXY_KAFKA_EAST_SASL"),
        env.var("KPROXY_KAFKA_CA"),
    );
    sidecar.publish(&with_sasl)?;
    let refused = wait_for("the refusal", Duration::from_secs(30), || {
        let n = sidecar.metric("kproxy_config_missing_credentials_total", &[])?;
        Ok((n >= 1.0).then_some(n))
    })?;
    let log = sidecar.log_text();
    let line = log.lines().find(|l| l.contains("credential files")).unwrap_or_default().to_string();
    eprintln!("refused {refused} time(s): {line}");
    assert!(line.contains(&secret) && line.contains("restart the pod"), "{line}");
    assert_eq!(sidecar.metric("kproxy_config_generation", &[])?, 1.0, "the last good config keeps serving");
    let topic = unique("reload-credentials");
    let before: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &before, &[])?;
    eprintln!("{:?}: produced under the last good config", started.elapsed());

    // The Secret's files appear (a restarted pod mounts them) and the config is published again.
    let files = BTreeMap::from([
        ("username".to_string(), env.var("KPROXY_KAFKA_USER").to_string()),
        ("password".to_string(), env.var("KPROXY_KAFKA_PASSWORD").to_string()),
    ]);
    kubelet::project(&secrets.path().join(&secret), &files)?;
    sidecar.publish(&format!("{with_sasl}quotas: {{}}\n"))?;
    wait_for("the config with the Secret", Duration::from_secs(30), || {
        Ok((sidecar.metric("kproxy_config_generation", &[])? >= 2.0).then_some(()))
    })?;
    eprintln!("{:?}: the config with the Secret is served", started.elapsed());
    let after: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &after, &[])?;
    let mut got = env.kcat_consume(&sidecar.listen, &topic, 40, &[])?;
    eprintln!("{:?}: read back", started.elapsed());
    got.sort();
    let mut want: Vec<String> = before.into_iter().chain(after).collect();
    want.sort();
    assert_eq!(got, want, "records written before and after read back through the sidecar");
    assert_eq!(sidecar.metric("kproxy_config_missing_credentials_total", &[])?, refused, "no further refusal");
    Ok(())
}
