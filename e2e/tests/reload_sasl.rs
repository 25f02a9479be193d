//! Credentials are read from mounted Secret files: when the broker's password for the sidecar's user changes and
//! the Secret is updated, new upstream connections authenticate with the new password while the existing ones
//! keep serving.

use std::collections::BTreeMap;
use std::time::Duration;

use kproxy_e2e::sidecar::{Sidecar, java, sum_series};
use kproxy_e2e::{Env, env, kubelet, unique};

fn set_password(env: &Env, user: &str, password: &str) {
    let mut cmd = java(env, "kafka.admin.ConfigCommand");
    cmd.args(["--bootstrap-server", env.var("KPROXY_KAFKA_EAST_SASL")])
        .args(["--command-config", env.var("KPROXY_KAFKA_SASL_PROPERTIES")])
        .args(["--alter", "--entity-type", "users", "--entity-name", user])
        .args(["--add-config", &format!("SCRAM-SHA-512=[password={password}]")]);
    env.run(&mut cmd, Duration::from_secs(120)).unwrap();
    // SCRAM credentials reach the broker's cache through the metadata log: give it a moment.
    std::thread::sleep(Duration::from_secs(2));
}

fn publish_secret(dir: &std::path::Path, user: &str, password: &str) {
    let files =
        BTreeMap::from([("username".to_string(), user.to_string()), ("password".to_string(), password.to_string())]);
    kubelet::project(dir, &files).unwrap();
}

#[test]
fn a_rotated_sasl_password_is_used_by_new_upstream_connections() {
    let Some(env) = env() else { return };
    let user = unique("rotating-user");
    let (old, new) = (unique("pw-old"), unique("pw-new"));
    set_password(env, &user, &old);
    let secrets = std::env::temp_dir().join(unique("reload-sasl-secrets"));
    publish_secret(&secrets.join("creds"), &user, &old);
    let config = format!(
        "clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\n  tls: {{caFile: \"{}\"}}\n  sasl: \
         {{mechanism: SCRAM-SHA-512, usernameFile: creds/username, passwordFile: creds/password}}\n",
        env.var("KPROXY_KAFKA_EAST_SASL"),
        env.var("KPROXY_KAFKA_CA")
    );
    let sidecar = Sidecar::start(env, &config, &["--secrets-dir", secrets.to_str().unwrap()]).unwrap();
    let topic = unique("reload-sasl");
    env.kcat_produce(&sidecar.listen, &topic, &["before".to_string()], &[]).unwrap();
    let opened = || sum_series(&sidecar.metrics().unwrap(), "kproxy_upstream_connections_opened_total", &[]);
    let opened_before = opened();

    set_password(env, &user, &new);
    publish_secret(&secrets.join("creds"), &user, &new);
    // The pooled connections authenticated with the old password keep working.
    env.kcat_produce(&sidecar.listen, &topic, &["after".to_string()], &[]).unwrap();
    // A consumer's long-poll fetches need connections of their own: they are opened with the new password.
    let got = env.kcat_consume(&sidecar.listen, &topic, 2, &[]).unwrap();
    assert_eq!(got, ["before", "after"]);
    assert!(opened() > opened_before, "the consumer needed new upstream connections");
    let log = sidecar.log_text();
    assert!(!log.contains("authentication failed"), "no upstream authentication failed:\n{log}");
    let _ = std::fs::remove_dir_all(&secrets);
}
