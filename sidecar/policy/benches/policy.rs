//! Cost of the per-request policy: an ACL decision over 100 rules, a whole Produce authorization, and routing.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, RequestKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kproxy_api::config::SidecarConfig;
use kproxy_api::policy::{Acls, Action, Operation, PatternType, Resource, ResourceType, Rule};
use kproxy_policy::route::{Health, Kind, Routes};
use kproxy_policy::{Authorizer, authorize};

/// 100 rules: literal and prefixed topics and groups, a few denies, as a busy policy would have.
fn hundred_rules() -> Acls {
    let mut rules = Vec::new();
    for i in 0..100 {
        let (kind, pattern) = match i % 4 {
            0 => (ResourceType::Topic, PatternType::Literal),
            1 => (ResourceType::Topic, PatternType::Prefixed),
            2 => (ResourceType::Group, PatternType::Prefixed),
            _ => (ResourceType::Topic, PatternType::Prefixed),
        };
        rules.push(Rule {
            resource: Resource { kind, name: format!("team{i}.app{}", i % 7), pattern_type: pattern },
            operations: vec![Operation::Write, Operation::Read],
            effect: if i % 10 == 9 { Action::Deny } else { Action::Allow },
        });
    }
    Acls { default_action: Action::Deny, rules }
}

fn acl(c: &mut Criterion) {
    let authorizer = Authorizer::compile(&hundred_rules());
    c.bench_function("acl_decision_100_rules", |b| {
        b.iter(|| authorizer.allows(ResourceType::Topic, black_box("team41.app6.orders"), Operation::Write))
    });
    let request = ProduceRequest::default().with_acks(-1).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("team41.app6.orders")))
            .with_partition_data(vec![PartitionProduceData::default()]),
    ]);
    c.bench_function("authorize_produce_one_topic", |b| {
        b.iter_batched(
            || RequestKind::Produce(request.clone()),
            |mut r| authorize(&authorizer, &(), 9, &mut r),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn routing(c: &mut Criterion) {
    let mut text = String::from(
        "clusters:\n- {name: east, bootstrapServers: [\"127.0.0.1:1\"]}\n- {name: west, bootstrapServers: [\"127.0.0.1:2\"]}\nroutes:\n",
    );
    for i in 0..50 {
        text.push_str(&format!("- {{match: {{topicPrefix: \"svc{i}.\"}}, cluster: west, failover: [east]}}\n"));
        text.push_str(&format!("- {{match: {{topic: \"exact{i}\"}}, cluster: west}}\n"));
    }
    let routes = Routes::compile(&SidecarConfig::parse(&text).unwrap());
    let health = Health::new(Duration::from_secs(5));
    c.bench_function("route_topic_100_routes", |b| {
        b.iter(|| routes.cluster(Kind::Topic, black_box("svc42.payments"), &health).len())
    });
}

criterion_group!(benches, acl, routing);
criterion_main!(benches);
