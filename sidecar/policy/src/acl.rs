//! The ACL authorizer: compiled rules answering "may this pod do operation O on resource R?" with Kafka semantics.
//!
//! Semantics follow Kafka's `StandardAuthorizer`: a matching Deny beats any Allow; `All` in a rule covers every
//! operation; an allowed Read, Write, Delete or Alter implies Describe and an allowed AlterConfigs implies
//! DescribeConfigs (implication never applies to Deny). A resource and operation no rule matches gets the default
//! action. Rules are indexed by resource type, literal names in a hash map and prefixes by length, so a decision
//! costs a few hash lookups whatever the number of rules.

pub mod table;

use std::collections::HashMap;
use std::sync::Arc;

use kproxy_api::policy::{Acls, Action, Operation, PatternType, ResourceType};

/// The name Kafka gives the single cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// A set of operations as a bit mask: cheap to merge and test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ops(u16);

impl Ops {
    fn of(ops: &[Operation]) -> Self {
        Ops(ops.iter().fold(0, |acc, op| acc | bit(*op)))
    }

    fn union(self, other: Ops) -> Ops {
        Ops(self.0 | other.0)
    }

    fn contains(self, op: Operation) -> bool {
        self.0 & (bit(op) | bit(Operation::All)) != 0
    }

    /// Whether an Allow set grants `op`, counting Kafka's implied operations.
    fn grants(self, op: Operation) -> bool {
        self.contains(op)
            || match op {
                Operation::Describe => {
                    self.0
                        & (bit(Operation::Read)
                            | bit(Operation::Write)
                            | bit(Operation::Delete)
                            | bit(Operation::Alter))
                        != 0
                }
                Operation::DescribeConfigs => self.0 & bit(Operation::AlterConfigs) != 0,
                _ => false,
            }
    }
}

fn bit(op: Operation) -> u16 {
    1 << (op as u16)
}

/// Allowed and denied operations for one resource pattern.
#[derive(Clone, Copy, Debug, Default)]
struct Grants {
    allow: Ops,
    deny: Ops,
}

impl Grants {
    fn add(&mut self, effect: Action, ops: Ops) {
        match effect {
            Action::Allow => self.allow = self.allow.union(ops),
            Action::Deny => self.deny = self.deny.union(ops),
        }
    }

    fn merge(&mut self, other: &Grants) {
        self.allow = self.allow.union(other.allow);
        self.deny = self.deny.union(other.deny);
    }
}

/// The rules for one resource type.
#[derive(Clone, Debug, Default)]
struct Index {
    /// Rules naming `*`.
    wildcard: Grants,
    literal: HashMap<Box<str>, Grants>,
    prefixed: HashMap<Box<str>, Grants>,
    /// Distinct prefix lengths in bytes, so a lookup tries each length once instead of scanning every prefix.
    prefix_lengths: Vec<usize>,
}

impl Index {
    fn lookup(&self, name: &str) -> Grants {
        let mut grants = self.wildcard;
        if let Some(g) = self.literal.get(name) {
            grants.merge(g);
        }
        for &len in &self.prefix_lengths {
            if len > name.len() {
                break;
            }
            if let Some(g) = name.get(..len).and_then(|p| self.prefixed.get(p)) {
                grants.merge(g);
            }
        }
        grants
    }
}

/// Compiled ACLs; cheap to query per request.
#[derive(Clone, Debug)]
pub struct Authorizer {
    default: Action,
    /// Indexed by `ResourceType as usize`; shared so that merges holding on to the ACLs clone cheaply.
    by_type: Arc<[Index; 4]>,
    /// No rules and a default of Allow: nothing needs checking.
    open: bool,
}

impl Default for Authorizer {
    /// No ACLs configured: everything is allowed.
    fn default() -> Self {
        Self::allow_all()
    }
}

impl Authorizer {
    /// An authorizer without rules whose default is Allow (used when the policy has no `acls`).
    pub fn allow_all() -> Self {
        Self { default: Action::Allow, by_type: Default::default(), open: true }
    }

    /// Compiles the policy's ACLs.
    pub fn compile(acls: &Acls) -> Self {
        let mut by_type: [Index; 4] = Default::default();
        for rule in &acls.rules {
            let index = &mut by_type[rule.resource.kind as usize];
            let ops = Ops::of(&rule.operations);
            let name = rule.resource.name.as_str();
            let slot = if rule.resource.kind == ResourceType::Cluster || name == "*" {
                // A cluster has one instance, so any name a rule gives it means that instance.
                &mut index.wildcard
            } else {
                match rule.resource.pattern_type {
                    PatternType::Literal => index.literal.entry(name.into()).or_default(),
                    PatternType::Prefixed => index.prefixed.entry(name.into()).or_default(),
                }
            };
            slot.add(rule.effect, ops);
        }
        for index in &mut by_type {
            let mut lengths: Vec<usize> = index.prefixed.keys().map(|p| p.len()).collect();
            lengths.sort_unstable();
            lengths.dedup();
            index.prefix_lengths = lengths;
        }
        let open = acls.default_action == Action::Allow && acls.rules.is_empty();
        Self { default: acls.default_action, by_type: Arc::new(by_type), open }
    }

    /// Whether every request is allowed, so bodies need not be decoded for ACLs.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether `operation` on the resource `kind`/`name` is allowed.
    pub fn allows(&self, kind: ResourceType, name: &str, operation: Operation) -> bool {
        let grants = self.by_type[kind as usize].lookup(name);
        if grants.deny.contains(operation) {
            return false;
        }
        if grants.allow.grants(operation) {
            return true;
        }
        self.default == Action::Allow
    }

    /// Shorthand for the cluster resource.
    pub fn allows_cluster(&self, operation: Operation) -> bool {
        self.allows(ResourceType::Cluster, CLUSTER_NAME, operation)
    }

    /// Whether `operation` is allowed on at least one resource of this type (Kafka's "authorize by resource type",
    /// used for idempotent producers since KIP-679): some rule allows it and no deny on `*` forbids it.
    pub fn allows_any(&self, kind: ResourceType, operation: Operation) -> bool {
        let index = &self.by_type[kind as usize];
        if index.wildcard.deny.contains(operation) {
            return false;
        }
        if self.default == Action::Allow {
            return true;
        }
        index.wildcard.allow.grants(operation)
            || index.literal.values().any(|g| g.allow.grants(operation) && !g.deny.contains(operation))
            || index.prefixed.values().any(|g| g.allow.grants(operation) && !g.deny.contains(operation))
    }
}

#[cfg(test)]
pub(crate) mod tests;
