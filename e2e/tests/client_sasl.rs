//! Applications configured for SASL keep working unchanged behind the sidecar: kcat and Kafka's Java producer
//! authenticate to the sidecar with SASL_PLAINTEXT (PLAIN with any credentials, OAUTHBEARER with any well-formed
//! token), the sidecar completes their handshake locally and reaches a plain broker and a SASL_SSL (SCRAM)
//! broker with its own settings; the records are read back straight from each broker.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kproxy_e2e::sidecar::{Sidecar, config, java};
use kproxy_e2e::{Env, env, run_with_timeout, unique};

const PLAIN: [&str; 8] = [
    "-X",
    "security.protocol=SASL_PLAINTEXT",
    "-X",
    "sasl.mechanisms=PLAIN",
    "-X",
    "sasl.username=x",
    "-X",
    "sasl.password=y",
];

/// The failed-authentication delay the SASL_SSL sidecar is configured with.
const FAILURE_DELAY_MS: u64 = 200;

/// The two upstreams: east's PLAINTEXT listener, and east's SASL_SSL listener with the environment's SCRAM user.
struct Upstreams {
    plain: Sidecar,
    sasl_ssl: Sidecar,
    _secrets: tempfile::TempDir,
}

fn sidecars(env: &Env) -> Result<Upstreams> {
    let plain = Sidecar::start(env, &config("east", env.kafka_east()), &[])?;
    let secrets = tempfile::tempdir()?;
    let files = [("username", env.var("KPROXY_KAFKA_USER")), ("password", env.var("KPROXY_KAFKA_PASSWORD"))];
    kproxy_e2e::kubelet::project(
        &secrets.path().join("east-kafka"),
        &files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    )?;
    let config = format!(
        "clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\n  tls: {{caFile: \"{}\"}}\n  sasl:\n    \
         mechanism: SCRAM-SHA-512\n    usernameFile: east-kafka/username\n    passwordFile: east-kafka/password\n\
         clientSasl: {{scram: true, failedAuthenticationDelayMs: {FAILURE_DELAY_MS}}}\n",
        env.var("KPROXY_KAFKA_EAST_SASL"),
        env.var("KPROXY_KAFKA_CA"),
    );
    let dir = secrets.path().display().to_string();
    let sasl_ssl = Sidecar::start(env, &config, &["--secrets-dir", &dir])?;
    Ok(Upstreams { plain, sasl_ssl, _secrets: secrets })
}

/// Consumes `count` records straight from the broker behind `sidecar` (not through it).
fn read_back(env: &Env, upstream_sasl: bool, topic: &str, count: usize, extra: &[&str]) -> Result<Vec<String>> {
    if upstream_sasl {
        let mut options = env.kcat_sasl_options();
        options.extend(extra.iter().map(|s| s.to_string()));
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        env.kcat_consume(env.var("KPROXY_KAFKA_EAST_SASL"), topic, count, &options)
    } else {
        env.kcat_consume(env.kafka_east(), topic, count, extra)
    }
}

#[test]
fn kcat_with_sasl_plain_and_oauthbearer_through_the_sidecar() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let up = sidecars(env)?;
    let oauth = [
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=OAUTHBEARER",
        "-X",
        "enable.sasl.oauthbearer.unsecure.jwt=true",
        "-X",
        "sasl.oauthbearer.config=principal=app",
    ];
    for (sidecar, upstream_sasl) in [(&up.plain, false), (&up.sasl_ssl, true)] {
        for (name, options) in [("plain", &PLAIN[..]), ("oauthbearer", &oauth[..])] {
            let topic = unique(&format!("client-sasl-{name}"));
            let lines: Vec<String> = (0..50).map(|i| format!("{name}-{i}")).collect();
            let mut produce = options.to_vec();
            produce.extend(["-X", "acks=all"]);
            env.kcat_produce(&sidecar.listen, &topic, &lines, &produce)?;
            assert_eq!(env.kcat_consume(&sidecar.listen, &topic, lines.len(), options)?, lines);
            assert_eq!(read_back(env, upstream_sasl, &topic, lines.len(), &[])?, lines, "{name} on the broker");
            eprintln!(
                "kcat {name} via the sidecar to east (upstream SASL_SSL: {upstream_sasl}): {} records",
                lines.len()
            );
        }
        let local = sidecar.metric("kproxy_requests_total", &["api=\"SaslAuthenticate\"", "result=\"local\""])?;
        assert!(local >= 4.0, "SaslAuthenticate answered by the sidecar: {local}");
    }
    Ok(())
}

