//! The compiled policy: what the data path consults per request, built once per config and swapped on reload.
//! Measured state (quota rates, cluster health) lives apart in [`crate::quota::Quotas`] and
//! [`crate::route::Health`] so a reload keeps it.

use kafka_protocol::messages::{ApiKey, RequestKind};
use kproxy_api::config::SidecarConfig;

use crate::acl::Authorizer;
use crate::acl::table;
use crate::enforce::{self, Decision};
use crate::route::Routes;
use crate::topic_ids::TopicNames;
use crate::{Error, Result};

/// ACLs and routes, compiled.
#[derive(Clone, Debug)]
pub struct Policy {
    pub acl: Authorizer,
    pub routes: Routes,
}

impl Policy {
    /// Compiles a validated config. Fails only on references the config validation would have caught.
    pub fn compile(config: &SidecarConfig) -> Result<Self> {
        let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        let routes = Routes::compile(config);
        if let Some(unknown) = routes.clusters().find(|c| !names.contains(c)) {
            return Err(Error::Invalid(format!("route names unknown cluster {unknown:?}")));
        }
        let _ = routes;
        Ok(Self::from_config(config))
    }

    /// Compiles a config that already passed `SidecarConfig::validate` (which checks every reference).
    pub fn from_config(config: &SidecarConfig) -> Self {
        let acl = config.acls.as_ref().map(Authorizer::compile).unwrap_or_else(Authorizer::allow_all);
        Self { acl, routes: Routes::compile(config) }
    }

    /// Whether the ACLs need this request's body decoded.
    pub fn needs_body(&self, api: ApiKey) -> bool {
        !self.acl.is_open() && table::needs_body(api)
    }

    /// Decides a request; see [`enforce::authorize`].
    pub fn authorize(&self, names: &dyn TopicNames, version: i16, request: &mut RequestKind) -> Decision {
        enforce::authorize(&self.acl, names, version, request)
    }

    /// Whether a request needs deciding at all: unsupported APIs are refused even without ACLs.
    pub fn decides(&self, api: ApiKey) -> bool {
        !table::authorizable(api) || !self.acl.is_open()
    }
}
