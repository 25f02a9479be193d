//! kproxy policy engine: decides, per request, what ACLs allow, how long quotas throttle and where routes send.
//!
//! Everything here is pure: no I/O, no clock (time is passed in), no global state. The data path decodes a request,
//! asks [`enforce::authorize`] for a [`enforce::Decision`], asks [`quota::Quotas`] how long to throttle and
//! [`route::Routes`] which cluster serves a name, and applies the answers.
#![forbid(unsafe_code)]

pub mod acl;
pub mod enforce;
pub mod policy;
pub mod quota;
pub mod route;
pub mod topic_ids;

pub use acl::Authorizer;
pub use acl::table::{authorizable, needs_body};
pub use enforce::{Decision, Merge, Outcome, authorize};
pub use policy::Policy;
pub use topic_ids::{TopicIds, TopicNames};

/// Errors from compiling a policy or rewriting a message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("policy is invalid: {0}")]
    Invalid(String),
    #[error("cannot {what} {api:?} v{version}: {message}")]
    Codec { what: &'static str, api: kafka_protocol::messages::ApiKey, version: i16, message: String },
    #[error("{0}")]
    CrossCluster(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Kafka error codes the policy answers with.
pub mod code {
    use kafka_protocol::ResponseError as E;
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = E::UnknownTopicOrPartition.code();
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = E::TopicAuthorizationFailed.code();
    pub const GROUP_AUTHORIZATION_FAILED: i16 = E::GroupAuthorizationFailed.code();
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = E::ClusterAuthorizationFailed.code();
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = E::TransactionalIdAuthorizationFailed.code();
    pub const UNKNOWN_TOPIC_ID: i16 = E::UnknownTopicId.code();
    pub const INVALID_REQUEST: i16 = E::InvalidRequest.code();
}