#[test]
fn a_mechanism_the_sidecar_does_not_offer_fails_cleanly() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[])?;
    let started = Instant::now();
    let mut cmd = env.command("kcat");
    cmd.args(["-b", &sidecar.listen, "-L", "-m", "10"]).args([
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-512",
        "-X",
        "sasl.username=x",
        "-X",
        "sasl.password=y",
    ]);
    let out = kproxy_e2e::run_with_timeout(&mut cmd, None, Duration::from_secs(60))?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    eprintln!("kcat -L with SCRAM-SHA-512 after {:?}: {}", started.elapsed(), text.lines().last().unwrap_or_default());
    assert!(!out.status.success() || !text.contains("1 brokers:"), "{text}");
    assert!(text.contains("PLAIN") && text.contains("OAUTHBEARER"), "the client is told what is offered: {text}");
    Ok(())
}

fn java_config(dir: &Path, bootstrap: &str) -> Result<String> {
    let path = dir.join("producer.properties");
    std::fs::write(
        &path,
        format!(
            "bootstrap.servers={bootstrap}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
             username=\"app\" password=\"not-checked\";\nacks=all\nenable.idempotence=true\n"
        ),
    )?;
    Ok(path.display().to_string())
}

#[test]
fn java_producer_with_sasl_plain_through_the_sidecar() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let up = sidecars(env)?;
    let dir = tempfile::tempdir()?;
    for (sidecar, upstream_sasl) in [(&up.plain, false), (&up.sasl_ssl, true)] {
        let topic = unique("client-sasl-java");
        let records = 5_000;
        let mut produce = java(env, "org.apache.kafka.tools.ProducerPerformance");
        produce.args(["--topic", &topic, "--num-records", &records.to_string(), "--record-size", "200"]);
        produce.args(["--throughput", "-1", "--producer.config", &java_config(dir.path(), &sidecar.listen)?]);
        let out = env.run(&mut produce, Duration::from_secs(300))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains(&format!("{records} records sent")) {
            bail!(
                "ProducerPerformance (upstream SASL_SSL: {upstream_sasl}): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let offsets = read_back(env, upstream_sasl, &topic, records, &["-f", "%o\n"])?;
        assert_eq!(offsets.len(), records, "every record is on the broker");
        eprintln!(
            "Java PLAIN via the sidecar (upstream SASL_SSL: {upstream_sasl}): {}",
            text.lines().last().unwrap_or("")
        );
    }
    Ok(())
}

#[test]
fn kcat_with_scram_and_the_clusters_own_credentials_through_the_sidecar() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let up = sidecars(env)?;
    let scram = |password: &str| {
        ["security.protocol=SASL_PLAINTEXT", "sasl.mechanisms=SCRAM-SHA-512"]
            .into_iter()
            .map(str::to_string)
            .chain([format!("sasl.username={}", env.var("KPROXY_KAFKA_USER")), format!("sasl.password={password}")])
            .flat_map(|o| ["-X".to_string(), o])
            .collect::<Vec<_>>()
    };
    // The application keeps the SCRAM settings it used against the broker itself.
    let options = scram(env.var("KPROXY_KAFKA_PASSWORD"));
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let topic = unique("client-sasl-scram");
    let lines: Vec<String> = (0..50).map(|i| format!("scram-{i}")).collect();
    env.kcat_produce(&up.sasl_ssl.listen, &topic, &lines, &options)?;
    assert_eq!(env.kcat_consume(&up.sasl_ssl.listen, &topic, lines.len(), &options)?, lines);
    assert_eq!(read_back(env, true, &topic, lines.len(), &[])?, lines);

    // Any other password is refused by the sidecar, cleanly.
    let wrong = scram("not-the-password");
    let started = Instant::now();
    let mut cmd = env.command("kcat");
    cmd.args(["-b", &up.sasl_ssl.listen, "-L", "-m", "10"]).args(&wrong);
    let out = kproxy_e2e::run_with_timeout(&mut cmd, None, Duration::from_secs(60))?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "kcat -L with a wrong SCRAM password after {:?}: {}",
        started.elapsed(),
        text.lines().next().unwrap_or("")
    );
    assert!(!text.contains("1 brokers:") && text.contains("invalid credentials"), "{text}");
    Ok(())
}

