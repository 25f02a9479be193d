//! Protocol edges through the sidecar against the real brokers: Kafka's metadata-quorum tool sees only the
//! sidecar's addresses, ApiVersions offers what every routed cluster speaks (Kafka 4.1 and 3.9 together), and a
//! request at a version outside that range is answered UNSUPPORTED_VERSION per entity on a connection that stays
//! usable.

use std::time::Duration;

use kproxy_e2e::sidecar::{Sidecar, config, java};
use kproxy_e2e::{Env, env};

fn quorum(env: &Env, bootstrap: &str, what: &str) -> String {
    let mut cmd = java(env, "org.apache.kafka.tools.MetadataQuorumCommand");
    cmd.args(["--bootstrap-server", bootstrap, "describe", what]);
    let out = env.run(&mut cmd, Duration::from_secs(120)).unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ports in `host:port` endpoints of a quorum description ("CONTROLLER://127.0.0.1:31268").
fn endpoint_ports(text: &str) -> Vec<String> {
    text.split("://")
        .skip(1)
        .filter_map(|s| s.split(['"', ']', ',']).next()?.rsplit(':').next().map(str::to_string))
        .collect()
}

#[test]
fn metadata_quorum_tool_through_the_sidecar_shows_no_real_address() {
    let Some(env) = env() else { return };
    let direct = quorum(env, env.kafka_east(), "--status");
    let controller_ports = endpoint_ports(&direct);
    assert!(!controller_ports.is_empty(), "the broker shows its controllers directly:\n{direct}");
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    let status = quorum(env, &sidecar.listen, "--status");
    let replication = quorum(env, &sidecar.listen, "--replication");
    assert!(status.contains("LeaderId:") && status.contains("CurrentVoters:"), "{status}");
    assert!(replication.contains("NodeId") && replication.contains("Leader"), "{replication}");
    let real: Vec<String> = [env.kafka_east(), env.var("KPROXY_KAFKA_EAST_SASL")]
        .iter()
        .filter_map(|a| a.rsplit(':').next().map(str::to_string))
        .chain(controller_ports)
        .collect();
    for text in [&status, &replication] {
        for port in &real {
            assert!(!text.contains(&format!(":{port}")), "real port {port} leaked through the sidecar:\n{text}");
        }
    }
    eprintln!("through the sidecar:\n{status}{replication}");
}
