//! A reload reaches connections that are already open: the next produce on the same connection is refused once
//! its topic is denied, and accepted again once the topic is allowed again.

use std::net::TcpStream;
use std::time::Duration;

use kproxy_e2e::sidecar::{Sidecar, create_topic_on_first_broker, sum_series};
use kproxy_e2e::{env, unique, wait_for};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

fn config(bootstrap: &str, deny: Option<&str>) -> String {
    let mut text = format!("clusters:\n- name: east\n  bootstrapServers: [\"{bootstrap}\"]\n");
    if let Some(topic) = deny {
        text += &format!(
            "acls:\n  defaultAction: Allow\n  rules:\n  - resource: {{type: Topic, name: \"{topic}\"}}\n    \
             operations: [Write]\n    effect: Deny\n"
        );
    }
    text
}

/// One Produce on an existing connection; returns the partition's error code.
fn produce(stream: &mut TcpStream, correlation_id: i32, topic: &str) -> i16 {
    let response = kproxy_e2e::wire::produce(stream, correlation_id, "reload-e2e", &[(topic, "v")]).unwrap();
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn a_topic_denied_by_a_reload_is_refused_on_the_next_produce_of_an_open_connection() {
    let Some(env) = env() else { return };
    let bootstrap = env.kafka_east();
    let topic = unique("reload-acl");
    create_topic_on_first_broker(env, bootstrap, &topic, 1, &[]).unwrap();
    let sidecar = Sidecar::start(env, &config(bootstrap, None), &[]).unwrap();
    env.kcat_produce(&sidecar.listen, &topic, &["first".to_string()], &[]).unwrap();
    let mut stream = TcpStream::connect(&sidecar.listen).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(produce(&mut stream, 1, &topic), 0);
    let accepted = || sum_series(&sidecar.metrics().unwrap(), "kproxy_client_connections_accepted_total", &[]);
    let accepted_before = accepted();
    let mut generation = 1.0;
    for (step, deny) in [(2, true), (3, false), (4, true), (5, false)] {
        sidecar.publish(&config(bootstrap, deny.then_some(topic.as_str()))).unwrap();
        generation += 1.0;
        wait_for("the reload", Duration::from_secs(10), || {
            Ok((sum_series(&sidecar.metrics()?, "kproxy_config_generation", &[]) >= generation).then_some(()))
        })
        .unwrap();
        let code = produce(&mut stream, step, &topic);
        let want = if deny { TOPIC_AUTHORIZATION_FAILED } else { 0 };
        assert_eq!(code, want, "step {step}: produce on the same connection after the reload");
    }
    assert_eq!(accepted(), accepted_before, "every step ran on the one connection; nothing reconnected");
}