/// Tries SCRAM-SHA-512 against the sidecar with each (user, password) given, a fresh librdkafka client each, and
/// prints one JSON line per attempt: the seconds until the client reported its first error, and that error.
const GUESSES: &str = r#"
import sys, json, time
from confluent_kafka.admin import AdminClient
bootstrap, attempts = sys.argv[1], json.loads(sys.argv[2])
for user, password in attempts:
    errors = []
    # The clock starts before the client exists: its threads connect and authenticate from the constructor on.
    started = time.monotonic()
    client = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                          "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
                          "reconnect.backoff.ms": 60000, "reconnect.backoff.max.ms": 60000,
                          "error_cb": lambda e: errors.append(e.str())})
    while not errors and time.monotonic() - started < 30:
        client.poll(0.005)
    print(json.dumps({"seconds": time.monotonic() - started, "error": errors[0] if errors else None}), flush=True)
    del client
"#;

#[test]
fn guessing_the_scram_password_is_slowed_and_fails_as_an_unknown_user_does() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let up = sidecars(env)?;
    let user = env.var("KPROXY_KAFKA_USER");
    let mut attempts: Vec<(String, String)> = (0..20).map(|i| (user.to_string(), format!("guess-{i}"))).collect();
    attempts.push(("nobody".to_string(), "guess".to_string()));
    let mut cmd = env.command(env.var("KPROXY_PYTHON"));
    cmd.arg("-c").arg(GUESSES).arg(&up.sasl_ssl.listen).arg(serde_json::to_string(&attempts)?);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(300))?;
    if !out.status.success() {
        bail!("guesses: {}", String::from_utf8_lossy(&out.stderr));
    }
    let results: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(results.len(), attempts.len(), "{results:?}");
    // librdkafka appends how long the attempt took: "(after 203ms in state AUTH_REQ)".
    let error = |r: &serde_json::Value| {
        let text = r["error"].as_str().unwrap_or_default();
        text.split(" (after ").next().unwrap_or_default().to_string()
    };
    let unknown_user = error(&results[20]);
    let guessed: f64 = results[..20].iter().filter_map(|r| r["seconds"].as_f64()).sum();
    let fastest = results[..20].iter().filter_map(|r| r["seconds"].as_f64()).fold(f64::MAX, f64::min);
    eprintln!(
        "20 wrong SCRAM passwords: {guessed:.2} s in all (fastest {fastest:.3} s, configured delay {FAILURE_DELAY_MS} \
         ms); unknown user: {:.3} s; error: {unknown_user}",
        results[20]["seconds"].as_f64().unwrap_or_default()
    );
    assert!(unknown_user.contains("invalid credentials with SASL mechanism SCRAM-SHA-512"), "{unknown_user}");
    for r in &results[..20] {
        assert_eq!(error(r), unknown_user, "a wrong password fails as an unknown user does");
    }
    // Every failure is answered no earlier than the configured delay after the client's last message.
    let delay = FAILURE_DELAY_MS as f64 / 1000.0;
    assert!(fastest >= delay, "an attempt failed in {fastest} s, before the {delay} s delay");
    assert!(guessed >= 20.0 * delay, "20 attempts took {guessed} s");
    let failed = up.sasl_ssl.metric("kproxy_requests_total", &["api=\"SaslAuthenticate\"", "result=\"local\""])?;
    assert!(failed >= 42.0, "two SaslAuthenticate answers per attempt: {failed}");
    Ok(())
}
