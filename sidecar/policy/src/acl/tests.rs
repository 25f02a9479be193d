//! Authorizer semantics: patterns, deny over allow, defaults and implied operations.

use kproxy_api::policy::{Acls, Action, Operation as Op, PatternType, Resource, ResourceType as Rt, Rule};

use super::Authorizer;

pub(crate) fn rule(kind: Rt, name: &str, pattern: PatternType, ops: &[Op], effect: Action) -> Rule {
    Rule {
        resource: Resource { kind, name: name.to_string(), pattern_type: pattern },
        operations: ops.to_vec(),
        effect,
    }
}

fn acls(default: Action, rules: Vec<Rule>) -> Authorizer {
    Authorizer::compile(&Acls { default_action: default, rules })
}

#[test]
fn literal_prefixed_and_wildcard_patterns_match_as_in_kafka() {
    let a = acls(
        Action::Deny,
        vec![
            rule(Rt::Topic, "audit", PatternType::Literal, &[Op::Write], Action::Allow),
            rule(Rt::Topic, "orders.", PatternType::Prefixed, &[Op::Read], Action::Allow),
            rule(Rt::Group, "*", PatternType::Literal, &[Op::Read], Action::Allow),
        ],
    );
    assert!(a.allows(Rt::Topic, "audit", Op::Write));
    assert!(!a.allows(Rt::Topic, "audit2", Op::Write), "a literal is not a prefix");
    assert!(a.allows(Rt::Topic, "orders.eu", Op::Read));
    assert!(a.allows(Rt::Topic, "orders.", Op::Read));
    assert!(!a.allows(Rt::Topic, "orders", Op::Read));
    assert!(!a.allows(Rt::Topic, "orders.eu", Op::Write));
    assert!(a.allows(Rt::Group, "anything", Op::Read));
    assert!(!a.allows(Rt::TransactionalId, "anything", Op::Write));
}

#[test]
fn deny_beats_allow_whatever_the_pattern() {
    let a = acls(
        Action::Allow,
        vec![
            rule(Rt::Topic, "*", PatternType::Literal, &[Op::All], Action::Allow),
            rule(Rt::Topic, "secret.", PatternType::Prefixed, &[Op::Read], Action::Deny),
            rule(Rt::Topic, "public", PatternType::Literal, &[Op::All], Action::Deny),
        ],
    );
    assert!(!a.allows(Rt::Topic, "secret.keys", Op::Read));
    assert!(a.allows(Rt::Topic, "secret.keys", Op::Describe), "a deny is never implied");
    assert!(!a.allows(Rt::Topic, "public", Op::Describe), "deny All denies everything");
    assert!(a.allows(Rt::Topic, "other", Op::Delete));
}

#[test]
fn default_action_applies_when_no_rule_matches() {
    let allow = acls(Action::Allow, vec![rule(Rt::Topic, "x", PatternType::Literal, &[Op::Write], Action::Deny)]);
    assert!(allow.allows(Rt::Topic, "y", Op::Write));
    assert!(allow.allows(Rt::Topic, "x", Op::Read));
    let deny = acls(Action::Deny, vec![]);
    assert!(!deny.allows(Rt::Topic, "y", Op::Describe));
    assert!(!deny.allows_cluster(Op::Create));
    assert!(Authorizer::allow_all().allows(Rt::Group, "g", Op::Delete));
}

#[test]
fn all_implies_every_operation_and_describe_is_implied_by_read_write_delete_alter() {
    let a = acls(
        Action::Deny,
        vec![
            rule(Rt::Topic, "all", PatternType::Literal, &[Op::All], Action::Allow),
            rule(Rt::Topic, "r", PatternType::Literal, &[Op::Read], Action::Allow),
            rule(Rt::Topic, "w", PatternType::Literal, &[Op::Write], Action::Allow),
            rule(Rt::Topic, "d", PatternType::Literal, &[Op::Delete], Action::Allow),
            rule(Rt::Topic, "a", PatternType::Literal, &[Op::Alter], Action::Allow),
            rule(Rt::Topic, "ac", PatternType::Literal, &[Op::AlterConfigs], Action::Allow),
            rule(Rt::Topic, "c", PatternType::Literal, &[Op::Create], Action::Allow),
        ],
    );
    for op in [Op::Read, Op::Write, Op::Create, Op::Delete, Op::Alter, Op::Describe, Op::AlterConfigs] {
        assert!(a.allows(Rt::Topic, "all", op), "{op:?}");
    }
    for name in ["r", "w", "d", "a"] {
        assert!(a.allows(Rt::Topic, name, Op::Describe), "{name}");
        assert!(!a.allows(Rt::Topic, name, Op::DescribeConfigs), "{name}");
    }
    assert!(a.allows(Rt::Topic, "ac", Op::DescribeConfigs));
    assert!(!a.allows(Rt::Topic, "ac", Op::Describe));
    assert!(!a.allows(Rt::Topic, "c", Op::Describe), "Create does not imply Describe");
    assert!(!a.allows(Rt::Topic, "r", Op::Write));
}

#[test]
fn cluster_rules_match_whatever_name_they_give() {
    let a = acls(
        Action::Deny,
        vec![rule(Rt::Cluster, "kafka-cluster", PatternType::Literal, &[Op::IdempotentWrite], Action::Allow)],
    );
    assert!(a.allows_cluster(Op::IdempotentWrite));
    assert!(!a.allows_cluster(Op::Alter));
}

#[test]
fn allows_any_finds_one_allowed_resource() {
    let a = acls(Action::Deny, vec![rule(Rt::Topic, "t.", PatternType::Prefixed, &[Op::Write], Action::Allow)]);
    assert!(a.allows_any(Rt::Topic, Op::Write));
    assert!(!a.allows_any(Rt::Topic, Op::Delete));
    let denied = acls(Action::Allow, vec![rule(Rt::Topic, "*", PatternType::Literal, &[Op::Write], Action::Deny)]);
    assert!(!denied.allows_any(Rt::Topic, Op::Write));
}

#[test]
fn multibyte_names_and_prefixes_do_not_panic() {
    let a = acls(Action::Deny, vec![rule(Rt::Topic, "é", PatternType::Prefixed, &[Op::Read], Action::Allow)]);
    assert!(a.allows(Rt::Topic, "éa", Op::Read));
    assert!(!a.allows(Rt::Topic, "a", Op::Read));
    let b = acls(Action::Deny, vec![rule(Rt::Topic, "a", PatternType::Prefixed, &[Op::Read], Action::Allow)]);
    assert!(!b.allows(Rt::Topic, "é", Op::Read));
}
